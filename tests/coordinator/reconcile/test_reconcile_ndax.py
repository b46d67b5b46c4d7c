"""Reconciliation of a live ndax bot, through the real Coordinator, against a mocked ndax: ccxt's
real ndax code runs against a stateful fake of ndax's order, trade and account endpoints.

ndax differs from kraken where reconciliation looks: its trades carry our client order id (so a
trade is matched to its order by that id), its open orders are not filtered by client order id,
and its balances are the account's positions (GetAccountPositions). As in the kraken tests, the
bot's tick loop is not started: state is made through its gateway.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aioresponses import CallbackResult, aioresponses

from bots.models import OrderIntent, OrderType, Side
from coordinator.accounts import Accounts
from coordinator.config import load_config
from coordinator.integrity import verify_database
from coordinator.reconcile.model import render_table
from coordinator.runtime import Coordinator
from coordinator.supervisor import BotRunner
from tests.bots.exchanges.ccxt_fixtures import (
    NDAX,
    mock_ndax_account,
    mock_ndax_markets,
    ndax_client,
    ndax_order,
    ndax_position,
    ndax_trade,
)
from tests.support_config import write_fast_config
from tests.support_ndax import ENV, LEVEL1

BOT = "ndax"
SYMBOL = "BTC/CAD"
OPENING = {"BTC": Decimal("0.05"), "CAD": Decimal("10000")}
AMOUNT = Decimal("0.001")
PRICE = Decimal("129480")  # a limit buy 0.4 % under ndax's last price: it rests
FEE = Decimal("0.1")  # the fake's fee on every trade, in CAD
PRODUCTS = {1: "BTC", 3: "CAD"}
WRITES = frozenset({"SendOrder", "CancelOrder", "CancelAllOrders", "ModifyOrder"})


def answer(payload: list[Any]) -> CallbackResult:
    """A JSON array (CallbackResult's payload is typed as an object)."""
    return CallbackResult(body=json.dumps(payload), content_type="application/json")


@dataclass
class FakeNdaxAccount:
    """ndax's order, trade and account endpoints over an in-memory account. Limit orders rest
    until `fill`; every trade is stamped now; balances are the funds plus the trades."""

    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    funds: dict[str, Decimal] = field(default_factory=lambda: dict(OPENING))
    calls: list[str] = field(default_factory=list)

    @staticmethod
    def query(url: Any) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(str(url)).query).items()}

    def place(self, side: str, quantity: float, price: float, client_order_id: int) -> int:
        order_id = 7000 + len(self.orders) + 1
        self.orders[order_id] = ndax_order(
            order_id, side=side, quantity=quantity, price=price, client_order_id=client_order_id
        )
        return order_id

    def fill(self, order_id: int, quantity: float | None = None) -> int:
        """The market trades through the order at its limit, in full or by `quantity`; the
        trade's id."""
        order = self.orders[order_id]
        left = Decimal(str(order["OrigQuantity"])) - Decimal(str(order["QuantityExecuted"]))
        traded = left if quantity is None else Decimal(str(quantity))
        assert 0 < traded <= left
        executed = Decimal(str(order["QuantityExecuted"])) + traded
        done = executed == Decimal(str(order["OrigQuantity"]))
        order.update(
            OrderState="FullyExecuted" if done else "Working",
            QuantityExecuted=float(executed),
            Quantity=float(Decimal(str(order["OrigQuantity"])) - executed),
            AvgPrice=order["Price"],
            GrossValueExecuted=float(executed * Decimal(str(order["Price"]))),
        )
        trade_id = 900 + len(self.trades) + 1
        self.trades.append(
            ndax_trade(
                trade_id,
                order_id,
                float(traded),
                order["Price"],
                float(FEE),
                client_order_id=order["ClientOrderId"],
                side=order["Side"],
                time_ms=int(time.time() * 1000),
            )
        )
        return trade_id

    def resting(self) -> list[int]:
        return [i for i, o in self.orders.items() if o["OrderState"] == "Working"]

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        totals = dict(self.funds)
        held = {asset: Decimal(0) for asset in totals}
        for trade in self.trades:
            amount, price = Decimal(str(trade["Quantity"])), Decimal(str(trade["Price"]))
            sign = 1 if trade["Side"] == "Buy" else -1
            totals["BTC"] += sign * amount
            totals["CAD"] -= sign * amount * price
            totals[PRODUCTS[trade["FeeProductId"]]] -= Decimal(str(trade["Fee"]))
        for order in self.orders.values():
            if order["OrderState"] == "Working":
                left = Decimal(str(order["Quantity"]))
                if order["Side"] == "Buy":
                    held["CAD"] += left * Decimal(str(order["Price"]))
                else:
                    held["BTC"] += left
        return {asset: (totals[asset], held[asset]) for asset in totals}

    # ----- endpoints ------------------------------------------------------------------------

    def send_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        body = json.loads(kwargs["data"])
        order_id = self.place(
            "Buy" if body["Side"] == 0 else "Sell",
            body["Quantity"],
            body.get("LimitPrice", 0.0),
            body["ClientOrderId"],
        )
        return CallbackResult(payload={"status": "Accepted", "errormsg": "", "OrderId": order_id})

    def cancel_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        order = self.orders[int(json.loads(kwargs["data"])["OrderId"])]
        if order["OrderState"] == "Working":
            order["OrderState"] = "Canceled"
        return CallbackResult(payload={"result": True, "errormsg": None, "errorcode": 0})

    def order_status(self, url: Any, **kwargs: Any) -> CallbackResult:
        return CallbackResult(payload=self.orders[int(self.query(url)["OrderId"])])

    def open_orders(self, url: Any, **kwargs: Any) -> CallbackResult:
        return answer([self.orders[i] for i in self.resting()])

    def orders_history(self, url: Any, **kwargs: Any) -> CallbackResult:
        wanted = self.query(url).get("ClientOrderId")
        return answer(
            [o for o in self.orders.values() if wanted is None or str(o["ClientOrderId"]) == wanted]
        )

    def trades_history(self, url: Any, **kwargs: Any) -> CallbackResult:
        q = self.query(url)
        start = int(q["StartTimeStamp"]) * 1000 if "StartTimeStamp" in q else None
        return answer(
            [
                t
                for t in self.trades
                if ("OrderId" not in q or t["OrderId"] == int(q["OrderId"]))
                and ("InstrumentId" not in q or t["InstrumentId"] == int(q["InstrumentId"]))
                and (start is None or t["TradeTimeMS"] >= start)
            ]
        )

    def account_positions(self, url: Any, **kwargs: Any) -> CallbackResult:
        ids = {name: product for product, name in PRODUCTS.items()}
        return answer(
            [
                ndax_position(ids[asset], asset, float(total), float(hold))
                for asset, (total, hold) in self.balances().items()
            ]
        )


