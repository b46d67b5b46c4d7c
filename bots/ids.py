"""Client order ids: unique, increasing, and representable as a 63-bit integer.

ndax silently drops a string client order id, so ids are integers: milliseconds since the epoch
shifted left by 20 bits, plus a counter for ids issued in the same millisecond. The generator
starts above the largest id already in the journal, so a clock that steps backwards after a
restart can never reissue an id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

_COUNTER_BITS = 20
MAX_CLIENT_ORDER_ID = (1 << 63) - 1


class ClientOrderIds:
    def __init__(self, floor: int = 0, clock_ms: Callable[[], int] | None = None) -> None:
        self._last = floor
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def next(self) -> int:
        candidate = max(self._last + 1, self._clock_ms() << _COUNTER_BITS)
        if candidate > MAX_CLIENT_ORDER_ID:
            raise OverflowError("client order id space exhausted")
        self._last = candidate
        return candidate


def issued_at(client_order_id: int) -> datetime | None:
    """When an id of ours was issued (to the millisecond), or None when `client_order_id` is
    not one: its time part is not a date between 2020 and 2100. The counter bits are dropped;
    an id above the clock (after a clock step back) reads a little late, never early."""
    if not 0 < client_order_id <= MAX_CLIENT_ORDER_ID:
        return None
    at = datetime.fromtimestamp((client_order_id >> _COUNTER_BITS) / 1000, UTC)
    return at if _PLAUSIBLE[0] <= at < _PLAUSIBLE[1] else None


_PLAUSIBLE = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
