"""The repeated-execution throttle: what counts, the window, the disablement and its lifting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.book import BotBook
from bots.models import OrderIntent, OrderType, Side
from coordinator.config.models import ExecutionThrottleSettings
from coordinator.errors import Conflict
from coordinator.safety.execution_throttle import ExecutionThrottle, ThrottleGate
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore
from tests.support_config import FakeClock

SETTINGS = ExecutionThrottleSettings(max_same_side_executions=3, window_seconds=60)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    store = await SqliteStore.open(tmp_path / "t.db")
    try:
        yield SqliteJournal(store)
    finally:
        await store.close()


def throttle(journal: SqliteJournal, clock: FakeClock) -> tuple[ExecutionThrottle, list[str]]:
    disabled: list[str] = []
    made = ExecutionThrottle(SETTINGS, journal, clock)
    made.on_disable = lambda bot, reason: disabled.append(bot)
    return made, disabled


async def test_one_more_execution_than_the_limit_on_one_side_disables_the_bot(
    journal: SqliteJournal,
) -> None:
    made, disabled = throttle(journal, FakeClock())

    for coid in range(3):
        made.executed("grid", "BTC/AUD", Side.BUY, coid)
    assert disabled == []
    made.executed("grid", "BTC/AUD", Side.BUY, 3)

    assert disabled == ["grid"]
    gate = ThrottleGate(made, "grid")
    refusal = gate.check(OrderIntent("BTC/AUD", Side.SELL, OrderType.MARKET, 1), BotBook())
    assert refusal is not None
    assert refusal.code == "bot_disabled"
    assert "4 buy orders on BTC/AUD executed within 60s" in refusal.reason


async def test_executions_on_the_other_side_or_outside_the_window_do_not_count(
    journal: SqliteJournal,
) -> None:
    clock = FakeClock()
    made, disabled = throttle(journal, clock)

    for coid in range(3):
        made.executed("grid", "BTC/AUD", Side.BUY, coid)
    made.executed("grid", "BTC/AUD", Side.SELL, 10)
    made.executed("other", "BTC/AUD", Side.BUY, 11)
    clock.advance(seconds=61)
    made.executed("grid", "BTC/AUD", Side.BUY, 12)

    assert disabled == []


async def test_a_disablement_survives_a_restart_until_a_person_enables_the_bot(
    journal: SqliteJournal,
) -> None:
    clock = FakeClock()
    made, _ = throttle(journal, clock)
    for coid in range(4):
        made.executed("grid", "BTC/AUD", Side.BUY, coid)
    await made.flush()

    restarted = ExecutionThrottle(SETTINGS, journal, clock)
    restarted.load(await journal.load_safety_state())
    assert restarted.refusal("grid") is not None

    enabled = await restarted.enable("grid", "operator-token", "alice", "fixed the grid")
    assert enabled["enabled"]["approved_by"] == "alice"
    with pytest.raises(Conflict, match="not disabled"):
        await restarted.enable("grid", "operator-token", "alice", "again")

    after = ExecutionThrottle(SETTINGS, journal, clock)
    after.load(await journal.load_safety_state())
    assert after.refusal("grid") is None
    assert after.last_enabled["grid"]["reason"] == "fixed the grid"
    audit = [e["action"] for e in await journal.recent_audit(10)]
    assert "bot.disabled" in audit


async def test_enabling_forgets_the_executions_that_tripped_it(journal: SqliteJournal) -> None:
    made, disabled = throttle(journal, FakeClock())
    for coid in range(4):
        made.executed("grid", "BTC/AUD", Side.BUY, coid)
    await made.enable("grid", "op", "alice", "ok")

    made.executed("grid", "BTC/AUD", Side.BUY, 5)

    assert disabled == ["grid"]  # once: the fifth is the first of a new count
    assert made.refusal("grid") is None


async def test_without_settings_nothing_is_counted(journal: SqliteJournal) -> None:
    made = ExecutionThrottle(None, journal, FakeClock())

    for coid in range(100):
        made.executed("grid", "BTC/AUD", Side.BUY, coid)

    assert made.disabled == {}


async def test_a_bot_may_have_a_limit_of_its_own(journal: SqliteJournal) -> None:
    settings = ExecutionThrottleSettings.model_validate(
        {"max_same_side_executions": 3, "window_seconds": 60,
         "bots": {"dca": {"max_same_side_executions": 20, "window_seconds": 60}}}
    )  # fmt: skip
    made = ExecutionThrottle(settings, journal, FakeClock())

    for coid in range(12):
        made.executed("dca", "BTC/CAD", Side.BUY, coid)  # a DCA's minute, by design
    for coid in range(4):
        made.executed("grid", "BTC/AUD", Side.BUY, 100 + coid)

    assert made.refusal("dca") is None
    assert made.refusal("grid") is not None
    await made.flush()
