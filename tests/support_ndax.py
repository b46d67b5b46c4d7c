"""Test support: a stateful fake of ndax's order endpoints (aioresponses callbacks over an
in-memory order book), served together with ndax's public market data and the account, and the
config edit and client factory that make the shipped ndax bot a live grid bot on it.

ccxt's real ndax code runs against these endpoints; only the HTTP layer is fake. Its payloads
come from the recorded-shape samples in `tests/fixtures/venues/ndax/`.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aioresponses import CallbackResult, aioresponses

from tests.bots.exchanges.ccxt_fixtures import (
    NDAX,
    NDAX_CREDENTIALS,
    mock_ndax_account,
    mock_ndax_markets,
    ndax_client,
    ndax_order,
    ndax_position,
    ndax_trade,
)
from tests.fixtures import venues

ENV = {
    "NDAX_API_KEY": NDAX_CREDENTIALS["apiKey"],
    "NDAX_API_SECRET": NDAX_CREDENTIALS["secret"],
    "NDAX_UID": NDAX_CREDENTIALS["uid"],
    "NDAX_LOGIN": NDAX_CREDENTIALS["login"],
    "NDAX_PASSWORD": NDAX_CREDENTIALS["password"],
}
LEVEL1 = {
    "BestBid": 129990.0,
    "BestOffer": 130010.0,
    "LastTradedPx": 130000.0,
    "InstrumentId": 1,
    "TimeStamp": "1767225600250",
}


SERVER_ERROR = venues.sample("ndax", "errors", "server_error")  # errorcode 102
NOT_FOUND = venues.sample("ndax", "errors", "not_found")  # errorcode 104


class FakeNdax:
    """ndax's order endpoints over one order book. `server_error_after_placing` makes the next
    SendOrder place the order and still answer errorcode 102 (the venue failed after the
    order existed). A cancel of an order that is not working is refused as ndax refuses it."""

    def __init__(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {}
        self.trades: dict[int, list[dict[str, Any]]] = {}
        self.sent: list[int] = []  # client order ids, one per SendOrder
        self.cancel_requests: list[int] = []  # order ids, one per CancelOrder
        self.server_error_after_placing = 0
        self.fill_before_cancel: set[int] = set()  # these fill just before their cancel arrives

    def hand_place(self, order: dict[str, Any]) -> int:
        """An order a person placed on the account (no client order id of ours)."""
        self.orders[int(order["OrderId"])] = order
        return int(order["OrderId"])

    @staticmethod
    def query(url: Any) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(str(url)).query).items()}

    def send_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        body = json.loads(kwargs["data"])
        self.sent.append(body["ClientOrderId"])
        order_id = 7000 + len(self.orders) + 1
        self.orders[order_id] = ndax_order(
            order_id,
            side="Buy" if body["Side"] == 0 else "Sell",
            order_type="Limit" if body["OrderType"] == 2 else "Market",
            quantity=body["Quantity"],
            price=body.get("LimitPrice", 0.0),
            client_order_id=body["ClientOrderId"],
        )
        self.trades[order_id] = []
        if self.server_error_after_placing:
            self.server_error_after_placing -= 1
            return CallbackResult(payload=SERVER_ERROR)
        return CallbackResult(payload={"status": "Accepted", "errormsg": "", "OrderId": order_id})

    def order_status(self, url: Any, **kwargs: Any) -> CallbackResult:
        order = self.orders.get(int(self.query(url)["OrderId"]))
        return CallbackResult(payload=order if order is not None else NOT_FOUND)

    def open_orders(self, url: Any, **kwargs: Any) -> CallbackResult:
        return CallbackResult(payload=[self.orders[i] for i in self.resting()])

    def orders_history(self, url: Any, **kwargs: Any) -> CallbackResult:
        wanted = self.query(url).get("ClientOrderId")
        return CallbackResult(
            payload=[o for o in self.orders.values() if str(o["ClientOrderId"]) == wanted]
        )

    def trades_history(self, url: Any, **kwargs: Any) -> CallbackResult:
        wanted = self.query(url).get("OrderId")
        if wanted is None:  # the account's trades (reconciliation), oldest first
            every = [t for trades in self.trades.values() for t in trades]
            return CallbackResult(payload=sorted(every, key=lambda t: t["TradeTimeMS"]))
        return CallbackResult(payload=self.trades.get(int(wanted), []))

    def cancel_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        order_id = int(json.loads(kwargs["data"])["OrderId"])
        self.cancel_requests.append(order_id)
        if order_id in self.fill_before_cancel:
            self.fill(order_id)
        order = self.orders.get(order_id)
        if order is None or order["OrderState"] != "Working":
            return CallbackResult(payload=NOT_FOUND)  # filled, cancelled or unknown: refused
        order.update(OrderState="Canceled", Quantity=0)  # ndax shows nothing left to fill
        return CallbackResult(payload={"result": True, "errormsg": None, "errorcode": 0})

    def fill(self, order_id: int) -> None:
        order = self.orders[order_id]
        quantity, price = order["OrigQuantity"], order["Price"]
        order.update(
            OrderState="FullyExecuted",
            QuantityExecuted=quantity,
            Quantity=0,
            AvgPrice=price,
            GrossValueExecuted=round(quantity * price, 8),
        )
        self.trades[order_id] = [
            ndax_trade(
                900 + order_id,
                order_id,
                quantity,
                price,
                0.1,
                client_order_id=order["ClientOrderId"],
                side=order["Side"],
            )
        ]

    def resting(self) -> list[int]:
        return [i for i, o in self.orders.items() if o["OrderState"] == "Working"]


@contextmanager
def serving(ndax: FakeNdax) -> Iterator[aioresponses]:
    """ndax's markets, the account, its BTC/CAD level 1, balances of 0.05 BTC and 10000 CAD, and
    `ndax`'s order endpoints (each answered by its method of the same name)."""
    with aioresponses() as m:
        mock_ndax_markets(m)
        mock_ndax_account(m)
        m.get(re.compile(re.escape(NDAX) + r"GetLevel1\?.*"), payload=LEVEL1, repeat=True)
        m.get(NDAX + "Ping", payload={"msg": "PONG"}, repeat=True)
        m.get(
            re.compile(re.escape(NDAX) + r"GetAccountPositions\?.*"),
            payload=[ndax_position(1, "BTC", 0.05, 0), ndax_position(3, "CAD", 10000, 0)],
            repeat=True,
        )
        m.post(NDAX + "SendOrder", callback=ndax.send_order, repeat=True)
        m.post(NDAX + "CancelOrder", callback=ndax.cancel_order, repeat=True)
        m.get(
            re.compile(re.escape(NDAX) + r"GetOrderStatus\?.*"),
            callback=ndax.order_status,
            repeat=True,
        )
        m.get(
            re.compile(re.escape(NDAX) + r"GetTradesHistory\?.*"),
            callback=ndax.trades_history,
            repeat=True,
        )
        m.get(
            re.compile(re.escape(NDAX) + r"GetOpenOrders\?.*"),
            callback=ndax.open_orders,
            repeat=True,
        )
        m.get(
            re.compile(re.escape(NDAX) + r"GetOrdersHistory\?.*"),
            callback=ndax.orders_history,
            repeat=True,
        )
        yield m


def live_ndax_grid(documents: dict[str, Any]) -> None:
    bots = documents["bots.json"]["bots"]
    ndax = next(b for b in bots if b["name"] == "ndax")
    ndax.update(
        mode="live",
        market_data="exchange",
        tick_interval_seconds=0.05,
        strategy={
            "name": "grid",
            "params": {"levels": 1, "spacing_pct": 0.4, "order_amount": 0.001},
        },
    )
    documents["bots.json"]["bots"] = [ndax]
    documents["bot-limits.json"]["bots"] = {}


def make_client(
    exchange: str, credentials: Mapping[str, str], ssl_context: ssl.SSLContext | None
) -> Any:
    assert exchange == "ndax"
    assert dict(credentials) == NDAX_CREDENTIALS  # all five, from the environment
    return ndax_client()
