"""The order gateway: journal first, then send; every outcome journaled; the book follows it.

Real parts throughout: a `SqliteStore` in tmp_path, the `SqliteJournal`, and `PaperExchange` as
the venue, seen through a recording adapter that checks the journal on disk before every send.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bots.book import BotBook
from bots.errors import OrderNotFound, TransientExchangeError
from bots.exchanges.base import ExchangeAdapter
from bots.exchanges.paper import PARTIAL_FILL_REASON, PaperExchange
from bots.gateway import (
    BotIdentity,
    OrderGate,
    OrderGateway,
    PartialFillPolicy,
    ReadOnlyGate,
    Refusal,
    SubmitResult,
)
from bots.ids import ClientOrderIds
from bots.journal import JournalOrder, OrderStatus
from bots.ledger import Position
from bots.models import (
    Balance,
    MarketSnapshot,
    OrderIntent,
    OrderRequest,
    OrderSnapshot,
    OrderType,
    Side,
)
from bots.retry import RetryPolicy
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore, StoreClosed, StoreError

D = Decimal
BOT = "alpha"
SYMBOL = "BTC/AUD"
IDENTITY = BotIdentity(BOT, "paper", SYMBOL, "BTC", "AUD")
OPENING = {"AUD": D("10000"), "BTC": D("1")}
FEE_RATE = D("0.001")
SLIPPAGE_BPS = D(10)


def snap(bid: str, ask: str) -> MarketSnapshot:
    return MarketSnapshot(SYMBOL, (D(bid) + D(ask)) / 2, D(bid), D(ask), datetime.now(UTC))


MARKET = snap("99.90", "100.10")  # a market buy fills at 100.10 * 1.001 -> 100.21


def market(side: Side, amount: str) -> OrderIntent:
    return OrderIntent(SYMBOL, side, OrderType.MARKET, D(amount))


def limit(side: Side, amount: str, price: str, tag: str = "") -> OrderIntent:
    return OrderIntent(SYMBOL, side, OrderType.LIMIT, D(amount), D(price), tag)


def cid_of(result: SubmitResult) -> int:
    assert result.client_order_id is not None, result
    return result.client_order_id


# ----- the parts around the gateway ----------------------------------------------------------


async def status_on_disk(db_path: Path, client_order_id: int) -> str | None:
    """The order's status as a brand-new connection sees it: only what is committed."""
    async with (
        aiosqlite.connect(str(db_path)) as conn,
        conn.execute(
            "SELECT status FROM orders WHERE client_order_id = ?", (client_order_id,)
        ) as cursor,
    ):
        row = await cursor.fetchone()
    return None if row is None else str(row[0])


class RecordingExchange:
    """`ExchangeAdapter` around a `PaperExchange` that records every call and, before an order
    reaches the exchange, reads its journal row through a separate connection."""

    def __init__(self, paper: PaperExchange, db_path: Path) -> None:
        self.paper = paper
        self.name = paper.name
        self.db_path = db_path
        self.calls: list[tuple[str, int]] = []
        self.status_at_send: dict[int, str | None] = {}

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    async def create_order(self, request: OrderRequest) -> OrderSnapshot:
        cid = request.client_order_id
        self.calls.append(("create_order", cid))
        status = await status_on_disk(self.db_path, cid)
        self.status_at_send[cid] = status
        assert status == "pending_submit", f"order {cid} sent with journal status {status!r}"
        return await self.paper.create_order(request)

    async def cancel_order(self, client_order_id: int, symbol: str) -> OrderSnapshot:
        self.calls.append(("cancel_order", client_order_id))
        return await self.paper.cancel_order(client_order_id, symbol)

    async def fetch_order(self, client_order_id: int, symbol: str) -> OrderSnapshot:
        self.calls.append(("fetch_order", client_order_id))
        return await self.paper.fetch_order(client_order_id, symbol)

    async def fetch_open_orders(self, symbol: str) -> list[OrderSnapshot]:
        return await self.paper.fetch_open_orders(symbol)

    async def fetch_balance(self) -> dict[str, Balance]:
        return await self.paper.fetch_balance()

    async def on_market(self, snapshot: MarketSnapshot) -> None:
        await self.paper.on_market(snapshot)

    async def close(self) -> None:
        await self.paper.close()


class TimeoutAfterSend(RecordingExchange):
    """The order is created on the exchange, then the response is lost (a read timeout)."""

    async def create_order(self, request: OrderRequest) -> OrderSnapshot:
        await super().create_order(request)
        raise TransientExchangeError("paper: timed out reading the response")


