"""Scoped switches: which bots a scope covers, the most restrictive one wins, reduce-only's
arithmetic, persistence and fail-safe loading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bots.book import BotBook
from bots.exchanges.paper import PaperExchange
from bots.gateway import BotIdentity, OrderGateway
from bots.ids import ClientOrderIds
from bots.journal import JournalOrder, OrderStatus
from bots.ledger import Position
from bots.models import MarketSnapshot, OrderIntent, OrderRequest, OrderSnapshot, OrderType, Side
from coordinator.errors import Conflict, NotFound
from coordinator.safety.scopes import (
    GLOBAL_SCOPE,
    STATE_PREFIX,
    Effective,
    Scope,
    ScopedSwitches,
    ScopeGate,
    ScopeSwitch,
    TradingState,
    orders_that_grow,
    reducing_refusal,
)
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore
from tests.support_config import FakeClock

D = Decimal
SYMBOL = "BTC/AUD"
BOTS = {"grid-a": "kraken", "grid-b": "kraken", "dca": "ndax"}
START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        yield SqliteJournal(store)
    finally:
        await store.close()


def switches(journal: SqliteJournal, clock: FakeClock) -> ScopedSwitches:
    return ScopedSwitches(journal, clock, timedelta(minutes=30), BOTS)


def intent(side: Side, amount: str) -> OrderIntent:
    return OrderIntent(SYMBOL, side, OrderType.LIMIT, D(amount), D(100))


def resting(book: BotBook, coid: int, side: Side, amount: str, filled: str = "0") -> None:
    book.live_orders[coid] = JournalOrder(
        coid, "grid-a", "kraken", SYMBOL, side, OrderType.LIMIT, D(amount), D(100),
        OrderStatus.OPEN, START + timedelta(seconds=coid), filled=D(filled),
    )  # fmt: skip


def long(base: str) -> BotBook:
    return BotBook(position=Position(base=D(base), avg_entry_price=D(100)))


REDUCING = Effective(
    TradingState.REDUCING,
    ScopeSwitch(Scope("bot", "grid-a"), TradingState.REDUCING, "unwind", "op", START, "manual",
                START),
)


# -- reduce-only arithmetic ------------------------------------------------------------------------


def test_reducing_lets_a_sell_through_up_to_the_position_held() -> None:
    book = long("0.003")

    assert reducing_refusal(intent(Side.SELL, "0.003"), book, REDUCING) is None
    refusal = reducing_refusal(intent(Side.SELL, "0.004"), book, REDUCING)
    assert refusal is not None
    assert refusal.code == "reduce_only"
    assert "would flip the position of 0.003" in refusal.reason


def test_reducing_counts_the_sells_already_resting() -> None:
    book = long("0.003")
    resting(book, 1, Side.SELL, "0.002", filled="0.001")  # 0.001 left to fill

    assert reducing_refusal(intent(Side.SELL, "0.002"), book, REDUCING) is None
    assert reducing_refusal(intent(Side.SELL, "0.0021"), book, REDUCING) is not None


@pytest.mark.parametrize(("base", "side"), [("0.003", Side.BUY), ("0", Side.SELL),
                                            ("0", Side.BUY), ("-0.002", Side.SELL)])
def test_reducing_refuses_every_order_that_grows_the_position_or_opens_one(
    base: str, side: Side
) -> None:
    refusal = reducing_refusal(intent(side, "0.001"), long(base), REDUCING)

    assert refusal is not None
    assert refusal.code == "reduce_only"
    assert "would grow the position" in refusal.reason
    assert "bot grid-a switch" in refusal.reason


def test_a_short_position_is_reduced_by_buys() -> None:
    assert reducing_refusal(intent(Side.BUY, "0.002"), long("-0.002"), REDUCING) is None


def test_the_orders_that_grow_are_the_buys_of_a_long_and_its_sells_beyond_the_position() -> None:
    book = long("0.003")
    resting(book, 1, Side.BUY, "0.001")
    resting(book, 2, Side.SELL, "0.002")
    resting(book, 3, Side.SELL, "0.001")
    resting(book, 4, Side.SELL, "0.001")  # 0.004 resting against 0.003 held: this one flips

    assert orders_that_grow(book) == [1, 4]


def test_a_flat_bot_cancels_every_resting_order_when_reducing() -> None:
    book = long("0")
    resting(book, 1, Side.BUY, "0.001")
    resting(book, 2, Side.SELL, "0.001")

    assert orders_that_grow(book) == [1, 2]


# -- scopes ----------------------------------------------------------------------------------------


async def test_an_exchange_scope_covers_only_that_exchanges_bots(journal: SqliteJournal) -> None:
    board = switches(journal, FakeClock())

    await board.set(Scope("exchange", "kraken"), TradingState.HALTED, "x", "op", "manual")

    assert board.effective("grid-a").state is TradingState.HALTED
    assert board.effective("grid-b").state is TradingState.HALTED
    assert board.effective("dca").state is TradingState.ACTIVE
    assert board.bots_in(Scope("exchange", "kraken")) == ["grid-a", "grid-b"]


async def test_the_most_restrictive_switch_over_a_bot_decides_it(journal: SqliteJournal) -> None:
    board = switches(journal, FakeClock())

    await board.set(GLOBAL_SCOPE, TradingState.REDUCING, "calm", "op", "manual")
    await board.set(Scope("bot", "grid-b"), TradingState.HALTED, "bug", "op", "manual")

    assert board.effective("grid-a").state is TradingState.REDUCING
    assert board.effective("grid-b").state is TradingState.HALTED
    assert board.effective("grid-b").why() is not None
    gate = ScopeGate(board, "grid-b")
    refusal = gate.check(intent(Side.SELL, "0.001"), long("1"))
    assert refusal is not None
    assert refusal.code == "kill_switch"
    assert "bot grid-b switch" in refusal.reason


async def test_a_halted_scope_asked_to_reduce_stays_halted(journal: SqliteJournal) -> None:
    board = switches(journal, FakeClock())
    await board.set(Scope("bot", "dca"), TradingState.HALTED, "stop", "op", "manual")

    answer = await board.set(Scope("bot", "dca"), TradingState.REDUCING, "r", "op", "manual")

    assert answer["changed"] is False
    assert board.effective("dca").state is TradingState.HALTED


async def test_a_scope_survives_a_restart_and_its_lift_too(journal: SqliteJournal) -> None:
    clock = FakeClock()
    first = switches(journal, clock)
    await first.set(Scope("exchange", "ndax"), TradingState.REDUCING, "unwind", "op", "manual")
    await first.set(Scope("bot", "grid-a"), TradingState.HALTED, "bug", "op", "manual")
    clock.advance(minutes=31)
    await first.lift(Scope("bot", "grid-a"), "op", "fixed")

    second = switches(journal, clock)
    second.load(await journal.load_safety_state())

    assert list(second.switches) == ["exchange:ndax"]
    assert second.effective("dca").state is TradingState.REDUCING
    assert second.effective("grid-a").state is TradingState.ACTIVE
    assert second.last_lifted["bot:grid-a"]["reason"] == "fixed"


async def test_a_lift_in_the_cooldown_is_refused_unless_forced(journal: SqliteJournal) -> None:
    board = switches(journal, FakeClock())
    await board.set(Scope("bot", "dca"), TradingState.HALTED, "stop", "op", "manual")

    with pytest.raises(Conflict, match="cooldown"):
        await board.lift(Scope("bot", "dca"), "op", "too soon")
    forced = await board.lift(Scope("bot", "dca"), "admin", "urgent", approved_by="alice")

    assert forced["was"] == "halted"
    assert board.last_lifted["bot:dca"]["kind"] == "force_override"


async def test_an_unreadable_stored_scope_loads_as_halted(journal: SqliteJournal) -> None:
    await journal.save_safety_state(
        STATE_PREFIX + "exchange:kraken", {"state": "sideways"}, START
    )
    await journal.store.write(
        [("INSERT INTO safety_state (key, value, updated_at) VALUES (?, ?, ?)",
          (STATE_PREFIX + "bot:dca", "{not json", "2026-11-23T12:00:00Z"))]
    )

    board = switches(journal, FakeClock())
    board.load(await journal.load_safety_state())

    assert board.effective("grid-a").state is TradingState.HALTED
    assert board.switches["exchange:kraken"].trigger == "unreadable_state"
    assert board.effective("dca").state is TradingState.HALTED


def test_a_scope_naming_what_no_bot_trades_on_is_not_found() -> None:
    board = ScopedSwitches(None, FakeClock(), timedelta(0), BOTS)  # type: ignore[arg-type]

    with pytest.raises(NotFound, match=r"scope\.exchange: no bot trades on 'binance'"):
        board.scope(exchange="binance")
    with pytest.raises(NotFound, match=r"scope\.bot: no bot named 'x'"):
        board.scope(bot="x")
    assert board.scope() is GLOBAL_SCOPE


# -- the race with an order on its way out -------------------------------------------------------


class HeldIntents(SqliteJournal):
    """The real journal, with each intent's commit held until the test lets it go."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self.writing = asyncio.Event()
        self.release = asyncio.Event()

    async def record_intent(self, order: JournalOrder) -> None:
        self.writing.set()
        await self.release.wait()
        await super().record_intent(order)


