"""CcxtPublicFeed against kraken's real public paths, answered by aioresponses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest
from aioresponses import aioresponses
from yarl import URL

from bots.errors import ExchangeError, OperatorActionRequired, TransientExchangeError
from bots.feeds.base import MarketFeed
from bots.feeds.ccxt_public import CcxtPublicFeed, make_public_exchange
from tests.bots.exchanges.ccxt_fixtures import KRAKEN_ASSETS, KRAKEN_PAIRS

BASE = "https://api.kraken.com/0/public/"
TICKER_URL = BASE + "Ticker?pair=XBTAUD"
FIXED = datetime(2026, 1, 1, tzinfo=UTC)

ASSETS = KRAKEN_ASSETS
PAIRS = KRAKEN_PAIRS


def ticker(**fields: Any) -> dict[str, Any]:
    return {"error": [], "result": {"XBTAUD": fields}}


GOOD = ticker(a=["101000.5", "1", "1.000"], b=["100990.1", "2", "2.000"], c=["100995.3", "0.1"])


@pytest.fixture
async def kraken() -> AsyncIterator[Any]:
    exchange = ccxt_async.kraken({"enableRateLimit": False})
    if hasattr(exchange, "timeout_on_exit"):
        exchange.timeout_on_exit = 0
    yield exchange
    await exchange.close()


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        m.get(BASE + "Assets", payload=ASSETS)
        m.get(BASE + "AssetPairs", payload=PAIRS)
        yield m


def feed_for(exchange: Any) -> CcxtPublicFeed:
    return CcxtPublicFeed(exchange, "BTC/AUD", clock=lambda: FIXED)


def requested(m: aioresponses) -> list[str]:
    return [str(url) for (_method, url) in m.requests]


async def test_good_ticker_becomes_a_decimal_snapshot(kraken: Any, mocked: aioresponses) -> None:
    mocked.get(TICKER_URL, payload=GOOD)
    snap = await feed_for(kraken).snapshot()
    assert snap.symbol == "BTC/AUD"
    assert snap.last == Decimal("100995.3")
    assert snap.bid == Decimal("100990.1")
    assert snap.ask == Decimal("101000.5")
    assert snap.timestamp == FIXED
    assert requested(mocked) == [BASE + "Assets", BASE + "AssetPairs", TICKER_URL]


async def test_markets_load_once_across_snapshots(kraken: Any, mocked: aioresponses) -> None:
    mocked.get(TICKER_URL, payload=GOOD, repeat=True)
    feed = feed_for(kraken)
    await feed.snapshot()
    await feed.snapshot()
    assert len(mocked.requests[("GET", URL(TICKER_URL))]) == 2
    assert len(mocked.requests[("GET", URL(BASE + "AssetPairs"))]) == 1


async def test_missing_bid_and_ask_fall_back_to_last(kraken: Any, mocked: aioresponses) -> None:
    mocked.get(TICKER_URL, payload=ticker(c=["100995.3", "0.1"]))
    snap = await feed_for(kraken).snapshot()
    assert snap.bid == snap.ask == snap.last == Decimal("100995.3")


async def test_rate_limited_429_is_transient(kraken: Any, mocked: aioresponses) -> None:
    mocked.get(TICKER_URL, status=429, body="Too Many Requests")
    with pytest.raises(TransientExchangeError, match="kraken") as info:
        await feed_for(kraken).snapshot()
    assert isinstance(info.value.__cause__, ccxt.RateLimitExceeded)
    assert ("GET", URL(TICKER_URL)) in mocked.requests


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_transient(kraken: Any, mocked: aioresponses, status: int) -> None:
    mocked.get(TICKER_URL, status=status, body="oops")
    with pytest.raises(TransientExchangeError, match="kraken") as info:
        await feed_for(kraken).snapshot()
    assert isinstance(info.value.__cause__, ccxt.ExchangeNotAvailable)


async def test_kraken_rate_limit_message_is_transient(kraken: Any, mocked: aioresponses) -> None:
    mocked.get(TICKER_URL, payload={"error": ["EAPI:Rate limit exceeded"]})
    with pytest.raises(TransientExchangeError) as info:
        await feed_for(kraken).snapshot()
    assert isinstance(info.value.__cause__, ccxt.DDoSProtection)


async def test_unauthorised_needs_an_operator(kraken: Any, mocked: aioresponses) -> None:
    mocked.get(TICKER_URL, status=401, body="Unauthorized")
    with pytest.raises(OperatorActionRequired, match="kraken") as info:
        await feed_for(kraken).snapshot()
    assert isinstance(info.value.__cause__, ccxt.AuthenticationError)


async def test_unknown_pair_is_an_exchange_error(kraken: Any, mocked: aioresponses) -> None:
    mocked.get(TICKER_URL, payload={"error": ["EQuery:Unknown asset pair"]})
    with pytest.raises(ExchangeError, match="kraken") as info:
        await feed_for(kraken).snapshot()
    assert not isinstance(info.value, TransientExchangeError)
    assert isinstance(info.value.__cause__, ccxt.BaseError)


async def test_symbol_the_exchange_does_not_list_is_an_exchange_error(
    kraken: Any, mocked: aioresponses
) -> None:
    with pytest.raises(ExchangeError, match="kraken") as info:
        await CcxtPublicFeed(kraken, "ETH/AUD").snapshot()
    assert isinstance(info.value.__cause__, ccxt.BadSymbol)
    assert ("GET", URL(TICKER_URL)) not in mocked.requests


async def test_non_json_body_is_a_malformed_ticker(kraken: Any, mocked: aioresponses) -> None:
    mocked.get(TICKER_URL, body="<html>maintenance</html>")
    with pytest.raises(TransientExchangeError, match="malformed ticker from kraken"):
        await feed_for(kraken).snapshot()


async def test_ticker_under_another_pair_key_is_malformed(
    kraken: Any, mocked: aioresponses
) -> None:
    mocked.get(TICKER_URL, payload={"error": [], "result": {"XXBTZAUD": GOOD["result"]["XBTAUD"]}})
    with pytest.raises(TransientExchangeError, match="malformed ticker from kraken"):
        await feed_for(kraken).snapshot()


async def test_ticker_with_missing_last_is_malformed(kraken: Any, mocked: aioresponses) -> None:
    mocked.get(TICKER_URL, payload=ticker(a=["101000.5", "1", "1.000"], b=["100990.1", "2", "2"]))
    with pytest.raises(TransientExchangeError, match="malformed ticker from kraken: no last"):
        await feed_for(kraken).snapshot()


async def test_ticker_with_non_numeric_last_is_malformed(kraken: Any, mocked: aioresponses) -> None:
    mocked.get(TICKER_URL, payload=ticker(c=["not-a-price", "0.1"]))
    with pytest.raises(TransientExchangeError, match="malformed ticker from kraken"):
        await feed_for(kraken).snapshot()


async def test_unreachable_market_list_is_transient_and_stops_early(kraken: Any) -> None:
    with aioresponses() as m:  # nothing mocked: the connection fails
        with pytest.raises(TransientExchangeError, match="kraken"):
            await feed_for(kraken).snapshot()
        assert requested(m) == [BASE + "Assets"]


class _StubExchange:
    """Hands back whatever ticker (or exception) a test gives it."""

    id = "stub"

    def __init__(self, result: Any) -> None:
        self.result = result

    async def fetch_ticker(self, symbol: str) -> Any:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


@pytest.mark.parametrize(
    "ticker_value",
    [
        None,
        {"last": "abc"},
        {"last": float("nan")},
        {"last": float("inf")},
        {"last": 0},
        {"last": -1.5},
        {"last": True},
        {"last": [1]},
        {"last": 1.0, "bid": "x"},
        {"last": 1.0, "ask": -2},
    ],
)
async def test_unusable_ticker_values_are_malformed(ticker_value: Any) -> None:
    feed = CcxtPublicFeed(_StubExchange(ticker_value), "BTC/AUD")
    with pytest.raises(TransientExchangeError, match="malformed ticker from stub"):
        await feed.snapshot()


async def test_float_prices_keep_their_decimal_digits() -> None:
    feed = CcxtPublicFeed(_StubExchange({"last": 100.3, "bid": 100.1, "ask": 100}), "BTC/AUD")
    snap = await feed.snapshot()
    assert (snap.last, snap.bid, snap.ask) == (Decimal("100.3"), Decimal("100.1"), Decimal(100))


async def test_timeouts_are_transient_and_chained() -> None:
    cause = ccxt.RequestTimeout("kraken GET timed out")
    feed = CcxtPublicFeed(_StubExchange(cause), "BTC/AUD")
    with pytest.raises(TransientExchangeError, match="stub") as info:
        await feed.snapshot()
    assert info.value.__cause__ is cause


async def test_feed_is_a_market_feed_and_close_leaves_the_exchange_open(kraken: Any) -> None:
    feed = CcxtPublicFeed(kraken, "BTC/AUD")
    assert isinstance(feed, MarketFeed)
    await feed.close()
    assert not kraken.closed_by_user


async def test_make_public_exchange_has_rate_limit_and_no_keys() -> None:
    import ssl

    context = ssl.create_default_context()
    exchange = make_public_exchange("kraken", ssl_context=context)
    try:
        assert exchange.id == "kraken"
        assert exchange.enableRateLimit is True
        assert exchange.ssl_context is context
        assert not exchange.apiKey
        assert not exchange.secret
    finally:
        exchange.timeout_on_exit = 0
        await exchange.close()


def test_make_public_exchange_refuses_unknown_ids() -> None:
    with pytest.raises(ValueError, match="unknown ccxt exchange id"):
        make_public_exchange("no-such-exchange")
