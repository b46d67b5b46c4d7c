"""`ExchangeAdapter` over a ccxt async instance: one trading account on one venue.

The caller builds the ccxt instance (`make_private_exchange`) and closes it; several bots may
share it (the API nonce is per key). Parsing lives in `ccxt_orders`; this module makes the calls.

What it guarantees, beyond the protocol:
- No ccxt exception escapes: each goes through `translate_ccxt_error`, raised `from` it, after
  the account's credentials are blanked out of its message. A response ccxt cannot parse is a
  `TransientExchangeError`, and so is a body that is not JSON (see `install_response_guard`).
- An order is looked up by OUR client order id when its exchange id is unknown (after a restart,
  or after a timeout that lost the create response): kraken filters OpenOrders and ClosedOrders
  by `cl_ord_id`; ndax has no such filter on GetOpenOrders, so open orders are matched here, then
  GetOrdersHistory is asked with its `ClientOrderId` filter (and matched here too).
- A snapshot carries every trade of its order (trade ids are the venue's); a finished order whose
  trades do not yet add up to its fill is reported as a transient error, never as finished.
"""

from __future__ import annotations

import decimal
import logging
import re
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bots.errors import (
    ExchangeError,
    OperatorActionRequired,
    OrderNotFound,
    OrderRejected,
    TransientExchangeError,
)
from bots.exchanges import ccxt_orders as parse
from bots.exchanges.ccxt_errors import translate_ccxt_error
from bots.exchanges.ccxt_import import ccxt_async_support, ccxt_base_error, ccxt_module
from bots.exchanges.ccxt_orders import TERMINAL, VenueStatus
from bots.feeds.ccxt_public import CcxtPublicFeed
from bots.models import (
    AccountTrade,
    Balance,
    ExchangeOrderStatus,
    MarginPosition,
    MarketSnapshot,
    OrderRequest,
    OrderSnapshot,
    OrderType,
    Side,
    Trade,
)

__all__ = [
    "CREDENTIAL_FIELDS",
    "AccountTrade",
    "CcxtExchange",
    "MarginPosition",
    "VenueStatus",
    "install_response_guard",
    "make_private_exchange",
]

if TYPE_CHECKING:
    import ccxt

log = logging.getLogger(__name__)

