"""A live kraken bot when kraken misbehaves, and a read-only one: the real coordinator, gateway,
journal, safety layer and ccxt adapter, and ccxt's real kraken code, over the stateful fake of
kraken's private endpoints in tests/support_kraken.py.

The bot runs the DCA strategy (a market buy of 25 AUD on every 50 ms tick), so each tick asks
the gateway for one order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aioresponses import CallbackResult, aioresponses

from coordinator.accounts import Accounts
from coordinator.config import load_config
from coordinator.runtime import Coordinator
from coordinator.safety.breaker import BreakerState
from tests.bots.exchanges.ccxt_fixtures import (
    KRAKEN_CREDENTIALS,
    KRAKEN_PRIVATE,
    KRAKEN_PUBLIC,
    kraken_cl_ord_id,
    requests_to,
)
from tests.support_config import eventually, write_fast_config
from tests.support_kraken import Call, FakeKraken, live_kraken, make_client, serving

ADD_ORDER = KRAKEN_PRIVATE + "AddOrder"
TICKER_URL = KRAKEN_PUBLIC + "Ticker?pair=XBTAUD"
# kraken's private endpoints that only read (account data, order and trade queries)...
PRIVATE_READS = frozenset(
    {
        "Balance",
        "BalanceEx",
        "TradeBalance",
        "OpenOrders",
        "ClosedOrders",
        "QueryOrders",
        "QueryTrades",
        "TradesHistory",
        "OpenPositions",
        "Ledgers",
        "QueryLedgers",
        "TradeVolume",
    }
)
# ... and those that place, change or cancel orders, or move funds.
PRIVATE_WRITES = frozenset(
    {
        "AddOrder",
        "AddOrderBatch",
        "AmendOrder",
        "EditOrder",
        "CancelOrder",
        "CancelAll",
        "CancelAllOrdersAfter",
        "CancelOrderBatch",
        "Withdraw",
        "WithdrawCancel",
        "WalletTransfer",
    }
)


def dca(documents: dict[str, Any], mode: str = "live") -> None:
    live_kraken(documents)
    (kraken,) = documents["bots.json"]["bots"]
    kraken["mode"] = mode
    # below the 50 ms tick: every tick buys
    kraken["strategy"] = {"name": "dca", "params": {"quote_amount": 25, "interval_seconds": 0.01}}


def read_only_dca(documents: dict[str, Any]) -> None:
    dca(documents, mode="read-only")


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKEN_API_KEY", KRAKEN_CREDENTIALS["apiKey"])
    monkeypatch.setenv("KRAKEN_API_SECRET", KRAKEN_CREDENTIALS["secret"])


@asynccontextmanager
async def running(
    tmp_path: Path, change: Callable[[dict[str, Any]], None] = dca
) -> AsyncIterator[Coordinator]:
    """A coordinator on the fast config edited by `change`, closed on the way out (while the
    test's fake kraken still answers: closing cancels what is left open)."""
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", change))
    )
    (tmp_path / "data").mkdir()
    coordinator = await Coordinator.open(config, tmp_path / "data", accounts=Accounts(make_client))
    try:
        yield coordinator
    finally:
        await coordinator.close(grace_seconds=0.5)


def served(kraken: FakeKraken) -> Iterator[tuple[Any, aioresponses]]:
    with serving(kraken) as m:
        yield kraken, m


def add_orders(kraken: FakeKraken) -> list[str]:
    """The cl_ord_id of every AddOrder request, in order."""
    return [c.form["cl_ord_id"] for c in kraken.calls if c.endpoint == "AddOrder"]


def resent_without_a_lookup(calls: list[Call]) -> list[str]:
    """The client order ids sent again although no lookup by that id (OpenOrders, then
    ClosedOrders) had found it absent since its previous AddOrder."""
    unsafe: list[str] = []
    absent_since_sent: dict[str, set[str]] = {}
    for call in calls:
        cl_ord_id = call.cl_ord_id
        if cl_ord_id is None:
            continue
        if call.endpoint == "AddOrder":
            checked = absent_since_sent.get(cl_ord_id)
            if checked is not None and checked != {"OpenOrders", "ClosedOrders"}:
                unsafe.append(cl_ord_id)
            absent_since_sent[cl_ord_id] = set()
        elif call.endpoint in ("OpenOrders", "ClosedOrders") and not call.listed:
            absent_since_sent.setdefault(cl_ord_id, set()).add(call.endpoint)
    return unsafe


def private_endpoints(m: aioresponses) -> set[str]:
    return {
        str(url).removeprefix(KRAKEN_PRIVATE)
        for (_method, url) in m.requests
        if str(url).startswith(KRAKEN_PRIVATE)
    }


