"""Market data from a venue's public ticker, through ccxt's async API.

The ccxt instance is shared (one per venue per process: importing and building them is costly,
and instances are bound to an event loop), so this feed neither builds nor closes it.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bots.errors import TransientExchangeError
from bots.exchanges.ccxt_errors import translate_ccxt_error
from bots.exchanges.ccxt_import import ccxt_async_support, ccxt_base_error
from bots.models import MarketSnapshot


def _utc_now() -> datetime:
    return datetime.now(UTC)


def make_public_exchange(
    exchange_id: str, ssl_context: ssl.SSLContext | None = None, rate_limit_ms: int | None = None
) -> Any:
    """Build a keyless ccxt async instance with the rate limiter on.

    Pass one `ssl_context` to every instance: each instance otherwise builds its own on its first
    request, which blocks the loop for about 18 ms. The caller owns the instance and must
    `await exchange.close()` it.
    """
    ccxt_async = ccxt_async_support()
    exchange_class = getattr(ccxt_async, exchange_id, None)
    if exchange_id not in ccxt_async.exchanges or exchange_class is None:
        raise ValueError(f"unknown ccxt exchange id: {exchange_id!r}")
    config: dict[str, Any] = {"enableRateLimit": True}
    if rate_limit_ms is not None:  # a drill's local fake venue only
        config["rateLimit"] = rate_limit_ms
    if ssl_context is not None:
        config["ssl_context"] = ssl_context
    return exchange_class(config)


class CcxtPublicFeed:
    """`MarketFeed` over `exchange.fetch_ticker(symbol)`.

    Every failure is one of ours: ccxt errors go through `translate_ccxt_error`, and a ticker
    without a usable price raises `TransientExchangeError` (a venue glitch; the next tick may be
    fine). The snapshot's timestamp is when we received it: venues disagree on what a ticker's
    own timestamp means, and kraken sends none.
    """

    def __init__(
        self, exchange: Any, symbol: str, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self._exchange_id = str(getattr(exchange, "id", "exchange"))
        self._clock = clock or _utc_now

    async def snapshot(self) -> MarketSnapshot:
        try:
            ticker = await self.exchange.fetch_ticker(self.symbol)
        except ccxt_base_error() as exc:
            raise translate_ccxt_error(exc, self._exchange_id) from exc
        if not isinstance(ticker, Mapping):
            raise self._malformed(f"expected a ticker mapping, got {type(ticker).__name__}")
        last = self._price(ticker, "last")
        if last is None:
            raise self._malformed(f"no last price for {self.symbol}")
        bid = self._price(ticker, "bid") or last
        ask = self._price(ticker, "ask") or last
        return MarketSnapshot(
            symbol=self.symbol, last=last, bid=bid, ask=ask, timestamp=self._clock()
        )

    def _price(self, ticker: Mapping[str, Any], key: str) -> Decimal | None:
        """The field as a positive finite Decimal, None when absent; garbage raises."""
        value = ticker.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise self._malformed(f"{key} is not a number: {value!r}")
        try:
            # str() first: a float's shortest repr is the number the venue sent (100.3, not
            # 100.2999999999999971578...).
            price = Decimal(str(value))
        except InvalidOperation:
            raise self._malformed(f"{key} is not a number: {value!r}") from None
        if not price.is_finite() or price <= 0:
            raise self._malformed(f"{key} is not a positive price: {value!r}")
        return price

    def _malformed(self, detail: str) -> TransientExchangeError:
        return TransientExchangeError(f"malformed ticker from {self._exchange_id}: {detail}")

    async def close(self) -> None:
        """Nothing to do: the ccxt instance is shared and closed by its owner."""
