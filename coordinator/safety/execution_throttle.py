"""The repeated-execution throttle (ESMA RTS 6 Article 15(3)).

A strategy stuck in a loop (a grid re-laying buys under a falling price, a DCA whose interval
broke) executes order after order on the same side. More than `max_same_side_executions` of one
bot's orders executed on one side and symbol within `window_seconds` disable that bot: its gate
closes at once (in memory, before the next send), it is halted (tick cancelled, orders
cancelled), and it stays disabled, across crash restarts and coordinator restarts, until a
person enables it (`POST /bots/{name}/enable` with `approved_by`). Enabling does not start it.

An execution is an order's first fill: an order filled in five pieces is one execution, so a
venue that fills in small lots does not trip the throttle by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from bots.book import BotBook
from bots.gateway import Refusal
from bots.models import OrderIntent, Side
from coordinator.config.models import ExecutionLimit, ExecutionThrottleSettings
from coordinator.errors import Conflict
from coordinator.store.journal import SqliteJournal, audit_entry, iso

log = logging.getLogger(__name__)

STATE_PREFIX = "disabled:"
ACTOR = "execution-throttle"

Disable = Callable[[str, str], None]  # (bot, reason): the coordinator halts the bot


class ExecutionThrottle:
    def __init__(
        self,
        settings: ExecutionThrottleSettings | None,
        journal: SqliteJournal,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.clock = clock
        self.disabled: dict[str, dict[str, Any]] = {}
        self.last_enabled: dict[str, dict[str, Any]] = {}
        self.trips = 0
        self.on_disable: Disable | None = None
        self._executions: dict[tuple[str, str, Side], deque[datetime]] = {}
        self._writes: set[asyncio.Future[None]] = set()
        self.revision = 0  # moves at every change: part of each bot's status document's key

    def load(self, stored: Mapping[str, Mapping[str, Any]]) -> None:
        """Read the disablements back from the safety state (`journal.load_safety_state()`)."""
        for key, value in stored.items():
            if not key.startswith(STATE_PREFIX):
                continue
            bot = key.removeprefix(STATE_PREFIX)
            if "unreadable" in value:  # fail safe: disabled until a person looks
                self.disabled[bot] = {"reason": f"unreadable stored state: {value['unreadable']}",
                                      "at": iso(self.clock()), "by": "coordinator"}
            elif value.get("disabled"):
                self.disabled[bot] = dict(value)
            if value.get("last_enabled"):
                self.last_enabled[bot] = value["last_enabled"]
        for bot, state in self.disabled.items():
            log.warning("%s is disabled by the execution throttle (since %s): %s",
                        bot, state.get("at"), state.get("reason"))
        self.revision += 1

    # -- counting --------------------------------------------------------------------------------

    def executed(self, bot: str, symbol: str, side: Side, client_order_id: int) -> None:
        """One of `bot`'s orders had its first fill (called on the order path: synchronous)."""
        if self.settings is None or bot in self.disabled:
            return
        limit = self.settings.for_bot(bot)
        now = self.clock()
        times = self._executions.setdefault((bot, symbol, side), deque())
        times.append(now)
        since = now - timedelta(seconds=limit.window_seconds)
        while times and times[0] <= since:
            times.popleft()
        if len(times) > limit.max_same_side_executions:
            self._disable(bot, symbol, side, len(times), client_order_id, now, limit)

    def _disable(
        self,
        bot: str,
        symbol: str,
        side: Side,
        count: int,
        client_order_id: int,
        now: datetime,
        limit: ExecutionLimit,
    ) -> None:
        reason = (
            f"{count} {side.value} orders on {symbol} executed within "
            f"{limit.window_seconds:g}s (more than max_same_side_executions "
            f"{limit.max_same_side_executions}); the latest was order {client_order_id}"
        )
        state = {
            "disabled": True,
            "reason": reason,
            "at": iso(now),
            "by": ACTOR,
            "symbol": symbol,
            "side": side.value,
            "executions": count,
            "window_seconds": limit.window_seconds,
        }
        self.disabled[bot] = state  # the gate is closed from here on
        self.trips += 1
        self.revision += 1
        log.critical("%s DISABLED by the execution throttle: %s", bot, reason)
        audit = audit_entry(
            actor=ACTOR, action="bot.disabled", subject=bot, result="ok", at=now,
            reason=reason, details={k: v for k, v in state.items() if k != "reason"},
        )  # fmt: skip
        write = asyncio.ensure_future(
            self.journal.save_safety_state(STATE_PREFIX + bot, state, now, also=[audit])
        )
        self._writes.add(write)
        write.add_done_callback(self._write_done)
        if self.on_disable is not None:
            self.on_disable(bot, reason)

    def _write_done(self, write: asyncio.Future[None]) -> None:
        self._writes.discard(write)
        if not write.cancelled() and write.exception() is not None:
            log.error("could not persist a bot's disabled state: %r", write.exception())

    async def flush(self) -> None:
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=2.0)

    # -- enabling --------------------------------------------------------------------------------

    async def enable(self, bot: str, actor: str, approved_by: str, reason: str) -> dict[str, Any]:
        """Lift a bot's disablement (it stays stopped: start it deliberately)."""
        state = self.disabled.get(bot)
        if state is None:
            raise Conflict(f"bot {bot!r} is not disabled")
        await self.flush()  # the disablement is on disk before its lifting
        now = self.clock()
        enabled = {"by": actor, "approved_by": approved_by, "reason": reason, "at": iso(now),
                   "was": state.get("reason")}
        await self.journal.save_safety_state(
            STATE_PREFIX + bot, {"disabled": False, "last_enabled": enabled}, now
        )
        del self.disabled[bot]
        self.last_enabled[bot] = enabled
        for key in [k for k in self._executions if k[0] == bot]:
            del self._executions[key]  # the executions that tripped it do not trip it again
        self.revision += 1
        log.warning("%s enabled by %s (approved by %s): %s", bot, actor, approved_by, reason)
        return {"bot": bot, "enabled": enabled}

    # -- reading ---------------------------------------------------------------------------------

    def refusal(self, bot: str) -> str | None:
        state = self.disabled.get(bot)
        if state is None:
            return None
        return (
            f"bot {bot} is disabled by the execution throttle since {state.get('at')}: "
            f"{state.get('reason')}; POST /bots/{bot}/enable with approved_by re-enables it"
        )

    def status(self, bot: str) -> dict[str, Any]:
        return {
            "disabled": bot in self.disabled,
            "disabled_state": self.disabled.get(bot),
            "last_enabled": self.last_enabled.get(bot),
        }

    def summary(self) -> dict[str, Any]:
        settings: Mapping[str, Any] | None = (
            self.settings.model_dump() if self.settings is not None else None
        )
        return {"settings": settings, "disabled": dict(self.disabled), "trips": self.trips}


class ThrottleGate:
    """Refuses every order of a disabled bot."""

    def __init__(self, throttle: ExecutionThrottle, bot: str) -> None:
        self.throttle = throttle
        self.bot = bot

    def check(self, intent: OrderIntent, book: BotBook) -> Refusal | None:
        if self.bot not in self.throttle.disabled:
            return None
        return Refusal("bot_disabled", self.throttle.refusal(self.bot) or "disabled")
