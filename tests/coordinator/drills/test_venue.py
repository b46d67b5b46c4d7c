"""The drill venue: kraken's REST API faked over real HTTP on 127.0.0.1, driven here by ccxt's
real async kraken client (and by the coordinator's own ccxt adapter where what matters is what
the coordinator reads).

The venue's methods block until its own loop has done the work, so the async tests call them
through `asyncio.to_thread` (`on_venue`); starting and stopping is a sync fixture.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
import ccxt.async_support as ccxt_async
import pytest

import coordinator.drills.venue as venue_module
from bots.exchanges.ccxt_adapter import CcxtExchange
from bots.models import ExchangeOrderStatus, OrderRequest, OrderType, Side
from coordinator.drills.venue import ASK, DRILL_API_KEY, DRILL_API_SECRET, KrakenVenue

SYMBOL = "BTC/AUD"
UNKNOWN_METHOD = {"error": ["EGeneral:Unknown method"], "result": {}}
T = TypeVar("T")


def cl_ord_id(n: int) -> str:
    """The coordinator's kraken form of client order id `n` (bots/exchanges/ccxt_orders.py)."""
    return f"x{n:016x}"


async def on_venue(method: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(method, *args)


def kraken_client(url: str, **config: Any) -> Any:
    client = ccxt_async.kraken(
        {"apiKey": DRILL_API_KEY, "secret": DRILL_API_SECRET, "enableRateLimit": False, **config}
    )
    client.timeout_on_exit = 0
    client.urls = {**client.urls, "api": {**client.urls["api"], "public": url, "private": url}}
    return client


@pytest.fixture
def venue() -> Iterator[KrakenVenue]:
    started = KrakenVenue()
    started.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def kraken(venue: KrakenVenue) -> AsyncIterator[Any]:
    client = kraken_client(venue.primary_url)
    try:
        yield client
    finally:
        await client.close()


async def raw_post(url: str, endpoint: str, form: dict[str, str], key: str | None) -> Any:
    """A private call without ccxt (the venue does not check signatures)."""
    headers = {"API-Key": key} if key is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/0/private/{endpoint}", data=form, headers=headers) as answer,
    ):
        assert answer.status == 200
        return await answer.json()


# ----- market data and orders -------------------------------------------------------------------


async def test_markets_ticker_status_and_time(kraken: Any) -> None:
    markets = await kraken.load_markets()
    assert markets[SYMBOL]["id"] == "XBTAUD"
    assert markets[SYMBOL]["active"]
    ticker = await kraken.fetch_ticker(SYMBOL)
    assert (ticker["bid"], ticker["ask"], ticker["last"]) == (149990.0, 150010.0, 150000.0)
    assert (await kraken.fetch_status())["status"] == "ok"
    assert abs(await kraken.fetch_time() - time.time() * 1000) < 5000


async def test_a_market_buy_fills_at_the_ask(venue: KrakenVenue, kraken: Any) -> None:
    placed = await kraken.create_order(
        SYMBOL, "market", "buy", 0.01, params={"clientOrderId": cl_ord_id(1)}
    )
    order = await kraken.fetch_order(placed["id"], SYMBOL)
    assert (order["status"], order["filled"], order["average"]) == ("closed", 0.01, float(ASK))
    assert order["clientOrderId"] == cl_ord_id(1)
    trade_ids = order["info"]["trades"]
    trades = await kraken.fetch_order_trades(placed["id"], SYMBOL, params={"trades": trade_ids})
    assert [(t["amount"], t["price"]) for t in trades] == [(0.01, float(ASK))]
    assert abs(trades[0]["timestamp"] - time.time() * 1000) < 5000  # stamped now
    # Found by client order id among the closed orders only, as kraken filters them.
    by_id = {"clientOrderId": cl_ord_id(1)}
    assert [o["id"] for o in await kraken.fetch_closed_orders(SYMBOL, params=by_id)] == [
        placed["id"]
    ]
    assert await kraken.fetch_open_orders(SYMBOL, params=by_id) == []
    other = {"clientOrderId": cl_ord_id(2)}
    assert await kraken.fetch_closed_orders(SYMBOL, params=other) == []
    [seen] = await on_venue(venue.orders)
    assert (seen["txid"], seen["cl_ord_id"], seen["status"]) == (
        placed["id"],
        cl_ord_id(1),
        "closed",
    )


