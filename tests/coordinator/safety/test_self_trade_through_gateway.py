"""Self-trade prevention through the real gateways, journal and paper exchanges of two bots that
share one paper account: the gate refuses before the journal write and again right before the
send, and the paper venue rejects a self-cross that gets past the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bots.book import BotBook
from bots.exchanges.paper import PaperExchange
from bots.gateway import BotIdentity, OrderGate, OrderGateway, SubmitResult
from bots.ids import ClientOrderIds
from bots.journal import JournalOrder
from bots.models import MarketSnapshot, OrderIntent, OrderType, Side
from coordinator.config.models import BotConfig
from coordinator.safety.self_trade import SelfTradeRegistry
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore

D = Decimal
SYMBOL = "BTC/AUD"
MARKET = MarketSnapshot(SYMBOL, D(100), D("99.90"), D("100.10"), datetime.now(UTC))
OPENING = {"AUD": D(10_000), "BTC": D(1)}


class HookedJournal(SqliteJournal):
    """The real journal; `while_intent_in_flight[bot]` is called while that bot's intent write
    is queued and not yet committed."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self.while_intent_in_flight: dict[str, Callable[[], None]] = {}

    async def record_intent(self, order: JournalOrder) -> None:
        write = asyncio.ensure_future(super().record_intent(order))
        hook = self.while_intent_in_flight.pop(order.bot, None)
        if hook is not None:
            await asyncio.sleep(0)
            assert not write.done()
            hook()
        await write


def config(name: str) -> BotConfig:
    return BotConfig.model_validate(
        {
            "name": name,
            "exchange": "kraken",
            "symbol": SYMBOL,
            "mode": "paper",
            "market_data": "offline",
            "tick_interval_seconds": 1,
            "strategy": {"name": "grid"},
            "paper": {"account": "desk", "initial_balances": {"AUD": 10000, "BTC": 1}},
        }
    )


@dataclass
class Desk:
    store: SqliteStore
    journal: HookedJournal
    registry: SelfTradeRegistry
    ids: ClientOrderIds

    async def bot(self, name: str, *, gate: bool = True) -> OrderGateway:
        """A paper bot on the shared account "desk", its gateway having seen MARKET; `gate`
        False leaves its self-trade gate out (its venue still has its seat)."""
        bot = config(name)
        await self.journal.register_bot(name, "kraken", SYMBOL, "paper", datetime.now(UTC))
        await self.journal.seed_balances(name, OPENING, "opening", datetime.now(UTC))
        book = BotBook(balances=dict(OPENING))
        paper = PaperExchange(
            "paper-kraken",
            SYMBOL,
            OPENING,
            fee_rate=D("0.001"),
            slippage_bps=D(0),
            account=self.registry.paper_seat(bot),
        )
        self_trade = self.registry.register(bot, book)
        gates: Sequence[OrderGate] = [self_trade] if gate else []
        identity = BotIdentity(name, "kraken", SYMBOL, "BTC", "AUD")
        gateway = OrderGateway(identity, paper, self.journal, self.ids, book, gates)
        await gateway.sync(MARKET)
        return gateway

    async def statuses(self) -> dict[tuple[str, int], tuple[str, str | None]]:
        rows = await self.store.fetch_all("SELECT bot, client_order_id, status, reason FROM orders")
        return {(r["bot"], r["client_order_id"]): (r["status"], r["reason"]) for r in rows}


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    store = await SqliteStore.open(tmp_path / "journal.db")
    try:
        yield Desk(store, HookedJournal(store), SelfTradeRegistry(), ClientOrderIds())
    finally:
        await store.close()


def limit(side: Side, price: str, amount: str = "0.1") -> OrderIntent:
    return OrderIntent(SYMBOL, side, OrderType.LIMIT, D(amount), D(price))


def market(side: Side, amount: str = "0.1") -> OrderIntent:
    return OrderIntent(SYMBOL, side, OrderType.MARKET, D(amount))


