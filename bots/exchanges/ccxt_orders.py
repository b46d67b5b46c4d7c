"""ccxt's unified structures turned into ours, and the client order id each venue keeps.

Pure functions: no I/O. Whatever a venue sends that we cannot trust (a missing id, an unknown
status, a number that is not one) raises `TransientExchangeError("malformed ... from <venue>")`:
the next look-up may be fine, and nothing half-parsed reaches the journal.

Client order ids are our 63-bit integers (`bots.ids`), kept by each venue in its own form:
- ndax: the integer itself (a string is silently dropped by ndax).
- kraken: `cl_ord_id` free text is at most 18 characters and our ids have 19 digits, so the id
  is sent as "x" + 16 lowercase hex digits (17 characters).
- any other venue: the decimal string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bots.errors import ExchangeError, OrderRejected, TransientExchangeError
from bots.ids import MAX_CLIENT_ORDER_ID
from bots.models import (
    PLACEABLE,
    AccountTrade,
    Balance,
    ExchangeOrderStatus,
    MarginPosition,
    OrderSnapshot,
    OrderType,
    Side,
    Trade,
)

__all__ = ["AccountTrade", "MarginPosition"]

_STATUSES = {
    "open": ExchangeOrderStatus.OPEN,
    "closed": ExchangeOrderStatus.CLOSED,
    "canceled": ExchangeOrderStatus.CANCELED,
    "cancelled": ExchangeOrderStatus.CANCELED,
    "expired": ExchangeOrderStatus.CANCELED,
    "rejected": ExchangeOrderStatus.REJECTED,
}
TERMINAL = frozenset(
    {ExchangeOrderStatus.CLOSED, ExchangeOrderStatus.CANCELED, ExchangeOrderStatus.REJECTED}
)
_BALANCE_META = frozenset({"info", "timestamp", "datetime", "free", "used", "total", "debt"})
_REASON_KEYS = ("reason", "RejectReason", "CancelReason")
_KRAKEN_ID = re.compile(r"x([0-9a-f]{16})")
T = OrderType
# Each venue's own name of an order type (kraken: descr.ordertype; ndax: OrderType), to ours.
_VENUE_TYPES: dict[str, dict[str, OrderType]] = {
    "kraken": {
        "market": T.MARKET,
        "limit": T.LIMIT,
        "stop-loss": T.STOP_LOSS,
        "stop-loss-limit": T.STOP_LOSS_LIMIT,
        "take-profit": T.TAKE_PROFIT,
        "take-profit-limit": T.TAKE_PROFIT_LIMIT,
        "trailing-stop": T.TRAILING_STOP,
        "trailing-stop-limit": T.TRAILING_STOP_LIMIT,
    },
    "ndax": {
        "Market": T.MARKET,
        "Limit": T.LIMIT,
        "StopMarket": T.STOP_LOSS,
        "StopLimit": T.STOP_LOSS_LIMIT,
        "TrailingStopMarket": T.TRAILING_STOP,
        "TrailingStopLimit": T.TRAILING_STOP_LIMIT,
    },
}
_LIMIT_PRICED = frozenset(
    {T.LIMIT, T.STOP_LOSS_LIMIT, T.TAKE_PROFIT_LIMIT, T.TRAILING_STOP_LIMIT}
)
_DECIMAL_ID = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class VenueStatus:
    status: str  # ccxt's: "ok", "maintenance", "shutdown", "error"
    updated: datetime | None
    eta: datetime | None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def malformed(venue: str, what: str, detail: str) -> TransientExchangeError:
    return TransientExchangeError(f"malformed {what} from {venue}: {detail}")


# ----- client order ids -------------------------------------------------------------------


def encode_client_order_id(venue: str, client_order_id: int) -> int | str:
    if not 0 < client_order_id <= MAX_CLIENT_ORDER_ID:
        raise OrderRejected(
            f"client order id {client_order_id} is not a positive 63-bit integer",
            code="invalid_order",
        )
    if venue == "ndax":
        return client_order_id
    if venue == "kraken":
        return f"x{client_order_id:016x}"
    return str(client_order_id)


def decode_client_order_id(venue: str, raw: object) -> int | None:
    """Our id from the venue's form; None when absent or not one of ours."""
    if raw is None or isinstance(raw, bool):
        return None
    text = str(raw).strip()
    match = _KRAKEN_ID.fullmatch(text) if venue == "kraken" else _DECIMAL_ID.fullmatch(text)
    if match is None:
        return None
    value = int(match.group(1), 16) if venue == "kraken" else int(text)
    return value if 0 < value <= MAX_CLIENT_ORDER_ID else None