ENDPOINTS: dict[str, tuple[str, str]] = {  # ndax endpoint -> (method, FakeNdaxAccount's)
    "SendOrder": ("POST", "send_order"),
    "CancelOrder": ("POST", "cancel_order"),
    "GetOrderStatus": ("GET", "order_status"),
    "GetOpenOrders": ("GET", "open_orders"),
    "GetOrdersHistory": ("GET", "orders_history"),
    "GetTradesHistory": ("GET", "trades_history"),
    "GetAccountPositions": ("GET", "account_positions"),
}


def _served(ndax: FakeNdaxAccount, endpoint: str, name: str) -> Callable[..., CallbackResult]:
    def callback(url: Any, **kwargs: Any) -> CallbackResult:
        ndax.calls.append(endpoint)
        result: CallbackResult = getattr(ndax, name)(url, **kwargs)  # per instance: tests swap
        return result

    return callback


@dataclass
class Live:
    ndax: FakeNdaxAccount
    coordinator: Coordinator
    runner: BotRunner

    @property
    def path(self) -> Path:
        return self.coordinator.store.path


@pytest.fixture
def ndax() -> Iterator[FakeNdaxAccount]:
    fake = FakeNdaxAccount()
    with aioresponses() as m:
        mock_ndax_markets(m)
        mock_ndax_account(m)
        m.get(re.compile(re.escape(NDAX) + r"GetLevel1\?.*"), payload=LEVEL1, repeat=True)
        for endpoint, (method, name) in ENDPOINTS.items():
            url = re.compile(re.escape(NDAX + endpoint) + r"(\?.*)?$")
            m.add(url, method, callback=_served(fake, endpoint, name), repeat=True)
        yield fake


def live_ndax(documents: dict[str, Any]) -> None:
    bots = documents["bots.json"]["bots"]
    bot = next(b for b in bots if b["name"] == BOT)
    bot.update(
        mode="live",
        market_data="exchange",
        tick_interval_seconds=0.05,
        strategy={
            "name": "grid",
            "params": {"levels": 1, "spacing_pct": 0.4, "order_amount": 0.001},
        },
    )
    documents["bots.json"]["bots"] = [bot]
    documents["bot-limits.json"]["bots"] = {}


