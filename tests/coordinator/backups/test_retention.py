"""Retention: keep the newest `keep_count`, and anything younger than `keep_days`; never the
newest good backup; never anything that is not a backup archive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from coordinator.backups.create import Retention
from coordinator.backups.layout import LATEST_ARCHIVE, archive_name, archive_names
from coordinator.backups.retention import expired
from tests.coordinator.backups.support import backup, manifest_of
from tests.support_config import FakeClock

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def names_at(*ages_days: float) -> list[str]:
    return [archive_name(NOW - timedelta(days=age), set()) for age in ages_days]


def test_only_backups_beyond_the_count_and_older_than_the_days_go() -> None:
    names = names_at(0, 1, 2, 3, 10, 11, 12)

    gone = expired(names, NOW, keep_count=3, keep_days=7)

    assert gone == names_at(12, 11, 10)  # oldest first; 3 (young) stays although beyond the count


def test_the_count_alone_keeps_old_backups() -> None:
    names = names_at(30, 40, 50)
    assert expired(names, NOW, keep_count=3, keep_days=7) == []
    assert expired(names, NOW, keep_count=1, keep_days=7) == names_at(50, 40)


def test_keep_days_zero_deletes_everything_beyond_the_count() -> None:
    names = names_at(0, 0.01, 0.02)
    assert expired(names, NOW, keep_count=1, keep_days=0) == names_at(0.02, 0.01)


def test_the_newest_good_backup_is_never_deleted() -> None:
    names = names_at(20, 30, 40)
    protected = names_at(40)  # say the two newer ones are damaged: latest still points here

    assert expired(names, NOW, keep_count=1, keep_days=1, protected=protected) == names_at(30)


def test_names_in_the_same_second_are_ordered_by_their_suffix() -> None:
    at = NOW - timedelta(days=30)
    names = ["config-20261024-120000-3.tar.gz", "config-20261024-120000.tar.gz"]
    names.append("config-20261024-120000-2.tar.gz")
    assert archive_name(at, set()) == "config-20261024-120000.tar.gz"

    assert expired(names, NOW, keep_count=1, keep_days=1) == [
        "config-20261024-120000.tar.gz",
        "config-20261024-120000-2.tar.gz",
    ]


def test_scheduled_backups_over_days_are_pruned_with_a_fake_clock(
    config_dir: Path, backup_dir: Path
) -> None:
    """Every six hours for ten days, keep 4 and 2 days: what is left is the last two days."""
    clock = FakeClock(NOW)
    foreign = [backup_dir / "config-notes.tar.gz", backup_dir / "config-2026.tar.gz"]
    backup_dir.mkdir()
    for path in foreign:
        path.write_text("not ours")
    (backup_dir / "pre-restore-20261101-000000").mkdir()

    for _ in range(40):
        backup(config_dir, backup_dir, clock(), retention=Retention(keep_count=4, keep_days=2))
        clock.advance(hours=6)

    kept = archive_names(backup_dir)
    newest = clock() - timedelta(hours=6)
    assert len(kept) == 9  # two days of 6-hourly backups, plus the one exactly at the cutoff
    assert kept[-1] == archive_name(newest, set())
    assert manifest_of(backup_dir / LATEST_ARCHIVE)["archive"] == kept[-1]
    assert all(path.read_text() == "not ours" for path in foreign)
    assert (backup_dir / "pre-restore-20261101-000000").is_dir()
