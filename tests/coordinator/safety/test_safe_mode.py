"""Safe mode's gate, through the real gateway, journal and paper exchange."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bots.book import BotBook
from bots.exchanges.paper import PaperExchange
from bots.gateway import BotIdentity, OrderGateway
from bots.ids import ClientOrderIds
from bots.models import MarketSnapshot, OrderIntent, OrderType, Side
from coordinator.config.models import LimitSet, SafeModeFactors
from coordinator.safety.safe_mode import SafeModeGate
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore

D = Decimal
MARKET = MarketSnapshot("BTC/AUD", D(100), D("99.9"), D("100.1"), datetime.now(UTC))


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[OrderGateway]:
    store = await SqliteStore.open(tmp_path / "j.db")
    journal = SqliteJournal(store)
    await journal.register_bot("alpha", "kraken", "BTC/AUD", "paper", datetime.now(UTC))
    balances = {"AUD": D(10_000), "BTC": D(1)}
    await journal.seed_balances("alpha", balances, "opening", datetime.now(UTC))
    paper = PaperExchange("paper", "BTC/AUD", balances, fee_rate=D("0.001"), slippage_bps=D(0))
    gate = SafeModeGate(
        LimitSet(max_order_notional=D(1000)),
        SafeModeFactors(size_factor=D("0.1"), max_open_orders=1),
    )
    book = BotBook(balances=dict(balances))
    gw = OrderGateway(
        BotIdentity("alpha", "kraken", "BTC/AUD", "BTC", "AUD"),
        paper,
        journal,
        ClientOrderIds(),
        book,
        [gate],
    )
    await gw.sync(MARKET)
    yield gw
    await store.close()


def limit_buy(amount: str, price: str) -> OrderIntent:
    return OrderIntent("BTC/AUD", Side.BUY, OrderType.LIMIT, D(amount), D(price))


async def test_safe_mode_lets_the_first_order_through_and_refuses_a_second_open_one(
    gateway: OrderGateway,
) -> None:
    first = await gateway.submit(limit_buy("0.5", "90"))  # 45 AUD, rests below the market
    second = await gateway.submit(limit_buy("0.5", "89"))

    assert first.outcome == "sent"
    assert second.outcome == "refused"
    assert second.code == "safe_mode_max_open_orders"
    assert second.client_order_id is None  # refused before anything was journaled
    assert len(gateway.book.live_orders) == 1


async def test_safe_mode_refuses_an_order_above_the_scaled_notional(
    gateway: OrderGateway,
) -> None:
    result = await gateway.submit(limit_buy("1.2", "90"))  # 108 AUD > 10 % of 1000

    assert result.outcome == "refused"
    assert result.code == "safe_mode_max_order_notional"
    assert "exceeds the safe-mode limit 100.00" in result.reason
    assert gateway.book.orders_count == 0
    assert gateway.book.last_refusal is not None
