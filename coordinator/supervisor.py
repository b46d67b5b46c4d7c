"""Supervision: each bot's task, its lifecycle, its restarts; starting bots in sequence.

A `BotRunner` owns one bot's lifecycle. The parts that outlive a crash (the exchange account,
the market feed, the book) are built once; the strategy and the tick loop are rebuilt on every
(re)start, the strategy restored from its persisted state. A crash is restarted after a capped
exponential backoff; `max_consecutive_crashes` crashes in a row (a bot that ran for
`healthy_after_seconds` starts the count again) leave it CRASHED for an operator. Stopping ends
the tick loop (cancelled after a grace period), cancels the bot's open orders and persists its
state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bots.book import BotBook
from bots.bot import Bot, TickStats
from bots.errors import ExchangeError
from bots.exchanges.base import ExchangeAdapter
from bots.feeds.base import MarketFeed
from bots.gateway import (
    BotIdentity,
    OrderGate,
    OrderGateway,
    OrderObserver,
    PartialFillPolicy,
    SendGuard,
)
from bots.ids import ClientOrderIds
from bots.journal import JournalOrder
from bots.retry import RetryPolicy
from bots.strategies.base import Strategy
from coordinator.config.models import BotConfig, BotMode, RecoverySettings
from coordinator.errors import (
    Conflict,
    ExchangeUnavailable,
    UnknownBot,
    UnresolvedOrders,
    WrongState,
)
from coordinator.lifecycle import STARTABLE, STOPPABLE, BotState, check_bot_transition
from coordinator.store.journal import SqliteJournal

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BotParts:
    """What a bot is built from; these outlive restarts of its tick loop."""

    config: BotConfig
    identity: BotIdentity
    adapter: ExchangeAdapter
    feed: MarketFeed
    book: BotBook
    make_strategy: Callable[[], Strategy]
    gates: list[OrderGate] = field(default_factory=list)  # always: kill switch, breakers, mode
    risk_gate: OrderGate | None = None  # the bot's risk limits
    safe_mode_risk_gate: OrderGate | None = None  # the same, tightened: used in safe mode
    send_guard: SendGuard | None = None  # the circuit breakers
    # Run before each start: a live bot reads its opening balances from the exchange here.
    prepare: Callable[[], Awaitable[None]] | None = None
    observer: OrderObserver | None = None  # metrics and alerts hear every order's outcome
    # Told of each order's first fill (the repeated-execution throttle).
    on_execution: Callable[[JournalOrder], None] | None = None


class BotRunner:
    def __init__(
        self,
        parts: BotParts,
        journal: SqliteJournal,
        ids: ClientOrderIds,
        settings: RecoverySettings,
        persisted: Mapping[str, Any] | None = None,
        clock: Callable[[], datetime] | None = None,
        start_guard: Callable[[], str | None] | None = None,
    ) -> None:
        self.parts = parts
        # Asked before every start and restart: a reason not to (the kill switch), or None.
        self.start_guard = start_guard
        self.name = parts.config.name
        self.journal = journal
        self.ids = ids
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        persisted = persisted or {}
        self.state = BotState.STOPPED
        self.safe_mode = False
        self.restarts = int(persisted.get("restarts") or 0)
        self.last_error: str | None = persisted.get("last_error")
        self.strategy_state: dict[str, Any] = dict(persisted.get("strategy_state") or {})
        self.consecutive_crashes = 0
        self.next_restart_at: datetime | None = None
        self.started_at: datetime | None = None  # the latest (re)start of its tick loop
        self.stats = TickStats()
        self._stop = asyncio.Event()
        self._crashed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gateway: OrderGateway | None = None
        self._background: set[asyncio.Future[None]] = set()
        # Orders from a previous process the exchange could not be asked about: the bot may
        # not trade on a book it does not know, so it stays stopped until they are resolved.
        self.unresolved_orders: list[int] = []
        self._resolving = asyncio.Lock()  # one resolution at a time (start-up's and a start's)
        self._error_is_resolution = False  # last_error is about unresolved orders

    # -- control ---------------------------------------------------------------------------------

    async def start(self, safe_mode: bool = False) -> None:
        refusal = self.start_guard() if self.start_guard else None
        if refusal is not None:
            raise Conflict(f"bot {self.name!r} cannot start: {refusal}")
        if self.state not in STARTABLE:
            raise WrongState(
                f"bot {self.name!r} is {self.state.value}; it can be started only "
                f"when stopped or crashed"
            )
        await self._end_task()  # a crashed bot may be waiting out its backoff
        if self.parts.prepare is not None:
            try:
                await self.parts.prepare()
            except ExchangeError as exc:
                self.last_error = f"cannot start: {exc}"
                raise ExchangeUnavailable(f"bot {self.name!r} cannot start: {exc}") from exc
        if self.unresolved_orders:
            await self.resolve_orders_left_live("resolved before start")
            if self.unresolved_orders:
                raise UnresolvedOrders(f"bot {self.name!r} cannot start: {self.last_error}")
        if self.state not in STARTABLE:  # another start or a stop came first while we waited
            raise WrongState(
                f"bot {self.name!r} is {self.state.value}; it was started or stopped "
                "by another request meanwhile"
            )
        # A bot configured in mode "safe" always trades under the safe-mode limits.
        self.safe_mode = safe_mode or self.parts.config.mode is BotMode.SAFE
        self.consecutive_crashes = 0
        self.next_restart_at = None
        self.last_error = None
        self._stop = asyncio.Event()
        self._crashed = asyncio.Event()
        self.stats.healthy = asyncio.Event()
        self.started_at = self._clock()
        await self._move(BotState.STARTING)
        self._task = asyncio.create_task(self._supervise(), name=f"bot:{self.name}")
        self._task.add_done_callback(self._on_task_done)
        log.info("%s: starting%s", self.name, " in safe mode" if safe_mode else "")

    def hold_for_resolution(self) -> None:
        """The orders the journal holds live from the previous run are to be resolved (in the
        background): until they are, the bot may not start."""
        self.unresolved_orders = sorted(self.parts.book.live_orders)
        if self.unresolved_orders:
            self.last_error = (
                f"resolving {len(self.unresolved_orders)} order(s) left in flight by the "
                f"previous run with {self.parts.adapter.name}"
            )
            self._error_is_resolution = True

    async def resolve_orders_left_live(self, detail: str) -> list[int]:
        """Settle the orders the journal holds live with the exchange; returns those it could
        not ask about, which keep the bot from starting."""
        async with self._resolving:
            self.unresolved_orders = await self.gateway().refresh_live_orders(detail)
            if self.unresolved_orders:
                ids = ", ".join(str(i) for i in self.unresolved_orders)
                self.last_error = (
                    f"order(s) {ids} left in flight by the previous run could not be resolved "
                    f"with {self.parts.adapter.name}; the bot stays stopped until they are "
                    "(POST /start asks the exchange again; POST /reconcile shows the differences)"
                )
                self._error_is_resolution = True
                log.error("%s: %s", self.name, self.last_error)
            elif self._error_is_resolution:
                self.last_error = None
                self._error_is_resolution = False
            return self.unresolved_orders

    async def stop(self, reason: str, grace_seconds: float) -> list[str]:
        """Stop ticking, cancel every open order, persist. Returns cancellation errors."""
        if self.state not in STOPPABLE:
            raise WrongState(
                f"bot {self.name!r} is {self.state.value}; only a starting, running "
                f"or crashed bot can be stopped"
            )
        # Set first: a tick that crashes while STOPPING is being written is a crash during the
        # stop, not one to record and restart from (CRASHED is not reachable from STOPPING).
        self._stop.set()
        await self._move(BotState.STOPPING)
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace_seconds)
            if not done:
                if grace_seconds > 0:
                    log.warning(
                        "%s: tick did not end within %.1fs; cancelling it", self.name, grace_seconds
                    )
                await self._end_task()
        errors = await self.gateway().cancel_all(reason)
        if errors:
            self.last_error = "cancel failed: " + "; ".join(errors)
        await self._move(BotState.STOPPED)
        log.info("%s: stopped (%s)", self.name, reason)
        return errors

    async def halt(self, reason: str) -> list[str]:
        """The kill switch's stop: the tick is cancelled at once (no grace), then every open
        order is cancelled. A bot already stopped or stopping is left as it is."""
        if self.state in STOPPABLE:
            return await self.stop(reason, grace_seconds=0)
        if self.state is BotState.STOPPED and self.parts.book.live_orders:
            # A stopped bot can still hold orders: a cancel that failed when it stopped, or an
            # order reconciliation adopted. The kill switch cancels those too.
            errors = await self.gateway().cancel_all(reason)
            if errors:
                self.last_error = "cancel failed: " + "; ".join(errors)
            return errors
        return []

    async def wait_healthy(self, within_seconds: float) -> str | None:
        """Wait for the first healthy tick; None when seen, else why not."""
        healthy = asyncio.ensure_future(self.stats.healthy.wait())
        crashed = asyncio.ensure_future(self._crashed.wait())
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait(
                {healthy, crashed, stopped},
                timeout=within_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in (healthy, crashed, stopped):
                waiter.cancel()
        if healthy in done and self.stats.healthy.is_set():
            return None
        if crashed in done:
            return f"crashed before its first healthy tick: {self.last_error}"
        if stopped in done:
            return "stopped before its first healthy tick"
        reason = self.stats.last_skip_reason or "no tick completed"
        return f"no healthy tick within {within_seconds:g}s ({reason})"

    def gateway(self) -> OrderGateway:
        if self._gateway is None:
            self._gateway = self._make_gateway()
        return self._gateway

    # -- the bot's task --------------------------------------------------------------------------

    def _make_gateway(self) -> OrderGateway:
        gates = list(self.parts.gates)
        risk = self.parts.safe_mode_risk_gate if self.safe_mode else self.parts.risk_gate
        if risk is not None:
            gates.append(risk)
        return OrderGateway(
            self.parts.identity,
            self.parts.adapter,
            self.journal,
            self.ids,
            self.parts.book,
            gates,
            self._clock,
            self.parts.send_guard,
            PartialFillPolicy(
                self.settings.partial_fills.acceptable_fill_ratio,
                timedelta(minutes=self.settings.partial_fills.partial_fill_timeout_minutes),
            ),
            RetryPolicy.from_settings(self.settings.retry),
            self.parts.observer,
            self.parts.on_execution,
        )

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        restart = self.settings.restart
        while True:
            strategy = self.parts.make_strategy()
            strategy.restore(self.strategy_state)
            self._gateway = self._make_gateway()
            bot = Bot(
                self.name,
                strategy,
                self.parts.feed,
                self._gateway,
                self.parts.config.tick_interval_seconds,
                save_state=self._save_strategy_state,
                stats=self.stats,
                clock=self._clock,
                on_tick=self._on_tick,
            )
            began = loop.time()
            try:
                await bot.run(self._stop)
                return
            except Exception as exc:  # a bot's bug or failure: contain it, count it, restart
                if self._stop.is_set():
                    log.error("%s: crashed while stopping: %r", self.name, exc, exc_info=exc)
                    return
                if loop.time() - began >= restart.healthy_after_seconds:
                    self.consecutive_crashes = 0
                self.consecutive_crashes += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "%s: crashed (%d in a row): %s",
                    self.name,
                    self.consecutive_crashes,
                    self.last_error,
                    exc_info=exc,
                )
                await self._move(BotState.CRASHED)
                self._crashed.set()
            if self.consecutive_crashes >= restart.max_consecutive_crashes:
                log.critical(
                    "%s: crash loop: %d crashes in a row; not restarting until an "
                    "operator starts it",
                    self.name,
                    self.consecutive_crashes,
                )
                await self.journal.audit(
                    actor="supervisor",
                    action="bot.crash_loop",
                    subject=self.name,
                    result="left crashed",
                    reason=self.last_error,
                    at=self._clock(),
                    details={"consecutive_crashes": self.consecutive_crashes},
                )
                return
            delay = min(
                restart.initial_backoff_seconds
                * restart.multiplier ** (self.consecutive_crashes - 1),
                restart.max_backoff_seconds,
            )
            self.next_restart_at = self._clock() + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            if self._stop.is_set():
                return
            self.next_restart_at = None
            refusal = self.start_guard() if self.start_guard else None
            if refusal is not None:
                log.warning("%s: not restarting: %s", self.name, refusal)
                return
            self.restarts += 1
            self.started_at = self._clock()
            self.stats.healthy = asyncio.Event()
            log.warning("%s: restarting (restart %d)", self.name, self.restarts)
            await self._move(BotState.STARTING)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # The supervision itself failed (the store, most likely): the bot is not trading.
            log.critical("%s: supervisor task failed: %r", self.name, exc, exc_info=exc)
            self.last_error = f"supervisor failed: {type(exc).__name__}: {exc}"
            if self.state is not BotState.STOPPING and self.state is not BotState.CRASHED:
                self.state = BotState.CRASHED
            self._crashed.set()
            # Record it too, if the store still can (it may be what failed).
            persist = asyncio.ensure_future(self._persist_state())
            self._background.add(persist)
            persist.add_done_callback(self._background.discard)
            persist.add_done_callback(_log_persist_failure)

    async def _end_task(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _on_tick(self) -> None:
        if self.state is BotState.STARTING:
            await self._move(BotState.RUNNING)
            log.info("%s: running (first healthy tick)", self.name)

    async def _save_strategy_state(self, state: dict[str, Any]) -> None:
        self.strategy_state = state
        await self.journal.save_bot_state(self.name, self._clock(), strategy_state=state)

    async def _move(self, target: BotState) -> None:
        check_bot_transition(self.name, self.state, target)
        self.state = target
        await self._persist_state()

    async def _persist_state(self) -> None:
        await self.journal.save_bot_state(
            self.name,
            self._clock(),
            state=self.state.value,
            safe_mode=self.safe_mode,
            restarts=self.restarts,
            last_error=self.last_error,
            last_tick_at=self.stats.last_tick_at,
        )


def _log_persist_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("could not record a failed supervisor's state: %r", done.exception())


class Supervisor:
    def __init__(self, runners: Mapping[str, BotRunner], settings: RecoverySettings) -> None:
        self.runners = dict(runners)
        self.settings = settings
        self._sequence_lock = asyncio.Lock()

    def runner(self, name: str) -> BotRunner:
        try:
            return self.runners[name]
        except KeyError:
            raise UnknownBot(name, list(self.runners)) from None

    async def start(self, name: str, safe_mode: bool = False) -> BotRunner:
        runner = self.runner(name)
        await runner.start(safe_mode)
        return runner

    async def stop(self, name: str, reason: str) -> list[str]:
        return await self.runner(name).stop(reason, self.settings.shutdown.grace_seconds)

    async def start_sequential(
        self, refuse: Callable[[BotRunner], Awaitable[str | None]] | None = None
    ) -> dict[str, Any]:
        """Start the stopped bots one at a time, each after the one before has ticked healthily.

        Stops at the first bot that does not become healthy. Crashed bots are left for an
        operator to start one by one. `refuse(runner)`, asked before each start: a reason not
        to start that bot (its config is not approved), which lists it under "refused" and
        goes on with the next one.
        """
        if self._sequence_lock.locked():
            raise Conflict("a sequential start is already in progress")
        async with self._sequence_lock:
            seq = self.settings.sequential_start
            result: dict[str, Any] = {
                "started": [],
                "already_running": [],
                "skipped": {},
                "refused": {},
                "failed": None,
                "not_started": [],
            }
            pending = list(self.runners.values())
            while pending:
                runner = pending.pop(0)
                if runner.state is BotState.CRASHED:
                    result["skipped"][runner.name] = (
                        f"crashed ({runner.last_error}); start it on its own after investigating"
                    )
                    continue
                if runner.state is not BotState.STOPPED:
                    result["already_running"].append(runner.name)
                    continue
                if refuse is not None and (refusal := await refuse(runner)) is not None:
                    result["refused"][runner.name] = refusal
                    continue
                if result["started"] and seq.delay_between_starts_seconds > 0:
                    await asyncio.sleep(seq.delay_between_starts_seconds)
                try:
                    await runner.start(safe_mode=False)
                except WrongState:  # an operator started it meanwhile
                    result["already_running"].append(runner.name)
                    continue
                except (UnresolvedOrders, ExchangeUnavailable) as exc:  # this bot's, not all
                    problem: str | None = exc.message
                else:
                    problem = await runner.wait_healthy(seq.health_timeout_seconds)
                if problem is not None:
                    result["failed"] = {"bot": runner.name, "reason": problem}
                    result["not_started"] = [r.name for r in pending if r.state is BotState.STOPPED]
                    log.error("start-sequential halted at %s: %s", runner.name, problem)
                    break
                result["started"].append(runner.name)
            return result

    async def stop_all(
        self, reason: str, grace_seconds: float | None = None
    ) -> dict[str, list[str]]:
        """Stop every bot that is not stopped, concurrently; cancellation errors by bot."""
        grace = self.settings.shutdown.grace_seconds if grace_seconds is None else grace_seconds
        stoppable = [r for r in self.runners.values() if r.state in STOPPABLE]
        outcomes = await asyncio.gather(
            *(r.stop(reason, grace) for r in stoppable),
            return_exceptions=True,
        )
        errors: dict[str, list[str]] = {}
        for runner, outcome in zip(stoppable, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.error("%s: stop failed: %r", runner.name, outcome, exc_info=outcome)
                errors[runner.name] = [f"stop failed: {outcome}"]
            elif outcome:
                errors[runner.name] = outcome
        return errors
