"""Reading an archive back: every way it can be damaged or crafted is refused with a reason."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coordinator.backups.archive import (
    ArchiveUnreadable,
    ScratchWriteError,
    read_archive,
    read_manifest,
)
from coordinator.backups.manifest import ArchiveError
from tests.coordinator.backups.support import (
    backup,
    fail_writes,
    make_database,
    members,
    rebuild,
    sha256,
)

AT = datetime(2026, 11, 23, 10, 15, 2, tzinfo=UTC)


@pytest.fixture
def archive(tmp_path: Path, config_dir: Path, backup_dir: Path) -> Path:
    database = make_database(tmp_path / "data", rows=200)
    return backup(config_dir, backup_dir, AT, database).archive


def test_a_good_archive_reads_back_with_its_config_and_database(
    archive: Path, tmp_path: Path, config_dir: Path
) -> None:
    contents = read_archive(archive, database_to=tmp_path / "restored.db")

    assert contents.config["bot-limits.json"] == (config_dir / "bot-limits.json").read_bytes()
    assert contents.database == tmp_path / "restored.db"
    assert sha256(contents.database.read_bytes()) == sha256(
        members(archive)["database/coordinator.db"]
    )


def test_a_truncated_archive_is_refused(archive: Path, tmp_path: Path) -> None:
    data = archive.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 20):
        damaged = tmp_path / f"cut-{cut}.tar.gz"
        damaged.write_bytes(data[:cut])
        with pytest.raises(ArchiveError, match=r"corrupt or truncated|incomplete|sha256"):
            read_archive(damaged, database_to=tmp_path / f"db-{cut}")
        assert not (tmp_path / f"db-{cut}").exists()  # no half-copied database left behind


def test_a_flipped_byte_anywhere_is_refused(archive: Path, tmp_path: Path) -> None:
    data = archive.read_bytes()
    refused = 0
    positions = range(20, len(data) - 8, max(1, len(data) // 40))
    for position in positions:
        damaged = tmp_path / "flipped.tar.gz"
        damaged.write_bytes(data[:position] + bytes([data[position] ^ 0x55]) + data[position + 1 :])
        try:
            read_archive(damaged)
        except ArchiveError:
            refused += 1
    assert refused == len(positions)


def test_a_member_whose_bytes_do_not_match_the_manifest_is_refused(
    archive: Path, tmp_path: Path
) -> None:
    contents = members(archive)
    original = contents["config/bot-limits.json"]
    contents["config/bot-limits.json"] = original.replace(b"1000", b"9999", 1)
    assert len(contents["config/bot-limits.json"]) == len(original)
    tampered = rebuild(archive, tmp_path / "tampered.tar.gz", contents)

    with pytest.raises(ArchiveError, match=r"config/bot-limits\.json: sha256 .* does not match"):
        read_archive(tampered)


def test_a_member_escaping_the_target_is_refused(archive: Path, tmp_path: Path) -> None:
    contents = members(archive)
    evil = tarfile.TarInfo("../evil")
    evil.size = 4
    crafted = rebuild(archive, tmp_path / "evil.tar.gz", contents, [evil])

    with pytest.raises(ArchiveError, match=r"unexpected member '\.\./evil'"):
        read_archive(crafted)


def test_a_manifest_naming_a_path_outside_the_backup_is_refused(
    archive: Path, tmp_path: Path
) -> None:
    contents = members(archive)
    manifest = json.loads(contents["manifest.json"])
    manifest["files"].append({"path": "/etc/cron.d/evil", "size": 4, "sha256": "0" * 64})
    contents["manifest.json"] = json.dumps(manifest).encode()

    with pytest.raises(ArchiveError, match="lists files a backup never holds"):
        read_archive(rebuild(archive, tmp_path / "crafted.tar.gz", contents))


def test_a_manifest_from_before_engines_is_sqlites_and_a_mismatched_engine_is_refused(
    archive: Path, tmp_path: Path
) -> None:
    contents = members(archive)
    manifest = json.loads(contents["manifest.json"])
    del manifest["database"]["engine"]  # as written before the journal could be on PostgreSQL
    contents["manifest.json"] = json.dumps(manifest).encode()
    old = read_archive(rebuild(archive, tmp_path / "old.tar.gz", contents))
    assert old.manifest.database is not None
    assert old.manifest.database.engine == "sqlite"

    manifest["database"]["engine"] = "postgresql"  # a dump's engine at the SQLite file's path
    contents["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(ArchiveError, match=r"database path 'database/coordinator\.db' for engine"):
        read_archive(rebuild(archive, tmp_path / "crafted.tar.gz", contents))


def test_a_link_in_place_of_a_config_file_is_refused(archive: Path, tmp_path: Path) -> None:
    contents = members(archive)
    del contents["config/api-endpoints.json"], contents["database/coordinator.db"]
    link = tarfile.TarInfo("config/api-endpoints.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    crafted = rebuild(archive, tmp_path / "link.tar.gz", contents, [link])

    with pytest.raises(ArchiveError, match="not a regular file"):
        read_archive(crafted)


def test_a_missing_manifest_or_member_is_refused(archive: Path, tmp_path: Path) -> None:
    contents = members(archive)
    without_manifest = {k: v for k, v in contents.items() if k != "manifest.json"}
    with pytest.raises(ArchiveError, match=r"first member is not manifest\.json"):
        read_archive(rebuild(archive, tmp_path / "a.tar.gz", without_manifest))
    without_db = {k: v for k, v in contents.items() if k != "database/coordinator.db"}
    with pytest.raises(ArchiveError, match=r"incomplete: database/coordinator\.db missing"):
        read_archive(rebuild(archive, tmp_path / "b.tar.gz", without_db))


def test_something_that_is_not_a_gzip_at_all_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "config-20261123-101502.tar.gz"
    bogus.write_bytes(b"this is not an archive\n" * 10)
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        read_archive(bogus)
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        read_manifest(bogus)


def test_config_only_reading_stops_before_the_database(archive: Path, tmp_path: Path) -> None:
    """A quick look (the start-up hint) does not need the database; it is behind the config."""
    data = archive.read_bytes()
    contents = members(archive)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    assert buffer.getvalue()[:2] == data[:2]
    truncated_db = tmp_path / "tail-cut.tar.gz"
    truncated_db.write_bytes(data[: len(data) - 200])

    assert read_archive(truncated_db, config_only=True).config.keys() == {
        "bots.json",
        "bot-limits.json",
        "kill-switch.json",
        "recovery-settings.json",
        "api-endpoints.json",
        "alerts.json",
    }
    with pytest.raises(ArchiveError):
        read_archive(truncated_db)


def test_an_archive_that_cannot_be_read_is_unreadable_not_corrupt(tmp_path: Path) -> None:
    not_a_file = tmp_path / "config-20261123-101502.tar.gz"
    not_a_file.mkdir()
    for read in (read_archive, read_manifest):
        with pytest.raises(ArchiveUnreadable, match=rf"cannot read {not_a_file}: Is a directory"):
            read(not_a_file)


def test_a_full_disk_for_the_database_copy_is_a_scratch_error_not_a_corrupt_archive(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "restored.db"
    fail_writes(monkeypatch, lambda path: path == str(target))

    with pytest.raises(ScratchWriteError) as raised:
        read_archive(archive, database_to=target)

    assert f"cannot write a scratch copy of the archived database to {target}" in str(raised.value)
    assert "No space left on device" in str(raised.value)
    assert not isinstance(raised.value, ArchiveError)
    assert not target.exists()  # no half-written copy left


def test_a_complete_read_gives_the_archive_files_sha256(archive: Path) -> None:
    assert read_archive(archive).sha256 == sha256(archive.read_bytes())
    assert read_archive(archive, config_only=True).sha256 is None  # stopped early: not known