def client_id_lookups(
    venue: str, has: Mapping[str, Any], wanted: int | str
) -> list[tuple[str, dict[str, Any]]]:
    """How to find an order by client order id: ccxt methods and params, asked in this order.
    Open orders first, then history: an order that closes between the two calls is still found
    (the reverse order could miss it)."""
    if venue == "kraken":  # ccxt sends clientOrderId as cl_ord_id: both endpoints filter by it
        by_id: dict[str, Any] = {"clientOrderId": wanted}
        return [("fetch_open_orders", by_id), ("fetch_closed_orders", by_id)]
    if venue == "ndax":  # GetOpenOrders has no filter (matched here); GetOrdersHistory has one
        return [("fetch_open_orders", {}), ("fetch_orders", {"ClientOrderId": wanted})]
    for history in ("fetchClosedOrders", "fetchOrders"):
        if has.get(history):
            method = "fetch_closed_orders" if history == "fetchClosedOrders" else "fetch_orders"
            return [("fetch_open_orders", {}), (method, {})]
    raise ExchangeError(f"{venue} cannot look orders up by client order id")


def quote_of(symbol: str) -> str:
    return symbol.partition("/")[2].split(":", 1)[0]


# ----- numbers and times ------------------------------------------------------------------


def _decimal(value: object) -> Decimal | None:
    """A finite Decimal, None when absent; raises ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"not a number: {value!r}")
    try:
        number = Decimal(str(value))  # str() first: a float's shortest repr is what was sent
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _field(raw: Mapping[str, Any], key: str, venue: str, what: str) -> Decimal | None:
    try:
        return _decimal(raw.get(key))
    except ValueError as exc:
        raise malformed(venue, what, f"{key}: {exc}") from None


def _required(raw: Mapping[str, Any], key: str, venue: str, what: str) -> Decimal:
    value = _field(raw, key, venue, what)
    if value is None:
        raise malformed(venue, what, f"no {key}")
    return value


def _time(ms: object) -> datetime | None:
    if isinstance(ms, int | float) and not isinstance(ms, bool) and ms > 0:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return None


def _submapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def _mapping(raw: object, venue: str, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise malformed(venue, what, f"expected a mapping, got {type(raw).__name__}")
    return raw


# ----- orders -----------------------------------------------------------------------------


def order_id(raw: object, venue: str) -> str:
    value = _mapping(raw, venue, "order").get("id")
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise malformed(venue, "order", f"no id in {_keys(raw)}")
    return str(value)


def order_type(raw: Mapping[str, Any], venue: str) -> tuple[OrderType, str]:
    """(our type, the venue's own name for it). The venue's field first: ccxt folds kraken's
    take-profit into "market" and stop-loss-limit into "limit", losing the trigger."""
    info = _submapping(raw, "info")
    named = _submapping(info, "descr").get("ordertype") if venue == "kraken" else None
    if venue == "ndax":
        named = info.get("OrderType")
    if isinstance(named, str) and named:
        return _VENUE_TYPES[venue].get(named, T.OTHER), named
    ccxt_type = str(raw.get("type"))
    if ccxt_type in ("market", "limit"):
        limit = ccxt_type == "limit"
        if raw.get("takeProfitPrice") is not None:
            return (T.TAKE_PROFIT_LIMIT if limit else T.TAKE_PROFIT), ccxt_type
        if raw.get("stopLossPrice") is not None or raw.get("triggerPrice") is not None:
            return (T.STOP_LOSS_LIMIT if limit else T.STOP_LOSS), ccxt_type
        return OrderType(ccxt_type), ccxt_type
    try:
        return OrderType(ccxt_type), ccxt_type
    except ValueError:
        return T.OTHER, ccxt_type


def trigger_price(raw: Mapping[str, Any], venue: str) -> Decimal | None:
    """A trigger order's trigger price (None for a trailing offset such as kraken's "+5%")."""
    for key in ("triggerPrice", "stopLossPrice", "takeProfitPrice", "stopPrice"):
        try:
            value = _decimal(raw.get(key))
        except ValueError:
            continue  # a trailing offset, not a price
        if value is not None and value > 0:
            return value
    return None


def parse_order(raw: object, *, venue: str, client_order_id: int, symbol: str) -> OrderSnapshot:
    """The order as a snapshot without trades (`with_trades` adds them). One of ours
    (`client_order_id` given) must be a market or limit order; a foreign one (0) may be of
    any type, with its trigger price."""
    order = _mapping(raw, venue, "order")
    exchange_order_id = order_id(order, venue)
    status = _STATUSES.get(str(order.get("status")))
    if status is None:
        raise malformed(venue, "order", f"unknown status {order.get('status')!r}")
    if order.get("symbol") not in (None, symbol):
        raise malformed(venue, "order", f"symbol {order.get('symbol')!r}, expected {symbol}")
    kind, venue_type = order_type(order, venue)
    try:
        side = Side(str(order.get("side")))
    except ValueError:
        raise malformed(venue, "order", f"side {order.get('side')!r}") from None
    if client_order_id and kind not in PLACEABLE:
        raise malformed(
            venue, "order", f"order {exchange_order_id} of ours is a {venue_type!r} order"
        )
    amount = _required(order, "amount", venue, "order")
    filled = _required(order, "filled", venue, "order")
    if amount <= 0 or not Decimal(0) <= filled <= amount:
        raise malformed(venue, "order", f"amount {amount}, filled {filled}")
    price = _field(order, "price", venue, "order") if kind in _LIMIT_PRICED else None
    if price is not None and price <= 0:
        price = None
    if kind is OrderType.LIMIT and price is None:
        raise malformed(venue, "order", f"limit order without a price: {order.get('price')!r}")
    theirs = decode_client_order_id(venue, order.get("clientOrderId"))
    if client_order_id and theirs is not None and theirs != client_order_id:
        raise malformed(
            venue,
            "order",
            f"order {exchange_order_id} has client id {theirs}, not {client_order_id}",
        )
    return OrderSnapshot(
        client_order_id=client_order_id,
        exchange_order_id=exchange_order_id,
        symbol=symbol,
        side=side,
        type=kind,
        amount=amount,
        price=price,
        status=status,
        filled=filled,
        reason=_reason(order.get("info")),
        trigger_price=trigger_price(order, venue) if kind not in PLACEABLE else None,
        venue_type=venue_type,
    )


def _reason(info: object) -> str:
    if isinstance(info, Mapping):
        for key in _REASON_KEYS:
            value = info.get(key)
            if isinstance(value, str) and value.strip() and value != "None":
                return value.strip()
    return ""


def _keys(raw: object) -> str:
    return str(sorted(str(k) for k in raw)) if isinstance(raw, Mapping) else type(raw).__name__


# ----- trades -----------------------------------------------------------------------------


def parse_trade(
    raw: object,
    *,
    venue: str,
    fee_currency: str,
    currencies: Mapping[str, Any] | None,
    clock: Callable[[], datetime],
) -> Trade:
    trade = _mapping(raw, venue, "trade")
    trade_id = trade.get("id")
    if not isinstance(trade_id, str | int) or isinstance(trade_id, bool) or str(trade_id) == "":
        raise malformed(venue, "trade", f"no id in {_keys(trade)}")
    amount = _required(trade, "amount", venue, "trade")
    price = _required(trade, "price", venue, "trade")
    if amount <= 0 or price <= 0:
        raise malformed(venue, "trade", f"{trade_id}: amount {amount}, price {price}")
    fee_info = _submapping(trade, "fee")
    fee = _field(fee_info, "cost", venue, "trade") or Decimal(0)
    currency = fee_info.get("currency") or fee_currency
    if fee and (not isinstance(currency, str) or (currencies and currency not in currencies)):
        raise malformed(venue, "trade", f"{trade_id}: fee in unknown currency {currency!r}")
    return Trade(
        trade_id=str(trade_id),
        amount=amount,
        price=price,
        fee=fee,
        fee_currency=str(currency),
        timestamp=_time(trade.get("timestamp")) or clock(),
    )


def order_trades(
    raws: Iterable[object],
    *,
    venue: str,
    exchange_order_id: str,
    fee_currency: str,
    currencies: Mapping[str, Any] | None,
    clock: Callable[[], datetime],
) -> tuple[Trade, ...]:
    """The trades of one order, once each, oldest first. Trades that name another order are
    left out: a venue that ignores an order filter must not add another order's fills."""
    found: dict[str, Trade] = {}
    for raw in raws:
        if str(_mapping(raw, venue, "trade").get("order")) != exchange_order_id:
            continue
        trade = parse_trade(
            raw, venue=venue, fee_currency=fee_currency, currencies=currencies, clock=clock
        )
        seen = found.setdefault(trade.trade_id, trade)
        if (seen.amount, seen.price, seen.fee) != (trade.amount, trade.price, trade.fee):
            raise malformed(venue, "trade", f"{trade.trade_id} reported twice, differently")
    return tuple(sorted(found.values(), key=lambda t: (t.timestamp, t.trade_id)))