async def orders_of(coordinator: Coordinator) -> dict[str, Any]:
    """The journal's order rows, by the cl_ord_id they were sent to kraken with."""
    rows = await coordinator.store.fetch_all(
        "SELECT client_order_id, status, exchange_order_id, reason FROM orders"
    )
    return {kraken_cl_ord_id(row["client_order_id"]): row for row in rows}


# ----- a 429 storm ----------------------------------------------------------------------------


class RateLimitedKraken(FakeKraken):
    """Every AddOrder is answered HTTP 429 (the edge's rate limit): nothing is placed."""

    def add_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        # aioresponses leaves a callback's reason phrase None; ccxt's message needs a string.
        return CallbackResult(
            status=429,
            reason="Too Many Requests",
            body="Too Many Requests",
            content_type="text/plain",
        )


@pytest.fixture
def rate_limited() -> Iterator[tuple[RateLimitedKraken, aioresponses]]:
    yield from served(RateLimitedKraken())


async def test_a_429_storm_opens_the_breaker_and_the_bot_stops_sending(
    tmp_path: Path, rate_limited: tuple[RateLimitedKraken, aioresponses]
) -> None:
    kraken, m = rate_limited
    async with running(tmp_path) as coordinator:
        threshold = coordinator.config.recovery.circuit_breaker.failure_threshold
        breaker = coordinator.safety.board.breaker("kraken")
        runner = await coordinator.supervisor.start("kraken")
        book = runner.parts.book

        await eventually(lambda: breaker.state is BreakerState.OPEN, what="the breaker open")
        # Each 429 was one transient failure: the breaker opened on the threshold-th AddOrder.
        sent_when_opened = len(requests_to(m, "POST", ADD_ORDER))
        assert sent_when_opened == threshold
        assert book.errors["transient"] == threshold
        status = coordinator.status()["circuit_breaker"]
        assert status["exchanges"]["kraken"]["state"] == "open"
        assert status["exchanges"]["kraken"]["failures_in_window"] == threshold
        assert status["global"]["state"] == "closed"  # its threshold (10) is not reached

        # A few ticks later: the bot still asks for orders, the breaker refuses them (before
        # they are journaled), and kraken sees no further AddOrder.
        await eventually(
            lambda: book.refusals.get("breaker_open", 0) >= 3, what="three breaker_open refusals"
        )
        assert len(requests_to(m, "POST", ADD_ORDER)) == sent_when_opened
        assert (book.last_refusal or "").startswith("breaker_open: ")
        assert coordinator.bot_status(runner)["refusals"]["breaker_open"] >= 3

        # The breaker, not the kill switch, stops this storm: the kill switch's trigger counts
        # orders that ended badly (here two: one after its retries, one more), not attempts,
        # and refusals by the open breaker are not failures. The bot keeps ticking, refused.
        await asyncio.sleep(1.5)  # longer than the safety watch's one-second round
        assert not coordinator.kill_switch.active
        assert len(requests_to(m, "POST", ADD_ORDER)) == sent_when_opened
        assert breaker.state is BreakerState.OPEN
        assert kraken.orders == {}

        # Every order that got a 429 is journaled failed. It went out again only after a
        # lookup by its client order id had found it absent on kraken.
        orders = await orders_of(coordinator)
        sent = add_orders(kraken)
        assert set(sent) == set(orders)
        assert {row["status"] for row in orders.values()} == {"failed"}
        assert all(row["reason"].startswith(("not placed", "not sent")) for row in orders.values())
        assert any("RateLimitExceeded" in row["reason"] for row in orders.values())
        assert resent_without_a_lookup(kraken.calls) == []


# ----- read-only --------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[tuple[FakeKraken, aioresponses]]:
    yield from served(FakeKraken())


async def test_read_only_reads_the_account_and_sends_nothing_that_writes(
    tmp_path: Path, fake: tuple[FakeKraken, aioresponses]
) -> None:
    kraken, m = fake
    async with running(tmp_path, read_only_dca) as coordinator:
        runner = await coordinator.supervisor.start("kraken")
        book = runner.parts.book
        assert runner.parts.config.mode.value == "read-only"
        await eventually(
            lambda: runner.stats.ticks >= 4 and book.refusals.get("read_only", 0) >= 4,
            what="four ticks, each with its order refused",
        )
        await coordinator.supervisor.stop("kraken", "test over")

        assert len(requests_to(m, "GET", TICKER_URL)) >= runner.stats.ticks
        assert book.balances == {"BTC": Decimal("0.05"), "AUD": Decimal("10000")}  # BalanceEx
        status = coordinator.bot_status(runner)
        assert status["refusals"] == {"read_only": book.refusals["read_only"]}
        assert status["last_refusal"].startswith("read_only: ")
        assert (status["orders"], status["fills"], status["order_errors"]) == (0, 0, {})
        assert await orders_of(coordinator) == {}  # refused before anything was journaled

        requested = private_endpoints(m)
        assert requested == {"BalanceEx"}
        assert requested <= PRIVATE_READS
        assert not requested & PRIVATE_WRITES
        assert kraken.orders == {}


