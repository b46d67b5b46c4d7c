"""Test support: a stateful fake of kraken's private order endpoints (aioresponses callbacks over
an in-memory order book), served together with kraken's public market data, and the config edit
and client factory that make the shipped kraken bot a live one on it.

ccxt's real kraken code runs against these endpoints; only the HTTP layer is fake. Its payloads
come from the recorded-shape samples in `tests/fixtures/venues/kraken/` (through the builders of
`tests/bots/exchanges/ccxt_fixtures.py`).
"""

from __future__ import annotations

import inspect
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from aioresponses import CallbackResult, aioresponses

from tests.bots.exchanges.ccxt_fixtures import (
    KRAKEN_CREDENTIALS,
    KRAKEN_PRIVATE,
    KRAKEN_PUBLIC,
    KRAKEN_TRIGGER_TYPES,
    kraken_add_order,
    kraken_balance,
    kraken_client,
    kraken_error,
    kraken_ok,
    kraken_order,
    kraken_trade,
    mock_kraken_markets,
)

# kraken's asset codes for the assets of XBTAUD
KRAKEN_ASSET = {"AUD": "ZAUD", "BTC": "XXBT"}
OPENING_FUNDS = {"ZAUD": Decimal("10000"), "XXBT": Decimal("0.05")}  # serving()'s balance
TRADES_PAGE = 50  # TradesHistory answers 50 trades a page, newest first

