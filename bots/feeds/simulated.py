"""A deterministic, offline market feed: geometric Brownian motion from a seeded generator.

Paper bots and tests need prices without an exchange. The path depends only on the parameters and
the seed (each feed owns its `random.Random`), never on the wall clock or on other feeds, so a run
can be replayed exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from bots.models import MarketSnapshot


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SimulatedFeed:
    """`MarketFeed` producing one GBM step per `snapshot()` call.

    Volatility and drift are per hour; one step is `step_seconds` of simulated time. The spread is
    applied around the quantized last price, bid rounded down and ask rounded up, and never
    collapses: bid < ask and both stay positive however low the price wanders.
    """

    def __init__(
        self,
        symbol: str,
        start_price: Decimal,
        *,
        drift_per_hour: float = 0.0,
        volatility_per_hour: float = 0.02,
        spread_bps: float = 2.0,
        seed: int = 1,
        step_seconds: float = 1.0,
        price_decimals: int = 2,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if start_price <= 0:
            raise ValueError(f"start_price must be positive, got {start_price}")
        if volatility_per_hour < 0:
            raise ValueError(f"volatility_per_hour must be >= 0, got {volatility_per_hour}")
        if spread_bps < 0:
            raise ValueError(f"spread_bps must be >= 0, got {spread_bps}")
        if step_seconds <= 0:
            raise ValueError(f"step_seconds must be positive, got {step_seconds}")
        if price_decimals < 0:
            raise ValueError(f"price_decimals must be >= 0, got {price_decimals}")
        self.symbol = symbol
        self._price = float(start_price)
        self._tick = Decimal(1).scaleb(-price_decimals)
        self._half_spread = Decimal(repr(spread_bps)) / Decimal(20_000)
        dt = step_seconds / 3600.0
        self._mean = (drift_per_hour - volatility_per_hour**2 / 2.0) * dt
        self._stdev = volatility_per_hour * math.sqrt(dt)
        self._rng = random.Random(seed)  # noqa: S311 - simulation, not cryptography
        self._clock = clock or _utc_now
        self._trend = 1.0

    def set_trend(self, pct_per_step: float) -> None:
        """Drill: on top of the random walk, move the price `pct_per_step` percent at every
        step (negative: down), so the market runs one way through a grid's levels; 0 ends it."""
        if not -50 < pct_per_step < 50:
            raise ValueError(f"a trend must be within +-50 % per step, got {pct_per_step}")
        self._trend = 1.0 + pct_per_step / 100.0

    async def snapshot(self) -> MarketSnapshot:
        self._price *= math.exp(self._rng.gauss(self._mean, self._stdev)) * self._trend
        tick = self._tick
        last = Decimal(repr(self._price)).quantize(tick, ROUND_HALF_EVEN)
        last = max(last, tick)
        half = last * self._half_spread
        bid = max((last - half).quantize(tick, ROUND_FLOOR), tick)
        ask = max((last + half).quantize(tick, ROUND_CEILING), bid + tick)
        return MarketSnapshot(
            symbol=self.symbol, last=last, bid=bid, ask=ask, timestamp=self._clock()
        )

    async def close(self) -> None:
        """Nothing to release."""
