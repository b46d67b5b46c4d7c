"""Client order ids: increasing, above the journal's floor, 63-bit, unique whatever the clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from bots.ids import MAX_CLIENT_ORDER_ID, ClientOrderIds, issued_at

COUNTER_BITS = 20


def scripted_clock(*readings: int) -> Callable[[], int]:
    """A millisecond clock that returns `readings` in turn, then repeats the last one."""
    values: Iterator[int] = iter(readings)
    last = readings[-1]

    def clock() -> int:
        return next(values, last)

    return clock


def test_ids_strictly_increase_on_the_real_clock() -> None:
    ids = ClientOrderIds()
    issued = [ids.next() for _ in range(5_000)]
    assert all(a < b for a, b in itertools.pairwise(issued))


def test_an_id_is_the_clock_in_milliseconds_shifted_past_the_counter_bits() -> None:
    ids = ClientOrderIds(clock_ms=scripted_clock(1_700_000_000_000))
    assert ids.next() == 1_700_000_000_000 << COUNTER_BITS


def test_the_first_id_is_above_a_floor_that_is_ahead_of_the_clock() -> None:
    clock_ms = 1_700_000_000_000
    floor = (clock_ms << COUNTER_BITS) + 12_345  # the journal already holds a later id
    ids = ClientOrderIds(floor=floor, clock_ms=scripted_clock(clock_ms))
    first, second = ids.next(), ids.next()
    assert first == floor + 1
    assert second == floor + 2


def test_ids_stay_below_two_to_the_63() -> None:
    ids = ClientOrderIds()
    assert all(0 < ids.next() < 2**63 for _ in range(1_000))
    assert MAX_CLIENT_ORDER_ID == 2**63 - 1


def test_the_id_space_running_out_raises_instead_of_wrapping() -> None:
    ids = ClientOrderIds(floor=MAX_CLIENT_ORDER_ID - 1, clock_ms=scripted_clock(0))
    assert ids.next() == MAX_CLIENT_ORDER_ID
    with pytest.raises(OverflowError):
        ids.next()


def test_ids_are_unique_when_the_clock_stands_still() -> None:
    ids = ClientOrderIds(clock_ms=scripted_clock(1_700_000_000_000))
    issued = [ids.next() for _ in range(10_000)]
    assert len(set(issued)) == len(issued)
    assert issued == sorted(issued)


def test_ids_keep_increasing_when_the_clock_steps_backwards() -> None:
    now = 1_700_000_000_000
    ids = ClientOrderIds(clock_ms=scripted_clock(now, now + 5, now - 60_000, now - 120_000, now))
    issued = [ids.next() for _ in range(8)]
    assert all(a < b for a, b in itertools.pairwise(issued))
    assert len(set(issued)) == len(issued)


def test_a_restart_with_a_clock_behind_the_journal_never_reissues_an_id() -> None:
    now = 1_700_000_000_000
    before = ClientOrderIds(clock_ms=scripted_clock(now))
    issued = {before.next() for _ in range(100)}
    # The process restarts with the clock an hour behind; the floor is the journal's max id.
    after = ClientOrderIds(floor=max(issued), clock_ms=scripted_clock(now - 3_600_000))
    assert all(after.next() not in issued for _ in range(100))


def test_an_id_says_when_it_was_issued_to_the_millisecond() -> None:
    at = datetime(2026, 12, 7, 23, 15, 1, 250_000, tzinfo=UTC)
    ms = int(at.timestamp() * 1000)
    ids = ClientOrderIds(clock_ms=scripted_clock(ms))
    first, second = ids.next(), ids.next()  # the same millisecond: the counter moves

    assert issued_at(first) == issued_at(second) == at


AFTER_2100 = int(datetime(2101, 1, 1, tzinfo=UTC).timestamp() * 1000) << COUNTER_BITS


@pytest.mark.parametrize("not_ours", [0, -5, 17, 1 << 63, AFTER_2100])
def test_a_number_that_is_not_one_of_our_ids_has_no_issue_time(not_ours: int) -> None:
    assert issued_at(not_ours) is None