async def test_a_limit_order_rests_until_cancelled(kraken: Any) -> None:
    placed = await kraken.create_order(
        SYMBOL, "limit", "buy", 0.01, 100000, params={"clientOrderId": cl_ord_id(3)}
    )
    [resting] = await kraken.fetch_open_orders(SYMBOL, params={"clientOrderId": cl_ord_id(3)})
    assert (resting["id"], resting["price"], resting["filled"]) == (placed["id"], 100000.0, 0.0)
    balance = await kraken.fetch_balance()
    assert (balance["AUD"]["total"], balance["AUD"]["used"]) == (10000.0, 1000.0)
    await kraken.cancel_order(placed["id"], SYMBOL)
    order = await kraken.fetch_order(placed["id"], SYMBOL)
    assert (order["status"], order["filled"]) == ("canceled", 0.0)
    assert await kraken.fetch_open_orders(SYMBOL) == []
    with pytest.raises(ccxt_async.OrderNotFound):
        await kraken.cancel_order(placed["id"], SYMBOL)


async def test_the_balance_is_the_funds_plus_the_trades(kraken: Any) -> None:
    before = await kraken.fetch_balance()
    assert (before["AUD"]["total"], before["BTC"]["total"]) == (10000.0, 0.05)
    await kraken.create_order(SYMBOL, "market", "buy", 0.01)
    after = await kraken.fetch_balance()
    # 0.01 BTC at 150010 costs 1500.10 AUD, and kraken's taker fee (0.40%) 6.0004 AUD.
    assert after["AUD"] == {"free": 8493.8996, "used": 0.0, "total": 8493.8996}
    assert after["BTC"]["total"] == pytest.approx(0.06)
    [trade] = await kraken.fetch_my_trades(SYMBOL)
    assert trade["fee"] == {"currency": "AUD", "cost": 6.0004}
    assert await kraken.fetch_positions() == []


async def test_a_venue_opened_with_other_funds() -> None:
    venue = KrakenVenue(funds={"AUD": Decimal("500"), "XXBT": Decimal("1")})
    await on_venue(venue.start)
    client = kraken_client(venue.primary_url)
    try:
        balance = await client.fetch_balance()
        assert (balance["AUD"]["total"], balance["BTC"]["total"]) == (500.0, 1.0)
    finally:
        await client.close()
        await on_venue(venue.stop)
        await on_venue(venue.stop)  # idempotent


async def test_trades_history_pages_newest_first(venue: KrakenVenue) -> None:
    order = {"pair": "XBTAUD", "type": "buy", "ordertype": "market", "volume": "0.001"}
    for _ in range(51):
        placed = await raw_post(venue.primary_url, "AddOrder", order, DRILL_API_KEY)
        assert placed["error"] == []
    first = await raw_post(venue.primary_url, "TradesHistory", {}, DRILL_API_KEY)
    second = await raw_post(venue.primary_url, "TradesHistory", {"ofs": "50"}, DRILL_API_KEY)
    assert (first["result"]["count"], len(first["result"]["trades"])) == (51, 50)
    assert list(second["result"]["trades"]) == ["T00001-DRILL-KRAKEN"]  # the oldest
    newest = max(t["time"] for t in first["result"]["trades"].values())
    later = await raw_post(
        venue.primary_url, "TradesHistory", {"start": str(newest)}, DRILL_API_KEY
    )
    assert later["result"] == {"trades": {}, "count": 0}


async def test_unknown_methods_and_missing_keys(venue: KrakenVenue) -> None:
    async with aiohttp.ClientSession() as session:
        for method, path in [
            ("GET", "/0/public/NoSuchThing"),
            ("POST", "/0/public/Ticker"),
            ("GET", "/0/private/BalanceEx"),
            ("GET", "/elsewhere"),
        ]:
            async with session.request(method, venue.primary_url + path) as answer:
                assert await answer.json() == UNKNOWN_METHOD, (method, path)
    assert await raw_post(venue.backup_url, "NoSuchThing", {}, DRILL_API_KEY) == UNKNOWN_METHOD
    answer = await raw_post(venue.backup_url, "BalanceEx", {}, None)
    assert answer == {"error": ["EAPI:Invalid key"]}


