"""Paper exchanges on one shared paper account: the venue's self-trade prevention between the
bots on it, while each bot's balances stay its own."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bots.errors import OrderRejected
from bots.exchanges.paper import PaperExchange
from bots.exchanges.paper_account import PaperAccount, would_cross
from bots.models import ExchangeOrderStatus, MarketSnapshot, OrderRequest, OrderType, Side

D = Decimal
FIXED = datetime(2026, 1, 1, tzinfo=UTC)
MARKET = MarketSnapshot("BTC/AUD", D(100), D("99.90"), D("100.10"), FIXED)


def venue(account: PaperAccount | None, bot: str) -> PaperExchange:
    return PaperExchange(
        "paper-kraken",
        "BTC/AUD",
        {"AUD": D(10_000), "BTC": D(1)},
        fee_rate=D("0.001"),
        slippage_bps=D(0),
        clock=lambda: FIXED,
        account=account.seat(bot) if account is not None else None,
    )


def limit(cid: int, side: Side, price: str, amount: str = "0.1") -> OrderRequest:
    return OrderRequest(cid, "BTC/AUD", side, OrderType.LIMIT, D(amount), D(price))


def market(cid: int, side: Side, amount: str = "0.1") -> OrderRequest:
    return OrderRequest(cid, "BTC/AUD", side, OrderType.MARKET, D(amount))


@pytest.fixture
async def pair() -> tuple[PaperAccount, PaperExchange, PaperExchange]:
    """Bots "a" and "b" on the paper account "desk", both having seen MARKET."""
    account = PaperAccount("kraken", "desk")
    a, b = venue(account, "a"), venue(account, "b")
    for each in (a, b):
        await each.on_market(MARKET)
    return account, a, b


@pytest.mark.parametrize(
    ("side", "price", "resting_side", "resting_price", "crosses"),
    [
        (Side.BUY, "101", Side.SELL, "101", True),
        (Side.BUY, "100.99", Side.SELL, "101", False),
        (Side.SELL, "99", Side.BUY, "99", True),
        (Side.SELL, "99.01", Side.BUY, "99", False),
        (Side.BUY, None, Side.SELL, "500", True),
        (Side.SELL, None, Side.BUY, "1", True),
        (Side.BUY, "500", Side.BUY, "99", False),
    ],
)
def test_an_order_crosses_a_resting_one_on_the_other_side_at_or_through_its_price(
    side: Side, price: str | None, resting_side: Side, resting_price: str, crosses: bool
) -> None:
    given = D(price) if price is not None else None
    assert would_cross(side, given, resting_side, D(resting_price)) is crosses


async def test_the_venue_rejects_an_order_that_would_match_a_siblings_resting_order(
    pair: tuple[PaperAccount, PaperExchange, PaperExchange],
) -> None:
    _, a, b = pair
    await b.create_order(limit(1, Side.SELL, "101"))  # rests above the market

    with pytest.raises(OrderRejected) as rejected:
        await a.create_order(limit(2, Side.BUY, "101.5"))

    assert rejected.value.code == "self_trade"
    assert rejected.value.reason == (
        "self-trade prevention: buy at 101.5 would match b's resting sell 1 at 101 on the same "
        "account 'desk' (kraken, BTC/AUD); the incoming order is rejected"
    )
    assert await a.fetch_open_orders("BTC/AUD") == []  # nothing made, nothing reserved
    assert (await a.fetch_balance())["AUD"].used == 0
    assert [o.client_order_id for o in await b.fetch_open_orders("BTC/AUD")] == [1]


async def test_a_market_order_is_rejected_while_a_sibling_rests_on_the_other_side(
    pair: tuple[PaperAccount, PaperExchange, PaperExchange],
) -> None:
    _, a, b = pair
    await b.create_order(limit(1, Side.BUY, "99"))

    with pytest.raises(OrderRejected) as rejected:
        await a.create_order(market(2, Side.SELL))

    assert rejected.value.code == "self_trade"
    assert "sell at market would match b's resting buy 1 at 99" in rejected.value.reason


async def test_orders_that_do_not_cross_rest_side_by_side(
    pair: tuple[PaperAccount, PaperExchange, PaperExchange],
) -> None:
    account, a, b = pair
    await b.create_order(limit(1, Side.SELL, "101"))
    await a.create_order(limit(2, Side.BUY, "99"))
    await a.create_order(limit(3, Side.SELL, "102"))  # same side as b's: nothing to match

    resting = {(o.bot, o.client_order_id) for o in account.resting("BTC/AUD")}
    assert resting == {("b", 1), ("a", 2), ("a", 3)}


async def test_a_bots_own_resting_order_is_not_a_self_trade_between_bots(
    pair: tuple[PaperAccount, PaperExchange, PaperExchange],
) -> None:
    _, a, _ = pair
    await a.create_order(limit(1, Side.SELL, "101"))

    snapshot = await a.create_order(market(2, Side.BUY))

    assert snapshot.status is ExchangeOrderStatus.CLOSED  # filled against the market


async def test_an_order_stops_resting_once_filled_or_cancelled(
    pair: tuple[PaperAccount, PaperExchange, PaperExchange],
) -> None:
    account, a, b = pair
    await b.create_order(limit(1, Side.SELL, "101"))
    await b.create_order(limit(2, Side.SELL, "105"))

    await b.cancel_order(2, "BTC/AUD")
    await b.on_market(MarketSnapshot("BTC/AUD", D(101), D("101.00"), D("101.20"), FIXED))

    assert account.resting("BTC/AUD") == []
    await a.on_market(MARKET)
    snapshot = await a.create_order(limit(3, Side.BUY, "106"))  # crosses nothing now
    assert snapshot.status is ExchangeOrderStatus.CLOSED


async def test_a_limit_order_that_fills_at_once_never_rests(
    pair: tuple[PaperAccount, PaperExchange, PaperExchange],
) -> None:
    account, a, b = pair
    filled = await b.create_order(limit(1, Side.SELL, "99"))  # at or below the bid: fills

    assert filled.status is ExchangeOrderStatus.CLOSED
    assert account.resting("BTC/AUD") == []
    await a.create_order(limit(2, Side.BUY, "99.5"))


async def test_each_bot_keeps_its_own_balances_on_a_shared_account(
    pair: tuple[PaperAccount, PaperExchange, PaperExchange],
) -> None:
    _, a, b = pair
    await a.create_order(market(1, Side.BUY, "0.5"))

    a_balances, b_balances = await a.fetch_balance(), await b.fetch_balance()

    assert a_balances["BTC"].total == D("1.5")
    assert b_balances["BTC"].total == D(1)
    assert b_balances["AUD"].total == D(10_000)


async def test_a_venue_of_its_own_never_rejects_for_self_trade() -> None:
    alone = venue(None, "a")
    await alone.on_market(MARKET)
    await alone.create_order(limit(1, Side.SELL, "101"))

    snapshot = await alone.create_order(limit(2, Side.BUY, "102"))

    assert snapshot.status is ExchangeOrderStatus.CLOSED