PRICE = "150000.0"
ASK = "150010.0"
TICKER = {
    "XBTAUD": {
        "a": [ASK, "1", "1.0"],
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


@dataclass(frozen=True, slots=True)
class Call:
    """One request to a private endpoint, in the order they came, with what a lookup found."""

    endpoint: str
    form: dict[str, str]
    listed: tuple[str, ...] = ()  # the txids OpenOrders or ClosedOrders answered with

    @property
    def cl_ord_id(self) -> str | None:
        return self.form.get("cl_ord_id")


class FakeKraken:
    """Kraken's private order endpoints over an in-memory order book.

    A limit order rests until `fill()`; a market order fills in full at `ASK` when it is added
    (as on kraken). OpenOrders and ClosedOrders filter by `cl_ord_id` like kraken's do. A
    client order id seen before is not refused (kraken's cl_ord_id is unique among open orders
    only). `calls` lists every private request, in order."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.trades: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        # The account (served with serving(account=True)): funds deposited, before any trade.
        self.funds: dict[str, Decimal] = dict(OPENING_FUNDS)
        self.positions: list[dict[str, Any]] = []  # OpenPositions (consolidated by market)
        self.fill_before_cancel: set[str] = set()  # these fill just before their cancel arrives
        # The dead man's switch: each CancelAllOrdersAfter's timeout (seconds, 0 disarms) in
        # the order they came, and when the timer would run out (None: off).
        self.timeouts: list[int] = []
        self.trigger_at: datetime | None = None

    @staticmethod
    def form(kwargs: Mapping[str, Any]) -> dict[str, str]:
        data = kwargs.get("data") or b""
        text = data.decode() if isinstance(data, bytes) else str(data)
        return {k: v[0] for k, v in parse_qs(text).items()}

    def _next_txid(self) -> str:
        return f"O{len(self.orders) + 1:05d}-FAKE-KRAKEN"

    def place(self, form: Mapping[str, str]) -> str:
        """Put the order an AddOrder form describes in the book; its txid."""
        txid = self._next_txid()
        order = kraken_order(
            side=form["type"],
            ordertype=form["ordertype"],
            vol=form["volume"],
            price=form.get("price", "0"),
            status="open",
        )
        order["cl_ord_id"] = form["cl_ord_id"]
        self.orders[txid] = order
        if form["ordertype"] == "market":
            self.fill(txid, ASK)
        return txid

    def add_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        return CallbackResult(payload=kraken_add_order(self.place(self.form(kwargs))))

    def query_orders(self, url: Any, **kwargs: Any) -> CallbackResult:
        """As kraken: a txid it does not know makes the whole query fail (EOrder:Invalid order)."""
        txids = self.form(kwargs)["txid"].split(",")
        if any(t not in self.orders for t in txids):
            return CallbackResult(payload=kraken_error("EOrder:Invalid order"))
        return CallbackResult(payload=kraken_ok({t: self.orders[t] for t in txids}))

    def query_trades(self, url: Any, **kwargs: Any) -> CallbackResult:
        """As kraken: a trade id it does not know is refused (EGeneral:Invalid arguments)."""
        ids = self.form(kwargs)["txid"].split(",")
        if any(i not in self.trades for i in ids):
            return CallbackResult(payload=kraken_error("EGeneral:Invalid arguments"))
        return CallbackResult(payload=kraken_ok({i: self.trades[i] for i in ids}))

    def open_orders(self, url: Any, **kwargs: Any) -> CallbackResult:
        found = self._listed(self.form(kwargs), lambda status: status == "open")
        return CallbackResult(payload=kraken_ok({"open": found}))

    def closed_orders(self, url: Any, **kwargs: Any) -> CallbackResult:
        found = self._listed(self.form(kwargs), lambda status: status != "open")
        return CallbackResult(payload=kraken_ok({"closed": found, "count": len(found)}))

    def _listed(
        self, form: Mapping[str, str], wanted: Callable[[str], bool]
    ) -> dict[str, dict[str, Any]]:
        cl_ord_id = form.get("cl_ord_id")
        return {
            txid: order
            for txid, order in self.orders.items()
            if wanted(order["status"]) and cl_ord_id in (None, order["cl_ord_id"])
        }

    def cancel_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        """As kraken: an order that is not open (filled, cancelled) or not known is refused
        with EOrder:Unknown order. One in `fill_before_cancel` fills just before."""
        txid = self.form(kwargs)["txid"]
        if txid in self.fill_before_cancel and self.orders[txid]["status"] == "open":
            self.fill(txid)
        order = self.orders.get(txid)
        if order is None or order["status"] != "open":
            return CallbackResult(payload=kraken_error("EOrder:Unknown order"))
        order["status"] = "canceled"
        return CallbackResult(payload=kraken_ok({"count": 1}))

    def fill(self, txid: str, price: str | None = None, amount: str | None = None) -> None:
        """The market trades through this order at its limit (or `price`): it fills in full, or
        by `amount` only (it stays open until the trades add up to its volume)."""
        order = self.orders[txid]
        price = price or order["descr"]["price"]
        volume = Decimal(order["vol"])
        left = volume - Decimal(order["vol_exec"])
        traded = left if amount is None else Decimal(amount)
        assert 0 < traded <= left, f"order {txid} has {left} left to fill, not {traded}"
        trade_id = f"T{len(self.trades) + 1:05d}-FAKE"
        trade = kraken_trade(
            txid,
            order["vol"] if traded == volume else f"{traded:.8f}",
            price,
            "0.24",
            trade_id=40_000_000 + len(self.trades) + 1,
            maker=order["descr"]["ordertype"] == "limit",
        )
        trade["type"] = order["descr"]["type"]
        trade["ordertype"] = order["descr"]["ordertype"]
        self.trades[trade_id] = trade
        executed = volume - left + traded
        trades = [*order.get("trades", []), trade_id]
        cost = sum(Decimal(self.trades[t]["cost"]) for t in trades)
        fee = sum(Decimal(self.trades[t]["fee"]) for t in trades)
        order.update(  # as kraken: cost, fee and average price move with every trade
            status="closed" if executed == volume else "open",
            vol_exec=order["vol"] if executed == volume else f"{executed:.8f}",
            trades=trades,
            cost=f"{cost:.5f}",
            fee=f"{fee:.5f}",
            price=f"{cost / executed:.1f}",
        )
        if executed == volume:
            order["closetm"] = trade["time"]

    def resting(self) -> list[str]:
        return [t for t, o in self.orders.items() if o["status"] == "open"]

    # ----- the account: balances, trade history, positions, and what others do on it -------

    def fill_now(self, txid: str, price: str | None = None, amount: str | None = None) -> str:
        """`fill()`, with the trade stamped now (fill() stamps it 2026-01-01, outside any
        recent window); the new trade's id."""
        self.fill(txid, price, amount)
        trade_id = list(self.trades)[-1]
        self.trades[trade_id]["time"] = round(time.time(), 4)
        if "closetm" in self.orders[txid]:
            self.orders[txid]["closetm"] = self.trades[trade_id]["time"]
        return trade_id

    def place_by_hand(self, side: str, volume: str, price: str) -> str:
        """A limit order someone placed on the account outside the coordinator (kraken's
        website): it has no cl_ord_id. Its txid."""
        txid = self.place(
            {"type": side, "ordertype": "limit", "volume": volume, "price": price, "cl_ord_id": ""}
        )
        self.orders[txid]["cl_ord_id"] = None
        return txid

    def place_trigger_by_hand(
        self, ordertype: str, side: str, volume: str, price: str, price2: str = "0"
    ) -> str:
        """A trigger order someone placed on kraken's website: `ordertype` is kraken's
        (trailing-stop, take-profit, stop-loss-limit, ...); `price` the trigger (or a trailing
        offset such as "+5.0000%"), `price2` a -limit order's limit price. Its txid."""
        assert ordertype in KRAKEN_TRIGGER_TYPES, f"no recorded sample of a {ordertype} order"
        txid = self._next_txid()
        self.orders[txid] = kraken_order(
            side=side, ordertype=ordertype, vol=volume, price=price, price2=price2, status="open"
        )
        self.orders[txid]["cl_ord_id"] = None  # placed by hand: none of ours
        return txid

    def deposit(self, asset: str, amount: str) -> None:
        """Funds moved into the account (negative: withdrawn); `asset` "AUD" or "BTC"."""
        code = KRAKEN_ASSET.get(asset, asset)
        self.funds[code] = self.funds.get(code, Decimal(0)) + Decimal(amount)

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Each asset's (total, held by open orders): the funds plus every trade (fees in
        AUD), as kraken's BalanceEx reports them."""
        totals = dict(self.funds)
        held = {code: Decimal(0) for code in totals}
        for trade in self.trades.values():
            vol, price, fee = (Decimal(trade[k]) for k in ("vol", "price", "fee"))
            sign = 1 if trade["type"] == "buy" else -1
            totals["XXBT"] = totals.get("XXBT", Decimal(0)) + sign * vol
            totals["ZAUD"] = totals.get("ZAUD", Decimal(0)) - sign * vol * price - fee
        for order in self.orders.values():
            if order["status"] != "open":
                continue
            left = Decimal(order["vol"]) - Decimal(order["vol_exec"])
            if order["descr"]["type"] == "buy":
                code, amount = "ZAUD", left * Decimal(order["descr"]["price"])
            else:
                code, amount = "XXBT", left
            held[code] = held.get(code, Decimal(0)) + amount
        return {code: (totals[code], held.get(code, Decimal(0))) for code in totals}

    def balance_ex(self, url: Any, **kwargs: Any) -> CallbackResult:
        shown = {code: (str(total), str(hold)) for code, (total, hold) in self.balances().items()}
        return CallbackResult(payload=kraken_balance(**shown))

    def trades_history(self, url: Any, **kwargs: Any) -> CallbackResult:
        """The account's trades, newest first, 50 a page (`ofs`), from `start` (exclusive) to
        `end` (inclusive), in seconds, like kraken's TradesHistory; `count` is all that match."""
        form = self.form(kwargs)
        start, end = form.get("start"), form.get("end")
        matching = sorted(
            (
                (trade_id, trade)
                for trade_id, trade in self.trades.items()
                if (start is None or trade["time"] > float(start))
                and (end is None or trade["time"] <= float(end))
            ),
            key=lambda item: item[1]["time"],
            reverse=True,
        )
        offset = int(form.get("ofs", "0"))
        page = dict(matching[offset : offset + TRADES_PAGE])
        return CallbackResult(payload=kraken_ok({"trades": page, "count": len(matching)}))

    def open_positions(self, url: Any, **kwargs: Any) -> CallbackResult:
        return CallbackResult(payload=kraken_ok(self.positions))

    def cancel_all_orders_after(self, url: Any, **kwargs: Any) -> CallbackResult:
        """kraken's dead man's switch: unless called again within `timeout` seconds, every
        order of the account is cancelled; 0 turns the timer off. Answered as kraken's API
        reference shows (it shows no answer to a 0; this one has the same shape)."""
        timeout = int(self.form(kwargs)["timeout"])
        self.timeouts.append(timeout)
        now = datetime.now(UTC).replace(microsecond=0)
        self.trigger_at = now + timedelta(seconds=timeout) if timeout else None
        shown = {"currentTime": now, "triggerTime": self.trigger_at or now}
        return CallbackResult(
            payload=kraken_ok({k: t.strftime("%Y-%m-%dT%H:%M:%SZ") for k, t in shown.items()})
        )


PRIVATE_ENDPOINTS = (
    "AddOrder",
    "QueryOrders",
    "QueryTrades",
    "OpenOrders",
    "ClosedOrders",
    "CancelOrder",
    "CancelAllOrdersAfter",
)
# Served from the fake's own state with serving(account=True).
ACCOUNT_ENDPOINTS = ("BalanceEx", "TradesHistory", "OpenPositions")


@contextmanager
def serving(
    kraken: FakeKraken, passthrough: Sequence[str] = (), account: bool = False
) -> Iterator[aioresponses]:
    """kraken's markets, its XBT/AUD ticker, a balance of 10000 AUD and 0.05 BTC, and `kraken`'s
    order endpoints (each answered by the method of the same name, looked up on the instance so
    a subclass may override it). Requests to a URL starting with one of `passthrough` (a local
    control-plane test server) go out for real.

    With `account`, the balance is `kraken`'s (its funds and its trades: `FakeKraken.balances`)
    and its TradesHistory and OpenPositions are served too (`ACCOUNT_ENDPOINTS`)."""
    with aioresponses(passthrough=list(passthrough)) as m:
        mock_kraken_markets(m)
        m.get(KRAKEN_PUBLIC + "Ticker?pair=XBTAUD", payload=kraken_ok(TICKER), repeat=True)
        m.get(
            KRAKEN_PUBLIC + "SystemStatus",
            payload=kraken_ok({"status": "online", "timestamp": "2026-11-23T12:00:00Z"}),
            repeat=True,
        )
        if account:
            for endpoint in ACCOUNT_ENDPOINTS:
                m.post(KRAKEN_PRIVATE + endpoint, callback=_logged(kraken, endpoint), repeat=True)
        else:
            m.post(
                KRAKEN_PRIVATE + "BalanceEx",
                payload=kraken_balance(ZAUD=("10000", "0"), XXBT=("0.05", "0")),
                repeat=True,
            )
        for endpoint in PRIVATE_ENDPOINTS:
            m.post(KRAKEN_PRIVATE + endpoint, callback=_logged(kraken, endpoint), repeat=True)
        yield m


def _logged(kraken: FakeKraken, endpoint: str) -> Callable[..., Awaitable[CallbackResult]]:
    """The callback for `endpoint`: `kraken`'s method of that name (looked up at each call, so
    a subclass may override it, with a coroutine too: to make the venue slow), noted in
    `kraken.calls` even when it raises."""
    name = "".join(f"_{c.lower()}" if c.isupper() else c for c in endpoint).lstrip("_")

    async def callback(url: Any, **kwargs: Any) -> CallbackResult:
        form = FakeKraken.form(kwargs)
        try:
            answer = getattr(kraken, name)(url, **kwargs)
            result: CallbackResult = await answer if inspect.isawaitable(answer) else answer
        except BaseException:
            kraken.calls.append(Call(endpoint, form))
            raise
        listed: tuple[str, ...] = ()
        if endpoint in ("OpenOrders", "ClosedOrders"):
            answered = result.payload["result"]  # type: ignore[index]
            listed = tuple(answered["open" if endpoint == "OpenOrders" else "closed"])
        kraken.calls.append(Call(endpoint, form, listed))
        return result

    return callback


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
