"""`bot-coordinator restore`: checked before anything is touched, diffed on --dry-run, what it
replaces kept aside; a damaged archive is refused with nothing changed."""

from __future__ import annotations

import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coordinator.backups.layout import LATEST_ARCHIVE
from coordinator.cli import main
from coordinator.config import load_config
from coordinator.runtime import DATABASE_FILE
from tests.coordinator.backups.support import (
    archives,
    backup,
    count,
    make_database,
    members,
    rebuild,
    sha256,
    tree,
)

AT = datetime(2026, 11, 23, 10, 15, 2, tzinfo=UTC)
BROKEN = b'{"version": 1, "defaults": '


@pytest.fixture
def dirs(tmp_path: Path, config_dir: Path, backup_dir: Path) -> list[str]:
    return [
        "--config-dir",
        str(config_dir),
        "--backup-dir",
        str(backup_dir),
        "--data-dir",
        str(tmp_path / "data"),
        "--log-dir",
        str(tmp_path / "logs"),
    ]


@pytest.fixture
def good_limits(config_dir: Path, backup_dir: Path) -> bytes:
    """A backup of the good config is taken, then bot-limits.json is corrupted."""
    backup(config_dir, backup_dir, AT)
    good = (config_dir / "bot-limits.json").read_bytes()
    (config_dir / "bot-limits.json").write_bytes(BROKEN)
    return good