def with_trades(snapshot: OrderSnapshot, trades: tuple[Trade, ...], venue: str) -> OrderSnapshot:
    """Attach the trades; they must not add up to more than the order's fill, and a finished
    order's trades must add up to all of it (else its fills would never be journaled)."""
    total = sum((t.amount for t in trades), Decimal(0))
    if total > snapshot.filled:
        raise malformed(
            venue,
            "order",
            f"{snapshot.exchange_order_id}: trades add up to {total}, "
            f"more than its fill {snapshot.filled}",
        )
    if snapshot.status in TERMINAL and total != snapshot.filled:
        raise TransientExchangeError(
            f"{venue}: order {snapshot.exchange_order_id} is {snapshot.status.value} with "
            f"{snapshot.filled} filled, but its trades add up to {total} so far"
        )
    return replace(snapshot, trades=trades)


def account_trade(
    raw: object,
    *,
    venue: str,
    symbol: str,
    fee_currency: str,
    currencies: Mapping[str, Any] | None,
    clock: Callable[[], datetime],
) -> AccountTrade:
    data = _mapping(raw, venue, "trade")
    trade = parse_trade(
        data, venue=venue, fee_currency=fee_currency, currencies=currencies, clock=clock
    )
    try:
        side = Side(str(data.get("side")))
    except ValueError:
        raise malformed(venue, "trade", f"{trade.trade_id}: side {data.get('side')!r}") from None
    order = data.get("order")
    if order in (None, ""):
        raise malformed(venue, "trade", f"{trade.trade_id}: no order id")
    info = _submapping(data, "info")
    client_id = decode_client_order_id(venue, info.get("ClientOrderId") or info.get("cl_ord_id"))
    return AccountTrade(str(order), client_id, data.get("symbol") or symbol, side, trade)


