"""Supervision against a real Coordinator: real store, paper exchanges, simulated feeds.

Only strategies and feeds are swapped in where a test needs a bot to crash or hang; the runner,
supervisor, gateway, journal and exchange are the real ones.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bots.exchanges.paper import PaperExchange
from bots.feeds.base import MarketFeed
from bots.journal import OrderStatus
from bots.models import MarketSnapshot, OrderIntent, OrderType, Side
from bots.strategies.base import Decision, Strategy, TickContext
from coordinator.config import load_config
from coordinator.config.models import CoordinatorConfig
from coordinator.errors import Conflict, WrongState
from coordinator.lifecycle import BotState
from coordinator.runtime import Coordinator
from coordinator.supervisor import BotRunner
from tests.support_config import (
    GRACE,
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    MAX_CRASHES,
    eventually,
    write_fast_config,
)

# -- strategies and feeds a test swaps in ---------------------------------------------------------


class CrashingStrategy:
    """Raises on every tick, noting when."""

    name = "crashing"

    def __init__(self, ticks: list[float]) -> None:
        self.ticks = ticks

    def on_tick(self, ctx: TickContext) -> list[Decision]:
        self.ticks.append(time.monotonic())
        raise RuntimeError("strategy bug")

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        pass


class Observed:
    """The real strategy, with a hook called before each tick."""

    def __init__(self, inner: Strategy, hook: Callable[[], None]) -> None:
        self.inner = inner
        self.name = inner.name
        self.hook = hook

    def on_tick(self, ctx: TickContext) -> list[Decision]:
        self.hook()
        return self.inner.on_tick(ctx)

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def restore(self, state: dict[str, Any]) -> None:
        self.inner.restore(state)


class SlowFirstSnapshot:
    """The real feed, with its first snapshot delayed."""

    def __init__(self, inner: MarketFeed, delay: float) -> None:
        self.inner = inner
        self.symbol = inner.symbol
        self.delay = delay
        self.calls = 0

    async def snapshot(self) -> MarketSnapshot:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(self.delay)
        return await self.inner.snapshot()

    async def close(self) -> None:
        await self.inner.close()


class HangsAfterFirstSnapshot:
    """The real feed for one snapshot; every later snapshot hangs until cancelled."""

    def __init__(self, inner: MarketFeed) -> None:
        self.inner = inner
        self.symbol = inner.symbol
        self.calls = 0
        self.hanging = asyncio.Event()
        self.cancelled = False

    async def snapshot(self) -> MarketSnapshot:
        self.calls += 1
        if self.calls > 1:
            self.hanging.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        return await self.inner.snapshot()

    async def close(self) -> None:
        await self.inner.close()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> CoordinatorConfig:
    """The fast test config with the kill switch's crash-loop trigger off: these tests prove what
    the supervisor does with a crash loop (left crashed, counted, audited), and the safety watch,
    which looks once a second, would otherwise halt the crashed bot (crashed -> stopped) at a
    moment that depends on the machine. The trigger is proven in tests/coordinator/safety/
    test_monitor.py and end to end by the crash-loop drill."""

    def no_crash_loop_trigger(documents: dict[str, Any]) -> None:
        documents["kill-switch.json"]["triggers"]["bot_crash_loop"] = False

    return load_config(write_fast_config(tmp_path / "config", no_crash_loop_trigger))


def crash_every_tick(runner: BotRunner) -> list[float]:
    ticks: list[float] = []
    runner.parts.make_strategy = lambda: CrashingStrategy(ticks)
    return ticks


async def crash_loop(runner: BotRunner) -> list[float]:
    """Start `runner` with a strategy that always raises; return once it is left crashed."""
    ticks = crash_every_tick(runner)
    await runner.start()
    await eventually(
        lambda: runner.consecutive_crashes == MAX_CRASHES and runner.state is BotState.CRASHED,
        what="the crash loop",
    )
    return ticks


async def bot_row(coordinator: Coordinator, name: str) -> dict[str, Any]:
    row = await coordinator.journal.load_bot_row(name)
    assert row is not None
    return dict(row)


async def row_eventually(
    coordinator: Coordinator, name: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2
    while not predicate(row := await bot_row(coordinator, name)):
        if loop.time() > deadline:
            pytest.fail(f"the bots row of {name} never matched: {row}")
        await asyncio.sleep(0.01)
    return row


# -- start, run, crash ----------------------------------------------------------------------------


async def test_start_moves_to_starting_then_to_running_after_the_first_healthy_tick(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner("ndax")

    await coordinator.supervisor.start("ndax")

    assert runner.state is BotState.STARTING
    assert runner.stats.ticks == 0
    assert (await bot_row(coordinator, "ndax"))["state"] == "starting"
    assert await runner.wait_healthy(2) is None
    await eventually(lambda: runner.state is BotState.RUNNING, what="running")
    assert runner.stats.ticks >= 1
    assert runner.parts.book.orders_count >= 1  # the first DCA buy went out
    await eventually(lambda: runner.parts.book.fills_count >= 1, what="a fill")
    # The state changes in memory first; the journal has it once the write commits.
    await row_eventually(coordinator, "ndax", lambda row: row["state"] == "running")


async def test_a_crashing_bot_is_restarted_with_backoff_then_left_crashed_in_a_crash_loop(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner("ndax")

    ticks = await crash_loop(runner)

    assert len(ticks) == MAX_CRASHES
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    expected = [INITIAL_BACKOFF * 2**i for i in range(MAX_CRASHES - 1)]  # 0.05, 0.1
    for gap, backoff in zip(gaps, expected, strict=True):
        assert gap >= backoff - 0.01, (gaps, expected)
    assert runner.restarts == MAX_CRASHES - 1
    assert runner.last_error == "RuntimeError: strategy bug"
    assert runner.next_restart_at is None

    # Well past the longest backoff: no further restart.
    await asyncio.sleep(MAX_BACKOFF * 3)
    assert len(ticks) == MAX_CRASHES
    assert runner.state is BotState.CRASHED
    row = await bot_row(coordinator, "ndax")
    assert row["state"] == "crashed"
    assert row["restarts"] == MAX_CRASHES - 1
    assert row["last_error"] == "RuntimeError: strategy bug"
    status = coordinator.bot_status(runner)
    assert status["restarts"] == MAX_CRASHES - 1
    assert status["error"] == "RuntimeError: strategy bug"
    crash_loops = [
        e for e in await coordinator.journal.recent_audit(20) if e["action"] == "bot.crash_loop"
    ]
    assert [(e["subject"], e["actor"], e["reason"]) for e in crash_loops] == [
        ("ndax", "supervisor", "RuntimeError: strategy bug")
    ]


async def test_restart_count_survives_a_new_coordinator_on_the_same_store(
    config: CoordinatorConfig, data_dir: Path
) -> None:
    first = await Coordinator.open(config, data_dir)
    try:
        await crash_loop(first.supervisor.runner("ndax"))
    finally:
        await first.close(grace_seconds=0.5)

    second = await Coordinator.open(config, data_dir)
    try:
        runner = second.supervisor.runner("ndax")
        assert runner.state is BotState.STOPPED
        assert runner.restarts == MAX_CRASHES - 1
        assert runner.last_error == "RuntimeError: strategy bug"
    finally:
        await second.close(grace_seconds=0.5)


async def test_an_operator_start_after_a_crash_loop_runs_the_bot_again(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner("ndax")
    healthy = runner.parts.make_strategy
    await crash_loop(runner)

    runner.parts.make_strategy = healthy
    await coordinator.supervisor.start("ndax")

    assert await runner.wait_healthy(2) is None
    await eventually(lambda: runner.state is BotState.RUNNING, what="running")
    assert runner.consecutive_crashes == 0
    assert runner.last_error is None


async def test_two_starts_of_a_crashed_bot_at_once_start_it_once(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner("ndax")
    # A long backoff: the bot is still waiting to restart when the operator starts it.
    restart = runner.settings.restart.model_copy(
        update={"initial_backoff_seconds": 30.0, "max_backoff_seconds": 30.0}
    )
    runner.settings = runner.settings.model_copy(update={"restart": restart})
    healthy = runner.parts.make_strategy
    crash_every_tick(runner)
    await runner.start()
    await eventually(lambda: runner.next_restart_at is not None, what="the restart backoff")
    runner.parts.make_strategy = healthy

    outcomes = await asyncio.gather(
        runner.start(safe_mode=True), runner.start(safe_mode=False), return_exceptions=True
    )

    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1, outcomes
    assert isinstance(errors[0], WrongState)
    winner_safe_mode = outcomes.index(None) == 0
    assert runner.safe_mode is winner_safe_mode
    assert await runner.wait_healthy(2) is None
    await eventually(lambda: runner.state is BotState.RUNNING, what="running")


# -- control errors -------------------------------------------------------------------------------


async def test_start_on_a_running_bot_is_refused(coordinator: Coordinator) -> None:
    runner = await coordinator.supervisor.start("ndax")
    assert await runner.wait_healthy(2) is None

    with pytest.raises(WrongState) as caught:
        await coordinator.supervisor.start("ndax")

    assert caught.value.status == 409
    assert caught.value.code == "wrong_state"
    assert runner.state is BotState.RUNNING


async def test_stop_on_a_stopped_bot_is_refused(coordinator: Coordinator) -> None:
    with pytest.raises(WrongState) as caught:
        await coordinator.supervisor.stop("kraken", "test")

    assert caught.value.status == 409
    assert "stopped" in caught.value.message
    assert coordinator.supervisor.runner("kraken").state is BotState.STOPPED


# -- stopping -------------------------------------------------------------------------------------


async def order_statuses(coordinator: Coordinator, bot: str) -> dict[int, str]:
    rows = await coordinator.store.fetch_all(
        "SELECT client_order_id, status FROM orders WHERE bot = ?", (bot,)
    )
    return {row["client_order_id"]: row["status"] for row in rows}


async def test_stopping_a_grid_bot_cancels_every_resting_order(coordinator: Coordinator) -> None:
    runner = await coordinator.supervisor.start("kraken")
    book = runner.parts.book
    # Six acknowledged orders: an order is in the book from the moment its intent commits,
    # before it is sent, so count the open ones.
    await eventually(
        lambda: sum(o.status is OrderStatus.OPEN for o in book.live_orders.values()) == 6,
        what="the grid ladder (3 buys, 3 sells) open",
    )
    resting = set(book.live_orders)
    assert set((await order_statuses(coordinator, "kraken")).values()) == {"open"}

    errors = await coordinator.supervisor.stop("kraken", "test stop")

    assert errors == []
    assert runner.state is BotState.STOPPED
    statuses = await order_statuses(coordinator, "kraken")
    assert set(statuses) == resting
    assert set(statuses.values()) == {"canceled"}
    assert await runner.parts.adapter.fetch_open_orders(runner.parts.config.symbol) == []
    assert book.live_orders == {}
    assert coordinator.bot_status(runner)["open_orders"] == 0
    assert (await bot_row(coordinator, "kraken"))["state"] == "stopped"


async def test_a_stop_whose_tick_hangs_past_the_grace_is_cancelled_and_ends_stopped(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner("kraken")
    feed = HangsAfterFirstSnapshot(runner.parts.feed)
    runner.parts.feed = feed
    await coordinator.supervisor.start("kraken")
    assert await runner.wait_healthy(2) is None
    await asyncio.wait_for(feed.hanging.wait(), timeout=2)
    loop = asyncio.get_running_loop()

    began = loop.time()
    errors = await coordinator.supervisor.stop("kraken", "test stop")
    took = loop.time() - began

    assert GRACE - 0.05 <= took < GRACE + 1.0
    assert feed.cancelled
    assert errors == []
    assert runner.state is BotState.STOPPED
    assert runner.parts.book.live_orders == {}
    assert (await bot_row(coordinator, "kraken"))["state"] == "stopped"


async def test_a_crash_while_the_stop_is_being_recorded_still_ends_stopped_cleanly(
    coordinator: Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    """The tick that runs while `stop` writes STOPPING to the journal raises: that is a crash
    during a stop, not a crash to restart from (nor a failure of the supervisor)."""
    runner = coordinator.supervisor.runner("ndax")
    inner = runner.parts.feed
    waiting = asyncio.Event()

    class WaitsForTheStop:
        symbol = inner.symbol
        calls = 0

        async def snapshot(self) -> MarketSnapshot:
            self.calls += 1
            if self.calls > 1:
                waiting.set()
                # Poll every loop iteration: the window is one journal write long.
                while runner.state is not BotState.STOPPING:  # noqa: ASYNC110
                    await asyncio.sleep(0)
            return await inner.snapshot()

        async def close(self) -> None:
            await inner.close()

    def raise_when_stopping() -> None:
        if runner.state is BotState.STOPPING:
            raise RuntimeError("crash during stop")

    runner.parts.feed = WaitsForTheStop()
    make = runner.parts.make_strategy
    runner.parts.make_strategy = lambda: Observed(make(), raise_when_stopping)
    await coordinator.supervisor.start("ndax")
    await asyncio.wait_for(waiting.wait(), timeout=2)

    with caplog.at_level(logging.INFO, logger="coordinator.supervisor"):
        errors = await coordinator.supervisor.stop("ndax", "test stop")

    assert errors == []
    assert runner.state is BotState.STOPPED
    assert runner.restarts == 0
    assert not (runner.last_error or "").startswith("supervisor failed"), runner.last_error
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert (await bot_row(coordinator, "ndax"))["state"] == "stopped"


# -- start-sequential -----------------------------------------------------------------------------


async def test_start_sequential_starts_bots_in_config_order_each_after_the_previous_is_healthy(
    coordinator: Coordinator,
) -> None:
    ndax = coordinator.supervisor.runner("ndax")
    kraken = coordinator.supervisor.runner("kraken")
    ndax.parts.feed = SlowFirstSnapshot(ndax.parts.feed, delay=0.3)
    ndax_when_kraken_first_ticked: list[BotState] = []

    def note_ndax() -> None:
        if not ndax_when_kraken_first_ticked:
            ndax_when_kraken_first_ticked.append(ndax.state)

    make = kraken.parts.make_strategy
    kraken.parts.make_strategy = lambda: Observed(make(), note_ndax)

    result = await coordinator.supervisor.start_sequential()

    assert result == {
        "started": ["ndax", "kraken"],
        "already_running": [],
        "skipped": {},
        "refused": {},
        "failed": None,
        "not_started": [],
    }
    assert ndax_when_kraken_first_ticked == [BotState.RUNNING]
    assert ndax.state is BotState.RUNNING
    await eventually(lambda: kraken.state is BotState.RUNNING, what="kraken running")


async def test_start_sequential_halts_at_a_bot_that_does_not_become_healthy(
    coordinator: Coordinator,
) -> None:
    crash_every_tick(coordinator.supervisor.runner("ndax"))

    result = await coordinator.supervisor.start_sequential()

    assert result["started"] == []
    assert result["failed"]["bot"] == "ndax"
    assert "crashed before its first healthy tick" in result["failed"]["reason"]
    assert "strategy bug" in result["failed"]["reason"]
    assert result["not_started"] == ["kraken"]
    assert coordinator.supervisor.runner("kraken").state is BotState.STOPPED


async def test_start_sequential_reports_bots_already_running(coordinator: Coordinator) -> None:
    kraken = await coordinator.supervisor.start("kraken")
    assert await kraken.wait_healthy(2) is None

    result = await coordinator.supervisor.start_sequential()

    assert result["started"] == ["ndax"]
    assert result["already_running"] == ["kraken"]


async def test_start_sequential_skips_crashed_bots_with_a_reason(coordinator: Coordinator) -> None:
    await crash_loop(coordinator.supervisor.runner("ndax"))

    result = await coordinator.supervisor.start_sequential()

    assert result["started"] == ["kraken"]
    assert list(result["skipped"]) == ["ndax"]
    assert "crashed" in result["skipped"]["ndax"]
    assert "strategy bug" in result["skipped"]["ndax"]
    assert result["failed"] is None
    assert coordinator.supervisor.runner("ndax").state is BotState.CRASHED


async def test_a_second_concurrent_start_sequential_is_refused(coordinator: Coordinator) -> None:
    ndax = coordinator.supervisor.runner("ndax")
    ndax.parts.feed = SlowFirstSnapshot(ndax.parts.feed, delay=0.3)
    first = asyncio.create_task(coordinator.supervisor.start_sequential())
    await eventually(lambda: ndax.state is BotState.STARTING, what="the first sequence")

    with pytest.raises(Conflict) as caught:
        await coordinator.supervisor.start_sequential()

    assert caught.value.code == "conflict"
    assert caught.value.status == 409
    assert "already in progress" in caught.value.message
    result = await first
    assert result["started"] == ["ndax", "kraken"]


async def test_stopping_a_bot_while_the_sequence_waits_for_it_ends_the_wait_at_once(
    coordinator: Coordinator,
) -> None:
    ndax = coordinator.supervisor.runner("ndax")
    ndax.parts.feed = SlowFirstSnapshot(ndax.parts.feed, delay=30)  # far past the health timeout
    sequence = asyncio.create_task(coordinator.supervisor.start_sequential())
    await eventually(lambda: ndax.state is BotState.STARTING, what="ndax starting")

    await coordinator.supervisor.stop("ndax", "operator changed their mind")
    result = await asyncio.wait_for(sequence, timeout=2)  # not the 3 s health timeout

    assert result["failed"] == {"bot": "ndax", "reason": "stopped before its first healthy tick"}
    assert result["not_started"] == ["kraken"]
    assert ndax.state is BotState.STOPPED


# -- safe mode ------------------------------------------------------------------------------------


@pytest.fixture
def tight_limits_coordinator_config(tmp_path: Path) -> CoordinatorConfig:
    def tighten(documents: dict[str, Any]) -> None:
        documents["bot-limits.json"]["bots"]["ndax"]["max_order_notional"] = 100

    return load_config(write_fast_config(tmp_path / "tight", tighten))


async def test_safe_mode_refuses_orders_above_the_tightened_limit_and_sends_nothing(
    tight_limits_coordinator_config: CoordinatorConfig, data_dir: Path
) -> None:
    # ndax buys 25 CAD a time; its limit is set to 100 CAD here, 10 CAD in safe mode.
    coordinator = await Coordinator.open(tight_limits_coordinator_config, data_dir)
    try:
        await _safe_mode_refuses(coordinator)
    finally:
        await coordinator.close(grace_seconds=0.5)


async def test_the_shipped_dca_bot_trades_in_safe_mode(coordinator: Coordinator) -> None:
    # The shipped limit (250 CAD, so 25 CAD in safe mode) lets the 25 CAD DCA buy through:
    # the runbook's first step after an incident is this bot in safe mode.
    runner = await coordinator.supervisor.start("ndax", safe_mode=True)
    await eventually(
        lambda: runner.parts.book.fills_count >= 1,
        what=f"a fill in safe mode ({runner.parts.book.last_refusal})",
    )
    assert runner.parts.book.refusals == {}


async def _safe_mode_refuses(coordinator: Coordinator) -> None:
    runner = await coordinator.supervisor.start("ndax", safe_mode=True)
    book = runner.parts.book

    await eventually(
        lambda: book.refusals.get("max_order_notional", 0) >= 2,
        what="two safe-mode refusals",
    )

    assert runner.safe_mode is True
    assert book.refusals == {"max_order_notional": book.refusals["max_order_notional"]}
    assert book.orders_count == 0
    assert book.fills_count == 0
    assert await order_statuses(coordinator, "ndax") == {}
    assert await runner.parts.adapter.fetch_open_orders(runner.parts.config.symbol) == []
    status = coordinator.bot_status(runner)
    assert status["safe_mode"] is True
    assert status["orders"] == 0
    assert status["last_refusal"].startswith("max_order_notional:")
    assert "safe-mode figure" in status["last_refusal"]
    assert (await bot_row(coordinator, "ndax"))["safe_mode"] == 1


async def test_the_kill_switch_cancels_orders_a_stopped_bot_still_holds(
    coordinator: Coordinator,
) -> None:
    """A stopped bot may still hold an order (a cancel that failed when it stopped, an order
    reconciliation adopted): the kill switch cancels it as well."""
    runner = coordinator.supervisor.runner("kraken")
    gateway = runner.gateway()
    await gateway.sync(await runner.parts.feed.snapshot())
    assert runner.parts.book.last_price is not None
    price = (runner.parts.book.last_price * Decimal("0.97")).quantize(Decimal("0.01"))
    sent = await gateway.submit(
        OrderIntent("BTC/AUD", Side.BUY, OrderType.LIMIT, Decimal("0.001"), price)
    )
    assert sent.outcome == "sent"
    assert sent.client_order_id is not None
    assert runner.state is BotState.STOPPED

    await coordinator.activate_kill_switch("drill", "test")

    assert runner.parts.book.live_orders == {}
    exchange = runner.parts.adapter
    assert isinstance(exchange, PaperExchange)
    assert (await exchange.fetch_order(sent.client_order_id, "BTC/AUD")).status.value == "canceled"
