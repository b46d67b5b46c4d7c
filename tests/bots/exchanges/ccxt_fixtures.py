"""Mock payloads for the ccxt adapter tests, in the JSON shapes ccxt 4.5.90's kraken and ndax
parsers read (see ccxt/async_support/kraken.py and ndax.py), and the clients that talk to them.
Each builder starts from the venue's recorded-shape sample in `tests/fixtures/venues/` and
overrides only the fields it takes.

Credentials are fake but well formed (kraken's secret is valid base64). Clients run with the rate
limiter off and `timeout_on_exit = 0`; each test builds its own and closes it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import ccxt.async_support as ccxt_async
from aioresponses import aioresponses
from yarl import URL

from tests.fixtures import venues

# ----- kraken -----------------------------------------------------------------------------

KRAKEN_PUBLIC = "https://api.kraken.com/0/public/"
KRAKEN_PRIVATE = "https://api.kraken.com/0/private/"
KRAKEN_CREDENTIALS = {
    "apiKey": "kraken-test-api-key-0123456789",
    "secret": base64.b64encode(b"kraken-test-secret-not-a-real-one").decode(),
}
OPENTM = 1767225600.25  # 2026-01-01T00:00:00.25Z

KRAKEN_ASSETS = venues.load("kraken", "assets")
KRAKEN_PAIRS = venues.load("kraken", "asset_pairs")  # XBTAUD (the bots' market) and XBTUSD
KRAKEN_TRIGGER_TYPES = tuple(venues.kinds("kraken", "order_trigger"))


def kraken_client(**config: Any) -> Any:
    client = ccxt_async.kraken({**KRAKEN_CREDENTIALS, "enableRateLimit": False, **config})
    client.timeout_on_exit = 0
    return client


def mock_kraken_markets(m: aioresponses) -> None:
    m.get(KRAKEN_PUBLIC + "Assets", payload=KRAKEN_ASSETS)
    m.get(KRAKEN_PUBLIC + "AssetPairs", payload=KRAKEN_PAIRS)


def kraken_ok(result: Any) -> dict[str, Any]:
    return {"error": [], "result": result}


def kraken_error(*messages: str) -> dict[str, Any]:
    return {"error": list(messages)}


def kraken_cl_ord_id(client_order_id: int) -> str:
    return f"x{client_order_id:016x}"


def kraken_order(
    *,
    side: str = "buy",
    ordertype: str = "limit",
    vol: str = "0.01000000",
    vol_exec: str = "0.00000000",
    status: str = "open",
    price: str = "100000.0",
    client_order_id: int | None = None,
    trades: list[str] | None = None,
    reason: str | None = None,
    price2: str = "0",
) -> dict[str, Any]:
    """One order as QueryOrders, OpenOrders and ClosedOrders return it, from the recorded
    sample of its type: `ordertype` "limit", "market" or a trigger type (`KRAKEN_TRIGGER_TYPES`:
    stop-loss, take-profit, trailing-stop and their -limit forms), whose `price` is the trigger
    price (a trailing stop's offset, such as "+5.0000%") and `price2` a -limit form's limit."""
    trigger = ordertype in KRAKEN_TRIGGER_TYPES
    if trigger:
        order: dict[str, Any] = venues.sample("kraken", "order_trigger", ordertype)
        spoken = ordertype.removesuffix("-limit").replace("-", " ")
        at = f"{spoken} {price}" + (f" -> limit {price2}" if ordertype.endswith("-limit") else "")
        shown, shown2 = price, price2
    else:
        order = venues.load("kraken", "order_open_limit")
        shown = price if ordertype == "limit" else "0"
        at = f"limit {price}" if ordertype == "limit" else "market"
        shown2 = "0"
    order["descr"].update(
        type=side,
        ordertype=ordertype,
        price=shown,
        price2=shown2,
        order=f"{side} {vol} {order['descr']['pair']} @ {at}",
    )
    order.update(status=status, reason=reason, vol=vol, vol_exec=vol_exec)
    if client_order_id is not None:
        order["cl_ord_id"] = kraken_cl_ord_id(client_order_id)
    if trades is not None:
        order["trades"] = trades
    return order


def kraken_add_order(txid: str, descr: str = "buy 0.01000000 XBTAUD @ market") -> dict[str, Any]:
    return kraken_ok({"descr": {"order": descr}, "txid": [txid]})


def kraken_trade(
    order_txid: str,
    vol: str,
    price: str,
    fee: str,
    time: float = OPENTM + 1,
    trade_id: int = 40_000_001,
    maker: bool = False,
) -> dict[str, Any]:
    """One trade as QueryTrades and TradesHistory return it (keyed by its txid), with kraken's
    numeric `trade_id`, `maker` and margin fields."""
    trade: dict[str, Any] = venues.load("kraken", "trade")
    trade.update(
        ordertxid=order_txid,
        time=time,
        price=price,
        cost=str(round(float(vol) * float(price), 5)),
        fee=fee,
        vol=vol,
        trade_id=trade_id,
        maker=maker,
    )
    return trade


def kraken_balance(**assets: tuple[str, str]) -> dict[str, Any]:
    return kraken_ok({a: {"balance": b, "hold_trade": h} for a, (b, h) in assets.items()})


# ----- ndax -------------------------------------------------------------------------------

NDAX = "https://api.ndax.io:8443/AP/"
NDAX_ACCOUNT = 449
NDAX_CREDENTIALS = {
    "apiKey": "ndax-test-api-key-0123456789",
    "secret": "ndax-test-secret-not-a-real-one",
    "uid": "4242",
    "login": "bot-operator@example.test",
    "password": "ndax-test-password-not-real",
}
NDAX_PRODUCTS = venues.load("ndax", "products")
NDAX_INSTRUMENTS = venues.load("ndax", "instruments")


def ndax_client(**config: Any) -> Any:
    client = ccxt_async.ndax({**NDAX_CREDENTIALS, "enableRateLimit": False, **config})
    client.timeout_on_exit = 0
    return client


def ndax_url(endpoint: str, **query: Any) -> str:
    url = URL(NDAX + endpoint)
    return str(url.with_query({k: str(v) for k, v in query.items()})) if query else str(url)


def ndax_account_url(endpoint: str, **query: Any) -> str:
    return ndax_url(endpoint, omsId=1, AccountId=NDAX_ACCOUNT, **query)


def mock_ndax_markets(m: aioresponses) -> None:
    m.get(ndax_url("GetProducts", omsId=1), payload=NDAX_PRODUCTS)
    m.get(ndax_url("GetInstruments", omsId=1), payload=NDAX_INSTRUMENTS)


def mock_ndax_account(m: aioresponses) -> None:
    m.get(
        ndax_url(
            "GetUserAccounts",
            omsId=1,
            UserId=NDAX_CREDENTIALS["uid"],
            UserName=NDAX_CREDENTIALS["login"],
        ),
        payload=[NDAX_ACCOUNT],
    )


def ndax_order(
    order_id: int,
    *,
    side: str = "Buy",
    order_type: str = "Limit",
    quantity: float = 0.01,
    executed: float = 0.0,
    state: str = "Working",
    price: float = 90000.0,
    client_order_id: int = 0,
    reject_reason: str = "",
    cancel_reason: str = "",
    stop_price: float = 0,
) -> dict[str, Any]:
    """One order as GetOrderStatus, GetOpenOrders and GetOrdersHistory return it (`price` shown
    for a Limit order only; a stop order's `stop_price` is its StopPrice)."""
    order: dict[str, Any] = venues.load("ndax", "order")
    left = round(quantity - executed, 8)
    order.update(
        Side=side,
        OrderId=order_id,
        Price=price if order_type == "Limit" else 0,
        Quantity=left,
        DisplayQuantity=left,
        OrderType=order_type,
        ClientOrderId=client_order_id,
        OrderState=state,
        OrigQuantity=quantity,
        QuantityExecuted=executed,
        GrossValueExecuted=round(executed * price, 8),
        AvgPrice=price if executed else 0,
        OrigOrderId=order_id,
        OrigClOrdId=client_order_id,
        RejectReason=reject_reason,
        CancelReason=cancel_reason,
        StopPrice=stop_price,
    )
    return order


def ndax_trade(
    trade_id: int,
    order_id: int,
    quantity: float,
    price: float,
    fee: float,
    *,
    client_order_id: int = 0,
    side: str = "Buy",
    fee_product_id: int = 3,
    time_ms: int = 1767225601250,
) -> dict[str, Any]:
    """One trade as GetTradesHistory returns it."""
    trade: dict[str, Any] = venues.load("ndax", "trade")
    trade.update(
        ExecutionId=trade_id + 1000,
        TradeId=trade_id,
        OrderId=order_id,
        ClientOrderId=client_order_id,
        Side=side,
        Quantity=quantity,
        Price=price,
        Value=round(quantity * price, 8),
        Fee=fee,
        FeeProductId=fee_product_id,
        TradeTimeMS=time_ms,
    )
    return trade


def ndax_position(product_id: int, symbol: str, amount: float, hold: float) -> dict[str, Any]:
    position: dict[str, Any] = venues.load("ndax", "position")
    position.update(ProductSymbol=symbol, ProductId=product_id, Amount=amount, Hold=hold)
    return position


# ----- requests ---------------------------------------------------------------------------


def _same_request(recorded: URL, url: str) -> bool:
    """aioresponses records a URL with its query sorted: compare paths and sorted queries."""
    wanted = URL(url)
    return recorded.with_query(None) == wanted.with_query(None) and sorted(
        recorded.query.items()
    ) == sorted(wanted.query.items())


def requests_to(m: aioresponses, method: str, url: str) -> list[Any]:
    calls: list[Any] = []
    for (recorded_method, recorded), made in m.requests.items():
        if recorded_method == method and _same_request(recorded, url):
            calls.extend(made)
    return calls


def form_bodies(m: aioresponses, url: str) -> list[dict[str, str]]:
    """kraken's private POST bodies (form-encoded), one dict per request, nonce left out."""
    bodies = []
    for call in requests_to(m, "POST", url):
        fields = parse_qs(call.kwargs["data"].decode(), keep_blank_values=True)
        bodies.append({k: v[0] for k, v in fields.items() if k != "nonce"})
    return bodies


def json_bodies(m: aioresponses, url: str) -> list[Any]:
    return [json.loads(call.kwargs["data"]) for call in requests_to(m, "POST", url)]


def requested_urls(m: aioresponses) -> list[str]:
    return [f"{method} {url}" for (method, url) in m.requests]


@asynccontextmanager
async def closing(client: Any) -> Any:
    try:
        yield client
    finally:
        await client.close()


def secrets_of(credentials: Mapping[str, str]) -> Iterator[str]:
    """The credential values that must never appear in a message or a log line."""
    yield from (v for k, v in credentials.items() if k != "uid")
