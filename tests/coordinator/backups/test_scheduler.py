"""The schedule, with a fake clock: first backup at start, then every interval; a failure is
counted and the next attempt comes on schedule; the coordinator owns it and stops it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coordinator.backups.layout import LATEST_ARCHIVE
from coordinator.backups.scheduler import BackupSchedule, BackupScheduler
from coordinator.backups.service import BackupService
from coordinator.config.models import BackupSettings, CoordinatorConfig
from coordinator.runtime import Coordinator
from tests.coordinator.backups.support import archives, backup, manifest_of
from tests.support_config import FakeClock, eventually

START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_the_first_backup_is_due_at_once_when_there_is_none() -> None:
    schedule = BackupSchedule(interval_minutes=60)
    schedule.start(START, newest_good=None)
    assert schedule.due(START)


def test_after_a_restart_the_schedule_continues_from_the_newest_good_backup() -> None:
    schedule = BackupSchedule(interval_minutes=60)
    schedule.start(START, newest_good=START - timedelta(minutes=45))
    assert not schedule.due(START + timedelta(minutes=14))
    assert schedule.due(START + timedelta(minutes=15))
    schedule.start(START, newest_good=START - timedelta(days=3))
    assert schedule.due(START)


def test_an_interval_of_zero_schedules_nothing() -> None:
    schedule = BackupSchedule(interval_minutes=0)
    schedule.start(START, newest_good=None)
    assert not schedule.enabled
    assert not schedule.due(START + timedelta(days=365))


async def test_the_task_takes_one_backup_per_interval_as_the_fake_clock_moves() -> None:
    clock = FakeClock(START)
    taken: list[datetime] = []

    async def take() -> None:
        taken.append(clock())

    scheduler = BackupScheduler(BackupSchedule(0.5), clock, take, poll_seconds=0.005)
    scheduler.start(newest_good=None)
    try:
        await eventually(lambda: len(taken) == 1, what="the backup at start")
        clock.advance(seconds=29)
        await asyncio.sleep(0.05)
        assert len(taken) == 1
        clock.advance(seconds=1)
        await eventually(lambda: len(taken) == 2, what="the backup one interval later")
        clock.advance(minutes=5)  # the process slept through ten intervals: one backup, not ten
        await eventually(lambda: len(taken) == 3, what="a backup after a long gap")
        await asyncio.sleep(0.05)
    finally:
        await scheduler.stop()
    assert taken == [START, START + timedelta(seconds=30), START + timedelta(minutes=5.5)]


def names(backup_dir: Path) -> list[str]:
    return [p.name for p in archives(backup_dir)]


def _service(
    coordinator: Coordinator, config_dir: Path, backup_dir: Path, clock: FakeClock
) -> BackupService:
    settings = BackupSettings(interval_minutes=60, keep_count=3, keep_days=0)
    return BackupService(
        settings,
        config_dir,
        backup_dir,
        coordinator.store.path,
        clock,
        coordinator.journal,
        poll_seconds=0.005,
    )


async def test_scheduled_backups_while_bots_trade_with_failures_counted_and_retried(
    coordinator: Coordinator, config_dir: Path, backup_dir: Path
) -> None:
    clock = FakeClock(START)
    service = _service(coordinator, config_dir, backup_dir, clock)
    await coordinator.supervisor.start("ndax")
    await service.start()
    try:
        await eventually(lambda: service.state.result == "ok", what="the first backup")
        assert service.status()["next_at"] == "2026-11-23T13:00:00.000000+00:00"

        clock.advance(minutes=60)
        await eventually(lambda: len(names(backup_dir)) == 2, what="the second backup")
        good = names(backup_dir)[-1]

        limits = config_dir / "bot-limits.json"
        original = limits.read_bytes()
        limits.write_bytes(b"{broken")  # an operator's bad edit: not backed up, latest kept
        clock.advance(minutes=60)
        await eventually(lambda: service.state.failures == 1, what="a failed backup")
        status = service.status()
        assert status["result"] == "failed"
        assert "bot-limits.json" in status["error"]
        assert status["last_ok_at"] == "2026-11-23T13:00:00.000000+00:00"
        assert status["next_at"] == "2026-11-23T15:00:00.000000+00:00"
        assert manifest_of(backup_dir / LATEST_ARCHIVE)["archive"] == good

        limits.write_bytes(original)
        clock.advance(minutes=30)
        await asyncio.sleep(0.05)
        assert service.state.result == "failed"  # no retry storm: the next one is on schedule
        clock.advance(minutes=30)
        await eventually(lambda: service.state.result == "ok", what="the retry on schedule")
        assert service.status()["age_seconds"] == 0.0
        assert service.status()["failures"] == 1
    finally:
        await service.stop()
    assert len(names(backup_dir)) == 3
    audit = await coordinator.journal.recent_audit(50)
    backups = [e for e in audit if e["action"] == "backup.create"]
    assert [e["result"][:5] for e in reversed(backups)] == ["ok", "ok", "error", "ok"]
    assert {e["actor"] for e in backups} == {"backup-scheduler"}


@pytest.fixture
def opened_with_backups(
    config: CoordinatorConfig, data_dir: Path, backup_dir: Path
) -> tuple[CoordinatorConfig, Path, Path]:
    return config, data_dir, backup_dir


async def test_the_coordinator_backs_up_at_start_shows_it_in_status_and_stops_it_on_close(
    opened_with_backups: tuple[CoordinatorConfig, Path, Path],
) -> None:
    config, data_dir, backup_dir = opened_with_backups
    coordinator = await Coordinator.open(config, data_dir, backup_dir=backup_dir)
    try:
        assert coordinator.backups is not None
        service = coordinator.backups
        await eventually(lambda: service.state.result == "ok", what="the backup at start")
        status = coordinator.status()["backups"]
        assert status["result"] == "ok"
        assert status["directory"] == str(backup_dir)
        assert status["age_seconds"] is not None
        assert status["age_seconds"] < 60
        assert status["next_at"] is not None
    finally:
        await coordinator.close(grace_seconds=0.5)
    assert service.scheduler._task is None


async def test_without_a_backup_dir_there_are_no_backups(coordinator: Coordinator) -> None:
    assert coordinator.backups is None
    assert coordinator.status()["backups"] is None


def _cut_tail(archive: Path, size: int) -> None:
    with archive.open("r+b") as handle:
        handle.truncate(archive.stat().st_size - size)


@pytest.mark.parametrize("interval_minutes", [60, 0])
async def test_a_damaged_latest_found_at_start_is_reported_failed_and_a_backup_is_taken_now(
    interval_minutes: float, coordinator: Coordinator, config_dir: Path, backup_dir: Path
) -> None:
    """Its manifest still reads: only the whole-archive check at start finds the cut tail."""
    clock = FakeClock(START)
    earlier = await asyncio.to_thread(
        backup, config_dir, backup_dir, START - timedelta(minutes=10), coordinator.store.path
    )
    await asyncio.to_thread(_cut_tail, earlier.archive, 200)
    settings = BackupSettings(interval_minutes=interval_minutes, keep_count=3, keep_days=0)
    service = BackupService(
        settings,
        config_dir,
        backup_dir,
        coordinator.store.path,
        clock,
        coordinator.journal,
        poll_seconds=0.005,
    )

    await service.start()
    try:
        await eventually(lambda: len(names(backup_dir)) == 2, what="a backup taken at once")
        await eventually(lambda: service.state.result == "ok", what="the new backup's status")
    finally:
        await service.stop()
    status = service.status()
    assert status["failures"] == 1  # the damaged latest, counted as a failed backup
    assert status["last_ok_at"] == "2026-11-23T12:00:00.000000+00:00"
    assert manifest_of(backup_dir / LATEST_ARCHIVE)["archive"] == names(backup_dir)[-1]
    audit = await coordinator.journal.recent_audit(20)
    [check] = [e for e in audit if e["action"] == "backup.verify"]
    assert check["subject"] == earlier.archive.name
    assert check["result"].startswith(f"error: the latest backup ({earlier.archive.name})")
    assert "does not verify" in check["result"]


async def test_status_shows_a_damaged_latest_as_a_failed_backup(
    coordinator: Coordinator, config_dir: Path, backup_dir: Path
) -> None:
    """With the config now invalid, the backup taken at once fails too: /status keeps saying
    that there is no good backup."""
    clock = FakeClock(START)
    earlier = await asyncio.to_thread(
        backup, config_dir, backup_dir, START - timedelta(minutes=10), coordinator.store.path
    )
    await asyncio.to_thread(_cut_tail, earlier.archive, 200)
    (config_dir / "bot-limits.json").write_bytes(b"{broken")
    service = _service(coordinator, config_dir, backup_dir, clock)

    await service.start()
    try:
        await eventually(lambda: service.state.failures == 2, what="the check and the retry")
    finally:
        await service.stop()
    status = service.status()
    assert status["result"] == "failed"
    assert status["last_ok_at"] is None
    assert status["last_ok_age_seconds"] is None


async def test_status_gives_the_age_of_the_newest_good_backup_while_backups_fail(
    coordinator: Coordinator, config_dir: Path, backup_dir: Path
) -> None:
    clock = FakeClock(START)
    service = _service(coordinator, config_dir, backup_dir, clock)
    await service.start()
    try:
        await eventually(lambda: service.state.result == "ok", what="the first backup")
        assert service.status()["last_ok_age_seconds"] == 0.0
        (config_dir / "bot-limits.json").write_bytes(b"{broken")
        clock.advance(minutes=60)
        await eventually(lambda: service.state.failures == 1, what="a failed backup")
        clock.advance(minutes=30)
        status = service.status()
    finally:
        await service.stop()
    assert status["result"] == "failed"
    assert status["age_seconds"] == 1800.0  # the last attempt
    assert status["last_ok_age_seconds"] == 5400.0  # what an alert on backup age watches
