"""When the next scheduled backup is due, and the task that takes it.

The schedule is in wall-clock time from the injected clock (so a test moves a fake clock and the
schedule follows): the first backup is due at start when the directory holds no good backup,
else one interval after the newest good one (a restart does not reset the recovery point); each
next one is due one interval after the previous attempt, failed or not (a failure is logged and
counted, and the next attempt comes on schedule, not in a tight loop). The task checks the
clock every `poll_seconds` (at most) and hands the work to `take` (which runs the blocking part
in a thread), so the loop and the bots never wait on a backup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Final

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 1.0


class BackupSchedule:
    """The pure part: what is due when."""

    def __init__(self, interval_minutes: float) -> None:
        self.interval = timedelta(minutes=interval_minutes)
        self.next_at: datetime | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > timedelta(0)

    def start(self, now: datetime, newest_good: datetime | None) -> None:
        if not self.enabled:
            return
        self.next_at = now if newest_good is None else max(now, newest_good + self.interval)

    def due(self, now: datetime) -> bool:
        return self.next_at is not None and now >= self.next_at

    def attempted(self, at: datetime) -> None:
        if self.enabled:
            self.next_at = at + self.interval


class BackupScheduler:
    """An asyncio task that calls `take()` whenever the schedule says a backup is due."""

    def __init__(
        self,
        schedule: BackupSchedule,
        clock: Callable[[], datetime],
        take: Callable[[], Awaitable[object]],
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.schedule = schedule
        self.clock = clock
        self.take = take
        self.poll_seconds = poll_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self, newest_good: datetime | None) -> None:
        self.schedule.start(self.clock(), newest_good)
        if self.schedule.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="backup-scheduler")

    async def run_due(self) -> bool:
        """Take a backup if one is due now; whether one was attempted."""
        if not self.schedule.due(self.clock()):
            return False
        self.schedule.attempted(self.clock())
        try:
            await self.take()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the take() already logged and counted it; keep the schedule
            log.debug("scheduled backup failed: %r", exc)
        return True

    async def _run(self) -> None:
        while True:
            await self.run_due()
            next_at = self.schedule.next_at
            wait = self.poll_seconds
            if next_at is not None:
                wait = min(wait, max((next_at - self.clock()).total_seconds(), 0.0))
            await asyncio.sleep(max(wait, 0.001))

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
