"""The coordinator's backups: on demand (`POST /backups`), on schedule, listed, in `/status`.

One `BackupService` per coordinator. Every backup runs in a thread (`asyncio.to_thread`), one at a
time (an asyncio lock here, the backup directory's file lock across processes), and is audited
(`backup.create`, with the archive, or the reason it failed). A failed backup is logged at
ERROR, counted, and shown in `/status`; the previous latest stays. `stop()` (from
`Coordinator.close`, before the store closes) stops the schedule, asks a backup in flight to
stop at its next step, and waits for it briefly.

At start the latest backup is checked completely, in a thread, in the background (the
coordinator does not wait for it): a latest that verifies starts the schedule from its time; one
that does not (damaged on disk since it was written) is shown in `/status` as a failed backup,
audited (`backup.verify`), and a new backup is taken at once. `/status` gives both the age of
the last attempt (`age_seconds`) and of the newest good backup (`last_ok_age_seconds`, null
while none is known): an alert on the latter fires even while every backup fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from coordinator.backups.catalog import Catalog
from coordinator.backups.create import (
    BackupFailed,
    BackupRequest,
    BackupResult,
    Retention,
    take_backup,
)
from coordinator.backups.layout import LATEST_ARCHIVE
from coordinator.backups.postgres_dump import PostgresDatabase
from coordinator.backups.publish import verify_latest
from coordinator.backups.scheduler import POLL_SECONDS, BackupSchedule, BackupScheduler
from coordinator.config.models import BackupSettings
from coordinator.errors import CoordinatorError, ShuttingDown
from coordinator.store.journal import SqliteJournal, iso

log = logging.getLogger(__name__)

STOP_WAIT_SECONDS: Final = 1.0


class BackupError(CoordinatorError):
    """A backup was asked for and not taken (the reason is in the message)."""

    status = 500
    code = "backup_failed"


@dataclass(slots=True)
class BackupStatus:
    last_at: datetime | None = None
    result: str | None = None  # "ok" | "failed"
    error: str | None = None
    archive: str | None = None
    last_ok_at: datetime | None = None
    failures: int = 0  # failed backups since start


class BackupService:
    def __init__(
        self,
        settings: BackupSettings,
        config_dir: Path,
        backup_dir: Path,
        database: Path | PostgresDatabase | None,  # None: config only
        clock: Callable[[], datetime],
        journal: SqliteJournal | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.settings = settings
        self.config_dir = config_dir
        self.backup_dir = backup_dir
        self.database = database
        self.clock = clock
        self.journal = journal
        self.catalog = Catalog()
        self.state = BackupStatus()
        self.accepting = True
        self._lock = asyncio.Lock()
        self._abort = threading.Event()
        self._running: asyncio.Future[dict[str, Any]] | None = None
        self._starting: asyncio.Task[None] | None = None
        self.scheduler = BackupScheduler(
            BackupSchedule(settings.interval_minutes),
            clock,
            lambda: self.backup_now("schedule", "backup-scheduler"),
            poll_seconds,
        )

    async def start(self) -> None:
        """Check the latest backup completely in the background; the schedule starts from it."""
        log.info(
            "backups: %s every %s minutes into %s",
            "scheduled" if self.scheduler.schedule.enabled else "on demand only (interval 0),",
            self.settings.interval_minutes,
            self.backup_dir,
        )
        self._starting = asyncio.create_task(self._check_latest(), name="backup-check-latest")

    async def _check_latest(self) -> None:
        async with self._lock:  # no backup replaces the latest while it is read
            manifest, problem = await asyncio.to_thread(verify_latest, self.backup_dir)
            fresh = self.state.last_at is None  # no backup has ended meanwhile
        if problem is None:
            if manifest is not None and fresh:
                self.state.last_at = self.state.last_ok_at = manifest.created_at
                self.state.result, self.state.archive = "ok", manifest.archive
            self.scheduler.start(manifest.created_at if manifest is not None else None)
            return
        name = manifest.archive if manifest is not None else None
        reason = f"the latest backup ({name or LATEST_ARCHIVE}) does not verify: {problem}"
        if fresh:
            self.state.last_at = manifest.created_at if manifest is not None else None
            self.state.result, self.state.error, self.state.archive = "failed", reason, name
            self.state.failures += 1
        log.error("%s; taking a new backup now", reason)
        await self._audit(
            "backup-check", name, f"error: {reason}", self.clock(), {}, "backup.verify"
        )
        if self.scheduler.schedule.enabled:
            self.scheduler.start(None)  # due at once
        elif self.accepting:
            # A failure is logged, counted and audited by backup_now itself.
            with contextlib.suppress(BackupError, ShuttingDown):
                await self.backup_now("schedule", "backup-check")

    async def backup_now(self, trigger: str, actor: str) -> dict[str, Any]:
        """Take a backup now; its description, or `BackupError` (audited either way).

        The work and its audit run as one task shielded from the caller's cancellation (the
        scheduler's, at shutdown): `stop()` waits for it, so a backup is never left unaudited."""
        if not self.accepting:
            raise ShuttingDown("the coordinator is shutting down; no backup is taken")
        async with self._lock:
            self._running = asyncio.ensure_future(self._take(trigger, actor))
            self._running.add_done_callback(_retrieve)
            try:
                return await asyncio.shield(self._running)
            finally:
                self._running = None

    async def _take(self, trigger: str, actor: str) -> dict[str, Any]:
        at = self.clock()
        request = BackupRequest(
            config_dir=self.config_dir,
            backup_dir=self.backup_dir,
            database=self.database if self.settings.include_database else None,
            trigger=trigger,
            at=at,
            retention=Retention(self.settings.keep_count, self.settings.keep_days),
            abort=self._abort,
        )
        try:
            result = await asyncio.to_thread(take_backup, request)
        except BackupFailed as exc:
            await self._failed(at, trigger, actor, str(exc))
            raise BackupError(f"backup failed: {exc}") from exc
        await asyncio.to_thread(self.catalog.record, result.archive, result.manifest, True)
        await self._succeeded(at, actor, result)
        return result.as_dict()

    async def _succeeded(self, at: datetime, actor: str, result: BackupResult) -> None:
        self.state = BackupStatus(at, "ok", None, result.archive.name, at, self.state.failures)
        await self._audit(actor, result.archive.name, "ok", at, result.as_dict())

    async def _failed(self, at: datetime, trigger: str, actor: str, reason: str) -> None:
        self.state.last_at, self.state.result, self.state.error = at, "failed", reason
        self.state.failures += 1
        log.error("backup (%s) failed; the previous latest is kept: %s", trigger, reason)
        await self._audit(actor, None, f"error: {reason}", at, {"trigger": trigger})

    async def _audit(
        self,
        actor: str,
        subject: str | None,
        result: str,
        at: datetime,
        details: dict[str, Any],
        action: str = "backup.create",
    ) -> None:
        if self.journal is None:
            return
        try:
            await self.journal.audit(
                actor=actor,
                action=action,
                subject=subject,
                result=result,
                at=at,
                details=details,
            )
        except Exception as exc:  # a closed store must not turn a backup's answer into a crash
            log.warning("could not audit the backup: %r", exc)

    async def listing(self, verify: bool = False) -> dict[str, Any]:
        listed = await asyncio.to_thread(self.catalog.listing, self.backup_dir, verify)
        return {**listed, "last": self.status()}

    def status(self) -> dict[str, Any]:
        now = self.clock()
        state = self.state
        return {
            "directory": str(self.backup_dir),
            "last_at": iso(state.last_at) if state.last_at else None,
            "age_seconds": round((now - state.last_at).total_seconds(), 1)
            if state.last_at
            else None,
            "result": state.result,
            "error": state.error,
            "archive": state.archive,
            "last_ok_at": iso(state.last_ok_at) if state.last_ok_at else None,
            "last_ok_age_seconds": round((now - state.last_ok_at).total_seconds(), 1)
            if state.last_ok_at
            else None,
            "failures": state.failures,
            "next_at": iso(self.scheduler.schedule.next_at)
            if self.scheduler.schedule.next_at
            else None,
            "interval_minutes": self.settings.interval_minutes,
        }

    async def stop(self) -> None:
        """No new backups; a backup in flight stops at its next step (waited for briefly)."""
        self.accepting = False
        self._abort.set()
        running = self._running  # before the scheduler's cancellation forgets it
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
            self._starting = None
        await self.scheduler.stop()
        if running is not None:
            done, _ = await asyncio.wait({running}, timeout=STOP_WAIT_SECONDS)
            if not done:
                log.warning("a backup is still running at shutdown; its thread finishes it")


def _retrieve(task: asyncio.Future[dict[str, Any]]) -> None:
    """A backup whose caller was cancelled (shutdown) still ends; its outcome is logged there."""
    if not task.cancelled():
        task.exception()