def make_client(exchange: str, credentials: Any, ssl_context: Any) -> Any:
    assert exchange == "ndax"
    return ndax_client()


@pytest.fixture
async def live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ndax: FakeNdaxAccount
) -> AsyncIterator[Live]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", live_ndax))
    )
    (tmp_path / "data").mkdir()
    coordinator = await Coordinator.open(config, tmp_path / "data", accounts=Accounts(make_client))
    try:
        runner = coordinator.supervisor.runner(BOT)
        assert runner.parts.prepare is not None
        await runner.parts.prepare()  # the opening balances, as the first start reads them
        await runner.gateway().sync(await runner.parts.feed.snapshot())
        assert runner.parts.book.balances == OPENING
        yield Live(ndax, coordinator, runner)
    finally:
        await coordinator.close(grace_seconds=0.5)


# ----- helpers ----------------------------------------------------------------------------------


def _rows(path: Path, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


async def query(live: Live, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return await asyncio.to_thread(_rows, live.path, sql, params)


async def entry(live: Live) -> dict[str, Any]:
    report = await live.coordinator.reconcile(BOT, False, "test")
    (bot,) = report["bots"]
    assert bot["errors"] == [], bot["errors"]
    return dict(bot)


async def applied(live: Live) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    calls = len(live.ndax.calls)
    report = await live.coordinator.reconcile(BOT, True, "test")
    (bot,) = report["bots"]
    return report, dict(bot), [c for c in live.ndax.calls[calls:] if c in WRITES]


def kinds(differences: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["kind"], d["subject"]) for d in differences]


async def resting_buy(live: Live) -> tuple[int, int]:
    result = await live.runner.gateway().submit(
        OrderIntent(SYMBOL, Side.BUY, OrderType.LIMIT, AMOUNT, PRICE)
    )
    assert result.outcome == "sent", result
    assert result.client_order_id is not None
    (order_id,) = [
        i for i, o in live.ndax.orders.items() if o["ClientOrderId"] == result.client_order_id
    ]
    return result.client_order_id, order_id


def after_buy(amount: Decimal = AMOUNT) -> dict[str, Decimal]:
    return {"BTC": OPENING["BTC"] + amount, "CAD": OPENING["CAD"] - amount * PRICE - FEE}


def on_ndax(ndax: FakeNdaxAccount) -> dict[str, Decimal]:
    return {asset: total for asset, (total, _) in ndax.balances().items()}


async def trade_id_of(live: Live, client_order_id: int) -> str:
    (row,) = await query(
        live, "SELECT trade_id FROM fills WHERE client_order_id = ?", client_order_id
    )
    return str(row[0])


# ----- the scenarios ----------------------------------------------------------------------------


async def test_a_fill_deleted_from_the_journal_is_found_by_its_client_order_id_and_recorded(
    live: Live,
) -> None:
    client_order_id, order_id = await resting_buy(live)
    live.ndax.fill(order_id)
    await live.runner.gateway().refresh_live_orders("test: the fill")
    trade_id = await trade_id_of(live, client_order_id)
    await live.coordinator.store.write([("DELETE FROM fills WHERE trade_id = ?", (trade_id,))])

    bot = await entry(live)
    assert kinds(bot["differences"]) == [
        ("missing_fill", f"trade {trade_id} of order {client_order_id}")
    ]
    assert Decimal(bot["differences"][0]["difference"]) == AMOUNT

    report, bot, writes = await applied(live)
    assert writes == []
    assert bot["remaining"] == []
    (correction,) = bot["corrections"]
    assert correction["kind"] == "missing_fill"
    assert f"trade {trade_id}" in correction["action"]
    *_, event = await query(
        live,
        "SELECT detail FROM order_events WHERE client_order_id = ? ORDER BY id",
        client_order_id,
    )
    assert event[0].startswith(f"reconciliation correction #{correction['id']}: ")
    assert await query(live, "SELECT amount FROM fills WHERE trade_id = ?", trade_id) == [
        (str(AMOUNT),)
    ]
    assert live.runner.parts.book.position.base == AMOUNT
    assert live.runner.parts.book.balances == after_buy() == on_ndax(live.ndax)
    assert (await entry(live))["differences"] == []
    assert f"trade {trade_id} of order {client_order_id}" in render_table(report)
    assert (await verify_database(live.path)).ok


async def test_an_order_and_its_trade_made_by_hand_on_ndax_are_reported_not_recorded(
    live: Live,
) -> None:
    resting = live.ndax.place("Buy", 0.002, 120000.0, client_order_id=0)
    traded = live.ndax.place("Buy", 0.002, 129000.0, client_order_id=0)
    trade_id = live.ndax.fill(traded)

    bot = await entry(live)
    assert kinds(bot["differences"]) == [
        ("unknown_open_order", f"exchange order {resting}"),
        ("unknown_trade", f"trade {trade_id}"),
        ("balance_drift", "balance BTC"),
        ("balance_drift", "balance CAD"),
    ]
    assert [d["correctable"] for d in bot["differences"][:2]] == [False, False]
    moved = {"BTC": Decimal("0.002"), "CAD": -Decimal("0.002") * Decimal(129000) - FEE}
    for d in bot["differences"][2:]:
        assert Decimal(d["difference"]) == moved[d["subject"].removeprefix("balance ")]

    _, bot, writes = await applied(live)
    assert writes == []  # the hand-made order is not cancelled
    assert live.ndax.resting() == [resting]
    assert kinds(bot["remaining"]) == [
        ("unknown_open_order", f"exchange order {resting}"),
        ("unknown_trade", f"trade {trade_id}"),
    ]
    assert await query(live, "SELECT * FROM orders") == []
    assert await query(live, "SELECT * FROM fills") == []
    assert live.runner.parts.book.balances == on_ndax(live.ndax)


async def test_an_order_ndax_filled_while_its_bot_was_stopped_is_brought_up_to_date(
    live: Live,
) -> None:
    client_order_id, order_id = await resting_buy(live)
    live.ndax.fill(order_id)

    bot = await entry(live)
    assert kinds(bot["differences"])[0] == ("order_closed_on_exchange", f"order {client_order_id}")
    assert {d["kind"] for d in bot["differences"]} == {
        "order_closed_on_exchange",
        "missing_fill",
        "balance_drift",
    }

    _, bot, writes = await applied(live)
    assert writes == []
    assert bot["remaining"] == []
    (correction,) = bot["corrections"]
    assert correction["kind"] == "order_closed_on_exchange"
    *_, event = await query(
        live,
        "SELECT from_status, to_status, detail FROM order_events WHERE client_order_id = ?"
        " ORDER BY id",
        client_order_id,
    )
    assert event == ("open", "filled", f"reconciliation correction #{correction['id']}")
    assert live.runner.parts.book.balances == after_buy() == on_ndax(live.ndax)
    assert (await entry(live))["differences"] == []


async def test_money_moved_on_ndax_outside_the_bot_is_balance_drift_and_an_adjustment(
    live: Live,
) -> None:
    live.ndax.funds["CAD"] += Decimal("250")

    bot = await entry(live)
    (drift,) = bot["differences"]
    assert (drift["kind"], drift["subject"]) == ("balance_drift", "balance CAD")
    assert Decimal(drift["difference"]) == Decimal("250")

    _, bot, writes = await applied(live)
    assert writes == []
    assert bot["remaining"] == []
    (correction,) = bot["corrections"]
    *_, adjustment = await query(
        live, "SELECT asset, amount, reason FROM balance_adjustments ORDER BY id"
    )
    assert (adjustment[0], Decimal(adjustment[1])) == ("CAD", Decimal("250"))
    assert adjustment[2].startswith(f"reconciliation correction #{correction['id']}: ")
    assert live.runner.parts.book.balances["CAD"] == OPENING["CAD"] + 250
    assert (await entry(live))["differences"] == []


@pytest.mark.parametrize("endpoint", ["GetOpenOrders", "GetTradesHistory", "GetAccountPositions"])
async def test_an_ndax_that_answers_500_is_an_error_in_the_report_and_nothing_is_corrected(
    live: Live, endpoint: str
) -> None:
    live.ndax.funds["CAD"] += Decimal("250")
    name = ENDPOINTS[endpoint][1]
    setattr(live.ndax, name, lambda url, **kw: CallbackResult(status=500, body="Server Error"))

    report, bot, writes = await applied(live)
    assert writes == []
    (error,) = bot["errors"]
    assert error.startswith("could not read ndax: "), error
    assert bot["differences"] == bot["corrections"] == []
    assert report["summary"]["errors"] == 1
    assert await query(live, "SELECT COUNT(*) FROM reconciliation_corrections") == [(0,)]
    assert live.runner.parts.book.balances == OPENING

    delattr(live.ndax, name)
    _, bot, _ = await applied(live)
    assert kinds(bot["corrections"]) == [("balance_drift", "balance CAD")]