CREDENTIAL_FIELDS = ("apiKey", "secret", "uid", "login", "password")
_REDACTED_FIELDS = ("apiKey", "secret", "password", "login")
_REMEMBERED_IDS = 10_000
# ccxt 4.5.90 batches kraken QueryTrades by 20 ids and then sends one more, empty batch when the
# ids divide evenly; batches of 19 never trigger it.
_KRAKEN_TRADE_BATCH = 19
# Kraken's TradesHistory answers 50 trades a page; reconciliation reads at most this many pages.
_KRAKEN_TRADES_PAGE = 50
_MAX_TRADE_PAGES = 20
# A venue's own "internal error" answers (ccxt calls them plain ExchangeErrors).
_INTERNAL_ERRORS = {
    "ndax": (
        re.compile(r'"errorcode"\s*:\s*102\b'),
        re.compile(r'"errormsg"\s*:\s*"server error"'),
    ),
    "kraken": (re.compile(r"egeneral:internal error"),),
}
# Credential failures ccxt 4.5.90 raises as a plain ExchangeError: kraken's wrong secret, and
# AlphaPoint's (ndax's) errorcode 20.
_AUTH_FAILURES = {
    "kraken": ("eapi:invalid signature",),
    "ndax": ("not authorized", "not_authorized"),
}
# What ccxt's parsers raise when a response has an unexpected shape.
_PARSE_ERRORS = (TypeError, KeyError, IndexError, AttributeError, ValueError, ArithmeticError)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _WithoutRequestLogging(logging.LoggerAdapter[logging.Logger]):
    """ccxt logs every request's headers (the API key) at DEBUG: that level is dropped."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


def make_private_exchange(
    exchange_id: str,
    credentials: Mapping[str, str],
    ssl_context: ssl.SSLContext | None = None,
    base_url: str | None = None,
    rate_limit_ms: int | None = None,
) -> Any:
    """Build a ccxt async instance for one account, with the rate limiter on.

    `credentials` holds ccxt's fields (`CREDENTIAL_FIELDS`; ndax needs all five). `base_url`
    replaces the venue's private API root, and the public one where they are the same, e.g.
    "https://api.kraken.com" or "https://api.ndax.io:8443/AP" on another host (failover).
    `rate_limit_ms` replaces ccxt's pacing of the venue (a drill's local fake only).
    The caller owns the instance and must `await exchange.close()` it.
    """
    ccxt_async = ccxt_async_support()
    exchange_class = getattr(ccxt_async, exchange_id, None)
    if exchange_id not in ccxt_async.exchanges or exchange_class is None:
        raise ValueError(f"unknown ccxt exchange id: {exchange_id!r}")
    unknown = sorted(set(credentials) - set(CREDENTIAL_FIELDS))
    if unknown:  # names only: a value may be a secret
        raise ValueError(f"unknown credential fields {unknown}; expected {CREDENTIAL_FIELDS}")
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"base_url must be a plain https URL, got {base_url!r}")
    config: dict[str, Any] = {"enableRateLimit": True}
    if rate_limit_ms is not None:
        config["rateLimit"] = rate_limit_ms
    config.update({field: value for field, value in credentials.items() if value})
    if ssl_context is not None:
        config["ssl_context"] = ssl_context
    client = exchange_class(config)
    client.logger = _WithoutRequestLogging(client.logger)
    if base_url is not None:
        _replace_api_url(client, base_url.rstrip("/"))
    install_response_guard(client)
    return client


def _replace_api_url(client: Any, base_url: str) -> None:
    api = client.urls.get("api")
    if isinstance(api, str):
        client.urls = {**client.urls, "api": base_url}
        return
    private = api.get("private") if isinstance(api, Mapping) else None
    if not isinstance(private, str):
        raise ValueError(f"{client.id} has no private API URL to replace")
    replaced = {name: base_url if url == private else url for name, url in api.items()}
    client.urls = {**client.urls, "api": replaced}


def required_credentials(exchange_id: str) -> tuple[str, ...]:
    """The credential fields ccxt needs for `exchange_id` (kraken: apiKey, secret; ndax also
    uid, login and password)."""
    exchange_class = getattr(ccxt_async_support(), exchange_id, None)
    if exchange_class is None:
        return ("apiKey", "secret")
    required = exchange_class().requiredCredentials
    return tuple(field for field in CREDENTIAL_FIELDS if required.get(field))


def point_client_at(client: Any, base_url: str) -> None:
    """Send the client's requests to `base_url` from now on: every API root that was the
    venue's private root when the client was built (endpoint failover, and back). The original
    roots are remembered on the client, so it can be pointed back and forth."""
    original = getattr(client, "_bot_coordinator_api_urls", None)
    if original is None:
        original = client.urls.get("api")
        client._bot_coordinator_api_urls = original
    base_url = base_url.rstrip("/")
    if isinstance(original, str):
        client.urls = {**client.urls, "api": base_url}
        return
    private = original.get("private") if isinstance(original, Mapping) else None
    if not isinstance(private, str):
        raise ValueError(f"{client.id} has no private API URL to replace")
    replaced = {name: base_url if url == private else url for name, url in original.items()}
    client.urls = {**client.urls, "api": replaced}


def install_response_guard(client: Any) -> None:
    """Make a body that is not JSON an error (`ccxt.BadResponse`, after ccxt's HTTP status map).

    ccxt hands such a body to the venue's parser, which reads it as empty: kraken's fetch_order
    then says OrderNotFound and fetch_balance says the account holds nothing. Idempotent.
    """
    if getattr(client, "_bots_response_guard", False):
        return
    original = client.handle_errors

    def handle_errors(
        code: int,
        reason: str,
        url: str,
        method: str,
        headers: Any,
        body: str,
        response: Any,
        request_headers: Any,
        request_body: Any,
    ) -> Any:
        result = original(
            code, reason, url, method, headers, body, response, request_headers, request_body
        )
        if response is None:
            client.handle_http_status_code(code, reason, url, method, body or "")
            excerpt = (body or "")[:80]
            raise ccxt_module().BadResponse(
                f"{client.id} {method} {url} {code}: not JSON: {excerpt!r}"
            )
        return result

    client.handle_errors = handle_errors
    client._bots_response_guard = True


class CcxtExchange:
    """`ExchangeAdapter` for one account, through a ccxt async instance it does not own."""

    def __init__(
        self, name: str, client: Any, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.name = name
        self.client = client
        self.venue = str(getattr(client, "id", "exchange"))
        self._clock = clock or _utc_now
        self._exchange_ids: OrderedDict[int, str] = OrderedDict()
        self._client_ids: dict[str, int] = {}  # the same, the other way: venue id -> ours
        self.history_since: datetime | None = None  # the venue keeps the account's history
        self.trades_complete = True  # the last fetch_my_trades read its whole window
        install_response_guard(client)

    # ----- ExchangeAdapter ----------------------------------------------------------------

    async def create_order(self, request: OrderRequest) -> OrderSnapshot:
        market = await self._market(request.symbol)
        amount, price = self._to_precision(request)
        client_id = parse.encode_client_order_id(self.venue, request.client_order_id)
        if self.venue == "ndax":
            raw = await self._call(self._ndax_send_order, request, market, amount, price, client_id)
        else:
            raw = await self._call(
                self.client.create_order,
                request.symbol,
                request.type.value,
                request.side.value,
                amount,
                price,
                {"clientOrderId": client_id},
            )
        exchange_order_id = parse.order_id(raw, self.venue)
        self._remember(request.client_order_id, exchange_order_id)
        try:  # neither venue says in its answer whether, or how much, the order filled
            return await self._fetch_by_id(
                request.client_order_id, exchange_order_id, request.symbol
            )
        except ExchangeError as exc:
            log.warning(
                "%s: order %d accepted as %s; its state is not known yet: %s",
                self.name,
                request.client_order_id,
                exchange_order_id,
                exc,
            )
        return OrderSnapshot(
            request.client_order_id,
            exchange_order_id,
            request.symbol,
            request.side,
            request.type,
            request.amount,
            request.price,
            ExchangeOrderStatus.OPEN,
            filled=Decimal(0),
        )

    async def fetch_order(self, client_order_id: int, symbol: str) -> OrderSnapshot:
        exchange_order_id = self._exchange_ids.get(client_order_id)
        if exchange_order_id is None:
            exchange_order_id = await self._find(client_order_id, symbol)
        return await self._fetch_by_id(client_order_id, exchange_order_id, symbol)

    async def fetch_order_by_exchange_id(
        self, exchange_order_id: str, symbol: str
    ) -> OrderSnapshot:
        """An order asked for by the venue's id, with its trades when it is ours (its client
        order id is 0, and its trades are not read, when it is not)."""
        raw = await self._call(self.client.fetch_order, exchange_order_id, symbol)
        client_order_id = self._owner_of(raw)
        if not client_order_id:
            return parse.parse_order(raw, venue=self.venue, client_order_id=0, symbol=symbol)
        snapshot = await self._complete(raw, client_order_id, symbol, asked_for=exchange_order_id)
        self._remember(client_order_id, snapshot.exchange_order_id)
        return snapshot

    async def cancel_order(self, client_order_id: int, symbol: str) -> OrderSnapshot:
        exchange_order_id = self._exchange_ids.get(client_order_id)
        if exchange_order_id is None:
            exchange_order_id = await self._find(client_order_id, symbol)
        return await self._cancel(client_order_id, exchange_order_id, symbol)

    async def fetch_open_orders(self, symbol: str) -> list[OrderSnapshot]:
        """Every open order on `symbol`; one that is not ours has client_order_id 0.

        Ours are read strictly (one that cannot be trusted fails the read). A foreign order,
        placed by a person, may be of any type (a trailing stop, a take-profit): it is read as
        far as it can be, with its real type and trigger price, and never its trades; one that
        cannot be read at all is left out with a warning, so it never blinds the bot to its own
        orders."""
        params = {"trades": True} if self.venue == "kraken" else {}
        raws = await self._call(self.client.fetch_open_orders, symbol, params=params)
        snapshots = []
        for raw in raws:
            client_order_id = self._owner_of(raw)
            if not client_order_id:
                foreign = self._foreign(raw, symbol)
                if foreign is not None:
                    snapshots.append(foreign)
                continue
            snapshot = await self._complete(raw, client_order_id, symbol)
            self._remember(client_order_id, snapshot.exchange_order_id)
            snapshots.append(snapshot)
        return snapshots

    def _foreign(self, raw: object, symbol: str) -> OrderSnapshot | None:
        try:
            return parse.parse_order(raw, venue=self.venue, client_order_id=0, symbol=symbol)
        except TransientExchangeError as exc:
            log.warning("%s: an order not placed here cannot be read, left out: %s", self.name, exc)
            return None

    async def fetch_balance(self) -> dict[str, Balance]:
        return parse.parse_balances(await self._call(self.client.fetch_balance), self.venue)

    async def on_market(self, snapshot: MarketSnapshot) -> None:
        """Nothing to do: the venue has its own market."""

    async def close(self) -> None:
        """Nothing to do: the ccxt instance is closed by its owner."""

    # ----- reconciliation and health ------------------------------------------------------

    async def load_markets(self) -> None:
        await self._call(self.client.load_markets)

    async def fetch_my_trades(
        self, symbol: str, since: datetime | None = None
    ) -> list[AccountTrade]:
        """The account's trades on `symbol` since `since`, oldest first. Kraken answers 50
        trades a page, newest first, for every pair together: its pages are read until one is
        short, at most `_MAX_TRADE_PAGES`; `trades_complete` says whether the window was read
        to its start."""
        since_ms = None if since is None else int(since.timestamp() * 1000)
        self.trades_complete = True
        if self.venue == "kraken":
            raws = await self._kraken_trade_pages(since_ms)
        else:
            raws = await self._call(self.client.fetch_my_trades, symbol, since_ms)
        trades = [
            parse.account_trade(
                raw,
                venue=self.venue,
                symbol=symbol,
                fee_currency=parse.quote_of(symbol),
                currencies=self.client.currencies,
                clock=self._clock,
            )
            for raw in raws
            if not isinstance(raw, Mapping) or raw.get("symbol") in (None, symbol)
        ]
        return sorted(trades, key=lambda t: (t.trade.timestamp, t.trade.trade_id))

    async def _kraken_trade_pages(self, since_ms: int | None) -> list[Any]:
        raws: list[Any] = []
        for page in range(_MAX_TRADE_PAGES):
            batch = await self._call(
                self.client.fetch_my_trades,
                None,  # every pair: a page is 50 trades of the account, whatever their pair
                since_ms,
                params={"ofs": page * _KRAKEN_TRADES_PAGE},
            )
            raws += batch
            if len(batch) < _KRAKEN_TRADES_PAGE:
                return raws
        self.trades_complete = False
        log.warning(
            "%s: more than %d trades since %s; only the newest were read",
            self.name,
            len(raws),
            since_ms,
        )
        return raws

    async def cancel_all(self, symbol: str) -> list[OrderSnapshot]:
        """Cancel every open order of ours on `symbol`, one by one (an order someone else
        placed is left alone); returns their final snapshots, or raises the first failure
        after trying them all.

        Not ccxt's cancel_all_orders: kraken's CancelAll ignores the symbol, and ccxt 4.5.90
        sends ndax's instrument filter misspelled ("IntrumentId"), so both would cancel the
        account's orders on every market, other bots' included."""
        done: list[OrderSnapshot] = []
        failures: list[ExchangeError] = []
        for order in await self.fetch_open_orders(symbol):
            if not order.client_order_id:
                continue  # not ours: a person placed it, and a person decides about it
            try:
                done.append(
                    await self._cancel(order.client_order_id, order.exchange_order_id, symbol)
                )
            except ExchangeError as exc:
                log.error("%s: could not cancel %s: %s", self.name, order.exchange_order_id, exc)
                failures.append(exc)
        if failures:
            raise failures[0]
        return done

    async def fetch_positions(self) -> list[MarginPosition]:
        if not self.client.has.get("fetchPositions"):
            return []
        return parse.parse_positions(await self._call(self.client.fetch_positions), self.venue)

    async def fetch_ticker(self, symbol: str) -> MarketSnapshot:
        return await CcxtPublicFeed(self.client, symbol, clock=self._clock).snapshot()

    async def fetch_status(self) -> VenueStatus:
        return parse.parse_status(await self._call(self.client.fetch_status), self.venue)

    # ----- the venue's dead man's switch ----------------------------------------------------

    @property
    def has_dead_mans_switch(self) -> bool:
        """Whether the venue cancels the account's orders by itself when not told otherwise in
        time (ccxt's cancelAllOrdersAfter: kraken has it, ndax does not)."""
        return bool(self.client.has.get("cancelAllOrdersAfter"))

    async def cancel_all_orders_after(self, timeout_seconds: int) -> datetime | None:
        """Arm the venue's dead man's switch, or push it back: unless called again within
        `timeout_seconds`, the venue cancels EVERY order of the account (every market, whoever
        placed it). 0 disarms it. Returns the venue's trigger time when it gives one.

        On kraken, a timer that ran out stays off until a call with a timeout arms it again."""
        if timeout_seconds < 0:
            raise ValueError(f"timeout_seconds must not be negative, got {timeout_seconds}")
        raw = await self._call(self.client.cancel_all_orders_after, timeout_seconds * 1000)
        if self.venue != "kraken":
            return None
        result = raw.get("result") if isinstance(raw, Mapping) else None
        if not isinstance(result, Mapping):
            raise parse.malformed(self.venue, "CancelAllOrdersAfter answer", f"{raw!r:.80}")
        trigger = result.get("triggerTime")
        if not timeout_seconds or not isinstance(trigger, str):
            return None
        try:
            return datetime.fromisoformat(trigger).astimezone(UTC)
        except ValueError:
            return None  # the timer is set; only its echo is unreadable

    # ----- internals ----------------------------------------------------------------------

    async def _call(self, method: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        try:
            with decimal.localcontext():  # ccxt's rounding rewrites the caller's decimal context
                return await method(*args, **kw)
        except ccxt_base_error() as exc:
            raise self._translate(exc) from exc
        except _PARSE_ERRORS as exc:
            name = getattr(method, "__name__", "a call")
            raise parse.malformed(self.venue, "response", f"{name}: {type(exc).__name__}") from exc

    def _translate(self, exc: ccxt.BaseError) -> ExchangeError:
        secrets = [getattr(self.client, field, None) for field in _REDACTED_FIELDS]
        for secret in (s for s in secrets if isinstance(s, str) and len(s) >= 4):
            exc.args = tuple(
                a.replace(secret, "***") if isinstance(a, str) else a for a in exc.args
            )
        error = translate_ccxt_error(exc, self.venue)
        text = str(exc).lower()
        if type(error) is ExchangeError and any(
            marker in text for marker in _AUTH_FAILURES.get(self.venue, ())
        ):
            return OperatorActionRequired(str(error))
        if type(error) is ExchangeError and any(
            marker.search(text) for marker in _INTERNAL_ERRORS.get(self.venue, ())
        ):
            # The venue failed inside: whatever was asked may or may not have happened (an
            # order may exist). Transient: the gateway looks it up and never resends blindly.
            return TransientExchangeError(f"{error} (the venue's internal error: outcome unknown)")
        return error

    async def _market(self, symbol: str) -> Mapping[str, Any]:
        markets = await self._call(self.client.load_markets)
        market = markets.get(symbol) if isinstance(markets, Mapping) else None
        if not isinstance(market, Mapping):
            raise OrderRejected(f"{self.venue} does not list {symbol}", code="bad_symbol")
        return market

    def _to_precision(self, request: OrderRequest) -> tuple[float, float | None]:
        """Amount and price as the venue takes them; an amount that rounds to zero is refused."""
        if not request.amount.is_finite() or request.amount <= 0:
            raise OrderRejected(f"amount must be positive, got {request.amount}", "invalid_order")
        limit = request.type is OrderType.LIMIT
        if limit and (request.price is None or not request.price.is_finite() or request.price <= 0):
            raise OrderRejected(
                f"a limit order needs a positive price, got {request.price}", "invalid_order"
            )
        try:
            with decimal.localcontext():
                amount = self.client.amount_to_precision(request.symbol, str(request.amount))
                price = (
                    self.client.price_to_precision(request.symbol, str(request.price))
                    if limit
                    else None
                )
        except ccxt_base_error() as exc:
            raise self._translate(exc) from exc
        if Decimal(amount) <= 0:
            raise OrderRejected(f"amount {request.amount} rounds to zero", "invalid_order")
        if Decimal(amount) != request.amount or (limit and Decimal(str(price)) != request.price):
            log.warning(
                "%s: order %d rounded to amount %s, price %s",
                self.name,
                request.client_order_id,
                amount,
                price,
            )
        return float(amount), None if price is None else float(price)

    async def _ndax_send_order(
        self,
        request: OrderRequest,
        market: Mapping[str, Any],
        amount: float,
        price: float | None,
        client_id: int,
    ) -> Any:
        """ndax SendOrder as ccxt 4.5.90 builds it, but with the client order id intact: ccxt
        reads it through float(), which drops the low bits of a 63-bit id."""
        client = self.client
        accounts = await client.load_accounts()
        default_account = client.parse_to_int(accounts[0]["id"])
        body: dict[str, Any] = {
            "InstrumentId": client.parse_to_int(market["id"]),
            "omsId": client.safe_integer(client.options, "omsId", 1),
            "AccountId": client.safe_integer_2(
                client.options, "accountId", "AccountId", default_account
            ),
            "TimeInForce": 1,  # good till cancelled
            "ClientOrderId": client_id,
            "Side": 0 if request.side is Side.BUY else 1,
            "Quantity": amount,
            "OrderType": 2 if request.type is OrderType.LIMIT else 1,
        }
        if price is not None:
            body["LimitPrice"] = price
        return client.parse_order(await client.privatePostSendOrder(body), market)

    async def _fetch_by_id(
        self, client_order_id: int, exchange_order_id: str, symbol: str
    ) -> OrderSnapshot:
        try:
            raw = await self._call(self.client.fetch_order, exchange_order_id, symbol)
        except OrderNotFound as exc:
            # The venue accepted or listed this order before: "no such order" now is a glitch
            # (or lag), not proof that it never existed.
            raise TransientExchangeError(
                f"{self.venue} does not find order {exchange_order_id} (client order id "
                f"{client_order_id}) that it reported before: {exc}"
            ) from exc
        return await self._complete(raw, client_order_id, symbol, asked_for=exchange_order_id)

    async def _complete(
        self, raw: Any, client_order_id: int, symbol: str, asked_for: str | None = None
    ) -> OrderSnapshot:
        """The order with its trades. `asked_for`: the venue id that was asked about; an answer
        about another order is refused, so the journal never stores the wrong id."""
        snapshot = parse.parse_order(
            raw, venue=self.venue, client_order_id=client_order_id, symbol=symbol
        )
        if asked_for is not None and snapshot.exchange_order_id != asked_for:
            raise parse.malformed(
                self.venue,
                "order",
                f"asked for order {asked_for}, the answer is order {snapshot.exchange_order_id}",
            )
        trades: tuple[Trade, ...] = ()
        if snapshot.filled > 0:
            trades = await self._order_trades(raw, snapshot.exchange_order_id, symbol)
        return parse.with_trades(snapshot, trades, self.venue)

    async def _order_trades(
        self, raw: Mapping[str, Any], exchange_order_id: str, symbol: str
    ) -> tuple[Trade, ...]:
        client = self.client
        raws: list[Any] = []
        if self.venue == "kraken":  # QueryOrders lists the order's trade ids; QueryTrades has them
            listed = raw.get("trades") or []
            ids = [t.get("id") if isinstance(t, Mapping) else t for t in listed]
            ids = [i for i in ids if isinstance(i, str) and i]
            for start in range(0, len(ids), _KRAKEN_TRADE_BATCH):
                batch = {"trades": ids[start : start + _KRAKEN_TRADE_BATCH]}
                raws += await self._call(
                    client.fetch_order_trades, exchange_order_id, symbol, params=batch
                )
        elif self.venue == "ndax":  # GetTradesHistory filtered by OrderId: real trade ids and fees
            if not exchange_order_id.isdigit():
                raise parse.malformed(self.venue, "order", f"order id {exchange_order_id!r}")
            order_filter = {"OrderId": int(exchange_order_id)}
            raws = await self._call(client.fetch_my_trades, symbol, params=order_filter)
        elif client.has.get("fetchOrderTrades"):
            raws = await self._call(client.fetch_order_trades, exchange_order_id, symbol)
        else:
            raws = await self._call(client.fetch_my_trades, symbol)
        return parse.order_trades(
            raws,
            venue=self.venue,
            exchange_order_id=exchange_order_id,
            fee_currency=parse.quote_of(symbol),
            currencies=client.currencies,
            clock=self._clock,
        )

    async def _find(self, client_order_id: int, symbol: str) -> str:
        """The exchange id of OUR order `client_order_id`: open orders first, then history (an
        order that closes between the two calls is still found; the reverse order could miss
        it). Raises OrderNotFound when neither has it."""
        wanted = parse.encode_client_order_id(self.venue, client_order_id)
        lookups = parse.client_id_lookups(self.venue, self.client.has, wanted)
        for method_name, params in lookups:
            raws = await self._call(getattr(self.client, method_name), symbol, params=params)
            found = {
                parse.order_id(r, self.venue)
                for r in raws
                if self._client_id_of(r) == client_order_id
            }
            if len(found) > 1:
                raise OperatorActionRequired(
                    f"{self.venue} has {len(found)} orders with client order id "
                    f"{client_order_id}: {sorted(found)}"
                )
            if found:
                exchange_order_id = found.pop()
                self._remember(client_order_id, exchange_order_id)
                return exchange_order_id
        raise OrderNotFound(
            f"{self.venue}: no order with client order id {client_order_id} on {symbol}"
        )

    async def _cancel(
        self, client_order_id: int, exchange_order_id: str, symbol: str
    ) -> OrderSnapshot:
        """Cancel, then report the order as the venue has it. A refusal (already filled,
        already cancelled, unknown) is the order's state speaking: a finished order is returned
        as it is, like the paper exchange does."""
        refusal: ExchangeError | None = None
        try:
            await self._call(self.client.cancel_order, exchange_order_id, symbol)
        except (TransientExchangeError, OperatorActionRequired):
            raise
        except ExchangeError as exc:
            refusal = exc
        snapshot = await self._fetch_by_id(client_order_id, exchange_order_id, symbol)
        if refusal is not None and snapshot.status not in TERMINAL:
            raise refusal
        return snapshot

    def _client_id_of(self, raw: object) -> int | None:
        if not isinstance(raw, Mapping):
            return None
        return parse.decode_client_order_id(self.venue, raw.get("clientOrderId"))

    def _owner_of(self, raw: object) -> int:
        """Our client order id of a listed order: its own, or the one whose venue id we know
        (0: not ours)."""
        client_order_id = self._client_id_of(raw)
        if client_order_id:
            return client_order_id
        venue_id = raw.get("id") if isinstance(raw, Mapping) else None
        return self._client_ids.get(str(venue_id), 0) if venue_id is not None else 0

    def remember(self, client_order_id: int, exchange_order_id: str) -> None:
        """The venue's id of one of our orders, known from the journal: later lookups of this
        order ask for it by that id."""
        self._remember(client_order_id, exchange_order_id)

    def _remember(self, client_order_id: int, exchange_order_id: str) -> None:
        self._exchange_ids[client_order_id] = exchange_order_id
        self._exchange_ids.move_to_end(client_order_id)
        self._client_ids[exchange_order_id] = client_order_id
        while len(self._exchange_ids) > _REMEMBERED_IDS:
            _, forgotten = self._exchange_ids.popitem(last=False)
            self._client_ids.pop(forgotten, None)
