"""The stale market data guard: a bot whose price is older than max_market_data_age_seconds
sends no order, and the collar never judges by such a price.

The gate's checks on real books with a fake clock, then through the real gateway, journal and
paper exchange: the age is measured from when the price reached the gateway (its clock at the
sync), and it is asked again right before the send.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bots.book import BotBook
from bots.exchanges.paper import PaperExchange
from bots.gateway import BotIdentity, OrderGateway
from bots.ids import ClientOrderIds
from bots.journal import JournalOrder
from bots.ledger import Position
from bots.models import MarketSnapshot, OrderIntent, OrderType, Side
from coordinator.config.models import (
    DEFAULT_MAX_MARKET_DATA_AGE_SECONDS,
    BotLimitsConfig,
    GlobalLimits,
    LimitSet,
    SafeModeFactors,
)
from coordinator.safety.risk import RiskContext, RiskGate
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore
from tests.support_config import FakeClock

D = Decimal
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
AGE_30 = LimitSet(max_market_data_age_seconds=30)
GLOBAL = GlobalLimits(
    max_total_exposure=D(10**9), max_concurrent_positions=100, max_orders_per_minute=10**4
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def priced_book(clock: FakeClock, seconds_ago: float | None = 0, base: str = "0") -> BotBook:
    """Last price 100 AUD, arrived `seconds_ago` (None: with no arrival time)."""
    book = BotBook(position=Position(D(base), D(100) if base != "0" else D(0)))
    book.last_price = D(100)
    if seconds_ago is not None:
        book.last_price_at = clock.now - timedelta(seconds=seconds_ago)
    return book


def make_gate(
    clock: FakeClock, limits: LimitSet, book: BotBook, safe_mode: SafeModeFactors | None = None
) -> RiskGate:
    context = RiskContext(GLOBAL, clock)
    context.register("alpha", "BTC/AUD", "AUD", book)
    return RiskGate("alpha", limits, context, safe_mode)


def order(side: Side, amount: str, price: str | None = None) -> OrderIntent:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderIntent("BTC/AUD", side, kind, D(amount), D(price) if price else None)


# -- the gate -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "intent", [order(Side.BUY, "1"), order(Side.BUY, "1", "100")], ids=["market", "limit"]
)
def test_an_order_on_market_data_older_than_the_limit_is_refused_naming_age_and_limit(
    clock: FakeClock, intent: OrderIntent
) -> None:
    book = priced_book(clock, seconds_ago=31.5)
    gate = make_gate(clock, AGE_30, book)

    refusal = gate.check(intent, book)

    assert refusal is not None
    assert refusal.code == "stale_market_data"
    assert "market data is 31.5 s old" in refusal.reason
    assert "arrived at 2024-05-01T11:59:28+00:00" in refusal.reason
    assert "beyond max_market_data_age_seconds 30 s" in refusal.reason


def test_market_data_exactly_as_old_as_the_limit_is_still_fresh(clock: FakeClock) -> None:
    book = priced_book(clock, seconds_ago=30)
    gate = make_gate(clock, AGE_30, book)

    assert gate.check(order(Side.BUY, "1"), book) is None
    clock.advance(seconds=0.001)
    refusal = gate.check(order(Side.BUY, "1"), book)
    assert refusal is not None
    assert refusal.code == "stale_market_data"


def test_the_collar_never_judges_a_limit_price_against_a_stale_price(clock: FakeClock) -> None:
    # 101 is within a 5 % collar of the stale 100; 200 is far beyond it. Neither is judged by
    # that price: both are refused as stale, not passed or refused by the collar.
    limits = LimitSet(max_market_data_age_seconds=30, price_collar_pct=D(5))
    book = priced_book(clock, seconds_ago=60)
    gate = make_gate(clock, limits, book)

    near, far = (
        gate.check(order(Side.BUY, "1", "101"), book),
        gate.check(order(Side.BUY, "1", "200"), book),
    )

    assert near is not None
    assert near.code == "stale_market_data"
    assert far is not None
    assert far.code == "stale_market_data"
    book.last_price_at = clock.now  # a fresh price: the collar judges again
    assert gate.check(order(Side.BUY, "1", "101"), book) is None
    far_now = gate.check(order(Side.BUY, "1", "200"), book)
    assert far_now is not None
    assert far_now.code == "price_collar"


def test_a_stale_price_refuses_even_an_order_that_reduces_the_position(clock: FakeClock) -> None:
    book = priced_book(clock, seconds_ago=45, base="2")
    gate = make_gate(clock, AGE_30, book)

    refusal = gate.check(order(Side.SELL, "1"), book)  # a market sell of half the position

    assert refusal is not None
    assert refusal.code == "stale_market_data"


def test_a_price_with_no_arrival_time_counts_as_stale(clock: FakeClock) -> None:
    book = priced_book(clock, seconds_ago=None)
    gate = make_gate(clock, AGE_30, book)

    refusal = gate.check(order(Side.BUY, "1", "100"), book)

    assert refusal is not None
    assert refusal.code == "stale_market_data"
    assert "has no arrival time, so its age is unknown" in refusal.reason


def test_a_limit_order_with_no_market_data_at_all_is_refused_as_unpriced(
    clock: FakeClock,
) -> None:
    book = BotBook()
    gate = make_gate(clock, AGE_30, book)

    refusal = gate.check(order(Side.BUY, "1", "100"), book)  # its own price values it

    assert refusal is not None
    assert refusal.code == "no_price"
    assert "no market data yet" in refusal.reason


def test_a_bot_with_no_age_limit_is_not_held_to_one(clock: FakeClock) -> None:
    book = priced_book(clock, seconds_ago=3600)
    gate = make_gate(clock, LimitSet(), book)

    assert gate.check(order(Side.BUY, "1"), book) is None


def test_safe_mode_keeps_the_bots_own_age_limit(clock: FakeClock) -> None:
    book = priced_book(clock, seconds_ago=31)
    gate = make_gate(clock, AGE_30, book, SafeModeFactors(size_factor=D("0.1"), max_open_orders=1))

    refusal = gate.check(order(Side.BUY, "0.01"), book)

    assert refusal is not None
    assert refusal.code == "stale_market_data"
    assert "safe-mode figure" not in refusal.reason


def test_the_default_limits_always_hold_an_age_limit_a_bot_may_override() -> None:
    config = BotLimitsConfig.model_validate(
        {
            "version": 1,
            "defaults": {
                "max_order_notional": 1000,
                "max_position_base": 1,
                "max_position_notional": 50000,
                "max_open_orders": 10,
                "max_orders_per_minute": 60,
                "max_daily_loss": 1000,
                "price_collar_pct": 5,
            },
            "bots": {"slow": {"max_market_data_age_seconds": 120}},
            "global": {
                "max_total_exposure": 100000,
                "max_concurrent_positions": 10,
                "max_orders_per_minute": 600,
            },
            "safe_mode": {"size_factor": D("0.1"), "max_open_orders": 1},
        }
    )

    assert DEFAULT_MAX_MARKET_DATA_AGE_SECONDS == 30
    assert config.limits_for("any").max_market_data_age_seconds == 30
    assert config.limits_for("slow").max_market_data_age_seconds == 120


# -- through the gateway --------------------------------------------------------------------------


class SlowJournal(SqliteJournal):
    """The real journal; `while_intent_in_flight` runs while an intent's write is queued."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self.while_intent_in_flight: list[FakeClock] = []

    async def record_intent(self, order: JournalOrder) -> None:
        write = asyncio.ensure_future(super().record_intent(order))
        for clock in self.while_intent_in_flight:
            await asyncio.sleep(0)  # queued, not committed yet
            clock.advance(seconds=31)
        await write


