"""A live bot, end to end, on a mocked kraken: the real coordinator, gateway, journal, safety
layer and ccxt adapter, and ccxt's real kraken code; only kraken's HTTP endpoints are fakes.

The fake keeps its orders like kraken does: a grid bot's limit orders rest, the price moves
through one and it fills, the grid re-centres (cancelling the rest), and stopping the bot
cancels whatever still rests.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aioresponses import CallbackResult, aioresponses

from coordinator.accounts import Accounts
from coordinator.config import load_config
from coordinator.runtime import Coordinator
from tests.bots.exchanges.ccxt_fixtures import (
    KRAKEN_CREDENTIALS,
    KRAKEN_PRIVATE,
    KRAKEN_PUBLIC,
    kraken_add_order,
    kraken_balance,
    kraken_client,
    kraken_ok,
    kraken_order,
    kraken_trade,
    mock_kraken_markets,
    requests_to,
)
from tests.support_config import eventually, write_fast_config

PRICE = "150000.0"
TICKER = {
    "XBTAUD": {
        "a": ["150010.0", "1", "1.0"],
        "b": ["149990.0", "1", "1.0"],
        "c": [PRICE, "0.01"],
        "v": ["1", "1"],
        "p": [PRICE, PRICE],
        "t": [1, 1],
        "l": [PRICE, PRICE],
        "h": [PRICE, PRICE],
        "o": PRICE,
    }
}


class FakeKraken:
    """Kraken's private order endpoints over an in-memory order book."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.trades: dict[str, dict[str, Any]] = {}

    @staticmethod
    def form(kwargs: Mapping[str, Any]) -> dict[str, str]:
        data = kwargs.get("data") or b""
        text = data.decode() if isinstance(data, bytes) else str(data)
        return {k: v[0] for k, v in parse_qs(text).items()}

    def add_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        form = self.form(kwargs)
        txid = f"O{len(self.orders) + 1:05d}-FAKE-KRAKEN"
        order = kraken_order(
            side=form["type"],
            ordertype=form["ordertype"],
            vol=form["volume"],
            price=form.get("price", "0"),
            status="open",
        )
        order["cl_ord_id"] = form["cl_ord_id"]
        self.orders[txid] = order
        return CallbackResult(payload=kraken_add_order(txid))

    def query_orders(self, url: Any, **kwargs: Any) -> CallbackResult:
        txids = self.form(kwargs)["txid"].split(",")
        return CallbackResult(payload=kraken_ok({t: self.orders[t] for t in txids}))

    def query_trades(self, url: Any, **kwargs: Any) -> CallbackResult:
        ids = self.form(kwargs)["txid"].split(",")
        return CallbackResult(payload=kraken_ok({i: self.trades[i] for i in ids}))

    def cancel_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        order = self.orders[self.form(kwargs)["txid"]]
        if order["status"] == "open":
            order["status"] = "canceled"
        return CallbackResult(payload=kraken_ok({"count": 1}))

    def fill(self, txid: str) -> None:
        """The market trades through this resting order: it fills in full at its price."""
        order = self.orders[txid]
        trade_id = f"T{len(self.trades) + 1:05d}-FAKE"
        trade = kraken_trade(txid, order["vol"], order["descr"]["price"], "0.24")
        trade["type"] = order["descr"]["type"]
        trade["ordertype"] = "limit"
        self.trades[trade_id] = trade
        order.update(status="closed", vol_exec=order["vol"], trades=[trade_id])

    def resting(self) -> list[str]:
        return [t for t, o in self.orders.items() if o["status"] == "open"]


@pytest.fixture
def fake() -> Iterator[tuple[FakeKraken, aioresponses]]:
    kraken = FakeKraken()
    with aioresponses() as m:
        mock_kraken_markets(m)
        m.get(KRAKEN_PUBLIC + "Ticker?pair=XBTAUD", payload=kraken_ok(TICKER), repeat=True)
        m.post(
            KRAKEN_PRIVATE + "BalanceEx",
            payload=kraken_balance(ZAUD=("10000", "0"), XXBT=("0.05", "0")),
            repeat=True,
        )
        m.post(KRAKEN_PRIVATE + "AddOrder", callback=kraken.add_order, repeat=True)
        m.post(KRAKEN_PRIVATE + "QueryOrders", callback=kraken.query_orders, repeat=True)
        m.post(KRAKEN_PRIVATE + "QueryTrades", callback=kraken.query_trades, repeat=True)
        m.post(KRAKEN_PRIVATE + "CancelOrder", callback=kraken.cancel_order, repeat=True)
        yield kraken, m


def live_kraken(documents: dict[str, Any]) -> None:
    bots = documents["bots.json"]["bots"]
    kraken = next(b for b in bots if b["name"] == "kraken")
    kraken.update(mode="live", market_data="exchange", tick_interval_seconds=0.05)
    documents["bots.json"]["bots"] = [kraken]
    documents["bot-limits.json"]["bots"] = {}


def make_client(
    exchange: str, credentials: Mapping[str, str], ssl_context: ssl.SSLContext | None
) -> Any:
    assert exchange == "kraken"
    assert dict(credentials) == KRAKEN_CREDENTIALS  # read from the environment
    return kraken_client()  # ccxt's real kraken, without the rate limiter's 1 s waits


async def test_a_live_bot_places_fills_and_cancels_orders_on_kraken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: tuple[FakeKraken, aioresponses]
) -> None:
    kraken, m = fake
    monkeypatch.setenv("KRAKEN_API_KEY", KRAKEN_CREDENTIALS["apiKey"])
    monkeypatch.setenv("KRAKEN_API_SECRET", KRAKEN_CREDENTIALS["secret"])
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", live_kraken))
    )
    (tmp_path / "data").mkdir()
    coordinator = await Coordinator.open(config, tmp_path / "data", accounts=Accounts(make_client))
    try:
        runner = await coordinator.supervisor.start("kraken")
        book = runner.parts.book
        assert book.balances == {"BTC": Decimal("0.05"), "AUD": Decimal("10000")}
        await eventually(lambda: len(kraken.resting()) == 6, what="the grid's six orders resting")
        sent = [
            FakeKraken.form(r.kwargs) for r in requests_to(m, "POST", KRAKEN_PRIVATE + "AddOrder")
        ]
        assert {f["ordertype"] for f in sent} == {"limit"}
        assert all(f["cl_ord_id"].startswith("x") and len(f["cl_ord_id"]) <= 18 for f in sent)

        lowest_buy = min(
            (t for t in kraken.resting() if kraken.orders[t]["descr"]["type"] == "buy"),
            key=lambda t: Decimal(kraken.orders[t]["descr"]["price"]),
        )
        kraken.fill(lowest_buy)
        await eventually(lambda: book.fills_count == 1, what="the fill journaled")
        await eventually(
            lambda: len(kraken.orders) == 12 and len(kraken.resting()) == 6,
            what="the grid re-centred on the fill: five cancelled, six new",
        )
        assert kraken.orders[lowest_buy]["status"] == "closed"
        assert book.position.base == Decimal("0.001")

        await coordinator.supervisor.stop("kraken", "test over")
        assert kraken.resting() == []  # every resting order cancelled on kraken
        assert book.live_orders == {}
        rows = await coordinator.store.fetch_all(
            "SELECT status, COUNT(*) n FROM orders GROUP BY status"
        )
        counts = {row["status"]: row["n"] for row in rows}
        assert counts["filled"] == 1
        assert counts["canceled"] >= 11  # five cancelled at the re-centre, six at the stop
        assert set(counts) == {"filled", "canceled"}
    finally:
        await coordinator.close(grace_seconds=0.5)