class CountingPaper(PaperExchange):
    def __init__(self) -> None:
        super().__init__("kraken", SYMBOL, {"AUD": D(10**6)}, fee_rate=D(0), slippage_bps=D(0))
        self.sent: list[OrderRequest] = []

    async def create_order(self, request: OrderRequest) -> OrderSnapshot:
        self.sent.append(request)
        return await super().create_order(request)


async def test_a_buy_being_journaled_when_reduce_only_is_set_is_refused_and_never_sent(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "race.db")
    try:
        journal = HeldIntents(store)
        await journal.register_bot("grid-a", "kraken", SYMBOL, "paper", START)
        board = switches(journal, FakeClock())
        exchange = CountingPaper()
        await exchange.on_market(MarketSnapshot(SYMBOL, D(100), D("99.9"), D("100.1"), START))
        gateway = OrderGateway(
            BotIdentity("grid-a", "kraken", SYMBOL, "BTC", "AUD"),
            exchange, journal, ClientOrderIds(), long("1"), [ScopeGate(board, "grid-a")],
        )  # fmt: skip

        # The tick decided to buy while trading was active: the first gate check passed and
        # the intent is on its way to the journal when the operator asks for reduce-only.
        submit = asyncio.create_task(gateway.submit(intent(Side.BUY, "0.5")))
        await journal.writing.wait()
        await board.set(Scope("bot", "grid-a"), TradingState.REDUCING, "unwind", "op", "manual")
        journal.release.set()
        result = await submit

        assert exchange.sent == []
        assert (result.outcome, result.code) == ("refused", "reduce_only")
        assert result.client_order_id is not None  # journaled, then stopped before the send
        rows = await store.fetch_all("SELECT status, reason FROM orders")
        assert [row["status"] for row in rows] == ["failed"]
        assert "not sent" in rows[0]["reason"]
        assert "grow the position" in rows[0]["reason"]
    finally:
        await store.close()
