"""The safety layer assembled, through real coordinators: breaker state and the day's risk
baselines survive a restart, unreadable breaker state fails safe, one automatic trigger makes one
activation, breaker resets, and the automatic kill switch end to end."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from coordinator.config.models import CoordinatorConfig
from coordinator.errors import Conflict, NotFound
from coordinator.lifecycle import BotState
from coordinator.runtime import Coordinator
from coordinator.safety.kill_switch import Trigger
from coordinator.safety.layer import BASELINES_KEY
from coordinator.supervisor import BotRunner
from tests.support_config import FakeClock, eventually

D = Decimal
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MAX_FAILURES = 5  # config/kill-switch.json


@dataclass
class Activations:
    """A recording `activate` for `check_once`."""

    calls: list[tuple[str, Trigger]]

    async def __call__(self, reason: str, trigger: Trigger) -> None:
        self.calls.append((reason, trigger))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def driven(
    config: CoordinatorConfig, data_dir: Path, clock: FakeClock
) -> AsyncIterator[Coordinator]:
    """A coordinator on the fake clock whose watch rounds the test runs itself."""
    opened = await Coordinator.open(config, data_dir, clock=clock)
    await opened.safety.stop_watch()
    try:
        yield opened
    finally:
        await opened.close(grace_seconds=0.5)


def runners(coordinator: Coordinator) -> list[BotRunner]:
    return list(coordinator.supervisor.runners.values())


def open_breaker(coordinator: Coordinator, exchange: str) -> None:
    threshold = coordinator.config.recovery.circuit_breaker.failure_threshold
    for _ in range(threshold):
        coordinator.safety.board.after_send(exchange, "transient")


def set_pnl(runner: BotRunner, realized: Decimal) -> None:
    book = runner.parts.book
    book.position = replace(book.position, realized_pnl=realized)


# -- breaker state across a restart --------------------------------------------------------------


async def test_an_open_breaker_is_still_open_after_a_restart(
    config: CoordinatorConfig, data_dir: Path, clock: FakeClock
) -> None:
    first = await Coordinator.open(config, data_dir, clock=clock)
    try:
        open_breaker(first, "kraken")
        before = first.safety.board.breaker("kraken").snapshot()
        assert before["state"] == "open"
        await first.safety.flush()
    finally:
        await first.close(grace_seconds=0.5)

    clock.advance(seconds=5)
    second = await Coordinator.open(config, data_dir, clock=clock)
    try:
        board = second.safety.board
        after = board.breaker("kraken").snapshot()
        for field in ("state", "opened_at", "open_since", "reason", "latched", "trips"):
            assert after[field] == before[field], field
        refusal = board.would_refuse("kraken")
        assert refusal is not None
        assert refusal.code == "breaker_open"
        assert board.breaker("ndax").snapshot()["state"] == "closed"
        assert board.breaker("global").snapshot()["state"] == "closed"  # its threshold is 10
        assert board.would_refuse("ndax") is None
        # Restored, it goes on as before: half-open once its recovery timeout has passed.
        clock.advance(seconds=config.recovery.circuit_breaker.recovery_timeout)
        assert board.breaker("kraken").snapshot()["state"] == "half_open"
    finally:
        await second.close(grace_seconds=0.5)


GARBAGE: dict[str, dict[str, Any]] = {
    "not a snapshot": {"garbage": True},
    "an unknown state": {"name": "kraken", "state": "sideways"},
    "open with no opening time": {
        "name": "kraken",
        "state": "open",
        "opened_at": None,
        "open_since": None,
        "latched": False,
        "trips": 1,
        "reason": "x",
    },
    "someone else's snapshot": {"name": "ndax", "state": "closed"},
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
async def test_unreadable_stored_breaker_state_trips_the_global_breaker_latched(
    config: CoordinatorConfig, data_dir: Path, clock: FakeClock, garbage: dict[str, Any]
) -> None:
    first = await Coordinator.open(config, data_dir, clock=clock)
    try:
        await first.journal.save_safety_state("breaker:kraken", garbage, clock())
    finally:
        await first.close(grace_seconds=0.5)

    second = await Coordinator.open(config, data_dir, clock=clock)
    try:
        board = second.safety.board
        snapshot = board.breaker("global").snapshot()
        assert snapshot["state"] == "open"
        assert snapshot["latched"] is True
        assert snapshot["reason"].startswith("unreadable stored breaker state: breaker 'kraken'")
        for exchange in ("ndax", "kraken"):
            refusal = board.would_refuse(exchange)
            assert refusal is not None
            assert refusal.code == "global_breaker_open"
        # Latched: no recovery timeout half-opens it.
        clock.advance(hours=1)
        assert board.breaker("global").snapshot()["state"] == "open"
    finally:
        await second.close(grace_seconds=0.5)


async def test_after_an_operator_resets_both_breakers_the_next_start_is_clean(
    config: CoordinatorConfig, data_dir: Path, clock: FakeClock
) -> None:
    first = await Coordinator.open(config, data_dir, clock=clock)
    try:
        await first.journal.save_safety_state("breaker:kraken", {"garbage": True}, clock())
    finally:
        await first.close(grace_seconds=0.5)
    second = await Coordinator.open(config, data_dir, clock=clock)
    try:
        assert second.safety.board.breaker("global").snapshot()["state"] == "open"
        # Resetting kraken's breaker writes a good snapshot over the unreadable one.
        second.safety.reset_breaker("kraken", "ops", "looked at the stored state")
        second.safety.reset_breaker("global", "ops", "looked at the stored state")
        await second.safety.flush()
    finally:
        await second.close(grace_seconds=0.5)

    third = await Coordinator.open(config, data_dir, clock=clock)
    try:
        status = third.safety.status()
        assert status["global"]["state"] == "closed"
        assert {s["state"] for s in status["exchanges"].values()} == {"closed"}
    finally:
        await third.close(grace_seconds=0.5)


async def test_a_stored_snapshot_of_an_exchange_no_longer_configured_is_ignored(
    config: CoordinatorConfig, data_dir: Path, clock: FakeClock
) -> None:
    first = await Coordinator.open(config, data_dir, clock=clock)
    try:
        await first.journal.save_safety_state("breaker:bitstamp", {"garbage": True}, clock())
    finally:
        await first.close(grace_seconds=0.5)
    second = await Coordinator.open(config, data_dir, clock=clock)
    try:
        assert second.safety.board.breaker("global").snapshot()["state"] == "closed"
    finally:
        await second.close(grace_seconds=0.5)


# -- the day's risk baselines across a restart ---------------------------------------------------


async def test_the_days_baselines_are_persisted_and_restored_so_a_restart_keeps_the_loss(
    config: CoordinatorConfig, data_dir: Path
) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 23, 59, 30, tzinfo=UTC))
    first = await Coordinator.open(config, data_dir, clock=clock)
    try:
        await first.safety.stop_watch()
        ndax = first.supervisor.runner("ndax")
        set_pnl(ndax, D(1000))  # the bot made 1000 CAD on the 2nd
        clock.now = datetime(2026, 3, 3, 0, 0, 30, tzinfo=UTC)
        await first.safety.check_once(runners(first), Activations([]))
        await first.safety.flush()
        stored = (await first.journal.load_safety_state())[BASELINES_KEY]
        assert stored["ndax"] == {"date": "2026-03-03", "value": "1000"}

        set_pnl(ndax, D(400))  # and has lost 600 CAD of it on the 3rd
        assert first.safety.risk.daily_pnl("ndax") == D(-600)
    finally:
        await first.close(grace_seconds=0.5)

    clock.advance(minutes=5)
    second = await Coordinator.open(config, data_dir, clock=clock)
    try:
        await second.safety.stop_watch()
        assert second.safety.risk.baselines()["ndax"] == {"date": "2026-03-03", "value": "1000"}
        # The test's PnL was never journaled: give the new book what the journal would have.
        set_pnl(second.supervisor.runner("ndax"), D(400))
        assert second.safety.risk.daily_pnl("ndax") == D(-600)  # not 0: the loss is kept
    finally:
        await second.close(grace_seconds=0.5)


async def test_yesterdays_baselines_are_not_restored(
    config: CoordinatorConfig, data_dir: Path
) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 20, 0, tzinfo=UTC))
    first = await Coordinator.open(config, data_dir, clock=clock)
    try:
        await first.safety.stop_watch()
        await first.safety.check_once(runners(first), Activations([]))
        await first.safety.flush()
        stored = (await first.journal.load_safety_state())[BASELINES_KEY]
        assert stored["ndax"]["date"] == "2026-03-02"
    finally:
        await first.close(grace_seconds=0.5)

    clock.now = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)
    second = await Coordinator.open(config, data_dir, clock=clock)
    try:
        baselines = second.safety.risk.baselines()
        assert {b["date"] for b in baselines.values()} == {"2026-03-03"}
    finally:
        await second.close(grace_seconds=0.5)


async def test_check_once_writes_the_baselines_only_when_they_change(
    driven: Coordinator, clock: FakeClock
) -> None:
    safety = driven.safety
    await safety.check_once(runners(driven), Activations([]))
    await safety.flush()
    written: list[str] = []
    original = safety.journal.save_safety_state

    async def spy(key: str, *args: Any, **kwargs: Any) -> None:
        written.append(key)
        await original(key, *args, **kwargs)

    safety.journal.save_safety_state = spy  # type: ignore[method-assign]
    for _ in range(3):
        await safety.check_once(runners(driven), Activations([]))
    await safety.flush()
    assert written == []

    clock.now = datetime(2026, 3, 3, 0, 0, 1, tzinfo=UTC)  # a new day: new baselines
    await safety.check_once(runners(driven), Activations([]))
    await safety.flush()
    assert written == [BASELINES_KEY]


# -- check_once ----------------------------------------------------------------------------------


async def test_check_once_activates_once_per_new_breach(driven: Coordinator) -> None:
    activations = Activations([])
    driven.supervisor.runner("ndax").parts.book.consecutive_failures = MAX_FAILURES

    for _ in range(3):
        await driven.safety.check_once(runners(driven), activations)

    [(reason, trigger)] = activations.calls
    assert trigger is Trigger.ORDER_FAILURES
    assert reason.startswith("ndax: ")


async def test_check_once_only_logs_a_new_breach_while_the_switch_is_active(
    driven: Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    await driven.activate_kill_switch("drill", "test")
    activations = Activations([])
    driven.supervisor.runner("kraken").parts.book.consecutive_failures = MAX_FAILURES

    with caplog.at_level(logging.WARNING, logger="coordinator.safety.layer"):
        await driven.safety.check_once(runners(driven), activations)

    assert activations.calls == []
    [record] = [r for r in caplog.records if r.name == "coordinator.safety.layer"]
    assert "while the switch is active" in record.getMessage()
    assert "kraken: 5 orders in a row failed" in record.getMessage()
    assert driven.kill_switch.state.trigger == "manual"


async def test_a_breach_seen_while_the_switch_was_active_does_not_fire_after_the_override(
    driven: Coordinator,
) -> None:
    activations = Activations([])
    await driven.activate_kill_switch("drill", "test")
    set_pnl(driven.supervisor.runner("kraken"), D(-2500))
    await driven.safety.check_once(runners(driven), activations)
    await driven.force_override_kill_switch("drill over", "admin", "risk")

    await driven.safety.check_once(runners(driven), activations)
    assert activations.calls == []  # it has not cleared and come back since


# -- reset_breaker -------------------------------------------------------------------------------


async def test_resetting_an_unknown_breaker_is_not_found_and_lists_the_names(
    driven: Coordinator,
) -> None:
    with pytest.raises(NotFound) as raised:
        driven.safety.reset_breaker("binance", "ops", "typo")
    assert raised.value.status == 404
    assert "'binance'" in raised.value.message
    assert "there are: global, kraken, ndax" in raised.value.message


async def test_resetting_an_open_exchange_breaker_closes_it_and_is_persisted(
    driven: Coordinator,
) -> None:
    open_breaker(driven, "kraken")
    snapshot = driven.safety.reset_breaker("kraken", "ops", "exchange is back")
    assert snapshot["state"] == "closed"
    await driven.safety.flush()
    stored = (await driven.journal.load_safety_state())["breaker:kraken"]
    assert stored["state"] == "closed"


async def test_the_activation_count_latch_is_cleared_only_by_force_override(
    driven: Coordinator,
) -> None:
    limit = driven.config.kill_switch.activation_limit
    assert (limit.max_activations, limit.window_minutes) == (3, 60)
    for n in range(limit.max_activations):
        await driven.activate_kill_switch(f"drill {n}", "test")
        await driven.force_override_kill_switch("next drill", "admin", "risk")
    assert driven.safety.board.breaker("global").snapshot()["state"] == "closed"

    await driven.activate_kill_switch("one too many", "test")
    global_breaker = driven.safety.board.breaker("global").snapshot()
    assert global_breaker["state"] == "open"
    assert global_breaker["latched"] is True
    assert "activated 4 times in 60 minutes (limit 3)" in global_breaker["reason"]

    with pytest.raises(Conflict) as raised:
        driven.safety.reset_breaker("global", "ops", "let me trade")
    assert raised.value.status == 409
    assert "force_override" in raised.value.message
    assert driven.safety.board.breaker("global").snapshot()["state"] == "open"
    with pytest.raises(Conflict):  # nor does a plain override lift the switch meanwhile
        await driven.override_kill_switch("let me trade", "ops")

    await driven.force_override_kill_switch("investigated", "admin", "risk")
    assert not driven.kill_switch.active
    assert driven.safety.board.breaker("global").snapshot()["state"] == "closed"
    await driven.safety.flush()
    assert (await driven.journal.load_safety_state())["breaker:global"]["state"] == "closed"


# -- the automatic kill switch through the real coordinator --------------------------------------


async def audit_rows(coordinator: Coordinator, action: str) -> list[dict[str, Any]]:
    rows = await coordinator.store.fetch_all(
        "SELECT actor, result, details FROM audit_events WHERE action = ?", (action,)
    )
    return [dict(row) for row in rows]


async def test_consecutive_order_failures_activate_the_switch_and_stop_every_bot(
    coordinator: Coordinator,
) -> None:
    await coordinator.start_sequential("test")
    kraken = coordinator.supervisor.runner("kraken")
    # kraken's grid rests (its price does not move): nothing it sends resets the streak.
    await eventually(lambda: len(kraken.parts.book.live_orders) > 0, what="kraken's ladder")
    assert all(r.state is BotState.RUNNING for r in runners(coordinator))

    kraken.parts.book.consecutive_failures = MAX_FAILURES

    await eventually(lambda: coordinator.kill_switch.active, within=3, what="the kill switch")
    state = coordinator.kill_switch.state
    assert state.trigger == "consecutive_order_failures"
    assert state.by == "safety-watch"
    assert state.reason is not None
    assert state.reason.startswith("kraken: 5 orders in a row failed")
    await eventually(
        lambda: all(r.state is BotState.STOPPED for r in runners(coordinator)),
        within=3,
        what="every bot stopped",
    )
    assert kraken.parts.book.live_orders == {}  # the halt cancelled the ladder

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while not (rows := await audit_rows(coordinator, "kill_switch.activate")):
        assert loop.time() < deadline, "the activation was never audited"
        await asyncio.sleep(0.01)
    [row] = rows
    assert row["actor"] == "safety-watch"
    assert row["result"] == "ok"
    assert json.loads(row["details"])["trigger"] == "consecutive_order_failures"


async def test_after_an_override_the_failure_streaks_are_forgotten(driven: Coordinator) -> None:
    activations = Activations([])

    async def activate(reason: str, trigger: Trigger) -> None:
        await activations(reason, trigger)
        await driven.activate_kill_switch(reason, "safety-watch", trigger)

    books = [r.parts.book for r in runners(driven)]
    for book in books:
        book.consecutive_failures = MAX_FAILURES
    await driven.safety.check_once(runners(driven), activate)
    assert len(activations.calls) == 1  # the second breach found the switch active already
    assert driven.kill_switch.state.trigger == "consecutive_order_failures"

    # The cooldown is 15 minutes, so a plain override is refused; the admin lifts it.
    await driven.force_override_kill_switch("investigated", "admin", "risk")
    assert [book.consecutive_failures for book in books] == [0, 0]
    for _ in range(2):
        await driven.safety.check_once(runners(driven), activate)
    assert len(activations.calls) == 1
    assert not driven.kill_switch.active

    # A new streak is a new condition: the watch is still armed.
    books[0].consecutive_failures = MAX_FAILURES
    await driven.safety.check_once(runners(driven), activate)
    assert len(activations.calls) == 2
    assert driven.kill_switch.active


async def test_a_safety_state_row_that_is_not_json_fails_safe_instead_of_failing_the_start(
    config: CoordinatorConfig, data_dir: Path
) -> None:
    first = await Coordinator.open(config, data_dir)
    await first.close(grace_seconds=0.1)
    async with aiosqlite.connect(str(data_dir / "coordinator.db")) as db:
        await db.execute(
            "INSERT INTO safety_state (key, value, updated_at) VALUES"
            " ('kill_switch', '{not json', 'x'), ('breaker:kraken', '[1, 2]', 'x')"
        )
        await db.commit()

    second = await Coordinator.open(config, data_dir)
    try:
        assert second.kill_switch.active is True
        assert second.kill_switch.state.trigger == "unreadable_state"
        global_breaker = second.safety.board.breaker("global").snapshot()
        assert global_breaker["state"] == "open"
        assert global_breaker["latched"] is True
    finally:
        await second.close(grace_seconds=0.1)