class InstrumentedJournal(SqliteJournal):
    """The real journal, with switches to make its writes fail or to act mid-write."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self.fail_intents = False
        self.fail_updates = False
        self.while_intent_in_flight: Callable[[], None] | None = None
        self.while_update_in_flight: Callable[[], None] | None = None

    async def record_intent(self, order: JournalOrder) -> None:
        if self.fail_intents:
            raise StoreError("write rolled back: disk I/O error (test)")
        write = asyncio.ensure_future(super().record_intent(order))
        if self.while_intent_in_flight is not None:
            await asyncio.sleep(0)  # the job is queued; its commit has not happened yet
            assert not write.done()
            self.while_intent_in_flight()
        await write

    async def record_update(self, update: Any) -> None:
        if self.fail_updates:
            raise StoreError("write rolled back: disk I/O error (test)")
        write = asyncio.ensure_future(super().record_update(update))
        if self.while_update_in_flight is not None:
            await asyncio.sleep(0)  # the job is queued; its commit has not happened yet
            assert not write.done()
            self.while_update_in_flight()
        await write


class Switch:
    """A gate an operator (or the kill switch) can close at any moment."""

    def __init__(self) -> None:
        self.refusal: Refusal | None = None

    def check(self, intent: OrderIntent, book: BotBook) -> Refusal | None:
        return self.refusal


@dataclass
class Rig:
    store: SqliteStore
    journal: InstrumentedJournal
    paper: PaperExchange
    exchange: RecordingExchange
    gateway: OrderGateway

    @property
    def book(self) -> BotBook:
        return self.gateway.book

    async def rows(self) -> dict[int, dict[str, Any]]:
        rows = await self.store.fetch_all("SELECT * FROM orders ORDER BY client_order_id")
        return {row["client_order_id"]: dict(row) for row in rows}

    async def row(self, cid: int) -> dict[str, Any]:
        return (await self.rows())[cid]

    async def events(self, cid: int) -> list[tuple[Any, ...]]:
        rows = await self.store.fetch_all(
            "SELECT from_status, to_status, detail FROM order_events"
            " WHERE client_order_id = ? ORDER BY id",
            (cid,),
        )
        return [tuple(r) for r in rows]

    async def journal_balances(self) -> dict[str, Decimal]:
        return (await self.journal.load_book(BOT)).balances

    async def paper_totals(self) -> dict[str, Decimal]:
        return {a: b.total for a, b in (await self.paper.fetch_balance()).items()}


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[MakeRig]:
    """Build a gateway on a new journal (or on `store`, as a restart would) with a fresh paper
    exchange that has seen `MARKET`. Stores opened here are closed afterwards."""
    opened: list[SqliteStore] = []

    async def make(
        *,
        gates: Sequence[OrderGate] = (),
        exchange_type: type[RecordingExchange] = RecordingExchange,
        store: SqliteStore | None = None,
    ) -> Rig:
        if store is None:
            store = await SqliteStore.open(tmp_path / f"journal-{len(opened)}.db")
            opened.append(store)
            setup = SqliteJournal(store)
            await setup.register_bot(BOT, "paper", SYMBOL, "paper", datetime.now(UTC))
            await setup.seed_balances(
                BOT, OPENING, "paper account opening balance", MARKET.timestamp
            )
        journal = InstrumentedJournal(store)
        book = BotBook.from_snapshot(await journal.load_book(BOT))
        paper = PaperExchange(
            "paper", SYMBOL, book.balances, fee_rate=FEE_RATE, slippage_bps=SLIPPAGE_BPS
        )
        await paper.on_market(MARKET)
        exchange = exchange_type(paper, store.path)
        ids = ClientOrderIds(floor=await journal.max_client_order_id())
        gateway = OrderGateway(IDENTITY, exchange, journal, ids, book, gates)
        return Rig(store, journal, paper, exchange, gateway)

    yield make
    for store in opened:
        await store.close()


def test_the_recording_adapter_is_an_exchange_adapter(tmp_path: Path) -> None:
    paper = PaperExchange("paper", SYMBOL, OPENING, fee_rate=FEE_RATE, slippage_bps=SLIPPAGE_BPS)
    assert isinstance(RecordingExchange(paper, tmp_path / "x.db"), ExchangeAdapter)


# ----- journal before send ---------------------------------------------------------------------


async def test_nothing_reaches_the_exchange_without_a_committed_journal_row(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    intents = [
        *(market(Side.BUY, "0.01") for _ in range(8)),
        *(market(Side.SELL, "0.01") for _ in range(6)),
        *(limit(Side.BUY, "0.01", "90.00") for _ in range(6)),  # rests
        *(limit(Side.SELL, "0.01", "110.00") for _ in range(6)),  # rests
        *(limit(Side.BUY, "0.01", "101.00") for _ in range(4)),  # crosses: fills at once
    ]

    results = await asyncio.gather(*(rig.gateway.submit(i) for i in intents))

    assert [r.outcome for r in results] == ["sent"] * len(intents)
    sent = [cid for name, cid in rig.exchange.calls if name == "create_order"]
    journaled = await rig.rows()
    assert sorted(sent) == sorted(journaled) == sorted(cid_of(r) for r in results)
    assert len(set(sent)) == len(intents), "an order was sent twice"
    assert rig.exchange.status_at_send == dict.fromkeys(sent, "pending_submit")
    statuses = [journaled[cid_of(r)]["status"] for r in results]
    assert statuses == ["filled"] * 14 + ["open"] * 12 + ["filled"] * 4
    # The journal adds up to the exchange's numbers exactly.
    assert await rig.journal_balances() == await rig.paper_totals()
    assert rig.book.balances == await rig.journal_balances()
    assert len(rig.book.live_orders) == 12


@pytest.mark.parametrize("failure", ["store-closed", "record-intent-raises"])
async def test_no_order_is_sent_when_its_intent_cannot_be_journaled(
    make_rig: MakeRig, failure: str
) -> None:
    rig = await make_rig()
    if failure == "store-closed":
        await rig.store.close()
        expected: type[StoreError] = StoreClosed
    else:
        rig.journal.fail_intents = True
        expected = StoreError

    for intent in (market(Side.BUY, "0.01"), limit(Side.SELL, "0.01", "110.00")):
        with pytest.raises(expected):
            await rig.gateway.submit(intent)

    assert rig.exchange.calls == []
    assert rig.book.live_orders == {}
    assert rig.book.orders_count == 0
    assert await rig.paper.fetch_open_orders(SYMBOL) == []
    assert await rig.paper_totals() == OPENING
    async with (
        aiosqlite.connect(str(rig.store.path)) as conn,
        conn.execute("SELECT COUNT(*) FROM orders") as cursor,
    ):
        assert list(await cursor.fetchall()) == [(0,)]


async def test_a_gate_that_closes_while_the_intent_is_journaled_stops_the_send(
    make_rig: MakeRig,
) -> None:
    kill_switch = Switch()
    rig = await make_rig(gates=[kill_switch])

    def engage() -> None:
        kill_switch.refusal = Refusal("kill_switch", "the kill switch is engaged")

    rig.journal.while_intent_in_flight = engage

    result = await rig.gateway.submit(market(Side.BUY, "0.01"))

    assert (result.outcome, result.code) == ("refused", "kill_switch")
    assert result.client_order_id is not None
    assert rig.exchange.calls == []
    row = await rig.row(result.client_order_id)
    assert row["status"] == "failed"
    assert row["reason"] == "not sent: the kill switch is engaged"
    assert await rig.events(result.client_order_id) == [
        (None, "pending_submit", "intent"),
        ("pending_submit", "failed", "not sent: the kill switch is engaged"),
    ]
    assert rig.book.refusals == {"kill_switch": 1}
    assert rig.book.live_orders == {}
    assert rig.book.orders_count == 1


async def test_read_only_refuses_before_anything_is_journaled(make_rig: MakeRig) -> None:
    rig = await make_rig(gates=[ReadOnlyGate()])
    jobs_before = rig.store.stats.jobs

    first = await rig.gateway.submit(market(Side.BUY, "0.01"))
    second = await rig.gateway.submit(limit(Side.SELL, "0.01", "110.00"))

    for result in (first, second):
        assert (result.outcome, result.code, result.client_order_id) == (
            "refused",
            "read_only",
            None,
        )
    assert rig.book.refusals == {"read_only": 2}
    assert rig.store.stats.jobs == jobs_before
    assert await rig.rows() == {}
    assert rig.exchange.calls == []
    assert rig.book.orders_count == 0


async def test_an_intent_for_another_symbol_is_refused_unjournaled(make_rig: MakeRig) -> None:
    rig = await make_rig()
    result = await rig.gateway.submit(OrderIntent("ETH/AUD", Side.BUY, OrderType.MARKET, D(1)))
    assert (result.outcome, result.code) == ("refused", "wrong_symbol")
    assert rig.book.refusals == {"wrong_symbol": 1}
    assert await rig.rows() == {}
    assert rig.exchange.calls == []


# ----- what the exchange says ----------------------------------------------------------------


async def test_an_exchange_rejection_is_journaled_with_its_reason(make_rig: MakeRig) -> None:
    rig = await make_rig()
    rig.paper.reject_next(1, "drill: insufficient margin")

    result = await rig.gateway.submit(market(Side.BUY, "0.01"))

    assert (result.outcome, result.code, result.reason) == (
        "rejected",
        "drill",
        "drill: insufficient margin",
    )
    assert result.client_order_id is not None
    row = await rig.row(result.client_order_id)
    assert (row["status"], row["reason"]) == ("rejected", "drill: insufficient margin")
    assert rig.book.errors == {"drill": 1}
    assert rig.book.live_orders == {}
    assert rig.exchange.count("create_order") == 1


async def test_a_transient_failure_before_the_order_exists_is_looked_up_and_marked_failed(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    rig.paper.fail_next(1, "drill: 503 service unavailable")

    result = await rig.gateway.submit(market(Side.BUY, "0.01"))

    cid = cid_of(result)
    assert (result.outcome, result.code) == ("failed", "send_failed")
    assert rig.exchange.calls == [("create_order", cid), ("fetch_order", cid)]
    row = await rig.row(cid)
    assert row["status"] == "failed"
    assert row["reason"].startswith("not placed:")
    assert "503 service unavailable" in row["reason"]
    assert rig.book.errors == {"transient": 1}
    assert rig.book.live_orders == {}
    with pytest.raises(OrderNotFound):
        await rig.paper.fetch_order(cid, SYMBOL)
    assert await rig.paper_totals() == OPENING == await rig.journal_balances()


@pytest.mark.parametrize(
    ("intent", "status"),
    [
        pytest.param(market(Side.BUY, "0.5"), "filled", id="market-filled"),
        pytest.param(limit(Side.BUY, "0.5", "95.00"), "open", id="limit-resting"),
    ],
)
async def test_a_timeout_after_the_order_was_created_finds_it_and_never_sends_it_twice(
    make_rig: MakeRig, intent: OrderIntent, status: str
) -> None:
    rig = await make_rig(exchange_type=TimeoutAfterSend)

    result = await rig.gateway.submit(intent)

    cid = cid_of(result)
    assert result.outcome == "sent"
    assert rig.exchange.calls == [("create_order", cid), ("fetch_order", cid)]
    on_exchange = await rig.paper.fetch_order(cid, SYMBOL)
    row = await rig.row(cid)
    assert row["status"] == status
    assert row["exchange_order_id"] == on_exchange.exchange_order_id
    assert D(row["filled"]) == on_exchange.filled
    assert rig.book.errors == {"transient": 1}
    assert await rig.journal_balances() == await rig.paper_totals()
    events = await rig.events(cid)
    assert events[-1][2].startswith("found after send error:")


async def test_a_market_buy_fill_moves_order_fill_position_and_balances_together(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()

    result = await rig.gateway.submit(market(Side.BUY, "0.5"))

    cid = cid_of(result)
    row = await rig.row(cid)
    assert (row["status"], D(row["filled"]), row["exchange_order_id"]) == (
        "filled",
        D("0.5"),
        "paper-o1",
    )
    fills = await rig.store.fetch_all("SELECT * FROM fills WHERE client_order_id = ?", (cid,))
    assert len(fills) == 1
    fill = dict(fills[0])
    amount, price, fee = D(fill["amount"]), D(fill["price"]), D(fill["fee"])
    # 100.10 * (1 + 10 bps) = 100.2001, rounded against the buyer to 100.21; fee 0.1% of 50.105.
    assert (amount, price, fee, fill["fee_currency"], fill["side"]) == (
        D("0.5"),
        D("100.21"),
        D("0.050105"),
        "AUD",
        "buy",
    )
    book = await rig.journal.load_book(BOT)
    assert book.position == Position(D("0.5"), D("100.21"), D(0), D("0.050105"))
    assert book.balances == {
        "AUD": OPENING["AUD"] - amount * price - fee,
        "BTC": OPENING["BTC"] + amount,
    }
    assert book.balances == {"AUD": D("9949.844895"), "BTC": D("1.5")}
    assert book.balances == await rig.paper_totals()
    # The book in memory is what the journal says.
    assert rig.book.position == book.position
    assert rig.book.balances == book.balances
    assert rig.book.fills_count == book.fills_count == 1
    assert rig.book.live_orders == {}
    assert await rig.events(cid) == [
        (None, "pending_submit", "intent"),
        ("pending_submit", "filled", "acknowledged"),
    ]


async def test_a_partial_market_fill_journals_the_filled_part_and_cancels_the_rest(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    rig.paper.set_partial_fill_ratio(D("0.4"))

    result = await rig.gateway.submit(market(Side.BUY, "1"))

    assert result.client_order_id is not None
    row = await rig.row(result.client_order_id)
    assert row["status"] == "canceled"
    assert D(row["filled"]) == D("0.4") < D(row["amount"]) == D("1")
    assert row["reason"] == PARTIAL_FILL_REASON
    book = await rig.journal.load_book(BOT)
    assert book.position.base == D("0.4")
    assert book.balances == await rig.paper_totals()
    assert book.balances["BTC"] == D("1.4")
    assert rig.book.live_orders == {}


async def test_a_sync_that_finds_resting_orders_as_they_were_starts_no_apply(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await make_rig()
    for price in ("98.00", "97.00", "96.00"):
        await rig.gateway.submit(limit(Side.BUY, "0.1", price))
    applied: list[object] = []
    real = rig.gateway._unsplittable

    async def counted(step: Any) -> None:
        applied.append(step)
        await real(step)

    monkeypatch.setattr(rig.gateway, "_unsplittable", counted)
    await rig.gateway.sync(snap("99.50", "99.70"))  # none crossed
    assert applied == []

    await rig.gateway.sync(snap("96.90", "97.00"))  # two cross
    assert len(applied) == 2
    assert len(rig.book.live_orders) == 1


async def test_a_resting_limit_order_fills_when_the_market_crosses_it_on_sync(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    result = await rig.gateway.submit(limit(Side.BUY, "0.5", "99.00", tag="grid-3"))
    cid = cid_of(result)
    assert (await rig.row(cid))["status"] == "open"
    assert cid in rig.book.live_orders

    jobs_before = rig.store.stats.jobs
    await rig.gateway.sync(snap("99.50", "99.70"))  # not crossed: nothing to journal
    assert rig.store.stats.jobs == jobs_before
    assert (await rig.row(cid))["status"] == "open"

    await rig.gateway.sync(snap("98.80", "98.90"))

    row = await rig.row(cid)
    assert (row["status"], D(row["filled"])) == ("filled", D("0.5"))
    (fill,) = await rig.store.fetch_all(
        "SELECT price, fee FROM fills WHERE client_order_id = ?", (cid,)
    )
    assert (D(fill["price"]), D(fill["fee"])) == (D("99.00"), D("0.0495"))  # at the limit price
    assert rig.book.live_orders == {}
    assert rig.book.last_price == D("98.85")
    (seen,) = rig.book.take_unseen_fills()
    assert (seen.client_order_id, seen.side, seen.amount, seen.price, seen.tag) == (
        cid,
        Side.BUY,
        D("0.5"),
        D("99.00"),
        "grid-3",
    )
    assert (await rig.events(cid))[-1] == ("open", "filled", "found in a sync")
    assert await rig.journal_balances() == await rig.paper_totals()


async def test_cancel_all_cancels_every_live_order_and_releases_them(make_rig: MakeRig) -> None:
    rig = await make_rig()
    orders = [
        limit(Side.BUY, "0.1", "95.00"),
        limit(Side.BUY, "0.2", "94.00"),
        limit(Side.SELL, "0.3", "105.00"),
    ]
    cids = [cid_of(await rig.gateway.submit(o)) for o in orders]
    assert sorted(rig.book.live_orders) == sorted(cids)

    errors = await rig.gateway.cancel_all("operator stop")

    assert errors == []
    rows = await rig.rows()
    for cid in cids:
        # The row says why we cancelled it, not only that the exchange did.
        assert (rows[cid]["status"], rows[cid]["reason"]) == ("canceled", "operator stop")
        assert (await rig.events(cid))[-1] == ("open", "canceled", "operator stop")
    assert rig.book.live_orders == {}
    assert rig.book.trade_ids == {}
    assert await rig.paper.fetch_open_orders(SYMBOL) == []
    assert all(b.used == 0 for b in (await rig.paper.fetch_balance()).values())
    assert rig.exchange.count("cancel_order") == 3
    assert await rig.gateway.cancel_all("again") == []  # nothing left to cancel
    assert rig.exchange.count("cancel_order") == 3


def book_state(book: BotBook) -> dict[str, Any]:
    return copy.deepcopy(
        {
            "position": book.position,
            "balances": book.balances,
            "live_orders": book.live_orders,
            "trade_ids": book.trade_ids,
            "orders_count": book.orders_count,
            "fills_count": book.fills_count,
            "unseen_fills": book.unseen_fills,
        }
    )


async def test_a_failed_update_write_leaves_the_book_unchanged_and_is_applied_later(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    cid = cid_of(await rig.gateway.submit(limit(Side.BUY, "0.5", "99.00")))
    before = book_state(rig.book)
    row_before = await rig.row(cid)

    rig.journal.fail_updates = True
    crossed = snap("98.80", "98.90")
    with pytest.raises(StoreError):
        await rig.gateway.sync(crossed)  # the exchange filled it; the journal could not say so

    assert book_state(rig.book) == before
    assert await rig.row(cid) == row_before

    rig.journal.fail_updates = False
    await rig.gateway.sync(crossed)

    assert (await rig.row(cid))["status"] == "filled"
    assert rig.book.fills_count == 1
    assert rig.book.position.base == D("0.5")
    fills = await rig.store.fetch_all("SELECT trade_id FROM fills")
    assert len(fills) == 1
    assert await rig.journal_balances() == await rig.paper_totals() == rig.book.balances


async def test_a_fill_whose_journal_write_fails_at_submit_is_not_lost(make_rig: MakeRig) -> None:
    rig = await make_rig()
    rig.journal.fail_updates = True

    with pytest.raises(StoreError):
        await rig.gateway.submit(market(Side.BUY, "0.5"))

    (cid,) = rig.book.live_orders
    assert rig.book.live_orders[cid].status is OrderStatus.PENDING_SUBMIT
    assert rig.book.position == Position()
    assert rig.book.balances == OPENING
    assert rig.book.fills_count == 0
    assert rig.book.unseen_fills == []
    assert rig.book.trade_ids == {cid: set()}

    rig.journal.fail_updates = False
    assert await rig.gateway.refresh_live_orders("retry") == []

    assert (await rig.row(cid))["status"] == "filled"
    assert rig.exchange.count("create_order") == 1
    assert rig.book.position.base == D("0.5")
    assert await rig.journal_balances() == await rig.paper_totals() == rig.book.balances


async def test_a_restart_on_a_fresh_exchange_closes_the_orders_it_does_not_know(
    make_rig: MakeRig,
) -> None:
    before = await make_rig()
    resting = cid_of(await before.gateway.submit(limit(Side.BUY, "0.1", "95.00")))
    # Crash between journaling an intent and sending it: the row stays pending_submit.
    unsent = JournalOrder(
        client_order_id=before.gateway.ids.next(),
        bot=BOT,
        exchange="paper",
        symbol=SYMBOL,
        side=Side.SELL,
        type=OrderType.MARKET,
        amount=D("0.1"),
        price=None,
        status=OrderStatus.PENDING_SUBMIT,
        created_at=datetime.now(UTC),
    )
    await before.journal.record_intent(unsent)

    after = await make_rig(store=before.store)  # a new process: the paper exchange is empty
    assert sorted(after.book.live_orders) == sorted([resting, unsent.client_order_id])

    unresolved = await after.gateway.refresh_live_orders("restart")

    assert unresolved == []
    rows = await after.rows()
    assert (rows[resting]["status"], rows[resting]["reason"]) == (
        "canceled",
        "the exchange does not know this order (restart)",
    )
    assert rows[unsent.client_order_id]["status"] == "failed"
    assert after.book.errors == {"order_not_found": 2}
    assert after.book.live_orders == {}
    assert after.exchange.count("create_order") == 0
    assert after.gateway.ids.next() > unsent.client_order_id


# ----- sends in flight and cancelled callers ---------------------------------------------------


class HeldSend(RecordingExchange):
    """Holds every create_order at the door until the test lets it through."""

    def __init__(self, paper: PaperExchange, db_path: Path) -> None:
        super().__init__(paper, db_path)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def create_order(self, request: OrderRequest) -> OrderSnapshot:
        self.entered.set()
        await self.release.wait()
        return await super().create_order(request)


async def test_a_cancel_during_a_send_waits_for_it_and_cancels_what_the_send_made(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(exchange_type=HeldSend)
    exchange = rig.exchange
    assert isinstance(exchange, HeldSend)
    submit = asyncio.create_task(rig.gateway.submit(limit(Side.BUY, "1", "90")))
    await exchange.entered.wait()
    (cid,) = rig.book.live_orders

    refreshed = await rig.gateway.refresh_live_orders("sync")  # must leave the sending order be
    cancel = asyncio.create_task(rig.gateway.cancel(cid, "kill"))
    await asyncio.sleep(0.01)
    assert not cancel.done(), "the cancel must wait for the send"
    exchange.release.set()

    assert (await submit).outcome == "sent"
    assert await cancel is True
    assert refreshed == []
    assert (await rig.row(cid))["status"] == "canceled"
    assert await rig.paper.fetch_open_orders(SYMBOL) == []
    assert rig.book.live_orders == {}


async def test_an_intent_committed_after_its_caller_was_cancelled_enters_the_book(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    submit = asyncio.create_task(rig.gateway.submit(limit(Side.BUY, "1", "90")))
    for _ in range(3):
        await asyncio.sleep(0)  # the intent's write is queued, not yet committed
    submit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submit
    await rig.journal.audit(actor="test", action="flush", result="ok", at=datetime.now(UTC))

    (cid,) = rig.book.live_orders  # committed, so the book knows it: nothing is orphaned
    assert (await rig.row(cid))["status"] == "pending_submit"
    assert rig.exchange.count("create_order") == 0
    assert await rig.gateway.cancel_all("stop") == []
    assert (await rig.row(cid))["status"] == "failed"
    assert rig.book.live_orders == {}


async def test_an_update_committed_after_its_caller_was_cancelled_still_moves_the_book(
    make_rig: MakeRig,
) -> None:
    """The kill switch cancels a tick while the journal write that finishes an order is queued:
    the write commits anyway, and the book must follow it, or the halt's cancel of that order
    fails against the journal and leaves the bot stopping."""
    gate = Switch()
    rig = await make_rig(gates=[gate])
    rig.journal.while_intent_in_flight = lambda: setattr(
        gate, "refusal", Refusal("kill_switch", "closed while the intent was being written")
    )
    submit = asyncio.create_task(rig.gateway.submit(limit(Side.BUY, "1", "90")))
    rig.journal.while_update_in_flight = submit.cancel
    with pytest.raises(asyncio.CancelledError):
        await submit
    await rig.journal.audit(actor="test", action="flush", result="ok", at=datetime.now(UTC))

    (cid,) = (await rig.rows()).keys()
    assert (await rig.row(cid))["status"] == "failed"  # the refusal's update committed
    assert rig.book.live_orders == {}  # and the book followed it
    assert rig.exchange.count("create_order") == 0
    assert await rig.gateway.cancel_all("kill switch") == []


async def test_cancel_all_goes_on_past_an_order_the_journal_cannot_update(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    for price in ("90", "91"):
        assert (await rig.gateway.submit(limit(Side.BUY, "1", price))).outcome == "sent"
    rig.journal.fail_updates = True

    errors = await rig.gateway.cancel_all("kill switch")

    assert len(errors) == 2
    assert all("StoreError" in error for error in errors)
    assert rig.exchange.count("cancel_order") == 2  # both were asked, not just the first


# ----- partial fills ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def with_policy(rig: Rig, clock: Clock) -> OrderGateway:
    """The rig's parts behind a gateway with the shipped partial-fill policy and a fake clock."""
    return OrderGateway(
        IDENTITY,
        rig.exchange,
        rig.journal,
        rig.gateway.ids,
        rig.book,
        clock=clock,
        partial_fills=PartialFillPolicy(D("0.95"), timedelta(minutes=30)),
    )