async def test_a_bot_is_refused_an_order_crossing_its_siblings_resting_order_unjournaled(
    desk: Desk,
) -> None:
    a, b = await desk.bot("a"), await desk.bot("b")
    resting = await b.submit(limit(Side.SELL, "101"))  # above the market: it rests

    refused = await a.submit(limit(Side.BUY, "102"))
    also_refused = await a.submit(market(Side.BUY))

    assert resting.outcome == "sent"
    assert (refused.outcome, refused.code) == ("refused", "self_trade")
    assert refused.client_order_id is None  # refused before the journal write
    assert refused.reason == (
        f"a buy at 102 would cross b's resting sell (client id {resting.client_order_id}) at "
        "101 on the same account (paper account 'desk' on kraken, BTC/AUD)"
    )
    assert also_refused.code == "self_trade"
    assert a.book.refusals == {"self_trade": 2}
    assert a.book.last_refusal == f"self_trade: {also_refused.reason}"
    assert a.book.orders_count == 0
    assert list(b.book.live_orders) == [resting.client_order_id]


async def test_once_the_siblings_order_is_gone_the_same_order_goes(desk: Desk) -> None:
    a, b = await desk.bot("a"), await desk.bot("b")
    resting = await b.submit(limit(Side.SELL, "101"))
    assert resting.client_order_id is not None
    assert (await a.submit(limit(Side.BUY, "102"))).code == "self_trade"

    await b.cancel(resting.client_order_id, "grid moved")
    sent = await a.submit(limit(Side.BUY, "102"))

    assert sent.outcome == "sent"
    assert a.book.position.base == D("0.1")  # bought at the market's ask


async def test_orders_that_cross_nothing_of_a_sibling_go_on_both_sides(desk: Desk) -> None:
    a, b = await desk.bot("a"), await desk.bot("b")

    results = [
        await b.submit(limit(Side.SELL, "101")),
        await a.submit(limit(Side.BUY, "99")),  # below b's sell
        await a.submit(limit(Side.SELL, "103")),  # same side as b's
        await b.submit(limit(Side.BUY, "98")),  # below a's sell... and a's buy is a buy
    ]

    assert [r.outcome for r in results] == ["sent"] * 4
    assert a.book.refusals == {}
    assert b.book.refusals == {}


async def test_a_siblings_order_made_while_the_intent_is_journaled_stops_it_at_the_recheck(
    desk: Desk,
) -> None:
    # While a's buy at 100 (below the ask: it rests) is being committed, b asks to sell at
    # 99.95 (above the bid: it would rest too, and cross a's buy). b's first check passes: a's
    # buy is not in a's book before its commit. By b's check right before its send it is.
    a, b = await desk.bot("a"), await desk.bot("b")
    b_sells: list[asyncio.Task[SubmitResult]] = []

    def b_sells_meanwhile() -> None:
        b_sells.append(asyncio.ensure_future(b.submit(limit(Side.SELL, "99.95"))))

    desk.journal.while_intent_in_flight["a"] = b_sells_meanwhile
    a_result = await a.submit(limit(Side.BUY, "100"))
    b_result = await b_sells[0]

    assert (b_result.outcome, b_result.code) == ("refused", "self_trade")
    assert b_result.client_order_id is not None
    assert "would cross a's resting buy" in b_result.reason
    statuses = await desk.statuses()
    assert statuses[("b", b_result.client_order_id)] == ("failed", f"not sent: {b_result.reason}")
    assert b.book.live_orders == {}
    assert a_result.outcome == "sent"
    assert list(a.book.live_orders) == [a_result.client_order_id]  # resting, uncrossed


async def test_the_paper_venue_rejects_a_self_cross_that_got_past_the_gateway(
    desk: Desk,
) -> None:
    a, b = await desk.bot("a", gate=False), await desk.bot("b")
    resting = await b.submit(limit(Side.SELL, "101"))

    result = await a.submit(limit(Side.BUY, "102"))

    assert (result.outcome, result.code) == ("rejected", "self_trade")
    assert result.client_order_id is not None
    assert resting.client_order_id is not None
    assert "would match b's resting sell" in result.reason
    statuses = await desk.statuses()
    assert statuses[("a", result.client_order_id)] == ("rejected", result.reason)
    assert statuses[("b", resting.client_order_id)] == ("open", None)
    assert a.book.errors == {"self_trade": 1}
    assert a.book.position.base == 0
    assert a.book.balances == OPENING  # nothing traded, nothing reserved
    assert list(b.book.live_orders) == [resting.client_order_id]