# ----- a timeout after the send -----------------------------------------------------------------


class TimingOutKraken(FakeKraken):
    """The first AddOrder reaches kraken, which places (and, a market order, fills) the order,
    but its answer is lost: the client times out."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: dict[str, str] = {}  # cl_ord_id -> txid of the order whose answer was lost

    def add_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        if self.lost:
            return super().add_order(url, **kwargs)
        form = self.form(kwargs)
        self.lost[form["cl_ord_id"]] = self.place(form)
        raise TimeoutError  # asyncio.TimeoutError; aioresponses lets a callback's error through


@pytest.fixture
def timing_out() -> Iterator[tuple[TimingOutKraken, aioresponses]]:
    yield from served(TimingOutKraken())


async def test_a_timeout_after_send_is_resolved_by_client_order_id_without_a_second_order(
    tmp_path: Path, timing_out: tuple[TimingOutKraken, aioresponses]
) -> None:
    kraken, _ = timing_out
    async with running(tmp_path) as coordinator:
        runner = await coordinator.supervisor.start("kraken")
        book = runner.parts.book
        await eventually(lambda: book.fills_count >= 3, what="three DCA buys filled")
        await coordinator.supervisor.stop("kraken", "test over")

        ((lost_cl_ord_id, lost_txid),) = kraken.lost.items()
        sent = add_orders(kraken)
        assert sent.count(lost_cl_ord_id) == 1  # looked up and found, not sent again
        assert len(set(sent)) == len(sent) == len(kraken.orders)  # one order per id on kraken
        lookup = next(c for c in kraken.calls if c.endpoint in ("OpenOrders", "ClosedOrders"))
        assert (lookup.cl_ord_id, lookup.endpoint) == (lost_cl_ord_id, "OpenOrders")

        orders = await orders_of(coordinator)
        lost = orders[lost_cl_ord_id]
        assert (lost["status"], lost["exchange_order_id"]) == ("filled", lost_txid)
        assert {row["status"] for row in orders.values()} == {"filled"}  # later orders flowed
        assert len(orders) == len(sent) == book.fills_count == len(kraken.trades)

        # The timeout counted once against kraken, and nothing else went wrong.
        assert book.errors == {"transient": 1}
        assert book.consecutive_failures == 0
        kraken_breaker = coordinator.status()["circuit_breaker"]["exchanges"]["kraken"]
        assert (kraken_breaker["state"], kraken_breaker["failures_in_window"]) == ("closed", 1)
        assert not coordinator.kill_switch.active


class LateKraken(FakeKraken):
    """The first AddOrder times out on the client while the request is still on its way: kraken
    places (and fills) the order only after the bot's first lookup by client order id (the
    OpenOrders, ClosedOrders pair) has answered that there is no such order."""

    def __init__(self) -> None:
        super().__init__()
        self.in_transit: dict[str, str] | None = None
        self.lost: dict[str, str] = {}  # cl_ord_id -> txid

    def add_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        if self.in_transit is not None or self.lost:
            return super().add_order(url, **kwargs)
        self.in_transit = self.form(kwargs)
        raise TimeoutError

    def closed_orders(self, url: Any, **kwargs: Any) -> CallbackResult:
        answer = super().closed_orders(url, **kwargs)
        if self.in_transit is not None:  # the AddOrder arrives now
            self.lost[self.in_transit["cl_ord_id"]] = self.place(self.in_transit)
            self.in_transit = None
        return answer


@pytest.fixture
def late() -> Iterator[tuple[LateKraken, aioresponses]]:
    yield from served(LateKraken())


async def test_an_order_that_reaches_kraken_after_the_lookup_is_placed_once_and_journaled(
    tmp_path: Path, late: tuple[LateKraken, aioresponses]
) -> None:
    kraken, _ = late
    async with running(tmp_path) as coordinator:
        runner = await coordinator.supervisor.start("kraken")
        book = runner.parts.book
        await eventually(lambda: book.fills_count >= 3, what="three DCA buys filled")
        await coordinator.supervisor.stop("kraken", "test over")

        ((lost_cl_ord_id, lost_txid),) = kraken.lost.items()
        on_kraken = [t for t, o in kraken.orders.items() if o["cl_ord_id"] == lost_cl_ord_id]
        assert on_kraken == [lost_txid]  # one intent, one order
        lost = (await orders_of(coordinator))[lost_cl_ord_id]
        assert (lost["status"], lost["exchange_order_id"]) == ("filled", lost_txid)
        assert book.fills_count == len(kraken.trades)  # every fill on kraken is journaled
