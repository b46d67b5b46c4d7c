"""The safety layer assembled: kill switch, circuit breakers, risk limits, automatic triggers.

It owns their state in the store (the `safety_state` table: one row for the kill switch, one
per breaker, one for the risk baselines), reads it all back before any bot may start, hands each
bot its gates, and runs the watch over the automatic triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from bots.book import BotBook
from bots.gateway import OrderGate, Refusal
from bots.models import OrderIntent
from coordinator.config.models import BotConfig, CoordinatorConfig
from coordinator.errors import Conflict, NotFound
from coordinator.safety.breaker import (
    GLOBAL,
    BreakerBoard,
    BreakerState,
    CircuitBreaker,
    UnknownBreaker,
)
from coordinator.safety.execution_throttle import ExecutionThrottle, ThrottleGate
from coordinator.safety.kill_switch import KillSwitch, Trigger
from coordinator.safety.monitor import TriggerWatch
from coordinator.safety.risk import RiskContext, RiskGate
from coordinator.safety.scopes import ScopedSwitches, ScopeGate
from coordinator.safety.self_trade import SelfTradeRegistry
from coordinator.store.journal import SqliteJournal
from coordinator.supervisor import BotRunner

log = logging.getLogger(__name__)

BREAKER_PREFIX = "breaker:"
BASELINES_KEY = "risk_baselines"
WATCH_INTERVAL_SECONDS = 1.0
WATCH_CHUNK = 100  # bots looked at between two turns of the event loop

Activate = Callable[[str, Trigger], Awaitable[Any]]


class BreakerGate:
    """Refuses before anything is journaled when a breaker would refuse the send anyway."""

    def __init__(self, board: BreakerBoard, exchange: str) -> None:
        self.board = board
        self.exchange = exchange

    def check(self, intent: OrderIntent, book: BotBook) -> Refusal | None:
        return self.board.would_refuse(self.exchange)


class SafetyLayer:
    def __init__(
        self, config: CoordinatorConfig, journal: SqliteJournal, clock: Callable[[], datetime]
    ) -> None:
        self.config = config
        self.journal = journal
        self.clock = clock
        self.kill_switch = KillSwitch(config.kill_switch, config.recovery, journal, clock)
        # Per-exchange and per-bot switches, and reduce-only anywhere (scopes.py).
        self.scopes = ScopedSwitches(
            journal,
            clock,
            timedelta(minutes=config.recovery.recovery.cooldown_period_minutes),
            {bot.name: bot.exchange for bot in config.bots.bots},
        )
        self.throttle = ExecutionThrottle(config.kill_switch.execution_throttle, journal, clock)
        settings = config.recovery.circuit_breaker
        self.board = BreakerBoard(
            settings,
            clock,
            sorted({bot.exchange for bot in config.bots.bots}),
            self._breaker_changed,
            global_settings=settings.for_global(),
        )
        self.risk = RiskContext(config.limits.global_, clock)
        self.self_trade = SelfTradeRegistry()  # bots per (account, symbol); shared paper accounts
        self.watch = TriggerWatch(
            config.kill_switch.triggers, config.recovery.restart, self.risk, self.board, clock
        )
        self.kill_switch.trip_global_breaker = self._trip_global
        self.kill_switch.global_breaker_open = self._why_global_open
        self.kill_switch.clear_global_breaker = self._clear_global
        self._writes: set[asyncio.Task[None]] = set()
        self._saved_baselines: dict[str, dict[str, str]] = {}
        self._watch_task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Read every piece of safety state back. Unreadable breaker state fails safe: the
        global breaker is tripped, latched, until an operator looks."""
        stored = await self.journal.load_safety_state()  # one read for every component
        await self.kill_switch.load(stored)
        self.scopes.load(stored)
        self.throttle.load(stored)
        breakers = {
            key.removeprefix(BREAKER_PREFIX): value
            for key, value in stored.items()
            if key.startswith(BREAKER_PREFIX)
        }
        try:
            self.board.restore(breakers)
        except ValueError as exc:
            log.critical(
                "stored circuit breaker state is unreadable (%s): tripping the global "
                "breaker until an operator resets it",
                exc,
            )
            self._trip_global(f"unreadable stored breaker state: {exc}")
        for name, snapshot in self.board.status()["exchanges"].items():
            if snapshot["state"] != BreakerState.CLOSED:
                log.warning(
                    "circuit breaker %s is %s (%s)", name, snapshot["state"], snapshot["reason"]
                )
        self.risk.restore_baselines(stored.get(BASELINES_KEY, {}))
        self._saved_baselines = self.risk.baselines()

    def gates_for(
        self, bot: BotConfig, book: BotBook
    ) -> tuple[list[OrderGate], RiskGate, RiskGate]:
        """(always-on gates, the risk gate, the safe-mode risk gate) for one bot."""
        self.risk.register(bot.name, bot.symbol, bot.quote_asset, book)
        limits = self.config.limits.limits_for(bot.name)
        always: list[OrderGate] = [
            self.kill_switch.gate,
            ScopeGate(self.scopes, bot.name),
            ThrottleGate(self.throttle, bot.name),
            BreakerGate(self.board, bot.exchange),
            self.self_trade.register(bot, book),
        ]
        return (
            always,
            RiskGate(bot.name, limits, self.risk),
            RiskGate(bot.name, limits, self.risk, safe_mode=self.config.limits.safe_mode),
        )

    # -- breakers --------------------------------------------------------------------------------

    def reset_breaker(self, name: str, by: str, reason: str) -> dict[str, Any]:
        try:
            breaker = self.board.breaker(name)
        except UnknownBreaker as exc:
            raise NotFound(
                f"no circuit breaker named {name!r}; there are: {', '.join(self.board.names)}"
            ) from exc
        if breaker.latched and name == GLOBAL and self.kill_switch.active:
            raise Conflict(
                f"the global breaker is latched ({breaker.snapshot()['reason']}) while the kill "
                f"switch is active: force_override of the kill switch (admin token) clears both"
            )
        breaker.reset(by, reason)
        return breaker.snapshot()

    def _trip_global(self, reason: str) -> None:
        log.critical("global circuit breaker tripped (latched): %s", reason)
        self.board.breaker(GLOBAL).trip(reason, latched=True)

    def _clear_global(self, by: str, reason: str) -> None:
        breaker = self.board.breaker(GLOBAL)
        if breaker.state is not BreakerState.CLOSED:
            breaker.reset(by, reason)

    def _why_global_open(self) -> str | None:
        snapshot = self.board.breaker(GLOBAL).snapshot()
        if snapshot["state"] == BreakerState.CLOSED:
            return None
        return f"{snapshot['state']} since {snapshot['open_since']}: {snapshot['reason']}"

    def _breaker_changed(self, breaker: CircuitBreaker, why: str) -> None:
        snapshot = breaker.snapshot()
        self._persist(BREAKER_PREFIX + breaker.name, snapshot)  # the breaker logs it
        # Opening stops trading on an exchange (or all of them): a safety decision, audited.
        self._audit(
            "circuit-breaker",
            f"breaker.{snapshot['state']}",
            breaker.name,
            why,
            {
                "failures_in_window": snapshot["failures_in_window"],
                "latched": snapshot["latched"],
                "next_probe_at": snapshot["next_probe_at"],
            },
        )

    def _persist(self, key: str, value: dict[str, Any]) -> None:
        """Write in the safety lane, in call order (the lane is FIFO), without making a
        breaker's caller (a send on the order path) wait for the disk."""
        task = asyncio.ensure_future(self.journal.save_safety_state(key, value, self.clock()))
        self._writes.add(task)
        task.add_done_callback(self._write_done)

    def _audit(
        self, actor: str, action: str, subject: str, reason: str, details: dict[str, Any]
    ) -> None:
        task = asyncio.ensure_future(
            self.journal.audit(
                actor=actor,
                action=action,
                subject=subject,
                result="ok",
                reason=reason,
                at=self.clock(),
                details=details,
            )
        )
        self._writes.add(task)
        task.add_done_callback(self._write_done)

    def _write_done(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not persist safety state: %r", task.exception())

    # -- the watch -------------------------------------------------------------------------------

    def start_watch(self, runners: Callable[[], Iterable[BotRunner]], activate: Activate) -> None:
        self._watch_task = asyncio.create_task(self._watch(runners, activate), name="safety-watch")

    async def _watch(self, runners: Callable[[], Iterable[BotRunner]], activate: Activate) -> None:
        while True:
            try:
                await self.check_once(list(runners()), activate)
            except Exception as exc:  # the watch must outlive one bad evaluation; say so loudly
                log.critical("safety watch evaluation failed: %r", exc, exc_info=exc)
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)

    async def check_once(self, runners: list[BotRunner], activate: Activate) -> None:
        """One pass of the watch, in pieces that let the event loop run between them."""
        for n, runner in enumerate(runners, 1):
            self.risk.baseline(runner.name)
            if n % WATCH_CHUNK == 0:
                await asyncio.sleep(0)
        baselines = self.risk.baselines()
        if baselines != self._saved_baselines:
            self._saved_baselines = baselines
            self._persist(BASELINES_KEY, baselines)
        for breach in await self.watch.new_breaches_cooperatively(runners):
            if self.kill_switch.active:
                log.warning(
                    "automatic trigger %s while the switch is active: %s",
                    breach.trigger.value,
                    breach.reason,
                )
                continue
            await activate(breach.reason, breach.trigger)

    async def stop_watch(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task

    async def flush(self) -> None:
        """Wait for the safety state writes still under way."""
        await self.throttle.flush()
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=2.0)

    def status(self) -> dict[str, Any]:
        return self.board.status()
