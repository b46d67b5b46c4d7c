"""Risk limits through the real gateway, journal and paper exchange: the gateway asks the gates
twice (before the journal write, and right before the send, with the order in the book by
then); a limit must not count the very order it is judging."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bots.book import BotBook
from bots.exchanges.paper import PaperExchange
from bots.gateway import BotIdentity, OrderGateway
from bots.ids import ClientOrderIds
from bots.models import MarketSnapshot, OrderIntent, OrderType, Side
from coordinator.config.models import GlobalLimits, LimitSet, SafeModeFactors
from coordinator.safety.risk import RiskContext, RiskGate
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore

D = Decimal
MARKET = MarketSnapshot("BTC/AUD", D(100), D("99.9"), D("100.1"), datetime.now(UTC))


def make_gate(limits: LimitSet, safe: bool, book: BotBook) -> RiskGate:
    context = RiskContext(
        GlobalLimits(
            max_total_exposure=D(10**9), max_concurrent_positions=100, max_orders_per_minute=10**4
        ),
        lambda: datetime.now(UTC),
    )
    context.register("alpha", "BTC/AUD", "AUD", book)
    factors = SafeModeFactors(size_factor=D("0.1"), max_open_orders=1)
    return RiskGate("alpha", limits, context, safe_mode=factors if safe else None)


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[OrderGateway]]]:
    stores: list[SqliteStore] = []

    async def make(limits: LimitSet, safe: bool = True) -> OrderGateway:
        store = await SqliteStore.open(tmp_path / f"j{len(stores)}.db")
        stores.append(store)
        journal = SqliteJournal(store)
        await journal.register_bot("alpha", "kraken", "BTC/AUD", "paper", datetime.now(UTC))
        balances = {"AUD": D(10_000), "BTC": D(1)}
        await journal.seed_balances("alpha", balances, "opening", datetime.now(UTC))
        paper = PaperExchange("paper", "BTC/AUD", balances, fee_rate=D("0.001"), slippage_bps=D(0))
        book = BotBook(balances=dict(balances))
        gw = OrderGateway(
            BotIdentity("alpha", "kraken", "BTC/AUD", "BTC", "AUD"),
            paper,
            journal,
            ClientOrderIds(),
            book,
            [make_gate(limits, safe, book)],
        )
        await gw.sync(MARKET)
        return gw

    yield make
    for store in stores:
        await store.close()


def limit_buy(amount: str, price: str) -> OrderIntent:
    return OrderIntent("BTC/AUD", Side.BUY, OrderType.LIMIT, D(amount), D(price))


async def test_safe_mode_lets_the_first_order_through_and_refuses_a_second_open_one(
    make_gateway: Callable[..., Awaitable[OrderGateway]],
) -> None:
    gateway = await make_gateway(LimitSet(max_order_notional=D(1000), max_open_orders=10))
    first = await gateway.submit(limit_buy("0.5", "90"))  # 45 AUD, rests below the market
    second = await gateway.submit(limit_buy("0.5", "89"))

    assert first.outcome == "sent"
    assert second.outcome == "refused"
    assert second.code == "max_open_orders"
    assert second.client_order_id is None  # refused before anything was journaled
    assert len(gateway.book.live_orders) == 1


async def test_safe_mode_refuses_an_order_above_the_scaled_notional(
    make_gateway: Callable[..., Awaitable[OrderGateway]],
) -> None:
    gateway = await make_gateway(LimitSet(max_order_notional=D(1000)))
    result = await gateway.submit(limit_buy("1.2", "90"))  # 108 AUD > 10 % of 1000

    assert result.outcome == "refused"
    assert result.code == "max_order_notional"
    assert "safe-mode figure" in result.reason
    assert gateway.book.orders_count == 0
    assert gateway.book.last_refusal is not None


async def test_orders_per_minute_lets_exactly_the_limit_through(
    make_gateway: Callable[..., Awaitable[OrderGateway]],
) -> None:
    gateway = await make_gateway(LimitSet(max_orders_per_minute=2), safe=False)

    results = [await gateway.submit(limit_buy("0.01", "90")) for _ in range(3)]

    assert [r.outcome for r in results] == ["sent", "sent", "refused"]
    assert results[2].code == "max_orders_per_minute"
    assert results[2].client_order_id is None  # refused before the journal, not after