@dataclass
class Rig:
    clock: FakeClock
    journal: SlowJournal
    store: SqliteStore
    paper: PaperExchange
    gateway: OrderGateway

    def market(self, stamped: datetime | None = None) -> MarketSnapshot:
        at = stamped or self.clock.now
        return MarketSnapshot("BTC/AUD", D(100), D("99.9"), D("100.1"), at)


@pytest.fixture
async def rig(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Rig]:
    store = await SqliteStore.open(tmp_path / "journal.db")
    journal = SlowJournal(store)
    await journal.register_bot("alpha", "kraken", "BTC/AUD", "paper", clock.now)
    balances = {"AUD": D(10_000), "BTC": D(1)}
    await journal.seed_balances("alpha", balances, "opening", clock.now)
    paper = PaperExchange(
        "paper", "BTC/AUD", balances, fee_rate=D("0.001"), slippage_bps=D(0), clock=clock
    )
    book = BotBook(balances=dict(balances))
    gateway = OrderGateway(
        BotIdentity("alpha", "kraken", "BTC/AUD", "BTC", "AUD"),
        paper,
        journal,
        ClientOrderIds(),
        book,
        [make_gate(clock, AGE_30, book)],
        clock=clock,
    )
    try:
        yield Rig(clock, journal, store, paper, gateway)
    finally:
        await store.close()


async def test_the_sync_stamps_the_price_with_its_arrival_not_the_venues_clock(rig: Rig) -> None:
    # A venue whose clock runs an hour behind: its stamp would make every order stale.
    await rig.gateway.sync(rig.market(stamped=rig.clock.now - timedelta(hours=1)))

    result = await rig.gateway.submit(order(Side.BUY, "0.01", "99"))

    assert rig.gateway.book.last_price_at == rig.clock.now
    assert result.outcome == "sent"


async def test_an_order_after_the_data_aged_is_refused_unjournaled_and_counted(rig: Rig) -> None:
    await rig.gateway.sync(rig.market())
    rig.clock.advance(seconds=31)

    refused = await rig.gateway.submit(order(Side.BUY, "0.01"))
    await rig.gateway.sync(rig.market())  # the feed answers again
    sent = await rig.gateway.submit(order(Side.BUY, "0.01"))

    assert (refused.outcome, refused.code) == ("refused", "stale_market_data")
    assert refused.client_order_id is None  # refused before the journal write
    assert sent.outcome == "sent"
    book = rig.gateway.book
    assert book.refusals == {"stale_market_data": 1}
    assert book.last_refusal is not None
    assert book.last_refusal.startswith("stale_market_data: market data is 31 s old")
    assert book.orders_count == 1


async def test_data_that_goes_stale_while_the_intent_is_journaled_stops_the_send(
    rig: Rig,
) -> None:
    await rig.gateway.sync(rig.market())
    rig.journal.while_intent_in_flight.append(rig.clock)  # 31 s pass during the write

    result = await rig.gateway.submit(order(Side.BUY, "0.01", "99"))

    assert (result.outcome, result.code) == ("refused", "stale_market_data")
    assert result.client_order_id is not None  # journaled, then stopped at the recheck
    assert await rig.paper.fetch_open_orders("BTC/AUD") == []
    rows = await rig.store.fetch_all("SELECT status, reason FROM orders")
    assert [tuple(r) for r in rows] == [("failed", f"not sent: {result.reason}")]
