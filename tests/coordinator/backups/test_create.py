"""Taking a backup: what the archive holds, the latests, and failures that must change nothing."""

from __future__ import annotations

import errno
import json
import os
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from coordinator import __version__
from coordinator.backups import archive as archive_module
from coordinator.backups import publish as publish_module
from coordinator.backups.archive import read_archive
from coordinator.backups.create import BackupFailed
from coordinator.backups.layout import (
    LATEST_ARCHIVE,
    LATEST_CONFIG_DIR,
    LATEST_MANIFEST,
    directory_lock,
)
from coordinator.config import CONFIG_FILES
from coordinator.store.migrations import LATEST_VERSION
from tests.coordinator.backups.support import (
    backup,
    count,
    make_database,
    manifest_of,
    members,
    sha256,
    tree,
)

AT = datetime(2026, 11, 23, 10, 15, 2, tzinfo=UTC)


def test_a_backup_holds_the_config_and_database_with_a_manifest_of_their_hashes(
    tmp_path: Path, config_dir: Path, backup_dir: Path
) -> None:
    database = make_database(tmp_path / "data", rows=20)

    result = backup(config_dir, backup_dir, AT, database)

    assert result.archive == backup_dir / "config-20261123-101502.tar.gz"
    inside = members(result.archive)
    assert list(inside) == [
        "manifest.json",
        *(f"config/{f}" for f in CONFIG_FILES),
        "database/coordinator.db",
    ]
    manifest = json.loads(inside["manifest.json"])
    assert manifest["format"] == 1
    assert manifest["archive"] == result.archive.name
    assert manifest["created_at"] == AT.isoformat()
    assert manifest["coordinator_version"] == __version__
    assert manifest["trigger"] == "cli"
    assert manifest["config_versions"] == {f: 1 for f in CONFIG_FILES}
    assert manifest["database"] == {
        "path": "database/coordinator.db",
        "schema_version": LATEST_VERSION,
        "integrity_check": "ok",
        "engine": "sqlite",
    }
    for entry in manifest["files"]:
        assert entry["sha256"] == sha256(inside[entry["path"]])
        assert entry["size"] == len(inside[entry["path"]])
    for file in CONFIG_FILES:
        assert inside[f"config/{file}"] == (config_dir / file).read_bytes()
    copy = tmp_path / "copy.db"
    copy.write_bytes(inside["database/coordinator.db"])
    assert count(copy, "bots") == 20


def test_the_latest_archive_and_config_dir_are_the_newest_backup(
    config_dir: Path, backup_dir: Path
) -> None:
    first = backup(config_dir, backup_dir, AT)
    (config_dir / "kill-switch.json").write_text(
        (config_dir / "kill-switch.json").read_text() + "\n"
    )
    second = backup(config_dir, backup_dir, AT + timedelta(minutes=1))

    latest = backup_dir / LATEST_ARCHIVE
    assert latest.read_bytes() == second.archive.read_bytes() != first.archive.read_bytes()
    assert manifest_of(latest)["archive"] == second.archive.name
    plain = backup_dir / LATEST_CONFIG_DIR
    assert sorted(p.name for p in plain.iterdir()) == sorted([*CONFIG_FILES, LATEST_MANIFEST])
    for file in CONFIG_FILES:
        assert (plain / file).read_bytes() == (config_dir / file).read_bytes()
    assert json.loads((plain / LATEST_MANIFEST).read_text())["archive"] == second.archive.name
    assert not [p for p in backup_dir.iterdir() if p.name.startswith(".tmp-")]


def test_two_backups_in_the_same_second_get_distinct_names(
    config_dir: Path, backup_dir: Path
) -> None:
    names = [backup(config_dir, backup_dir, AT).archive.name for _ in range(3)]
    assert names == [
        "config-20261123-101502.tar.gz",
        "config-20261123-101502-2.tar.gz",
        "config-20261123-101502-3.tar.gz",
    ]