def test_restore_latest_brings_back_the_exact_bytes_and_the_config_loads(
    dirs: list[str],
    config_dir: Path,
    backup_dir: Path,
    good_limits: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    others = {f: (config_dir / f).read_bytes() for f in ("bots.json", "kill-switch.json")}

    assert main(["restore", "--latest", "--config-only", *dirs]) == 0

    assert (config_dir / "bot-limits.json").read_bytes() == good_limits
    load_config(config_dir)
    assert {f: (config_dir / f).read_bytes() for f in others} == others
    saved = next(backup_dir.glob("pre-restore-*"))
    assert (saved / "config" / "bot-limits.json").read_bytes() == BROKEN
    assert sorted(p.name for p in (saved / "config").iterdir()) == ["bot-limits.json"]
    note = json.loads((saved / "restore.json").read_text())
    [archive] = archives(backup_dir)
    # The backup itself, not the pointer it was reached through.
    assert note["restored_from"] == str(archive)
    assert note["backup"] == archive.name
    assert note["named_as"] == str(backup_dir / LATEST_ARCHIVE)
    assert note["archive_sha256"] == sha256(archive.read_bytes())
    err = capsys.readouterr().err
    assert f"restored {config_dir / 'bot-limits.json'}" in err
    assert f"the files it replaced are in {saved}" in err


def test_a_dry_run_shows_the_diff_and_changes_nothing(
    dirs: list[str],
    tmp_path: Path,
    config_dir: Path,
    good_limits: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = tree(tmp_path)

    assert main(["restore", "--latest", "--config-only", "--dry-run", *dirs]) == 0

    assert tree(tmp_path) == before
    out, err = capsys.readouterr()
    assert f"--- {config_dir / 'bot-limits.json'} (current)" in out
    assert f"+++ {config_dir / 'bot-limits.json'} (backup of 2026-11-23 10:15:02 UTC)" in out
    assert '-{"version": 1, "defaults": ' in out
    assert '+  "version": 1,' in out
    assert "5 config file(s) already match the backup" in out
    assert "bots.json" not in out.replace("bot-limits.json", "")
    assert "nothing was changed" in err


def test_restore_of_a_named_archive_and_of_the_database_when_nothing_runs(
    dirs: list[str], tmp_path: Path, config_dir: Path, backup_dir: Path
) -> None:
    database = make_database(tmp_path / "data", rows=30)
    archive = backup(config_dir, backup_dir, AT, database).archive
    make_database(tmp_path / "data", rows=60)  # more rows since: the restore rolls them back
    assert count(database, "bots") == 60

    assert main(["restore", str(archive), *dirs]) == 0

    assert count(database, "bots") == 30
    assert not Path(f"{database}-wal").exists()
    saved = next(backup_dir.glob("pre-restore-*"))
    assert count(saved / "database" / DATABASE_FILE, "bots") == 60
    audit = _audit_actions(database)
    assert ("cli", "backup.restore", archive.name) in audit


def _audit_actions(database: Path) -> list[tuple[str, str, str]]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(database)) as conn:
        return list(conn.execute("SELECT actor, action, subject FROM audit_events"))


def _damaged(archive: Path, how: str, tmp_path: Path) -> Path:
    data = archive.read_bytes()
    target = tmp_path / f"{how}.tar.gz"
    if how == "truncated":
        target.write_bytes(data[: len(data) * 2 // 3])
    elif how == "flipped":
        middle = len(data) // 2
        target.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif how == "wrong-hash":
        contents = members(archive)
        contents["config/bots.json"] = contents["config/bots.json"].replace(b"ndax", b"ndbx", 1)
        rebuild(archive, target, contents)
    elif how == "escape":
        evil = tarfile.TarInfo("../evil")
        evil.size = 4
        rebuild(archive, target, members(archive), [evil])
    return target


@pytest.mark.parametrize("how", ["truncated", "flipped", "wrong-hash", "escape"])
def test_a_corrupt_archive_is_refused_and_nothing_changes(
    how: str,
    dirs: list[str],
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = make_database(tmp_path / "data", rows=5)
    archive = backup(config_dir, backup_dir, AT, database).archive
    (config_dir / "bot-limits.json").write_bytes(BROKEN)
    damaged = _damaged(archive, how, tmp_path)
    before = tree(tmp_path)

    assert main(["restore", str(damaged), *dirs]) == 1

    assert tree(tmp_path) == before
    assert not (tmp_path / "evil").exists()
    assert not list(backup_dir.glob("pre-restore-*"))
    err = capsys.readouterr().err
    assert "restore refused; nothing was changed:" in err
    assert "Traceback" not in err


def test_an_archive_whose_config_fails_validation_is_refused(
    dirs: list[str],
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Hashes can match and the config still be unusable (made by a looser version, edited and
    re-hashed): it is loaded by the real loader before anything is touched."""
    archive = backup(config_dir, backup_dir, AT).archive
    contents = members(archive)
    manifest = json.loads(contents["manifest.json"])
    bad = contents["config/kill-switch.json"].replace(b'"version": 1', b'"version": 7')
    contents["config/kill-switch.json"] = bad
    for entry in manifest["files"]:
        if entry["path"] == "config/kill-switch.json":
            import hashlib

            entry["size"], entry["sha256"] = len(bad), hashlib.sha256(bad).hexdigest()
    contents["manifest.json"] = json.dumps(manifest).encode()
    crafted = rebuild(archive, tmp_path / "crafted.tar.gz", contents)
    before = tree(tmp_path)

    assert main(["restore", str(crafted), "--config-only", *dirs]) == 1

    assert tree(tmp_path) == before
    assert "kill-switch.json: $.version" in capsys.readouterr().err


def test_restore_needs_one_archive_and_says_so(
    dirs: list[str], backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["restore", *dirs]) == 2
    assert main(["restore", "--latest", str(backup_dir / "x.tar.gz"), *dirs]) == 2
    assert "name one backup" in capsys.readouterr().err
    assert main(["restore", "--latest", *dirs]) == 1
    assert f"no backup at {backup_dir / LATEST_ARCHIVE}" in capsys.readouterr().err


def test_nothing_to_restore_when_the_config_matches(
    dirs: list[str], config_dir: Path, backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup(config_dir, backup_dir, AT)
    assert main(["restore", "--latest", "--config-only", *dirs]) == 0
    assert "nothing to restore" in capsys.readouterr().err
    assert not list(backup_dir.glob("pre-restore-*"))


def test_an_archive_from_before_alerts_json_restores_and_keeps_the_current_alerts_json(
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    dirs: list[str],
    good_limits: bytes,
) -> None:
    [archive] = archives(backup_dir)
    contents = members(archive)
    del contents["config/alerts.json"]  # as a backup taken by the version before alerts.json
    manifest = json.loads(contents["manifest.json"])
    manifest["files"] = [f for f in manifest["files"] if f["path"] != "config/alerts.json"]
    manifest["config_versions"].pop("alerts.json", None)
    contents["manifest.json"] = json.dumps(manifest).encode()
    older = rebuild(archive, backup_dir / "config-20261101-000000.tar.gz", contents)
    alerts_before = (config_dir / "alerts.json").read_bytes()

    assert main(["restore", str(older), "--config-only", *dirs]) == 0

    assert (config_dir / "bot-limits.json").read_bytes() == good_limits
    assert (config_dir / "alerts.json").read_bytes() == alerts_before
    load_config(config_dir)
