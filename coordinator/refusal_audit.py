"""Refused orders in the audit log, summed: one entry per bot and refusal code per period.

Every refused order is counted on its bot's book (`refusals`, shown in /status and /metrics) at
the moment it is refused, synchronously, on the order path. Writing an audit entry there would
put a store write on the order path and, for a strategy refused every tick (reduce-only, a
disabled bot), flood the log with thousands of identical lines. So a task looks at the counters
every `interval` seconds and writes one `order.refused` entry per bot and code that moved: how
many, and the newest reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from coordinator.store.journal import audit_entry
from coordinator.store.sqlite import Priority, SqliteStore
from coordinator.supervisor import BotRunner

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 10.0
ACTOR = "order-gates"


class RefusalAudit:
    def __init__(
        self,
        runners: Callable[[], Iterable[BotRunner]],
        store: SqliteStore,
        clock: Callable[[], datetime],
    ) -> None:
        self.runners = runners
        self.store = store
        self.clock = clock
        # What was audited so far, by (bot, code): the books' counters start at 0 each process.
        self._seen: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self, interval: float = INTERVAL_SECONDS) -> None:
        self._task = asyncio.create_task(self._every(interval), name="refusal-audit")

    async def _every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception as exc:  # the next period tries again; say so
                log.error("could not audit refused orders: %r", exc)

    async def flush(self) -> int:
        """Write the entries for what moved since the last flush; how many were written."""
        now = self.clock()
        entries: list[Any] = []
        moved: dict[tuple[str, str], int] = {}
        for runner in self.runners():
            book = runner.parts.book
            for code, count in list(book.refusals.items()):
                key = (runner.name, code)
                new = count - self._seen.get(key, 0)
                if new <= 0:
                    continue
                moved[key] = count
                entries.append(
                    audit_entry(
                        actor=ACTOR,
                        action="order.refused",
                        subject=runner.name,
                        result="refused",
                        at=now,
                        reason=_newest_reason(book.last_refusal, code),
                        details={"code": code, "orders": new, "total": count},
                    )
                )
        if entries:
            await self.store.write(entries, Priority.SAFETY)
            self._seen.update(moved)
        return len(entries)

    async def stop(self) -> None:
        """Stop the period and write what is left (before the store closes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.flush()
        except Exception as exc:  # shutdown goes on; say so
            log.error("could not audit the last refused orders: %r", exc)


def _newest_reason(last_refusal: str | None, code: str) -> str | None:
    """The book keeps the newest refusal of any code: it is this code's when it says so."""
    if last_refusal is not None and last_refusal.startswith(f"{code}: "):
        return last_refusal.removeprefix(f"{code}: ")
    return None

