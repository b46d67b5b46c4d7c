"""Circuit breakers and the breaker board, on a fake clock: every transition, persistence, and the
board as the gateway's send guard (also through the real gateway and paper exchange)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from bots.book import BotBook
from bots.exchanges.paper import PaperExchange
from bots.gateway import BotIdentity, OrderGateway, Refusal
from bots.ids import ClientOrderIds
from bots.models import MarketSnapshot, OrderIntent, OrderType, Side
from coordinator.config.models import CircuitBreakerSettings
from coordinator.safety.breaker import (
    BREAKER_TRANSITIONS,
    BreakerBoard,
    BreakerState,
    CircuitBreaker,
    InvalidBreakerTransition,
    UnknownBreaker,
    check_breaker_transition,
)
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore

S = BreakerState
T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
THRESHOLD, WINDOW, RECOVERY, PROBES = 3, 60.0, 30.0, 2
SETTINGS = CircuitBreakerSettings(
    failure_threshold=THRESHOLD,
    monitoring_window=WINDOW,
    recovery_timeout=RECOVERY,
    half_open_max_calls=PROBES,
)


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Changes:
    """An `on_change` that records (breaker, state, why) as each change is reported."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, breaker: CircuitBreaker, why: str) -> None:
        self.seen.append((breaker.name, breaker.snapshot()["state"], why))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, on_change: Changes | None = None) -> CircuitBreaker:
    return CircuitBreaker("kraken", SETTINGS, clock, on_change)


def fail(breaker: CircuitBreaker, times: int = THRESHOLD) -> None:
    for _ in range(times):
        breaker.record_transient_failure()


def opened(clock: FakeClock) -> CircuitBreaker:
    breaker = make(clock)
    fail(breaker)
    return breaker


def half_open(clock: FakeClock) -> CircuitBreaker:
    breaker = opened(clock)
    clock.advance(RECOVERY)
    assert breaker.state is S.HALF_OPEN
    return breaker


def latched(clock: FakeClock) -> CircuitBreaker:
    breaker = make(clock)
    breaker.trip("kill switch fired 3 times in 60 minutes", latched=True)
    return breaker


IN_STATE: dict[str, Callable[[FakeClock], CircuitBreaker]] = {
    "closed": make,
    "open": opened,
    "half_open": half_open,
    "latched": latched,
}


def iso(at: datetime) -> str:
    return at.isoformat(timespec="microseconds")


# -- closed -> open --------------------------------------------------------------------------------


def test_a_new_breaker_is_closed_and_allows_sends(clock: FakeClock) -> None:
    breaker = make(clock)

    assert breaker.state is S.CLOSED
    assert breaker.would_allow()
    assert breaker.allow()
    assert breaker.snapshot()["probes_in_flight"] == 0


def test_it_opens_at_the_threshold_and_not_one_failure_before(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, THRESHOLD - 1)
    assert breaker.state is S.CLOSED
    assert breaker.allow()

    clock.advance(1)
    breaker.record_transient_failure()

    assert breaker.state is S.OPEN
    assert not breaker.would_allow()
    assert not breaker.allow()
    snap = breaker.snapshot()
    assert snap["opened_at"] == iso(clock.now)
    assert snap["next_probe_at"] == iso(clock.now + timedelta(seconds=RECOVERY))
    assert snap["reason"] == f"{THRESHOLD} transient failures within 60s"
    assert snap["trips"] == 1


def test_failures_older_than_the_window_do_not_count(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, THRESHOLD - 1)
    clock.advance(WINDOW)  # exactly a window old: forgotten

    breaker.record_transient_failure()

    assert breaker.state is S.CLOSED
    assert breaker.snapshot()["failures_in_window"] == 1
    clock.advance(WINDOW - 1)
    fail(breaker, THRESHOLD - 1)  # with the one still inside the window: the threshold
    assert breaker.state is S.OPEN


