"""Order outcomes over a sliding window of one-minute buckets."""

from __future__ import annotations

from coordinator.alerts.window import OutcomeWindow, WindowCount
from tests.coordinator.alerts.support import T0
from tests.support_config import FakeClock


def test_outcomes_are_counted_per_bot_within_the_window() -> None:
    clock = FakeClock(T0)
    window = OutcomeWindow(15, clock)
    for failed in (True, False, False, True):
        window.record("ndax", failed)
    window.record("kraken", False)

    assert window.count("ndax") == WindowCount(4, 2)
    assert window.count("ndax").failure_pct == 50.0
    assert window.count("kraken") == WindowCount(1, 0)
    assert window.count("unknown") == WindowCount(0, 0)


def test_outcomes_older_than_the_window_are_forgotten() -> None:
    clock = FakeClock(T0)
    window = OutcomeWindow(15, clock)
    window.record("ndax", True)
    clock.advance(seconds=10 * 60)
    window.record("ndax", False)

    assert window.count("ndax") == WindowCount(2, 1)
    clock.advance(seconds=7 * 60)  # the failure is 17 minutes old: past N+1 minutes
    assert window.count("ndax") == WindowCount(1, 0)
    clock.advance(seconds=10 * 60)
    assert window.count("ndax") == WindowCount(0, 0)


def test_memory_is_one_bucket_per_minute_whatever_the_order_rate() -> None:
    clock = FakeClock(T0)
    window = OutcomeWindow(15, clock)
    for _ in range(60 * 30):  # 30 minutes, one order a second
        window.record("ndax", False)
        clock.advance(seconds=1)

    assert len(window._buckets["ndax"]) <= 16  # the 15 minutes before this one, and this one
    assert window.count("ndax").orders <= 16 * 60



def test_an_outcome_is_counted_for_at_least_the_whole_window_whatever_the_minute_boundary() -> None:
    clock = FakeClock(T0.replace(second=59))  # one second before a minute boundary
    window = OutcomeWindow(1, clock)
    window.record("ndax", True)

    clock.advance(seconds=2)  # past the boundary
    assert window.count("ndax") == WindowCount(1, 1)
    clock.advance(seconds=57)  # 59 s after it: still inside a 1-minute window
    assert window.count("ndax") == WindowCount(1, 1)
    clock.advance(seconds=62)  # two minutes on: gone
    assert window.count("ndax") == WindowCount(0, 0)
