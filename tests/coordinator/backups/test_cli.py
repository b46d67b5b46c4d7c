"""`bot-coordinator backup` with no coordinator running, and start-up on a corrupt config."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coordinator.backups.archive import read_archive
from coordinator.backups.layout import LATEST_ARCHIVE
from coordinator.cli import EXIT_BAD_CONFIG, main
from coordinator.config import load_config
from tests.coordinator.backups.support import archives, backup, make_database, manifest_of

AT = datetime(2026, 11, 23, 10, 15, 2, tzinfo=UTC)


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


def test_backup_writes_an_archive_and_prints_what_it_wrote(
    dirs: list[str], tmp_path: Path, backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_database(tmp_path / "data", rows=3)

    assert main(["backup", *dirs]) == 0

    [archive] = archives(backup_dir)
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed["archive"] == str(archive)
    assert printed["trigger"] == "cli"
    assert "database/coordinator.db" in printed["files"]
    assert f"backup written: {archive}" in err
    assert manifest_of(backup_dir / LATEST_ARCHIVE)["archive"] == archive.name


def test_the_options_may_come_before_the_command_too(
    dirs: list[str], backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*dirs, "backup"]) == 0
    assert len(archives(backup_dir)) == 1
    assert "no database at" in capsys.readouterr().err  # no journal yet: the config alone


def test_an_invalid_config_is_not_backed_up(
    dirs: list[str], config_dir: Path, backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (config_dir / "bots.json").write_text("[]")

    assert main(["backup", *dirs]) == EXIT_BAD_CONFIG

    assert "bots.json: $: expected object, got an array" in capsys.readouterr().err
    assert not archives(backup_dir)


def test_start_up_on_a_corrupt_file_names_it_and_prints_the_restore_command(
    dirs: list[str], config_dir: Path, backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup(config_dir, backup_dir, AT)
    (config_dir / "bot-limits.json").write_text('{"version": 1, "defaults": ')

    assert main(dirs) == EXIT_BAD_CONFIG

    err = capsys.readouterr().err
    assert "bot-limits.json: $: invalid JSON" in err
    line = next(x for x in err.splitlines() if x.startswith("to restore"))
    assert "(2026-11-23 10:15:02 UTC)" in line
    command = shlex.split(line.split(": ", 1)[1])
    assert command[:5] == [
        "bot-coordinator",
        "restore",
        "--latest",
        "--config-only",
        "--config-dir",
    ]

    assert main([*command[1:], "--log-dir", dirs[-1]]) == 0  # the printed command works as is
    load_config(config_dir)


def test_the_hint_skips_a_damaged_latest_for_the_newest_archive_that_verifies(
    dirs: list[str], config_dir: Path, backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = backup(config_dir, backup_dir, AT).archive
    latest = backup_dir / LATEST_ARCHIVE
    latest.unlink()
    latest.write_bytes(b"\x1f\x8b damaged")
    (config_dir / "kill-switch.json").write_text("{")

    assert main(dirs) == EXIT_BAD_CONFIG

    assert f"bot-coordinator restore {first} --config-only" in capsys.readouterr().err


def test_no_hint_without_a_backup(
    dirs: list[str], config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (config_dir / "kill-switch.json").write_text("{")
    assert main(dirs) == EXIT_BAD_CONFIG
    assert "restore" not in capsys.readouterr().err


def _cut_tail(archive: Path, size: int) -> None:
    """The archive's last `size` bytes cut off, in place: every hard link to it (the latest)
    is cut with it."""
    with archive.open("r+b") as handle:
        handle.truncate(archive.stat().st_size - size)


def test_the_hint_names_only_an_archive_the_printed_command_accepts(
    dirs: list[str],
    tmp_path: Path,
    config_dir: Path,
    backup_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A latest whose end (in the database, behind the config) is cut off still has a readable
    manifest and config: the hint checks it as the restore does (the whole archive), and names
    the older good one instead."""
    database = make_database(tmp_path / "data", rows=200)
    older = backup(config_dir, backup_dir, AT, database).archive
    newest = backup(config_dir, backup_dir, AT.replace(minute=16), database).archive
    _cut_tail(newest, 200)
    assert (backup_dir / LATEST_ARCHIVE).samefile(newest)
    assert read_archive(newest, config_only=True).config  # what the hint used to look at
    (config_dir / "bot-limits.json").write_text('{"version": 1, "defaults": ')

    assert main(dirs) == EXIT_BAD_CONFIG

    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("to restore"))
    command = shlex.split(line.split(": ", 1)[1])
    assert command[:4] == ["bot-coordinator", "restore", str(older), "--config-only"]
    assert "(2026-11-23 10:15:02 UTC)" in line

    assert main([*command[1:], "--log-dir", dirs[-1]]) == 0  # the printed command works
    load_config(config_dir)


def test_a_refused_latest_points_to_the_newest_archive_that_verifies_not_to_itself(
    dirs: list[str], config_dir: Path, backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = backup(config_dir, backup_dir, AT).archive
    newest = backup(config_dir, backup_dir, AT.replace(minute=16)).archive
    _cut_tail(newest, 200)

    assert main(["restore", "--latest", "--config-only", *dirs]) == 1

    err = capsys.readouterr().err
    assert "restore refused; nothing was changed:" in err
    assert f"(the newest that verifies is {older}, taken 2026-11-23 10:15:02 UTC)" in err
    assert str(newest) not in err


def test_restore_without_an_archive_lists_the_backups_that_verify_and_suggests_latest(
    dirs: list[str], config_dir: Path, backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = backup(config_dir, backup_dir, AT).archive
    damaged = backup(config_dir, backup_dir, AT.replace(minute=16)).archive
    newest = backup(config_dir, backup_dir, AT.replace(minute=17)).archive
    damaged.write_bytes(damaged.read_bytes()[:-200])

    assert main(["restore", *dirs]) == 2

    err = capsys.readouterr().err
    listed = [line.split()[0] for line in err.splitlines() if line.startswith("  ")]
    assert listed == [str(newest), str(first)]  # newest first; the latest listed once
    assert f"{newest}  taken 2026-11-23 10:17:02 UTC, config only  ({LATEST_ARCHIVE})" in err
    assert "to restore the newest: bot-coordinator restore --latest" in err
