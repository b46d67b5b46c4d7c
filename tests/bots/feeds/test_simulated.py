from __future__ import annotations

import itertools
import math
import statistics
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bots.feeds.base import MarketFeed
from bots.feeds.simulated import SimulatedFeed
from bots.models import MarketSnapshot

FIXED = datetime(2026, 1, 1, tzinfo=UTC)


async def _path(feed: SimulatedFeed, n: int) -> list[MarketSnapshot]:
    return [await feed.snapshot() for _ in range(n)]


def test_simulated_feed_is_a_market_feed() -> None:
    assert isinstance(SimulatedFeed("BTC/AUD", Decimal(100)), MarketFeed)


async def test_same_seed_gives_same_price_path() -> None:
    a = await _path(SimulatedFeed("BTC/AUD", Decimal(100), seed=7), 200)
    b = await _path(SimulatedFeed("BTC/AUD", Decimal(100), seed=7), 200)
    assert [(s.last, s.bid, s.ask) for s in a] == [(s.last, s.bid, s.ask) for s in b]


async def test_different_seeds_give_different_paths() -> None:
    a = await _path(SimulatedFeed("BTC/AUD", Decimal(100), seed=1), 50)
    b = await _path(SimulatedFeed("BTC/AUD", Decimal(100), seed=2), 50)
    assert [s.last for s in a] != [s.last for s in b]


async def test_price_path_does_not_depend_on_the_clock() -> None:
    early = SimulatedFeed("BTC/AUD", Decimal(100), clock=lambda: FIXED)
    late = SimulatedFeed("BTC/AUD", Decimal(100), clock=lambda: datetime(2030, 6, 1, tzinfo=UTC))
    assert [s.last for s in await _path(early, 50)] == [s.last for s in await _path(late, 50)]


async def test_each_snapshot_advances_the_path() -> None:
    feed = SimulatedFeed("BTC/AUD", Decimal(100), volatility_per_hour=0.5)
    lasts = [s.last for s in await _path(feed, 20)]
    assert len(set(lasts)) > 1


async def test_snapshot_carries_symbol_and_clock_time() -> None:
    snap = await SimulatedFeed("ETH/AUD", Decimal(3000), clock=lambda: FIXED).snapshot()
    assert snap.symbol == "ETH/AUD"
    assert snap.timestamp == FIXED


async def test_default_timestamp_is_aware_utc_now() -> None:
    before = datetime.now(UTC)
    snap = await SimulatedFeed("BTC/AUD", Decimal(100)).snapshot()
    assert before <= snap.timestamp <= datetime.now(UTC)


async def test_prices_are_quantized_with_bid_below_ask() -> None:
    feed = SimulatedFeed("BTC/AUD", Decimal("65000"), spread_bps=10, price_decimals=1)
    for snap in await _path(feed, 300):
        for price in (snap.last, snap.bid, snap.ask):
            assert price == price.quantize(Decimal("0.1"))
        assert 0 < snap.bid < snap.ask
        assert snap.bid <= snap.last <= snap.ask
        # 10 bps around last, rounded outwards by at most one tick on each side
        assert snap.ask - snap.bid <= snap.last * Decimal("0.001") + Decimal("0.2")


async def test_zero_spread_still_keeps_bid_below_ask() -> None:
    feed = SimulatedFeed("BTC/AUD", Decimal(100), spread_bps=0)
    for snap in await _path(feed, 50):
        assert snap.bid < snap.ask
        assert snap.ask - snap.bid == Decimal("0.01")


async def test_prices_stay_positive_when_the_price_collapses() -> None:
    feed = SimulatedFeed(
        "DOGE/AUD", Decimal("0.02"), drift_per_hour=-50.0, volatility_per_hour=1.0, seed=3
    )
    snaps = await _path(feed, 500)
    assert snaps[-1].last == Decimal("0.01")  # floored at one tick
    for snap in snaps:
        assert 0 < snap.bid < snap.ask
        assert snap.last > 0


async def test_zero_volatility_follows_the_drift() -> None:
    feed = SimulatedFeed(
        "BTC/AUD", Decimal(100), drift_per_hour=0.1, volatility_per_hour=0.0, step_seconds=3600
    )
    snaps = await _path(feed, 3)
    expected = [Decimal(repr(100 * math.exp(0.1 * k))).quantize(Decimal("0.01")) for k in (1, 2, 3)]
    assert [s.last for s in snaps] == expected


async def test_log_returns_have_the_requested_volatility() -> None:
    feed = SimulatedFeed(
        "BTC/AUD",
        Decimal(1_000_000),
        volatility_per_hour=0.02,
        step_seconds=60,
        price_decimals=4,
        seed=11,
    )
    lasts = [float(s.last) for s in await _path(feed, 2000)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(lasts)]
    expected = 0.02 * math.sqrt(60 / 3600)
    assert statistics.stdev(returns) == pytest.approx(expected, rel=0.1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_price": Decimal(0)},
        {"start_price": Decimal(-1)},
        {"volatility_per_hour": -0.1},
        {"spread_bps": -1.0},
        {"step_seconds": 0.0},
        {"price_decimals": -1},
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"start_price": Decimal(100)} | kwargs
    with pytest.raises(ValueError):
        SimulatedFeed("BTC/AUD", **args)  # type: ignore[arg-type]


async def test_close_is_harmless() -> None:
    feed = SimulatedFeed("BTC/AUD", Decimal(100))
    await feed.close()


async def test_a_trend_moves_the_price_one_way_every_step_until_it_is_ended() -> None:
    feed = SimulatedFeed("BTC/AUD", Decimal(100), volatility_per_hour=0.0)
    feed.set_trend(-1)

    down = [(await feed.snapshot()).last for _ in range(3)]
    feed.set_trend(0)
    flat = [(await feed.snapshot()).last for _ in range(2)]

    assert down == [Decimal("99.00"), Decimal("98.01"), Decimal("97.03")]
    assert flat == [Decimal("97.03"), Decimal("97.03")]
    with pytest.raises(ValueError, match="within"):
        feed.set_trend(60)