async def test_the_dead_mans_switch_cancels_every_open_order(
    venue: KrakenVenue, kraken: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed = await kraken.cancel_all_orders_after(60_000)
    assert armed["result"]["triggerTime"] > armed["result"]["currentTime"]
    placed = await kraken.create_order(SYMBOL, "limit", "sell", 0.01, 200000)
    monkeypatch.setattr(venue_module, "_now", lambda: time.time() + 61)  # a minute later
    [order] = await on_venue(venue.orders)
    assert (order["txid"], order["status"]) == (placed["id"], "canceled")
    assert (await kraken.fetch_order(placed["id"], SYMBOL))["status"] == "canceled"
    disarmed = await kraken.cancel_all_orders_after(0)
    assert disarmed["result"]["triggerTime"] == disarmed["result"]["currentTime"]


# ----- faults -----------------------------------------------------------------------------------


async def test_the_primary_goes_down_and_comes_back(venue: KrakenVenue, kraken: Any) -> None:
    await kraken.fetch_balance()  # a kept-alive connection to the primary
    primary_port = int(venue.primary_url.rsplit(":", 1)[1])
    await on_venue(venue.take_primary_down)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", primary_port)
    with pytest.raises(ccxt_async.NetworkError):
        await kraken.fetch_balance()
    backup = kraken_client(venue.backup_url)
    try:
        placed = await backup.create_order(SYMBOL, "market", "buy", 0.01)
        assert (await backup.fetch_order(placed["id"], SYMBOL))["status"] == "closed"
    finally:
        await backup.close()
    await on_venue(venue.bring_primary_back)
    assert venue.primary_url == f"http://127.0.0.1:{primary_port}"  # the same port
    # One book behind both hosts: the primary knows the order placed on the backup.
    assert (await kraken.fetch_order(placed["id"], SYMBOL))["filled"] == 0.01
    assert await on_venue(venue.add_order_count, "primary") == 0
    assert await on_venue(venue.add_order_count, "backup") == 1
    calls = await on_venue(venue.private_calls)
    assert [host for host, endpoint in calls if endpoint == "AddOrder"] == ["backup"]
    assert calls[-1] == ("primary", "QueryOrders")


async def test_a_revoked_key_is_refused_and_a_new_one_accepted(
    venue: KrakenVenue, kraken: Any
) -> None:
    await kraken.fetch_balance()
    await on_venue(venue.revoke_key, DRILL_API_KEY)
    with pytest.raises(ccxt_async.AuthenticationError):
        await kraken.fetch_balance()
    with pytest.raises(ccxt_async.AuthenticationError):
        await kraken.create_order(SYMBOL, "market", "buy", 0.01)
    assert await on_venue(venue.orders) == []
    await on_venue(venue.accept_key, "drill-rotated-key")
    rotated = kraken_client(venue.primary_url, apiKey="drill-rotated-key")
    try:
        assert (await rotated.fetch_balance())["AUD"]["total"] == 10000.0
    finally:
        await rotated.close()
    assert venue.environment() == {
        "KRAKEN_API_KEY": DRILL_API_KEY,
        "KRAKEN_API_SECRET": DRILL_API_SECRET,
    }


async def test_rejected_orders_leave_the_book_unchanged(venue: KrakenVenue, kraken: Any) -> None:
    await on_venue(venue.reject_next_orders, 2)
    for _ in range(2):
        with pytest.raises(ccxt_async.InsufficientFunds):
            await kraken.create_order(SYMBOL, "market", "buy", 0.01)
    assert await on_venue(venue.orders) == []
    assert (await kraken.fetch_balance())["AUD"]["total"] == 10000.0
    await on_venue(venue.reject_next_orders, 1, "EOrder:Rate limit exceeded")
    with pytest.raises(ccxt_async.DDoSProtection):
        await kraken.create_order(SYMBOL, "market", "buy", 0.01)
    await kraken.create_order(SYMBOL, "market", "buy", 0.01)  # the faults are used up
    assert await on_venue(venue.add_order_count, "primary") == 4


async def test_a_swallowed_answer_times_out_but_the_order_exists(venue: KrakenVenue) -> None:
    await on_venue(venue.swallow_next_answers, 1, 5.0)
    client = kraken_client(venue.primary_url, timeout=300)  # ms
    try:
        await client.load_markets()
        with pytest.raises(ccxt_async.RequestTimeout):
            await client.create_order(
                SYMBOL, "market", "buy", 0.01, params={"clientOrderId": cl_ord_id(7)}
            )
        [order] = await on_venue(venue.orders)
        assert (order["cl_ord_id"], order["status"]) == (cl_ord_id(7), "closed")
        # The coordinator's recovery: a timeout says nothing, look the order up by its id.
        adapter = CcxtExchange("kraken", client)
        found = await adapter.fetch_order(7, SYMBOL)
        assert (found.exchange_order_id, found.status) == (
            order["txid"],
            ExchangeOrderStatus.CLOSED,
        )
        assert found.filled == Decimal("0.01")
    finally:
        await client.close()
    # stop() does not wait out the held-back answer (the fixture's teardown is quick).


async def test_a_partial_fill_reads_back_cancelled_with_its_fill(
    kraken: Any, venue: KrakenVenue
) -> None:
    await on_venue(venue.partial_fill_next, 1, Decimal("0.4"))
    limit = await kraken.create_order(SYMBOL, "limit", "buy", 0.01, 100000)  # not used up
    placed = await kraken.create_order(SYMBOL, "market", "buy", 0.01)
    order = await kraken.fetch_order(placed["id"], SYMBOL)
    assert (order["status"], order["amount"], order["filled"]) == ("canceled", 0.01, 0.004)
    assert (await kraken.fetch_order(limit["id"], SYMBOL))["status"] == "open"
    # What the coordinator reads: a cancelled order, its fill, and trades that add up to it.
    adapter = CcxtExchange("kraken", kraken)
    request = OrderRequest(8, SYMBOL, Side.BUY, OrderType.MARKET, Decimal("0.01"))
    await on_venue(venue.partial_fill_next, 1, Decimal("0.5"))
    snapshot = await adapter.create_order(request)
    assert (snapshot.status, snapshot.filled) == (ExchangeOrderStatus.CANCELED, Decimal("0.005"))
    assert sum(t.amount for t in snapshot.trades) == Decimal("0.005")
    assert snapshot.reason == venue_module.PARTIAL_FILL_REASON
    balance = await kraken.fetch_balance()
    assert balance["BTC"]["total"] == pytest.approx(0.05 + 0.004 + 0.005)


def test_fault_arguments_are_checked() -> None:
    venue = KrakenVenue()
    with pytest.raises(ValueError):
        venue.partial_fill_next(1, Decimal(1))
    with pytest.raises(ValueError):
        venue.reject_next_orders(-1)
    with pytest.raises(ValueError):
        venue.swallow_next_answers(1, -0.5)
    with pytest.raises(ValueError):
        venue.add_order_count("tertiary")
    with pytest.raises(RuntimeError):
        _ = venue.primary_url  # not started
    venue.stop()  # never started: nothing to do
    with pytest.raises(RuntimeError):
        venue.start()  # stopped for good


async def test_a_request_waits_while_the_drill_runner_holds_the_lock(
    venue: KrakenVenue, kraken: Any
) -> None:
    """The venue's loop must not block in the lock: it waits in a worker thread, then answers."""
    await kraken.load_markets()
    lock = venue._lock
    await on_venue(lock.acquire)
    asking = asyncio.create_task(kraken.fetch_balance())
    await asyncio.sleep(0.05)
    assert not asking.done()
    await on_venue(lock.release)
    assert (await asking)["AUD"]["total"] == 10000.0
