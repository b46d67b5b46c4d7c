"""The kill switch's automatic triggers (TriggerWatch), over a real coordinator's bots, books and
breakers on a fake wall clock: each trigger at its limit and not before, with a reason naming the
bot (or currency) and the limit, and edge-triggering (once per occurrence, not once a round)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from coordinator.config import load_config
from coordinator.config.models import CoordinatorConfig
from coordinator.lifecycle import BotState
from coordinator.runtime import Coordinator
from coordinator.safety.kill_switch import Trigger
from coordinator.safety.monitor import Breach, TriggerWatch
from coordinator.supervisor import BotRunner
from tests.support_config import MAX_CRASHES, FakeClock, write_fast_config

D = Decimal
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
# config/kill-switch.json's triggers, which the fast config keeps.
MAX_FAILURES = 5
MAX_DAILY_LOSS = D(2000)
BREAKER_MINUTES = 15


@dataclass
class Rig:
    coordinator: Coordinator
    watch: TriggerWatch
    clock: FakeClock

    @property
    def runners(self) -> list[BotRunner]:
        return list(self.coordinator.supervisor.runners.values())

    def runner(self, name: str) -> BotRunner:
        return self.coordinator.supervisor.runner(name)

    def fresh(self) -> list[Breach]:
        return self.watch.new_breaches(self.runners)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


async def open_rig(config: CoordinatorConfig, data_dir: Path, clock: FakeClock) -> Rig:
    coordinator = await Coordinator.open(config, data_dir, clock=clock)
    # The tests drive every round of the watch themselves.
    await coordinator.safety.stop_watch()
    return Rig(coordinator, coordinator.safety.watch, clock)


@pytest.fixture
async def rig(config: CoordinatorConfig, data_dir: Path, clock: FakeClock) -> AsyncIterator[Rig]:
    opened = await open_rig(config, data_dir, clock)
    try:
        yield opened
    finally:
        await opened.coordinator.close(grace_seconds=0.5)


def test_the_fast_config_keeps_the_shipped_triggers(config: CoordinatorConfig) -> None:
    triggers = config.kill_switch.triggers
    assert triggers.max_consecutive_order_failures == MAX_FAILURES
    assert triggers.max_daily_loss == MAX_DAILY_LOSS
    assert triggers.max_drawdown_pct == D(10)
    assert triggers.exchange_breaker_open_minutes == BREAKER_MINUTES
    assert triggers.bot_crash_loop is True
    assert config.recovery.restart.max_consecutive_crashes == MAX_CRASHES


def set_pnl(runner: BotRunner, realized: Decimal) -> None:
    book = runner.parts.book
    book.position = replace(book.position, realized_pnl=realized)


# -- consecutive order failures ------------------------------------------------------------------


async def test_consecutive_order_failures_fire_at_the_limit_and_not_one_below(rig: Rig) -> None:
    book = rig.runner("ndax").parts.book

    book.consecutive_failures = MAX_FAILURES - 1
    assert rig.fresh() == []

    book.consecutive_failures = MAX_FAILURES
    [breach] = rig.fresh()
    assert breach.trigger is Trigger.ORDER_FAILURES
    assert breach.reason.startswith("ndax: ")
    assert f"{MAX_FAILURES} orders in a row failed" in breach.reason
    assert f"(limit {MAX_FAILURES})" in breach.reason


async def test_the_cooperative_pass_finds_what_the_plain_one_finds(
    config: CoordinatorConfig, data_dir: Path, clock: FakeClock, rig: Rig
) -> None:
    rig.runner("ndax").parts.book.consecutive_failures = MAX_FAILURES
    crash(rig.runner("kraken"), MAX_CRASHES)
    plain = rig.fresh()
    rig.watch._holding = set()  # forget them, so the next pass finds them fresh again

    cooperative = await rig.watch.new_breaches_cooperatively(rig.runners)

    assert sorted(b.key for b in cooperative) == sorted(b.key for b in plain)
    assert len(plain) == 2
    assert await rig.watch.new_breaches_cooperatively(rig.runners) == []  # held: not fresh


# -- crash loop ----------------------------------------------------------------------------------


def crash(runner: BotRunner, times: int) -> None:
    runner.state = BotState.CRASHED
    runner.consecutive_crashes = times
    runner.last_error = "RuntimeError: feed exploded"


async def test_a_bot_crashed_max_consecutive_crashes_times_is_a_crash_loop(rig: Rig) -> None:
    kraken = rig.runner("kraken")

    crash(kraken, MAX_CRASHES - 1)  # crashed, waiting out its backoff: not a loop yet
    assert rig.fresh() == []

    crash(kraken, MAX_CRASHES)
    [breach] = rig.fresh()
    assert breach.trigger is Trigger.CRASH_LOOP
    assert breach.reason.startswith("kraken ")
    assert f"{MAX_CRASHES} crashes in a row" in breach.reason
    assert f"limit {MAX_CRASHES}" in breach.reason
    assert "RuntimeError: feed exploded" in breach.reason


async def test_crash_count_alone_is_no_crash_loop_while_the_bot_is_not_crashed(rig: Rig) -> None:
    kraken = rig.runner("kraken")
    kraken.consecutive_crashes = MAX_CRASHES  # e.g. an operator is starting it again
    kraken.state = BotState.STARTING
    assert rig.fresh() == []


async def test_no_crash_loop_trigger_when_bot_crash_loop_is_false(
    rig: Rig, config: CoordinatorConfig
) -> None:
    safety = rig.coordinator.safety
    off = config.kill_switch.triggers.model_copy(update={"bot_crash_loop": False})
    watch = TriggerWatch(off, config.recovery.restart, safety.risk, safety.board, rig.clock)
    crash(rig.runner("kraken"), MAX_CRASHES + 2)

    assert watch.new_breaches(rig.runners) == []
    assert [b.trigger for b in rig.fresh()] == [Trigger.CRASH_LOOP]  # the shipped setting


# -- drawdown ------------------------------------------------------------------------------------


def mark(runner: BotRunner, aud: str, btc: str, price: str) -> None:
    book = runner.parts.book
    book.balances = {"AUD": D(aud), "BTC": D(btc)}
    book.last_price = D(price)


async def test_drawdown_past_the_limit_from_the_equity_peak_fires(rig: Rig) -> None:
    kraken = rig.runner("kraken")
    # Equity is the quote balance plus the base balance at the last price: 10000 + 0.1 x 100000.
    mark(kraken, "10000", "0.1", "100000")
    assert rig.fresh() == []  # the peak: 20000 AUD

    mark(kraken, "10000", "0.1", "80000")  # 18000: exactly 10 % down, not past it
    assert rig.fresh() == []

    mark(kraken, "10000", "0.1", "79000")  # 17900: 10.5 % down
    [breach] = rig.fresh()
    assert breach.trigger is Trigger.DRAWDOWN
    assert breach.reason.startswith("kraken: ")
    assert "10.50 % below its peak" in breach.reason
    assert "(limit 10 %)" in breach.reason


async def test_drawdown_is_measured_from_the_highest_equity_seen(rig: Rig) -> None:
    kraken = rig.runner("kraken")
    mark(kraken, "10000", "0.1", "100000")  # 20000
    assert rig.fresh() == []
    mark(kraken, "10000", "0.1", "120000")  # 22000: the new peak
    assert rig.fresh() == []

    mark(kraken, "10000", "0.1", "98000")  # 19800: 10 % below 22000, but above the old 20000
    assert rig.fresh() == []
    mark(kraken, "10000", "0.1", "97000")  # 19700: 10.45 % below 22000
    [breach] = rig.fresh()
    assert breach.trigger is Trigger.DRAWDOWN
    assert "10.45 %" in breach.reason


async def test_a_fall_in_the_quote_balance_is_a_drawdown_too(rig: Rig) -> None:
    kraken = rig.runner("kraken")
    mark(kraken, "10000", "0.1", "100000")  # 20000
    assert rig.fresh() == []
    mark(kraken, "7000", "0.1", "100000")  # 17000: the price held, the AUD went
    assert [b.trigger for b in rig.fresh()] == [Trigger.DRAWDOWN]


async def test_no_drawdown_before_the_first_price(rig: Rig) -> None:
    kraken = rig.runner("kraken")
    kraken.parts.book.balances = {"AUD": D(1), "BTC": D(0)}
    kraken.parts.book.last_price = None
    assert rig.fresh() == []


# -- daily loss ----------------------------------------------------------------------------------


async def test_the_daily_loss_fires_at_the_limit_in_the_bots_quote_currency(rig: Rig) -> None:
    ndax = rig.runner("ndax")  # BTC/CAD; its baseline (PnL 0) was taken when it registered

    set_pnl(ndax, D("-1999.99"))
    assert rig.fresh() == []

    set_pnl(ndax, -MAX_DAILY_LOSS)
    [breach] = rig.fresh()
    assert breach.trigger is Trigger.DAILY_LOSS
    assert "CAD bots" in breach.reason
    assert "is 2000.00 CAD" in breach.reason
    assert "(limit 2000 CAD)" in breach.reason


async def test_losses_in_different_quote_currencies_are_not_added_together(rig: Rig) -> None:
    # 1500 CAD + 1500 AUD is not a 3000 loss in anything: each is under the 2000 limit.
    set_pnl(rig.runner("ndax"), D(-1500))
    set_pnl(rig.runner("kraken"), D(-1500))
    assert rig.fresh() == []

    set_pnl(rig.runner("kraken"), D(-2000))
    [breach] = rig.fresh()
    assert breach.trigger is Trigger.DAILY_LOSS
    assert "AUD" in breach.reason
    assert "CAD" not in breach.reason
    assert "is 2000.00 AUD" in breach.reason


@pytest.fixture
def two_cad_bots(tmp_path: Path) -> CoordinatorConfig:
    """The fast config with a second BTC/CAD bot, `ndax_b` (loaded outside the event loop)."""

    def second_cad_bot(docs: dict[str, Any]) -> None:
        bots = docs["bots.json"]["bots"]
        twin = copy.deepcopy(next(b for b in bots if b["name"] == "ndax"))
        twin["name"] = "ndax_b"
        bots.append(twin)

    return load_config(write_fast_config(tmp_path / "two-cad-bots", second_cad_bot))


async def test_losses_of_bots_in_the_same_quote_currency_are_added_together(
    two_cad_bots: CoordinatorConfig, data_dir: Path, clock: FakeClock
) -> None:
    config = two_cad_bots
    rig = await open_rig(config, data_dir, clock)
    try:
        set_pnl(rig.runner("ndax"), D(-1000))
        set_pnl(rig.runner("ndax_b"), D(-999))
        assert rig.fresh() == []

        set_pnl(rig.runner("ndax_b"), D(-1000))
        [breach] = rig.fresh()
        assert breach.trigger is Trigger.DAILY_LOSS
        assert "across CAD bots is 2000.00 CAD" in breach.reason
    finally:
        await rig.coordinator.close(grace_seconds=0.5)


async def test_a_new_utc_day_starts_the_daily_loss_again(rig: Rig) -> None:
    ndax = rig.runner("ndax")
    set_pnl(ndax, -MAX_DAILY_LOSS)
    assert [b.trigger for b in rig.fresh()] == [Trigger.DAILY_LOSS]

    rig.clock.now = datetime(2026, 3, 3, 0, 0, 1, tzinfo=UTC)  # the new day's baseline: -2000
    assert rig.fresh() == []
    set_pnl(ndax, D(-3999))
    assert rig.fresh() == []
    set_pnl(ndax, D(-4000))
    assert [b.trigger for b in rig.fresh()] == [Trigger.DAILY_LOSS]


# -- an exchange breaker open too long -----------------------------------------------------------


def open_kraken_breaker(rig: Rig) -> None:
    board = rig.coordinator.safety.board
    for _ in range(rig.coordinator.config.recovery.circuit_breaker.failure_threshold):
        board.after_send("kraken", "transient")
    assert board.breaker("kraken").snapshot()["state"] == "open"
    assert board.breaker("global").snapshot()["state"] == "closed"  # its threshold is 10


async def test_an_exchange_breaker_open_for_the_limit_fires_and_not_before(rig: Rig) -> None:
    open_kraken_breaker(rig)
    assert rig.fresh() == []

    rig.clock.advance(minutes=BREAKER_MINUTES, seconds=-1)
    assert rig.fresh() == []  # half-open by now, no healthy send yet: the outage goes on

    rig.clock.advance(seconds=1)
    [breach] = rig.fresh()
    assert breach.trigger is Trigger.BREAKER_OPEN
    assert "the kraken circuit breaker" in breach.reason
    assert f"open for {BREAKER_MINUTES} minutes" in breach.reason
    assert f"(limit {BREAKER_MINUTES})" in breach.reason


async def test_a_failed_probe_does_not_restart_the_outage_clock(rig: Rig) -> None:
    board = rig.coordinator.safety.board
    open_kraken_breaker(rig)
    rig.clock.advance(minutes=10)
    assert board.before_send("kraken") is None  # half-open: one probe may go
    board.after_send("kraken", "transient")  # it fails: open again
    assert board.breaker("kraken").snapshot()["state"] == "open"

    rig.clock.advance(minutes=5)
    assert [b.trigger for b in rig.fresh()] == [Trigger.BREAKER_OPEN]


async def test_a_breaker_that_recovered_in_time_does_not_fire(rig: Rig) -> None:
    board = rig.coordinator.safety.board
    open_kraken_breaker(rig)
    rig.clock.advance(minutes=10)
    assert board.before_send("kraken") is None
    board.after_send("kraken", None)  # the probe succeeded: closed
    assert board.breaker("kraken").snapshot()["state"] == "closed"

    rig.clock.advance(minutes=BREAKER_MINUTES)
    assert rig.fresh() == []


# -- edge-triggering -----------------------------------------------------------------------------


async def test_a_condition_that_holds_fires_once_not_every_round(rig: Rig) -> None:
    rig.runner("ndax").parts.book.consecutive_failures = MAX_FAILURES
    assert [b.trigger for b in rig.fresh()] == [Trigger.ORDER_FAILURES]

    for _ in range(3):
        rig.runner("ndax").parts.book.consecutive_failures += 1  # still past the limit
        assert rig.fresh() == []
    # The condition still holds: the watch sees it, it just is not new.
    assert [b.key for b in rig.watch.breaches(rig.runners)] == ["failures:ndax"]


async def test_a_condition_fires_again_once_it_cleared_and_came_back(rig: Rig) -> None:
    book = rig.runner("ndax").parts.book
    book.consecutive_failures = MAX_FAILURES
    assert len(rig.fresh()) == 1

    book.consecutive_failures = 0  # an order went through
    assert rig.fresh() == []
    assert rig.fresh() == []

    book.consecutive_failures = MAX_FAILURES
    [breach] = rig.fresh()
    assert breach.key == "failures:ndax"


async def test_only_the_new_condition_fires_while_another_holds(rig: Rig) -> None:
    rig.runner("ndax").parts.book.consecutive_failures = MAX_FAILURES
    assert [b.key for b in rig.fresh()] == ["failures:ndax"]

    rig.runner("kraken").parts.book.consecutive_failures = MAX_FAILURES
    set_pnl(rig.runner("kraken"), -MAX_DAILY_LOSS)
    assert sorted(b.key for b in rig.fresh()) == ["daily_loss:AUD", "failures:kraken"]
    assert rig.fresh() == []


async def test_the_breaker_trigger_is_edge_triggered_too(rig: Rig) -> None:
    board = rig.coordinator.safety.board
    open_kraken_breaker(rig)
    rig.clock.advance(minutes=BREAKER_MINUTES)
    assert len(rig.fresh()) == 1
    rig.clock.advance(minutes=5)
    assert rig.fresh() == []

    board.breaker("kraken").reset("test", "exchange is back")
    assert rig.fresh() == []
    open_kraken_breaker(rig)
    rig.clock.advance(minutes=BREAKER_MINUTES)
    assert [b.key for b in rig.fresh()] == ["breaker:kraken"]