# ----- balances, positions, status --------------------------------------------------------


def parse_balances(raw: object, venue: str) -> dict[str, Balance]:
    data = _mapping(raw, venue, "balance")
    _check_balance_answer(data.get("info"), venue)
    balances: dict[str, Balance] = {}
    for asset, entry in data.items():
        if asset in _BALANCE_META:
            continue
        account = _mapping(entry, venue, "balance")
        free = _required(account, "free", venue, "balance")
        used = _required(account, "used", venue, "balance")
        if used < 0:
            raise malformed(venue, "balance", f"{asset}: used {used}")
        balances[str(asset)] = Balance(asset=str(asset), free=free, used=used)
    return balances


def _check_balance_answer(info: object, venue: str) -> None:
    """ccxt reads an answer of the wrong shape as an account that holds nothing; a bot must not
    (its opening balances, a reconciliation's adjustments). The venue's own answer is checked:
    kraken's BalanceEx result is an object, ndax's GetAccountPositions a list."""
    if venue == "kraken":
        result = info.get("result") if isinstance(info, Mapping) else None
        if not isinstance(result, Mapping):
            raise malformed(venue, "balance", f"result is {type(result).__name__}, not an object")
    elif venue == "ndax" and not isinstance(info, list):
        raise malformed(venue, "balance", f"answer is {type(info).__name__}, not a list")


def parse_positions(raws: Iterable[object], venue: str) -> list[MarginPosition]:
    positions = []
    for raw in raws:
        position = _mapping(raw, venue, "position")
        amount = _required(position, "contracts", venue, "position")
        positions.append(
            MarginPosition(
                symbol=str(position.get("symbol")),
                side=str(position.get("side")),
                amount=amount,
                unrealized_pnl=_field(position, "unrealizedPnl", venue, "position"),
            )
        )
    return positions


def parse_status(raw: object, venue: str) -> VenueStatus:
    data = _mapping(raw, venue, "status")
    status = data.get("status")
    if not isinstance(status, str) or not status:
        raise malformed(venue, "status", f"status {status!r}")
    return VenueStatus(status, _time(data.get("updated")), _time(data.get("eta")))