async def test_an_order_filled_96_percent_is_complete_and_its_remainder_cancelled(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    gateway = with_policy(rig, Clock())
    rig.paper.set_partial_fill_ratio(D("0.96"))
    cid = cid_of(await gateway.submit(limit(Side.BUY, "1", "95.00")))

    await gateway.sync(snap("94.80", "94.90"))  # the market trades through the order once

    row = await rig.row(cid)
    assert (row["status"], D(row["filled"])) == ("canceled", D("0.96"))
    assert row["reason"].startswith("complete at 96.0% filled")
    assert rig.book.partial_fill_outcomes == {"completed": 1}
    assert rig.book.live_orders == {}
    balances = await rig.paper.fetch_balance()
    assert balances["AUD"].used == 0  # the reserved funds of the remainder are released


async def test_an_order_filled_50_percent_is_cancelled_only_after_the_timeout(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    clock = Clock()
    gateway = with_policy(rig, clock)
    rig.paper.set_partial_fill_ratio(D("0.5"))
    cid = cid_of(await gateway.submit(limit(Side.BUY, "1", "95.00")))
    await gateway.sync(snap("94.80", "94.90"))  # half fills
    away = snap("99.90", "100.10")

    clock.now += timedelta(minutes=29)
    await gateway.sync(away)
    assert (await rig.row(cid))["status"] == "open"

    clock.now += timedelta(minutes=1)
    await gateway.sync(away)

    row = await rig.row(cid)
    assert (row["status"], D(row["filled"])) == ("canceled", D("0.5"))
    assert row["reason"] == "only 50.0% filled after 30 min: remainder cancelled"
    assert rig.book.partial_fill_outcomes == {"timed_out": 1}
    assert (await rig.paper.fetch_balance())["AUD"].used == 0


async def test_an_order_with_no_fill_is_left_resting_whatever_its_age(make_rig: MakeRig) -> None:
    rig = await make_rig()
    clock = Clock()
    gateway = with_policy(rig, clock)
    cid = cid_of(await gateway.submit(limit(Side.BUY, "1", "95.00")))

    clock.now += timedelta(days=2)
    await gateway.sync(snap("99.90", "100.10"))

    assert (await rig.row(cid))["status"] == "open"


# ----- retries after a transient failure -------------------------------------------------------


def with_retry(rig: Rig, max_retries: int, slept: list[float]) -> OrderGateway:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return OrderGateway(
        IDENTITY,
        rig.exchange,
        rig.journal,
        rig.gateway.ids,
        rig.book,
        retry=RetryPolicy(max_retries, 0.5, 10, jitter=0, sleep=sleep),
    )


async def test_an_order_the_exchange_did_not_take_is_looked_up_then_sent_again_once(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    slept: list[float] = []
    gateway = with_retry(rig, 3, slept)
    rig.paper.refuse_next(1)  # a rate limit: the venue refused the first send, made no order

    result = await gateway.submit(market(Side.BUY, "1"))

    assert result.outcome == "sent"
    cid = cid_of(result)
    calls = [name for name, id_ in rig.exchange.calls if id_ == cid]
    assert calls == ["create_order", "fetch_order", "create_order"]  # looked up before resending
    assert slept == [0.5]  # backed off before the lookup
    assert (await rig.row(cid))["status"] == "filled"
    assert (await rig.paper_totals())["BTC"] == OPENING["BTC"] + 1  # bought once, not twice


async def test_an_order_the_exchange_took_before_the_timeout_is_adopted_not_resent(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(exchange_type=TimeoutAfterSend)
    gateway = with_retry(rig, 3, [])

    result = await gateway.submit(market(Side.BUY, "1"))

    assert result.outcome == "sent"
    assert rig.exchange.count("create_order") == 1
    assert (await rig.row(cid_of(result)))["status"] == "filled"


async def test_an_order_still_refused_after_its_retries_is_marked_for_an_operator(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    slept: list[float] = []
    gateway = with_retry(rig, 3, slept)
    rig.paper.refuse_next(10)

    result = await gateway.submit(market(Side.BUY, "1"))

    assert (result.outcome, result.code) == ("failed", "retries_exhausted")
    assert rig.exchange.count("create_order") == 4  # one send and three retries
    assert slept == [0.5, 1.0, 2.0]  # capped exponential backoff
    row = await rig.row(cid_of(result))
    assert row["status"] == "failed"
    assert row["reason"].startswith("not placed: 4 send(s)")
    assert row["reason"].endswith("needs an operator")
    assert rig.book.errors["retries_exhausted"] == 1
    assert rig.book.consecutive_failures == 1  # one order failed, however many attempts


async def test_an_order_whose_send_outcome_is_unknown_is_never_sent_again(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    slept: list[float] = []
    gateway = with_retry(rig, 3, slept)
    rig.paper.fail_next(1)  # a timeout: did the venue take it? nobody knows

    result = await gateway.submit(market(Side.BUY, "1"))

    assert rig.exchange.count("create_order") == 1
    assert slept == [0.5, 1.0, 2.0, 4.0]  # looked for over the whole backoff schedule
    assert (result.outcome, result.code) == ("failed", "retries_exhausted")
    assert "did not show it in 5 lookup(s)" in (await rig.row(cid_of(result)))["reason"]


class ShowsUpLate(RecordingExchange):
    """The send times out; the venue took the order but shows it only from the third lookup."""

    hidden_lookups = 2

    async def create_order(self, request: OrderRequest) -> OrderSnapshot:
        await super().create_order(request)
        raise TransientExchangeError("paper: timed out reading the response")

    async def fetch_order(self, client_order_id: int, symbol: str) -> OrderSnapshot:
        if self.hidden_lookups:
            self.hidden_lookups -= 1
            self.calls.append(("fetch_order", client_order_id))
            raise OrderNotFound("paper: not (yet) visible")
        return await super().fetch_order(client_order_id, symbol)


async def test_an_order_that_shows_up_late_is_adopted_and_never_sent_twice(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(exchange_type=ShowsUpLate)
    gateway = with_retry(rig, 3, [])

    result = await gateway.submit(market(Side.BUY, "1"))

    assert result.outcome == "sent"
    assert rig.exchange.count("create_order") == 1
    assert rig.exchange.count("fetch_order") == 3
    assert (await rig.row(cid_of(result)))["status"] == "filled"


async def test_a_gate_that_closes_during_the_backoff_stops_the_resend(make_rig: MakeRig) -> None:
    switch = Switch()
    rig = await make_rig(gates=[switch])
    closed_during_backoff: list[float] = []

    async def sleep(seconds: float) -> None:
        closed_during_backoff.append(seconds)
        switch.refusal = Refusal("kill_switch", "the kill switch is active")

    gateway = OrderGateway(
        IDENTITY,
        rig.exchange,
        rig.journal,
        rig.gateway.ids,
        rig.book,
        [switch],
        retry=RetryPolicy(3, 0.5, 10, jitter=0, sleep=sleep),
    )
    rig.paper.refuse_next(1)

    result = await gateway.submit(market(Side.BUY, "1"))

    assert (result.outcome, result.code) == ("refused", "kill_switch")
    assert rig.exchange.count("create_order") == 1
    assert (await rig.row(cid_of(result)))["status"] == "failed"


async def test_a_read_only_gateway_sends_no_cancel_either(make_rig: MakeRig) -> None:
    writer = await make_rig()
    cid = cid_of(await writer.gateway.submit(limit(Side.BUY, "1", "95.00")))  # left open
    read_only = OrderGateway(
        IDENTITY, writer.exchange, writer.journal, writer.gateway.ids, writer.book, [ReadOnlyGate()]
    )

    assert await read_only.cancel_all("operator stop") == []

    assert writer.exchange.count("cancel_order") == 0
    assert (await writer.row(cid))["status"] == "open"
    assert writer.book.refusals["read_only"] == 1
