"""What a restore must never do: roll the safety state back silently, leave a half-restored
config, lose a WAL, crash or blame the archive when the disk is at fault, or change the files'
modes."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coordinator.backups.layout import LATEST_ARCHIVE
from coordinator.backups.restore import STAGED_DATABASE
from coordinator.cli import main
from coordinator.config import CONFIG_FILES, load_config
from coordinator.config.models import CoordinatorConfig
from coordinator.errors import Conflict
from coordinator.runtime import DATABASE_FILE, Coordinator
from coordinator.store.reconciliation import ReconciliationStore
from tests.coordinator.backups.support import (
    archives,
    backup,
    count,
    fail_writes,
    files_of,
    live_database_with_wal,
    make_database,
    read_only,
    sha256,
    tree,
)

AT = datetime(2026, 11, 23, 10, 15, 2, tzinfo=UTC)
TAKEN = "2026-11-23 10:15:02 UTC"
CHANGED = ("bot-limits.json", "kill-switch.json", "recovery-settings.json")  # config order
REASON = (
    "database restored from config-20261123-101502.tar.gz (taken 2026-11-23 10:15:02 UTC): "
    "the journal is older than the exchanges; reconcile (bot-coordinator reconcile) before "
    "overriding"
)


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


def edit_config(config_dir: Path) -> dict[str, bytes]:
    """Three config files made to differ from the backup; every config file's bytes now."""
    for file in CHANGED:
        path = config_dir / file
        path.write_bytes(path.read_bytes() + b"\n")
    return {file: (config_dir / file).read_bytes() for file in CONFIG_FILES}


# --- the kill switch and what the operator is told ----------------------------------------------


async def test_a_restored_database_opens_with_the_kill_switch_active(
    config: CoordinatorConfig,
    data_dir: Path,
    config_dir: Path,
    backup_dir: Path,
    dirs: list[str],
) -> None:
    coordinator = await Coordinator.open(config, data_dir)
    try:
        assert coordinator.kill_switch.active is False
    finally:
        await coordinator.close(grace_seconds=0.5)
    await asyncio.to_thread(backup, config_dir, backup_dir, AT, data_dir / DATABASE_FILE)

    assert await asyncio.to_thread(main, ["restore", "--latest", *dirs]) == 0

    restored = await Coordinator.open(config, data_dir)
    try:
        status = restored.status()
        assert status["kill_switch_active"] is True
        switch = status["kill_switch"]
        assert switch["trigger"] == "restore"
        assert switch["reason"] == REASON
        assert switch["activations_in_window"] == 0  # not counted toward the activation limit
        assert switch["cooldown_seconds_left"] == 0.0  # overridable once reconciled
        with pytest.raises(Conflict, match="the kill switch is active"):
            await restored.start_bot("ndax", False, "test")
        # The mark reconciliation adopts the orders of the gap by: which backup, and when.
        mark = await ReconciliationStore(restored.store).restored()
        assert mark is not None
        assert mark.backup_created_at == AT
        assert mark.restored_at.isoformat() == switch["at"]
        assert mark.backup.startswith("config-")
    finally:
        await restored.close(grace_seconds=0.5)