def test_successes_between_failures_do_not_reset_the_count(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(THRESHOLD):
        breaker.record_success()
        breaker.record_transient_failure()

    assert breaker.state is S.OPEN
    snap = breaker.snapshot()
    assert (snap["failures_in_window"], snap["calls_in_window"]) == (THRESHOLD, 2 * THRESHOLD)
    assert snap["failure_rate"] == 0.5


def test_permanent_failures_never_open_it(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(10 * THRESHOLD):
        breaker.record_permanent_failure()
    fail(breaker, THRESHOLD - 1)

    assert breaker.state is S.CLOSED
    snap = breaker.snapshot()
    assert snap["failures_in_window"] == THRESHOLD - 1
    assert snap["calls_in_window"] == 11 * THRESHOLD - 1
    assert snap["trips"] == 0


def test_an_empty_window_has_a_failure_rate_of_zero(clock: FakeClock) -> None:
    snap = make(clock).snapshot()

    assert (snap["failures_in_window"], snap["calls_in_window"], snap["failure_rate"]) == (0, 0, 0)


# -- open -> half_open -> closed / open ------------------------------------------------------------


def test_open_refuses_until_the_recovery_timeout_then_half_opens(clock: FakeClock) -> None:
    breaker = opened(clock)

    clock.advance(RECOVERY - 0.001)
    assert breaker.state is S.OPEN
    assert not breaker.allow()
    clock.advance(0.001)

    assert breaker.state is S.HALF_OPEN
    snap = breaker.snapshot()
    assert snap["next_probe_at"] is None
    assert snap["opened_at"] == iso(T0)  # still says when it opened


def test_half_open_admits_exactly_half_open_max_calls_probes(clock: FakeClock) -> None:
    breaker = half_open(clock)

    assert [breaker.allow() for _ in range(PROBES + 2)] == [True] * PROBES + [False, False]
    assert breaker.snapshot()["probes_in_flight"] == PROBES
    assert breaker.state is S.HALF_OPEN


def test_would_allow_does_not_take_a_probe_slot(clock: FakeClock) -> None:
    breaker = half_open(clock)

    assert all(breaker.would_allow() for _ in range(PROBES + 2))
    assert breaker.snapshot()["probes_in_flight"] == 0


def test_a_probe_success_closes_it_and_clears_the_window(clock: FakeClock) -> None:
    breaker = half_open(clock)
    assert breaker.allow()

    breaker.record_success()

    snap = breaker.snapshot()
    assert snap["state"] == "closed"
    assert (snap["failures_in_window"], snap["calls_in_window"]) == (0, 0)
    assert (snap["opened_at"], snap["next_probe_at"], snap["reason"]) == (None, None, None)
    assert breaker.open_since is None
    fail(breaker, THRESHOLD - 1)  # the old failures are gone: it takes a full threshold again
    assert breaker.state is S.CLOSED


def test_a_probe_failure_reopens_it_with_a_new_opened_at_and_next_probe_at(
    clock: FakeClock,
) -> None:
    breaker = half_open(clock)
    assert breaker.allow()
    assert breaker.allow()

    clock.advance(2)
    breaker.record_transient_failure()

    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["opened_at"] == iso(clock.now)
    assert snap["next_probe_at"] == iso(clock.now + timedelta(seconds=RECOVERY))
    assert snap["open_since"] == iso(T0)  # the outage began at the first opening
    assert breaker.open_since == T0
    assert snap["probes_in_flight"] == 0
    assert snap["trips"] == 2
    assert "probe send failed" in snap["reason"]
    clock.advance(RECOVERY - 1)
    assert breaker.state is S.OPEN  # the timer restarted at the reopening
    clock.advance(1)
    assert breaker.state is S.HALF_OPEN
    assert breaker.snapshot()["probes_in_flight"] == 0  # the reopening gave back every slot


def test_a_released_probe_frees_its_slot(clock: FakeClock) -> None:
    breaker = half_open(clock)
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()

    breaker.release_probe()

    assert breaker.state is S.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()


def test_a_release_without_a_probe_in_flight_changes_nothing(clock: FakeClock) -> None:
    breaker = half_open(clock)
    breaker.release_probe()

    assert [breaker.allow() for _ in range(PROBES + 1)] == [True] * PROBES + [False]


def test_a_permanent_failure_in_half_open_frees_the_slot_without_deciding(
    clock: FakeClock,
) -> None:
    breaker = half_open(clock)
    assert breaker.allow()
    assert breaker.allow()

    breaker.record_permanent_failure()

    assert breaker.state is S.HALF_OPEN
    assert breaker.snapshot()["probes_in_flight"] == PROBES - 1
    assert breaker.allow()


def test_outcomes_recorded_while_open_do_not_close_or_reopen_it(clock: FakeClock) -> None:
    breaker = opened(clock)
    clock.advance(5)

    breaker.record_success()  # a send that left before it opened
    breaker.record_transient_failure()

    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["opened_at"] == iso(T0)
    assert snap["trips"] == 1


# -- trips, latches and resets ---------------------------------------------------------------------


def test_a_trip_opens_a_closed_breaker_which_half_opens_after_the_timeout(
    clock: FakeClock,
) -> None:
    breaker = make(clock)
    breaker.trip("operator suspects the venue")

    snap = breaker.snapshot()
    assert (snap["state"], snap["reason"], snap["latched"]) == (
        "open",
        "operator suspects the venue",
        False,
    )
    clock.advance(RECOVERY)
    assert breaker.state is S.HALF_OPEN


def test_a_trip_reopens_a_half_open_breaker(clock: FakeClock) -> None:
    breaker = half_open(clock)
    assert breaker.allow()

    breaker.trip("venue announced maintenance")

    assert breaker.state is S.OPEN
    assert breaker.snapshot()["opened_at"] == iso(clock.now)
    assert breaker.snapshot()["probes_in_flight"] == 0


def test_tripping_an_open_breaker_restarts_its_timer_without_counting_a_trip(
    clock: FakeClock,
) -> None:
    changes = Changes()
    breaker = make(clock, changes)
    fail(breaker)
    clock.advance(20)

    breaker.trip("still down")

    snap = breaker.snapshot()
    assert (snap["opened_at"], snap["open_since"]) == (iso(clock.now), iso(T0))
    assert (snap["reason"], snap["trips"]) == ("still down", 1)
    assert changes.seen[-1] == ("kraken", "open", "tripped again while open: still down")
    clock.advance(RECOVERY - 1)
    assert breaker.state is S.OPEN


@pytest.mark.parametrize("start", ["closed", "open", "half_open"])
def test_a_latched_trip_never_half_opens_and_only_a_reset_clears_it(
    clock: FakeClock, start: str
) -> None:
    breaker = IN_STATE[start](clock)
    breaker.trip("kill switch: 3 activations in 60 minutes", latched=True)

    clock.advance(100 * RECOVERY)
    assert breaker.state is S.OPEN
    assert not breaker.allow()
    breaker.record_success()
    breaker.trip("not latched")  # a plain trip neither unlatches it nor replaces the reason
    snap = breaker.snapshot()
    assert (snap["latched"], snap["next_probe_at"]) == (True, None)
    assert snap["reason"] == "kill switch: 3 activations in 60 minutes"

    breaker.reset("alice", "activations reviewed")

    assert breaker.state is S.CLOSED
    assert not breaker.latched
    assert breaker.allow()


@pytest.mark.parametrize("start", list(IN_STATE))
def test_a_reset_closes_it_from_every_state(clock: FakeClock, start: str) -> None:
    breaker = IN_STATE[start](clock)
    if start == "half_open":
        assert breaker.allow()

    breaker.reset("alice", "venue is back")

    snap = breaker.snapshot()
    assert snap["state"] == "closed"
    assert (snap["failures_in_window"], snap["probes_in_flight"], snap["latched"]) == (0, 0, False)
    assert (snap["opened_at"], snap["open_since"], snap["reason"]) == (None, None, None)
    fail(breaker, THRESHOLD - 1)
    assert breaker.state is S.CLOSED


# -- the transition table --------------------------------------------------------------------------

# Written out independently of BREAKER_TRANSITIONS, so a change to the table shows up here.
ALLOWED = frozenset(
    {
        (S.CLOSED, S.OPEN),
        (S.CLOSED, S.CLOSED),
        (S.OPEN, S.HALF_OPEN),
        (S.OPEN, S.CLOSED),
        (S.HALF_OPEN, S.CLOSED),
        (S.HALF_OPEN, S.OPEN),
    }
)
ALL_PAIRS = list(product(BreakerState, BreakerState))
PAIR_IDS = [f"{a.value}->{b.value}" for a, b in ALL_PAIRS]


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=PAIR_IDS)
def test_a_transition_is_allowed_exactly_when_the_table_says_so(
    current: BreakerState, target: BreakerState
) -> None:
    if (current, target) in ALLOWED:
        check_breaker_transition("kraken", current, target)
        return
    with pytest.raises(InvalidBreakerTransition) as caught:
        check_breaker_transition("kraken", current, target)
    error = caught.value
    assert (error.breaker, error.current, error.target) == ("kraken", current, target)
    assert str(error) == f"breaker 'kraken': cannot go from {current.value} to {target.value}"


def test_every_state_has_an_entry_in_the_table() -> None:
    assert set(BREAKER_TRANSITIONS) == set(BreakerState)
    assert {(a, b) for a, targets in BREAKER_TRANSITIONS.items() for b in targets} == ALLOWED


IMPOSSIBLE = [pair for pair in ALL_PAIRS if pair not in ALLOWED]


@pytest.mark.parametrize(
    ("current", "target"), IMPOSSIBLE, ids=[f"{a.value}->{b.value}" for a, b in IMPOSSIBLE]
)
def test_an_impossible_move_raises_and_changes_nothing(
    clock: FakeClock, current: BreakerState, target: BreakerState
) -> None:
    breaker = IN_STATE[current.value](clock)
    changes = Changes()
    breaker._on_change = changes
    before = breaker.snapshot()

    with pytest.raises(InvalidBreakerTransition):
        breaker._move(target, "test", clock.now)

    assert breaker.snapshot() == before
    assert changes.seen == []


# -- on_change -------------------------------------------------------------------------------------


def test_on_change_hears_every_state_change_with_its_reason(clock: FakeClock) -> None:
    changes = Changes()
    breaker = make(clock, changes)

    fail(breaker)  # closed -> open
    clock.advance(RECOVERY)
    assert breaker.allow()  # open -> half_open
    breaker.record_transient_failure()  # half_open -> open
    clock.advance(RECOVERY)
    assert breaker.allow()  # -> half_open
    breaker.record_success()  # -> closed
    breaker.trip("drill", latched=True)  # -> open, latched
    breaker.reset("alice", "drill over")  # -> closed

    assert changes.seen == [
        ("kraken", "open", "3 transient failures within 60s"),
        ("kraken", "half_open", "recovery timeout passed: up to 2 probe send(s) may go"),
        ("kraken", "open", "a probe send failed: the exchange is still failing"),
        ("kraken", "half_open", "recovery timeout passed: up to 2 probe send(s) may go"),
        ("kraken", "closed", "a probe send succeeded"),
        ("kraken", "open", "drill"),
        ("kraken", "closed", "reset by alice: drill over"),
    ]


def test_on_change_is_not_called_without_a_change(clock: FakeClock) -> None:
    changes = Changes()
    breaker = make(clock, changes)

    fail(breaker, THRESHOLD - 1)
    breaker.record_success()
    breaker.record_permanent_failure()
    breaker.snapshot()

    assert changes.seen == []


def test_a_failing_on_change_is_logged_and_the_breaker_still_opens(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(breaker: CircuitBreaker, why: str) -> None:
        raise OSError("disk full")

    breaker = make(clock)
    breaker._on_change = broken

    with caplog.at_level(logging.ERROR, logger="coordinator.safety.breaker"):
        fail(breaker)

    assert breaker.state is S.OPEN
    assert "on_change failed" in caplog.text


# -- snapshot and restore --------------------------------------------------------------------------


@pytest.mark.parametrize("start", list(IN_STATE))
def test_a_snapshot_round_trips_through_json_and_restore(clock: FakeClock, start: str) -> None:
    breaker = IN_STATE[start](clock)
    clock.advance(7)
    saved = json.loads(json.dumps(breaker.snapshot()))

    restored = CircuitBreaker.restore("kraken", SETTINGS, clock, saved)

    window = ("failures_in_window", "calls_in_window", "failure_rate")
    again = restored.snapshot()
    assert {k: v for k, v in again.items() if k not in window} == {
        k: v for k, v in saved.items() if k not in window
    }
    assert restored.open_since == breaker.open_since
    assert again["probes_in_flight"] == 0


def test_a_restored_open_breaker_half_opens_when_its_original_timer_runs_out(
    clock: FakeClock,
) -> None:
    saved = opened(clock).snapshot()
    clock.advance(RECOVERY - 1)  # the process was down for most of the recovery timeout

    restored = CircuitBreaker.restore("kraken", SETTINGS, clock, saved)
    assert restored.state is S.OPEN
    clock.advance(1)

    assert restored.state is S.HALF_OPEN


def test_a_restored_half_open_breaker_has_every_probe_slot_free(clock: FakeClock) -> None:
    breaker = half_open(clock)
    assert breaker.allow()
    assert breaker.allow()

    restored = CircuitBreaker.restore("kraken", SETTINGS, clock, breaker.snapshot())

    assert [restored.allow() for _ in range(PROBES + 1)] == [True] * PROBES + [False]
    restored.record_success()
    assert restored.state is S.CLOSED


def _broken(field: str, value: Any) -> tuple[str, Any]:
    return field, value


MALFORMED = [
    _broken("name", "bitstamp"),
    _broken("state", "ajar"),
    _broken("state", None),
    _broken("opened_at", "yesterday"),
    _broken("opened_at", "2025-01-06T09:00:00"),  # no time zone
    _broken("opened_at", None),  # an open breaker must say when it opened
    _broken("open_since", 12),
    _broken("latched", "yes"),
    _broken("trips", True),
    _broken("trips", -1),
    _broken("reason", 5),
]


@pytest.mark.parametrize(("field", "value"), MALFORMED, ids=[f"{f}={v!r}" for f, v in MALFORMED])
def test_a_malformed_snapshot_is_refused_naming_the_field(
    clock: FakeClock, field: str, value: Any
) -> None:
    data = {**opened(clock).snapshot(), field: value}

    with pytest.raises(ValueError, match=f"breaker 'kraken': snapshot field '{field}'"):
        CircuitBreaker.restore("kraken", SETTINGS, clock, data)


@pytest.mark.parametrize("field", ["state", "opened_at", "open_since", "latched", "trips"])
def test_a_snapshot_missing_a_field_is_refused_naming_it(clock: FakeClock, field: str) -> None:
    data = opened(clock).snapshot()
    del data[field]

    with pytest.raises(ValueError, match=f"snapshot field '{field}' is missing"):
        CircuitBreaker.restore("kraken", SETTINGS, clock, data)


def test_a_snapshot_inconsistent_with_its_state_is_refused(clock: FakeClock) -> None:
    closed = make(clock).snapshot()

    with pytest.raises(ValueError, match="'latched' is true for a closed breaker"):
        CircuitBreaker.restore("kraken", SETTINGS, clock, {**closed, "latched": True})
    with pytest.raises(ValueError, match="'opened_at'"):
        CircuitBreaker.restore("kraken", SETTINGS, clock, {**closed, "opened_at": iso(T0)})
    with pytest.raises(ValueError, match="must be a mapping"):
        CircuitBreaker.restore("kraken", SETTINGS, clock, ["closed"])  # type: ignore[arg-type]


# -- the board -------------------------------------------------------------------------------------

LOOSE_GLOBAL = SETTINGS.model_copy(update={"failure_threshold": THRESHOLD + 2})


def board(clock: FakeClock, on_change: Changes | None = None, **kwargs: Any) -> BreakerBoard:
    return BreakerBoard(SETTINGS, clock, ["kraken", "ndax"], on_change, **kwargs)


def send_fails(b: BreakerBoard, exchange: str, times: int = 1) -> None:
    for _ in range(times):
        assert b.before_send(exchange) is None
        b.after_send(exchange, "transient")


def test_an_exchanges_failures_open_its_breaker_and_feed_the_global_one(
    clock: FakeClock,
) -> None:
    b = board(clock, global_settings=LOOSE_GLOBAL)

    send_fails(b, "kraken", THRESHOLD)

    status = b.status()
    assert status["exchanges"]["kraken"]["state"] == "open"
    assert status["exchanges"]["ndax"]["state"] == "closed"
    assert status["global"]["state"] == "closed"
    assert status["global"]["failures_in_window"] == THRESHOLD
    assert b.open_since("kraken") == T0
    assert (b.open_since("ndax"), b.open_since("global")) == (None, None)


def test_with_shared_settings_one_failing_exchange_opens_the_global_breaker_too(
    clock: FakeClock,
) -> None:
    b = board(clock)

    send_fails(b, "kraken", THRESHOLD)

    refusal = b.before_send("ndax")
    assert refusal is not None
    assert refusal.code == "global_breaker_open"


def test_a_second_exchange_is_refused_only_once_the_global_breaker_opens(
    clock: FakeClock,
) -> None:
    b = board(clock, global_settings=LOOSE_GLOBAL)
    send_fails(b, "kraken", THRESHOLD)

    assert b.would_refuse("ndax") is None
    send_fails(b, "ndax")  # global: THRESHOLD + 1 failures, one short
    assert b.would_refuse("ndax") is None
    send_fails(b, "ndax")

    assert b.status()["exchanges"]["ndax"]["state"] == "closed"  # ndax itself is fine
    refusal = b.before_send("ndax")
    assert refusal is not None
    assert refusal.code == "global_breaker_open"


def test_refusals_name_the_breaker_since_when_why_and_the_next_probe(clock: FakeClock) -> None:
    b = board(clock, global_settings=LOOSE_GLOBAL)
    send_fails(b, "kraken", THRESHOLD)
    clock.advance(5)

    refusal = b.before_send("kraken")

    assert refusal == Refusal(
        "breaker_open",
        f"the exchange 'kraken' circuit breaker is open since {iso(T0)} "
        f"(3 transient failures within 60s); "
        f"next probe at {iso(T0 + timedelta(seconds=RECOVERY))}",
    )
    send_fails(b, "ndax", 2)
    global_refusal = b.before_send("ndax")
    assert global_refusal is not None
    assert global_refusal.reason.startswith(
        f"the global circuit breaker is open since {iso(clock.now)}"
    )
    assert f"next probe at {iso(clock.now + timedelta(seconds=RECOVERY))}" in global_refusal.reason


def test_a_latched_refusal_says_only_an_operator_reset_clears_it(clock: FakeClock) -> None:
    b = board(clock)
    b.breaker("global").trip("kill switch: 3 activations in 60 minutes", latched=True)

    refusal = b.before_send("kraken")

    assert refusal is not None
    assert refusal.code == "global_breaker_open"
    assert "(kill switch: 3 activations in 60 minutes)" in refusal.reason
    assert refusal.reason.endswith("latched: only an operator reset clears it")
    assert "next probe" not in refusal.reason


def test_a_half_open_refusal_says_probes_are_in_flight_and_when_it_reopened(
    clock: FakeClock,
) -> None:
    b = board(clock, global_settings=LOOSE_GLOBAL)
    send_fails(b, "kraken", THRESHOLD)
    clock.advance(RECOVERY)
    send_fails(b, "kraken")  # a failed probe
    clock.advance(RECOVERY)
    assert b.before_send("kraken") is None
    assert b.before_send("kraken") is None

    refusal = b.before_send("kraken")

    assert refusal is not None
    assert refusal.code == "breaker_open"
    assert f"open since {iso(T0)}, reopened at {iso(T0 + timedelta(seconds=RECOVERY))}" in (
        refusal.reason
    )
    assert refusal.reason.endswith("half-open: 2 probe send(s) already in flight")


def test_before_send_takes_a_probe_slot_and_the_outcome_closes_both_breakers(
    clock: FakeClock,
) -> None:
    b = board(clock)
    send_fails(b, "kraken", THRESHOLD)  # opens kraken and global
    clock.advance(RECOVERY)

    assert b.would_refuse("kraken") is None
    assert b.before_send("kraken") is None
    assert b.before_send("ndax") is None  # the global's second probe slot
    refusal = b.before_send("ndax")
    assert refusal is not None
    assert refusal.code == "global_breaker_open"

    b.after_send("kraken", None)

    status = b.status()
    assert status["global"]["state"] == status["exchanges"]["kraken"]["state"] == "closed"


def test_a_refusal_by_the_exchange_gives_back_the_global_probe_slot(clock: FakeClock) -> None:
    b = board(clock)
    send_fails(b, "kraken", THRESHOLD)
    clock.advance(RECOVERY)
    for _ in range(PROBES):
        assert b.before_send("kraken") is None  # kraken's probe slots are all taken
    b.after_send("kraken", "permanent")  # one comes back...
    assert b.before_send("kraken") is None  # ...and is taken again
    b.breaker("kraken").trip("operator")

    assert b.before_send("kraken") is not None

    assert b.status()["global"]["probes_in_flight"] == PROBES


def test_would_refuse_has_no_side_effects(clock: FakeClock) -> None:
    b = board(clock)
    send_fails(b, "kraken", THRESHOLD)
    clock.advance(RECOVERY)

    for _ in range(5):
        assert b.would_refuse("ndax") is None

    status = b.status()
    assert status["global"]["probes_in_flight"] == 0
    assert status["exchanges"]["kraken"]["probes_in_flight"] == 0


def test_permanent_failures_and_cancelled_sends_never_open_a_board_breaker(
    clock: FakeClock,
) -> None:
    b = board(clock)
    for outcome in ("permanent", "cancelled") * THRESHOLD:
        assert b.before_send("kraken") is None
        b.after_send("kraken", outcome)

    status = b.status()
    assert status["global"]["state"] == status["exchanges"]["kraken"]["state"] == "closed"
    assert status["exchanges"]["kraken"]["calls_in_window"] == THRESHOLD


def test_a_cancelled_probe_frees_its_slots_without_deciding(clock: FakeClock) -> None:
    b = board(clock)
    send_fails(b, "kraken", THRESHOLD)
    clock.advance(RECOVERY)
    assert b.before_send("kraken") is None

    b.after_send("kraken", "cancelled")

    status = b.status()
    assert status["exchanges"]["kraken"]["state"] == "half_open"
    assert status["exchanges"]["kraken"]["probes_in_flight"] == 0
    assert status["global"]["probes_in_flight"] == 0


def test_market_data_failures_feed_the_exchange_and_the_global_breaker(
    clock: FakeClock,
) -> None:
    b = board(clock)

    for _ in range(THRESHOLD):
        b.record_transient_failure("ndax")

    assert b.breaker("ndax").state is S.OPEN
    assert b.breaker("global").state is S.OPEN


def test_an_unknown_breaker_is_a_lookup_error_naming_the_known_ones(clock: FakeClock) -> None:
    b = board(clock)

    with pytest.raises(UnknownBreaker, match="'binance'; known: global, kraken, ndax"):
        b.breaker("binance")
    with pytest.raises(LookupError):
        b.record_transient_failure("binance")
    with pytest.raises(UnknownBreaker):
        b.record_transient_failure("global")  # the global breaker is not an exchange
    refusal = b.before_send("binance")
    assert refusal is not None
    assert refusal.code == "no_breaker"


def test_an_exchange_named_global_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="may not be named 'global'"):
        BreakerBoard(SETTINGS, clock, ["kraken", "global"])


def test_board_changes_are_reported_for_each_breaker(clock: FakeClock) -> None:
    changes = Changes()
    b = board(clock, changes)

    send_fails(b, "kraken", THRESHOLD)

    assert changes.seen == [
        ("kraken", "open", "3 transient failures within 60s"),
        ("global", "open", "3 transient failures within 60s"),
    ]


def test_the_board_restores_persisted_snapshots_at_start_up(clock: FakeClock) -> None:
    first = board(clock)
    send_fails(first, "kraken", THRESHOLD)
    first.breaker("ndax").trip("operator", latched=True)
    saved = json.loads(json.dumps(first.status()))
    states = {"global": saved["global"], **saved["exchanges"]}
    changes = Changes()

    second = board(clock, changes)
    second.restore(states)

    assert second.status()["exchanges"]["ndax"]["latched"] is True
    assert second.open_since("kraken") == T0
    clock.advance(RECOVERY)
    assert second.before_send("kraken") is None  # probes go once the restored timers run out
    second.after_send("kraken", None)
    assert ("kraken", "closed", "a probe send succeeded") in changes.seen  # on_change is kept


def test_a_board_restore_is_all_or_nothing_and_skips_unconfigured_exchanges(
    clock: FakeClock,
) -> None:
    b = board(clock)
    other = CircuitBreaker("bitstamp", SETTINGS, clock)
    other.trip("x")
    open_kraken = opened(clock).snapshot()

    with pytest.raises(ValueError, match="breaker 'ndax'"):
        b.restore({"kraken": open_kraken, "ndax": {**open_kraken, "name": "ndax", "trips": "1"}})
    assert b.breaker("kraken").state is S.CLOSED

    b.restore({"kraken": open_kraken, "bitstamp": other.snapshot()})
    assert b.breaker("kraken").state is S.OPEN
    assert b.names == ("global", "kraken", "ndax")


# -- through the real gateway ----------------------------------------------------------------------

D = Decimal
MARKET = MarketSnapshot("BTC/AUD", D(100), D("99.9"), D("100.1"), T0)


@pytest.fixture
async def guarded(
    tmp_path: Path, clock: FakeClock
) -> AsyncIterator[tuple[OrderGateway, PaperExchange, BreakerBoard]]:
    store = await SqliteStore.open(tmp_path / "j.db")
    journal = SqliteJournal(store)
    await journal.register_bot("alpha", "kraken", "BTC/AUD", "paper", T0)
    balances = {"AUD": D(10_000), "BTC": D(1)}
    await journal.seed_balances("alpha", balances, "opening", T0)
    paper = PaperExchange("paper", "BTC/AUD", balances, fee_rate=D(0), slippage_bps=D(0))
    b = BreakerBoard(SETTINGS, clock, ["kraken"], global_settings=LOOSE_GLOBAL)
    gw = OrderGateway(
        BotIdentity("alpha", "kraken", "BTC/AUD", "BTC", "AUD"),
        paper,
        journal,
        ClientOrderIds(),
        BotBook(balances=dict(balances)),
        clock=clock,
        send_guard=b,
    )
    await gw.sync(MARKET)
    yield gw, paper, b
    await store.close()


def resting_buy() -> OrderIntent:
    return OrderIntent("BTC/AUD", Side.BUY, OrderType.LIMIT, D("0.1"), D(90))


async def test_through_the_gateway_transient_send_failures_open_the_breaker(
    guarded: tuple[OrderGateway, PaperExchange, BreakerBoard], clock: FakeClock
) -> None:
    gateway, paper, b = guarded
    paper.reject_next(THRESHOLD)  # refused on purpose: never counts
    rejected = [(await gateway.submit(resting_buy())).outcome for _ in range(THRESHOLD)]
    paper.fail_next(THRESHOLD)
    failed = [(await gateway.submit(resting_buy())).outcome for _ in range(THRESHOLD)]
    refused = await gateway.submit(resting_buy())

    assert (rejected, failed) == (["rejected"] * THRESHOLD, ["failed"] * THRESHOLD)
    assert (refused.outcome, refused.code) == ("refused", "breaker_open")
    assert "next probe at" in refused.reason
    clock.advance(RECOVERY)
    probe = await gateway.submit(resting_buy())
    assert probe.outcome == "sent"
    assert b.breaker("kraken").state is S.CLOSED
    global_breaker = b.breaker("global").snapshot()
    assert global_breaker["state"] == "closed"
    assert global_breaker["failures_in_window"] == THRESHOLD  # it heard every transient failure
