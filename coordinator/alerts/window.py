"""Order outcomes per bot over a sliding window, in one-minute buckets.

The failure-rate rule (runbook 001: more than 5 % of orders failed over 15 minutes) reads it.
Memory is bounded: one small bucket per bot per minute of the window, plus the current one.

An outcome is counted for at least the whole window, never less: the buckets kept are the
current minute and the `minutes` before it, so the window covers between N and N+1 minutes.
(Keeping only N buckets made a 1-minute window forget a failure at the next minute boundary,
which could be a second after it: a drill's three failures at :59 vanished before the alert's
0.5 s `for` had passed.)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True)
class _Bucket:
    minute: int
    orders: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class WindowCount:
    orders: int
    failed: int

    @property
    def failure_pct(self) -> float:
        return 100.0 * self.failed / self.orders if self.orders else 0.0


class OutcomeWindow:
    def __init__(self, window_minutes: float, clock: Callable[[], datetime]) -> None:
        self.minutes = max(1, math.ceil(window_minutes))
        self.clock = clock
        self._buckets: dict[str, deque[_Bucket]] = {}

    def resize(self, window_minutes: float) -> None:
        """A new window length (a config reload); buckets older than it expire as usual."""
        self.minutes = max(1, math.ceil(window_minutes))

    def record(self, bot: str, failed: bool) -> None:
        minute = _minute(self.clock())
        buckets = self._buckets.setdefault(bot, deque())
        if not buckets or buckets[-1].minute != minute:
            buckets.append(_Bucket(minute))
            self._expire(buckets, minute)
        bucket = buckets[-1]
        bucket.orders += 1
        bucket.failed += int(failed)

    def count(self, bot: str) -> WindowCount:
        buckets = self._buckets.get(bot)
        if not buckets:
            return WindowCount(0, 0)
        now = _minute(self.clock())
        self._expire(buckets, now)
        return WindowCount(sum(b.orders for b in buckets), sum(b.failed for b in buckets))

    def bots(self) -> list[str]:
        return list(self._buckets)

    def _expire(self, buckets: deque[_Bucket], now: int) -> None:
        while buckets and buckets[0].minute < now - self.minutes:
            buckets.popleft()


def _minute(at: datetime) -> int:
    return int(at.timestamp() // 60)
