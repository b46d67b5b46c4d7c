"""Mock payloads for the ccxt adapter tests, in the JSON shapes ccxt 4.5.90's kraken and ndax
parsers read (see ccxt/async_support/kraken.py and ndax.py), and the clients that talk to them.

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

# ----- kraken -----------------------------------------------------------------------------

KRAKEN_PUBLIC = "https://api.kraken.com/0/public/"
KRAKEN_PRIVATE = "https://api.kraken.com/0/private/"
KRAKEN_CREDENTIALS = {
    "apiKey": "kraken-test-api-key-0123456789",
    "secret": base64.b64encode(b"kraken-test-secret-not-a-real-one").decode(),
}
OPENTM = 1767225600.25  # 2026-01-01T00:00:00.25Z

KRAKEN_ASSETS = {
    "error": [],
    "result": {
        "XXBT": {"aclass": "currency", "altname": "XBT", "decimals": 10, "display_decimals": 5},
        "ZAUD": {"aclass": "currency", "altname": "AUD", "decimals": 4, "display_decimals": 2},
    },
}
KRAKEN_PAIRS = {
    "error": [],
    "result": {
        "XBTAUD": {
            "altname": "XBTAUD",
            "wsname": "XBT/AUD",
            "aclass_base": "currency",
            "base": "XXBT",
            "aclass_quote": "currency",
            "quote": "ZAUD",
            "pair_decimals": 1,
            "cost_decimals": 5,
            "lot_decimals": 8,
            "ordermin": "0.00005",
            "costmin": "0.5",
            "tick_size": "0.1",
            "status": "online",
            "fees": [[0, 0.4]],
            "fees_maker": [[0, 0.25]],
        }
    },
}


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
) -> dict[str, Any]:
    """One order as QueryOrders, OpenOrders and ClosedOrders return it."""
    shown = price if ordertype == "limit" else "0"
    at = f"limit {price}" if ordertype == "limit" else "market"
    order: dict[str, Any] = {
        "refid": None,
        "userref": None,
        "status": status,
        "reason": reason,
        "opentm": OPENTM,
        "starttm": 0,
        "expiretm": 0,
        "descr": {
            "pair": "XBTAUD",
            "type": side,
            "ordertype": ordertype,
            "price": shown,
            "price2": "0",
            "leverage": "none",
            "order": f"{side} {vol} XBTAUD @ {at}",
            "close": "",
        },
        "vol": vol,
        "vol_exec": vol_exec,
        "cost": "0.00000",
        "fee": "0.00000",
        "price": "0.00000",
        "stopprice": "0.00000",
        "limitprice": "0.00000",
        "misc": "",
        "oflags": "fciq",
    }
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
    cost = str(round(float(vol) * float(price), 5))
    return {
        "ordertxid": order_txid,
        "postxid": "TKH2SE-M7IF5-CFI7LT",
        "pair": "XBTAUD",
        "time": time,
        "type": "buy",
        "ordertype": "market",
        "price": price,
        "cost": cost,
        "fee": fee,
        "vol": vol,
        "margin": "0.00000",
        "leverage": "0",
        "misc": "",
        "trade_id": trade_id,
        "maker": maker,
    }


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
NDAX_PRODUCTS = [
    {
        "OMSId": 1,
        "ProductId": 1,
        "Product": "BTC",
        "ProductFullName": "Bitcoin",
        "ProductType": "CryptoCurrency",
        "DecimalPlaces": 8,
        "TickSize": 0.00000001,
        "DepositEnabled": True,
        "WithdrawEnabled": True,
        "NoFees": False,
        "IsDisabled": False,
        "MarginEnabled": False,
    },
    {
        "OMSId": 1,
        "ProductId": 3,
        "Product": "CAD",
        "ProductFullName": "Canadian Dollar",
        "ProductType": "NationalCurrency",
        "DecimalPlaces": 2,
        "TickSize": 0.01,
        "DepositEnabled": True,
        "WithdrawEnabled": True,
        "NoFees": False,
        "IsDisabled": False,
        "MarginEnabled": False,
    },
]
NDAX_INSTRUMENTS = [
    {
        "OMSId": 1,
        "InstrumentId": 1,
        "Symbol": "BTCCAD",
        "Product1": 1,
        "Product1Symbol": "BTC",
        "Product2": 3,
        "Product2Symbol": "CAD",
        "InstrumentType": "Standard",
        "SessionStatus": "Running",
        "IsDisable": False,
        "QuantityIncrement": 0.00000001,
        "PriceIncrement": 0.01,
        "MinimumQuantity": 0.0001,
        "MinimumPrice": 0.01,
    }
]


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
) -> dict[str, Any]:
    """One order as GetOrderStatus, GetOpenOrders and GetOrdersHistory return it."""
    return {
        "Side": side,
        "OrderId": order_id,
        "Price": price if order_type == "Limit" else 0,
        "Quantity": round(quantity - executed, 8),
        "DisplayQuantity": round(quantity - executed, 8),
        "Instrument": 1,
        "Account": NDAX_ACCOUNT,
        "AccountName": "bot-operator@example.test",
        "OrderType": order_type,
        "ClientOrderId": client_order_id,
        "OrderState": state,
        "ReceiveTime": 1767225600250,
        "ReceiveTimeTicks": 639029592002500000,
        "LastUpdatedTime": 1767225601250,
        "LastUpdatedTimeTicks": 639029592012500000,
        "OrigQuantity": quantity,
        "QuantityExecuted": executed,
        "GrossValueExecuted": round(executed * price, 8),
        "ExecutableValue": 0,
        "AvgPrice": price if executed else 0,
        "CounterPartyId": 0,
        "ChangeReason": "NewInputAccepted",
        "OrigOrderId": order_id,
        "OrigClOrdId": client_order_id,
        "EnteredBy": 4242,
        "UserName": "bot-operator@example.test",
        "IsQuote": False,
        "RejectReason": reject_reason,
        "IsLockedIn": False,
        "CancelReason": cancel_reason,
        "OrderFlag": "AddedToBook",
        "UseMargin": False,
        "StopPrice": 0,
        "PegPriceType": "Unknown",
        "IpAddress": None,
        "ClientOrderIdUuid": None,
        "OMSId": 1,
    }


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
    return {
        "OMSId": 1,
        "ExecutionId": trade_id + 1000,
        "TradeId": trade_id,
        "OrderId": order_id,
        "AccountId": NDAX_ACCOUNT,
        "SubAccountId": 0,
        "ClientOrderId": client_order_id,
        "InstrumentId": 1,
        "Side": side,
        "OrderType": "Market",
        "Quantity": quantity,
        "RemainingQuantity": 0,
        "Price": price,
        "Value": round(quantity * price, 8),
        "CounterParty": "7",
        "OrderTradeRevision": 1,
        "Direction": "NoChange",
        "IsBlockTrade": False,
        "Fee": fee,
        "FeeProductId": fee_product_id,
        "OrderOriginator": 4242,
        "TradeTimeMS": time_ms,
        "MakerTaker": "Taker",
        "AdapterTradeId": 0,
        "IsQuote": False,
    }


def ndax_position(product_id: int, symbol: str, amount: float, hold: float) -> dict[str, Any]:
    return {
        "OMSId": 1,
        "AccountId": NDAX_ACCOUNT,
        "ProductSymbol": symbol,
        "ProductId": product_id,
        "Amount": amount,
        "Hold": hold,
        "PendingDeposits": 0,
        "PendingWithdraws": 0,
    }


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
