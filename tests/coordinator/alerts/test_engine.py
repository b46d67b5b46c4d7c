"""The alert state machine with a clock moved by hand: fires, holds, resolves, never flaps."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from coordinator.alerts.engine import CHUNK, AlertEngine
from coordinator.alerts.model import AlertState, Sample
from coordinator.config.alerting import RuleTiming, Severity
from tests.coordinator.alerts.support import T0
from tests.support_config import FakeClock

STEP = 5.0  # seconds between evaluations


def sample(breached: bool, value: float = 10.0, bot: str = "ndax") -> Sample:
    return Sample(
        "order_failure_rate_high",
        Severity.CRITICAL,
        {"bot": bot},
        breached,
        value,
        5.0,
        f"{bot}: {value} %",
        "001 Immediate Actions",
    )


def engine(
    clock: FakeClock,
    for_seconds: float = 10,
    resolve_after: float = 10,
    repeat_minutes: float = 60,
    keep_minutes: float = 60,
) -> AlertEngine:
    timing = RuleTiming(for_seconds=for_seconds, resolve_after_seconds=resolve_after)
    return AlertEngine(
        lambda name: timing,
        clock,
        keep_resolved=timedelta(minutes=keep_minutes),
        repeat_interval=timedelta(minutes=repeat_minutes),
    )


def feed(alerts: AlertEngine, clock: FakeClock, *breached: bool) -> list[tuple[str, bool]]:
    moves = []
    for value in breached:
        for t in alerts.evaluate([sample(value)]):
            moves.append((t.to.value, t.repeat))
        clock.advance(seconds=STEP)
    return moves


def test_an_alert_fires_once_its_condition_has_held_for_its_duration() -> None:
    clock = FakeClock(T0)
    alerts = engine(clock, for_seconds=10)

    assert feed(alerts, clock, True, True) == []  # held 5 s: pending
    assert alerts.listing()["pending"][0]["state"] == "pending"
    assert feed(alerts, clock, True) == [("firing", False)]  # held 10 s
    assert [a.name for a in alerts.firing()] == ["order_failure_rate_high"]
    assert feed(alerts, clock, True, True, True) == []  # holds: said once


def test_one_breached_sample_never_fires_even_with_no_hold_time() -> None:
    clock = FakeClock(T0)
    alerts = engine(clock, for_seconds=0)

    assert feed(alerts, clock, True, False, True, False) == []
    assert alerts.listing()["firing"] == []
    assert feed(alerts, clock, True, True) == [("firing", False)]


def test_a_firing_alert_resolves_only_after_it_was_clear_for_its_duration() -> None:
    clock = FakeClock(T0)
    alerts = engine(clock, for_seconds=0, resolve_after=10)
    feed(alerts, clock, True, True)

    assert feed(alerts, clock, False, False) == []  # clear for 5 s
    assert feed(alerts, clock, False) == [("resolved", False)]
    listing = alerts.listing()
    assert listing["firing"] == []
    assert listing["status"] == "ok"
    assert listing["resolved"][0]["state"] == "resolved"
    assert listing["resolved"][0]["resolved_at"] is not None


def test_a_value_wobbling_around_its_threshold_does_not_flap() -> None:
    clock = FakeClock(T0)
    alerts = engine(clock, for_seconds=0, resolve_after=10)
    feed(alerts, clock, True, True)

    moves = feed(alerts, clock, False, True, False, True, False, True)

    assert moves == []
    assert len(alerts.firing()) == 1


def test_a_subject_that_disappears_counts_as_clear() -> None:
    clock = FakeClock(T0)
    alerts = engine(clock, for_seconds=0, resolve_after=0)
    feed(alerts, clock, True, True)

    assert alerts.evaluate([]) == []
    clock.advance(seconds=STEP)
    assert [t.to for t in alerts.evaluate([])] == [AlertState.RESOLVED]


def test_a_pending_alert_that_clears_leaves_nothing_behind() -> None:
    clock = FakeClock(T0)
    alerts = engine(clock, for_seconds=60)
    feed(alerts, clock, True, True, False)

    listing = alerts.listing()
    assert listing["pending"] == []
    assert listing["firing"] == []
    assert listing["resolved"] == []


def test_a_firing_alert_is_repeated_after_the_repeat_interval() -> None:
    clock = FakeClock(T0)
    alerts = engine(clock, for_seconds=0, repeat_minutes=1)
    assert feed(alerts, clock, True, True) == [("firing", False)]

    moves = feed(alerts, clock, *([True] * 12))  # one minute later

    assert moves == [("firing", True)]


def test_each_subject_is_its_own_alert() -> None:
    clock = FakeClock(T0)
    alerts = engine(clock, for_seconds=0)
    for _ in range(2):
        alerts.evaluate([sample(True, bot="ndax"), sample(False, bot="kraken")])
        clock.advance(seconds=STEP)

    assert [a.labels for a in alerts.firing()] == [{"bot": "ndax"}]


def test_resolved_alerts_are_forgotten_after_the_keep_time() -> None:
    clock = FakeClock(T0)
    alerts = engine(clock, for_seconds=0, resolve_after=0, keep_minutes=1)
    feed(alerts, clock, True, True, False, False)
    assert len(alerts.listing()["resolved"]) == 1

    clock.advance(seconds=61)
    alerts.evaluate([])

    assert alerts.listing()["resolved"] == []


def test_the_listing_puts_the_most_severe_first_and_counts_them() -> None:
    clock = FakeClock(T0)
    alerts = engine(clock, for_seconds=0)
    warning = Sample("disk_space_low", Severity.WARNING, {}, True, 8.0, 10.0, "disk", "004")
    for _ in range(2):
        alerts.evaluate([warning, sample(True)])
        clock.advance(seconds=STEP)

    listing = alerts.listing()

    assert [a["name"] for a in listing["firing"]] == ["order_failure_rate_high", "disk_space_low"]
    assert listing["counts"] == {"critical": 1, "warning": 1, "info": 0}
    assert listing["status"] == "firing"


async def test_a_cooperative_evaluation_lets_the_loop_run_and_ends_the_same() -> None:
    clock = FakeClock(T0)
    together, in_pieces = engine(clock, for_seconds=0), engine(clock, for_seconds=0)
    samples = [sample(True, bot=f"bot-{n}") for n in range(CHUNK * 3)]
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count_turns())
    for _ in range(2):
        expected = together.evaluate(samples)
        moved = await in_pieces.evaluate_cooperatively(samples)
        clock.advance(seconds=STEP)
    counter.cancel()

    assert [t.alert for t in moved] == [t.alert for t in expected]
    assert len(moved) == CHUNK * 3  # every subject fired at the second evaluation
    assert turns >= 4  # the loop ran between the pieces