def test_the_dry_run_and_the_restore_say_what_a_database_restore_means(
    dirs: list[str],
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = make_database(tmp_path / "data", rows=3)
    archive = backup(config_dir, backup_dir, AT, database).archive

    assert main(["restore", "--latest", "--dry-run", *dirs]) == 0

    out = capsys.readouterr().out
    # The backup by its own name and hash, not the pointer it was reached through.
    assert out.startswith(f"backup {archive.name} ({archive}, named as ")
    assert f"sha256 {sha256(archive.read_bytes())}" in out
    assert (
        f"WARNING: the database goes back to {TAKEN}: orders and fills after that time are not "
        "in it" in out
    )
    assert "WARNING: the kill switch will be ACTIVE in the restored journal" in out
    assert "run `bot-coordinator reconcile`" in out
    assert "before trading" in out

    assert main(["restore", "--latest", *dirs]) == 0

    err = capsys.readouterr().err
    assert (
        f"WARNING: the database went back to {TAKEN}: orders and fills after that time are not "
        "in it" in err
    )
    assert "WARNING: the kill switch is ACTIVE in the restored journal" in err
    assert "run `bot-coordinator reconcile`" in err
    assert f"from {archive.name} (taken {TAKEN}, sha256 {sha256(archive.read_bytes())})" in err


def test_a_config_only_restore_says_nothing_about_the_kill_switch(
    dirs: list[str],
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = make_database(tmp_path / "data", rows=3)
    backup(config_dir, backup_dir, AT, database)
    edit_config(config_dir)

    assert main(["restore", "--latest", "--config-only", *dirs]) == 0

    captured = capsys.readouterr()
    assert "kill switch" not in captured.out + captured.err
    assert count(database, "safety_state") == 0


# --- all or nothing ------------------------------------------------------------------------------


def _fail_replace(monkeypatch: pytest.MonkeyPatch, target: Path, source_suffix: str) -> None:
    """`os.replace` onto `target` from a file named `*source_suffix` fails as a dying disk
    would; every other rename (the rollback's included) works."""
    real = os.replace

    def replace(source: Any, destination: Any, **kwargs: Any) -> None:
        if Path(destination) == target and str(source).endswith(source_suffix):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(source, destination, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize(
    "failure",
    ["write of the second config file", "rename of the second config file", "rename of the db"],
)
def test_a_restore_that_fails_part_way_leaves_every_file_as_it_was(
    failure: str,
    dirs: list[str],
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "data"
    backup(config_dir, backup_dir, AT, make_database(data_dir, rows=5))
    database = live_database_with_wal(data_dir, rows=8, more=4, scratch=tmp_path / "source")
    config_before = edit_config(config_dir)
    data_before = files_of(data_dir)
    assert {"coordinator.db", "coordinator.db-wal"} <= data_before.keys()
    if failure == "write of the second config file":
        fail_writes(monkeypatch, lambda path: path.endswith("/.tmp-kill-switch.json.restore"))
    elif failure == "rename of the second config file":
        _fail_replace(monkeypatch, config_dir / "kill-switch.json", ".restore")
    else:
        _fail_replace(monkeypatch, database, STAGED_DATABASE)

    assert main(["restore", "--latest", *dirs]) == 1

    assert {f: (config_dir / f).read_bytes() for f in CONFIG_FILES} == config_before
    assert files_of(config_dir) == config_before  # and no temp file left beside them
    assert files_of(data_dir) == data_before  # the database, its -wal and -shm untouched
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for file in CHANGED:
        assert f"  {config_dir / file}: " in err  # each file's state, said
    if failure.startswith("write"):
        assert "nothing was changed" in err
        assert "No space left on device" in err
        assert not list(backup_dir.glob("pre-restore-*"))
    else:
        [saved] = backup_dir.glob("pre-restore-*")
        assert f"the pre-restore folder (the files as they were) is {saved}" in err
        assert "Input/output error" in err
        assert f"  {config_dir / 'bot-limits.json'}: put back as it was" in err
        for file in CHANGED:
            assert (saved / "config" / file).read_bytes() == config_before[file]
    monkeypatch.undo()
    assert count(database, "bots") == 12  # the WAL's rows are still there


def test_a_file_the_rollback_cannot_put_back_is_named_with_where_its_old_version_is(
    dirs: list[str],
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "data"
    backup(config_dir, backup_dir, AT, make_database(data_dir, rows=5))
    config_before = edit_config(config_dir)
    data_before = files_of(data_dir)
    _fail_replace(monkeypatch, data_dir / DATABASE_FILE, STAGED_DATABASE)
    fail_writes(monkeypatch, lambda path: path.endswith("/.tmp-bot-limits.json.rollback"))

    assert main(["restore", "--latest", *dirs]) == 1

    err = capsys.readouterr().err
    [saved] = backup_dir.glob("pre-restore-*")
    limits = config_dir / "bot-limits.json"
    assert "SOME FILES COULD NOT BE PUT BACK" in err
    assert (
        f"  {limits}: NOT put back (No space left on device): it holds the backup's version; "
        f"its previous version is {saved / 'config' / 'bot-limits.json'}" in err
    )
    assert f"  {config_dir / 'kill-switch.json'}: put back as it was" in err
    assert f"  {data_dir / DATABASE_FILE}: unchanged" in err
    assert (saved / "config" / "bot-limits.json").read_bytes() == config_before["bot-limits.json"]
    assert limits.read_bytes() != config_before["bot-limits.json"]  # as the message says
    for file in CHANGED[1:]:
        assert (config_dir / file).read_bytes() == config_before[file]
    assert files_of(data_dir) == data_before


def test_the_live_wal_is_kept_in_pre_restore_not_deleted(
    dirs: list[str], tmp_path: Path, config_dir: Path, backup_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    backup(config_dir, backup_dir, AT, make_database(data_dir, rows=5))
    live_database_with_wal(data_dir, rows=8, more=4, scratch=tmp_path / "source")

    assert main(["restore", "--latest", *dirs]) == 0

    [saved] = backup_dir.glob("pre-restore-*")
    kept = {p.name for p in (saved / "database").iterdir()}
    assert {"coordinator.db", "coordinator.db-wal"} <= kept
    copy = tmp_path / "kept"
    copy.mkdir()
    for name in kept:
        shutil.copyfile(saved / "database" / name, copy / name)
    assert count(copy / "coordinator.db", "bots") == 12  # the WAL replays onto its own database
    assert count(data_dir / DATABASE_FILE, "bots") == 5
    assert not [p.name for p in data_dir.iterdir() if p.name.startswith(".tmp-")]


# --- an unwritable backup dir, a full disk -------------------------------------------------------


def test_a_read_only_backup_dir_allows_a_dry_run_and_refuses_a_restore_cleanly(
    dirs: list[str],
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = make_database(tmp_path / "data", rows=3)
    backup(config_dir, backup_dir, AT, database)
    config_before = edit_config(config_dir)
    before = tree(tmp_path)
    read_only(monkeypatch, backup_dir)

    assert main(["restore", "--latest", "--config-only", "--dry-run", *dirs]) == 0
    assert main(["restore", "--latest", "--dry-run", *dirs]) == 0

    out, err = capsys.readouterr()
    assert f"--- {config_dir / 'bot-limits.json'} (current)" in out
    assert "Traceback" not in err

    for only in (["--config-only"], []):
        assert main(["restore", "--latest", *only, *dirs]) == 1

        err = capsys.readouterr().err
        assert "restore refused; nothing was changed: cannot write to the backup directory" in err
        assert "Read-only file system" in err
        assert "Traceback" not in err
    monkeypatch.undo()
    assert tree(tmp_path) == before
    assert files_of(config_dir) == config_before


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_full_disk_for_the_scratch_copy_is_not_called_a_corrupt_archive(
    dry_run: bool,
    dirs: list[str],
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = make_database(tmp_path / "data", rows=3)
    backup(config_dir, backup_dir, AT, database)
    edit_config(config_dir)
    before = tree(tmp_path)
    if dry_run:  # the scratch copy goes to the temp dir
        fail_writes(monkeypatch, lambda p: "/bot-coordinator-restore-" in p)
    else:  # staged beside the live database
        fail_writes(monkeypatch, lambda p: p.endswith(f"/{STAGED_DATABASE}"))

    assert main(["restore", "--latest", *(["--dry-run"] if dry_run else []), *dirs]) == 1

    err = capsys.readouterr().err
    assert "restore failed; nothing was changed: cannot write a scratch copy" in err
    assert "No space left on device" in err
    assert "the archive itself is not at fault" in err
    assert "corrupt" not in err
    assert "Traceback" not in err
    monkeypatch.undo()
    assert tree(tmp_path) == before
    assert not list(backup_dir.glob("pre-restore-*"))


# --- modes and owners ----------------------------------------------------------------------------


def test_a_restored_config_file_keeps_the_mode_and_owner_of_the_file_it_replaces(
    dirs: list[str], config_dir: Path, backup_dir: Path
) -> None:
    backup(config_dir, backup_dir, AT)
    edit_config(config_dir)
    limits = config_dir / "bot-limits.json"
    os.chmod(limits, 0o640)
    as_root = os.geteuid() == 0
    if as_root:  # only root can give a file away; otherwise the owner is the caller anyway
        os.chown(limits, 1234, 2345)
    before = limits.stat()

    assert main(["restore", "--latest", "--config-only", *dirs]) == 0

    after = limits.stat()
    assert after.st_ino != before.st_ino  # a new file, renamed into place
    assert after.st_mode & 0o7777 == 0o640
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    load_config(config_dir)


def test_restore_of_the_latest_records_the_backup_it_points_to(
    dirs: list[str], config_dir: Path, backup_dir: Path
) -> None:
    backup(config_dir, backup_dir, AT)
    edit_config(config_dir)

    assert main(["restore", "--latest", "--config-only", *dirs]) == 0

    [archive] = archives(backup_dir)
    [saved] = backup_dir.glob("pre-restore-*")
    note = (saved / "restore.json").read_text()
    assert f'"backup": "{archive.name}"' in note
    assert f'"archive_sha256": "{sha256(archive.read_bytes())}"' in note
    assert f'"named_as": "{backup_dir / LATEST_ARCHIVE}"' in note