def test_an_invalid_config_is_not_backed_up_and_the_latest_stays(
    config_dir: Path, backup_dir: Path
) -> None:
    backup(config_dir, backup_dir, AT)
    before = tree(backup_dir)
    (config_dir / "bot-limits.json").write_text('{"version": 1, "defaults": ')

    with pytest.raises(BackupFailed, match=r"bot-limits\.json: \$: invalid JSON"):
        backup(config_dir, backup_dir, AT + timedelta(minutes=1))

    assert tree(backup_dir) == before


def _full_disk_after(calls: int) -> Any:
    """A stand-in for archive._add_member that writes `calls` members, then finds the disk full
    (half of the next member written first, as a real ENOSPC would leave it)."""
    real = archive_module._add_member
    seen = {"n": 0}

    def add_member(tar: tarfile.TarFile, name: str, path: Path, mtime: int) -> None:
        seen["n"] += 1
        if seen["n"] > calls:
            tar.fileobj.write(b"\0" * 5000)  # type: ignore[union-attr]
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tar, name, path, mtime)

    return add_member


@pytest.mark.parametrize("calls", [0, 3, 5])
def test_a_full_disk_during_a_backup_leaves_the_previous_latest_and_no_temp_files(
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    calls: int,
) -> None:
    database = make_database(tmp_path / "data", rows=10)
    good = backup(config_dir, backup_dir, AT, database)
    before = tree(backup_dir)
    monkeypatch.setattr(archive_module, "_add_member", _full_disk_after(calls))

    with pytest.raises(BackupFailed, match="No space left on device"):
        backup(config_dir, backup_dir, AT + timedelta(minutes=1), database)

    assert tree(backup_dir) == before
    assert manifest_of(backup_dir / LATEST_ARCHIVE)["archive"] == good.archive.name
    assert read_archive(backup_dir / LATEST_ARCHIVE).manifest.archive == good.archive.name


def test_a_full_disk_while_publishing_the_latest_changes_nothing(
    config_dir: Path, backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup(config_dir, backup_dir, AT)
    before = tree(backup_dir)

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(publish_module.os, "link", no_space)
    monkeypatch.setattr(publish_module, "copy_file", no_space)

    with pytest.raises(BackupFailed, match="No space left on device"):
        backup(config_dir, backup_dir, AT + timedelta(minutes=1))

    assert tree(backup_dir) == before


def test_a_failed_rename_of_the_latest_puts_the_old_config_dir_back(
    config_dir: Path, backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup(config_dir, backup_dir, AT)
    before = tree(backup_dir)
    real_replace = os.replace

    def failing_replace(source: Any, target: Any) -> None:
        if str(target).endswith(LATEST_ARCHIVE):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(source, target)

    monkeypatch.setattr(publish_module.os, "replace", failing_replace)

    with pytest.raises(BackupFailed, match="Input/output error"):
        backup(config_dir, backup_dir, AT + timedelta(minutes=1))

    assert tree(backup_dir) == before


def test_a_second_backup_at_the_same_time_is_refused_not_interleaved(
    config_dir: Path, backup_dir: Path
) -> None:
    with directory_lock(backup_dir), pytest.raises(BackupFailed, match="another backup"):
        backup(config_dir, backup_dir, AT)
    assert not list(backup_dir.glob("config-*"))


def test_leftovers_of_a_backup_that_died_are_removed_by_the_next(
    config_dir: Path, backup_dir: Path
) -> None:
    backup_dir.mkdir()
    stale = backup_dir / ".tmp-config-20261123-090000.tar.gz"
    stale.mkdir()
    (stale / "half-written").write_bytes(b"x" * 100)
    (backup_dir / "notes.txt").write_text("mine")

    backup(config_dir, backup_dir, AT)

    assert not stale.exists()
    assert (backup_dir / "notes.txt").read_text() == "mine"
