from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bots.errors import ExchangeError, OrderNotFound, OrderRejected, TransientExchangeError
from bots.exchanges import paper as paper_module
from bots.exchanges.base import ExchangeAdapter
from bots.exchanges.paper import PARTIAL_FILL_REASON, PaperExchange
from bots.models import (
    ExchangeOrderStatus,
    MarketSnapshot,
    OrderRequest,
    OrderType,
    Side,
)

D = Decimal
FIXED = datetime(2026, 1, 1, tzinfo=UTC)
OPEN, CLOSED, CANCELED = (
    ExchangeOrderStatus.OPEN,
    ExchangeOrderStatus.CLOSED,
    ExchangeOrderStatus.CANCELED,
)


def make_exchange(aud: str = "10000", btc: str = "1", **kwargs: object) -> PaperExchange:
    options: dict[str, object] = {
        "fee_rate": D("0.001"),
        "slippage_bps": D(10),
        "clock": lambda: FIXED,
    } | kwargs
    return PaperExchange("paper", "BTC/AUD", {"AUD": D(aud), "BTC": D(btc)}, **options)  # type: ignore[arg-type]


def snap(bid: str, ask: str, last: str | None = None, symbol: str = "BTC/AUD") -> MarketSnapshot:
    mid = last or str((D(bid) + D(ask)) / 2)
    return MarketSnapshot(symbol, D(mid), D(bid), D(ask), FIXED)


def market(cid: int, side: Side, amount: str) -> OrderRequest:
    return OrderRequest(cid, "BTC/AUD", side, OrderType.MARKET, D(amount))


def limit(cid: int, side: Side, amount: str, price: str) -> OrderRequest:
    return OrderRequest(cid, "BTC/AUD", side, OrderType.LIMIT, D(amount), D(price))


async def balances(ex: PaperExchange) -> dict[str, tuple[Decimal, Decimal]]:
    return {a: (b.free, b.used) for a, b in (await ex.fetch_balance()).items()}


@pytest.fixture
async def ex() -> PaperExchange:
    exchange = make_exchange()
    await exchange.on_market(snap("99.90", "100.10"))
    return exchange


def test_paper_exchange_is_an_exchange_adapter() -> None:
    assert isinstance(make_exchange(), ExchangeAdapter)


# ----- market orders -------------------------------------------------------------------------


async def test_market_buy_fills_at_ask_plus_slippage_and_pays_the_fee(ex: PaperExchange) -> None:
    order = await ex.create_order(market(1, Side.BUY, "0.5"))
    # 100.10 * 1.001 = 100.2001, rounded up to 100.21
    assert order.status is CLOSED
    assert order.filled == D("0.5")
    assert order.remaining == 0
    (trade,) = order.trades
    assert (trade.amount, trade.price, trade.fee, trade.fee_currency) == (
        D("0.5"),
        D("100.21"),
        D("0.050105"),
        "AUD",
    )
    assert trade.timestamp == FIXED
    assert await balances(ex) == {
        "AUD": (D("10000") - D("50.105") - D("0.050105"), D(0)),
        "BTC": (D("1.5"), D(0)),
    }


async def test_market_sell_fills_at_bid_minus_slippage_and_pays_the_fee(ex: PaperExchange) -> None:
    order = await ex.create_order(market(1, Side.SELL, "0.5"))
    # 99.90 * 0.999 = 99.8001, rounded down to 99.80
    assert order.status is CLOSED
    assert order.trades[0].price == D("99.80")
    assert order.trades[0].fee == D("0.0499")
    assert await balances(ex) == {
        "AUD": (D("10000") + D("49.90") - D("0.0499"), D(0)),
        "BTC": (D("0.5"), D(0)),
    }


async def test_market_buy_with_insufficient_funds_is_rejected_and_balances_unchanged(
    ex: PaperExchange,
) -> None:
    before = await balances(ex)
    with pytest.raises(OrderRejected) as info:
        await ex.create_order(market(1, Side.BUY, "100"))
    assert info.value.code == "insufficient_funds"
    assert "AUD" in info.value.reason
    assert "need 10031.021" in info.value.reason  # 100 * 100.21 + fee 10.021
    assert "available 10000" in info.value.reason
    assert await balances(ex) == before
    with pytest.raises(OrderNotFound):
        await ex.fetch_order(1, "BTC/AUD")


async def test_market_buy_needs_the_fee_on_top_of_the_notional() -> None:
    ex = make_exchange(aud="100.21", slippage_bps=D(0))
    await ex.on_market(snap("100.20", "100.21"))
    with pytest.raises(OrderRejected, match="insufficient AUD"):
        await ex.create_order(market(1, Side.BUY, "1"))


async def test_market_sell_with_insufficient_base_is_rejected(ex: PaperExchange) -> None:
    with pytest.raises(OrderRejected, match=r"insufficient BTC: need 1\.5, available 1$") as info:
        await ex.create_order(market(1, Side.SELL, "1.5"))
    assert info.value.code == "insufficient_funds"


async def test_market_order_before_any_snapshot_is_rejected() -> None:
    ex = make_exchange()
    with pytest.raises(OrderRejected) as info:
        await ex.create_order(market(1, Side.BUY, "0.1"))
    assert info.value.code == "no_market_data"


# ----- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (OrderRequest(1, "ETH/AUD", Side.BUY, OrderType.MARKET, D(1)), "bad_symbol"),
        (market(1, Side.BUY, "0"), "invalid_order"),
        (market(1, Side.BUY, "-1"), "invalid_order"),
        (market(1, Side.BUY, "0.000000001"), "invalid_order"),
        (OrderRequest(1, "BTC/AUD", Side.BUY, OrderType.LIMIT, D(1)), "invalid_order"),
        (limit(1, Side.BUY, "1", "0"), "invalid_order"),
        (limit(1, Side.BUY, "1", "99.999"), "invalid_order"),
    ],
)
async def test_invalid_requests_are_rejected(
    ex: PaperExchange, request_: OrderRequest, code: str
) -> None:
    with pytest.raises(OrderRejected) as info:
        await ex.create_order(request_)
    assert info.value.code == code


async def test_trailing_zeros_do_not_count_as_extra_decimals(ex: PaperExchange) -> None:
    order = await ex.create_order(limit(1, Side.BUY, "0.1000000000", "90.0000"))
    assert order.status is OPEN


async def test_duplicate_client_order_id_is_rejected(ex: PaperExchange) -> None:
    await ex.create_order(limit(7, Side.BUY, "0.1", "90"))
    with pytest.raises(OrderRejected) as info:
        await ex.create_order(limit(7, Side.BUY, "0.1", "80"))
    assert info.value.code == "duplicate_client_order_id"
    assert len(await ex.fetch_open_orders("BTC/AUD")) == 1


# ----- limit orders ----------------------------------------------------------------------------


async def test_limit_buy_rests_open_and_reserves_quote_with_the_fee(ex: PaperExchange) -> None:
    order = await ex.create_order(limit(1, Side.BUY, "1", "90"))
    assert order.status is OPEN
    assert order.filled == 0
    assert order.trades == ()
    assert await balances(ex) == {"AUD": (D("9909.91"), D("90.09")), "BTC": (D(1), D(0))}


async def test_limit_sell_reserves_base(ex: PaperExchange) -> None:
    await ex.create_order(limit(1, Side.SELL, "0.4", "110"))
    assert (await balances(ex))["BTC"] == (D("0.6"), D("0.4"))


async def test_limit_buy_fills_when_ask_crosses_its_price(ex: PaperExchange) -> None:
    await ex.create_order(limit(1, Side.BUY, "1", "90"))
    await ex.on_market(snap("90.10", "90.20"))
    assert (await ex.fetch_order(1, "BTC/AUD")).status is OPEN
    await ex.on_market(snap("89.50", "89.60"))
    order = await ex.fetch_order(1, "BTC/AUD")
    assert order.status is CLOSED
    assert order.trades[0].price == D(90)  # its limit price, not the better ask
    assert order.trades[0].fee == D("0.09")
    assert await balances(ex) == {"AUD": (D("9909.91"), D(0)), "BTC": (D(2), D(0))}


async def test_limit_sell_fills_when_bid_crosses_its_price(ex: PaperExchange) -> None:
    await ex.create_order(limit(1, Side.SELL, "1", "110"))
    await ex.on_market(snap("109.99", "110.50"))
    assert (await ex.fetch_order(1, "BTC/AUD")).status is OPEN
    await ex.on_market(snap("110.00", "110.50"))
    order = await ex.fetch_order(1, "BTC/AUD")
    assert order.status is CLOSED
    assert order.trades[0].price == D(110)
    assert await balances(ex) == {"AUD": (D("10109.89"), D(0)), "BTC": (D(0), D(0))}


async def test_marketable_limit_buy_fills_at_once_at_the_ask(ex: PaperExchange) -> None:
    order = await ex.create_order(limit(1, Side.BUY, "1", "105"))
    assert order.status is CLOSED
    assert order.trades[0].price == D("100.10")
    assert await balances(ex) == {
        "AUD": (D("10000") - D("100.10") - D("0.1001"), D(0)),
        "BTC": (D(2), D(0)),
    }


async def test_marketable_limit_sell_fills_at_once_at_the_bid(ex: PaperExchange) -> None:
    order = await ex.create_order(limit(1, Side.SELL, "1", "95"))
    assert order.status is CLOSED
    assert order.trades[0].price == D("99.90")
    assert (await balances(ex))["BTC"] == (D(0), D(0))


async def test_limit_orders_cannot_spend_reserved_funds(ex: PaperExchange) -> None:
    await ex.create_order(limit(1, Side.BUY, "100", "90"))  # reserves 9009
    with pytest.raises(OrderRejected, match="insufficient AUD") as info:
        await ex.create_order(limit(2, Side.BUY, "12", "90"))  # needs 1081.08 of 991
    assert "available 991.000" in info.value.reason
    assert (await ex.create_order(limit(5, Side.BUY, "11", "90"))).status is OPEN  # 990.99
    await ex.create_order(limit(3, Side.SELL, "1", "120"))
    with pytest.raises(OrderRejected, match="insufficient BTC"):
        await ex.create_order(market(4, Side.SELL, "0.1"))


async def test_limit_order_before_any_snapshot_rests(ex: PaperExchange) -> None:
    fresh = make_exchange()
    order = await fresh.create_order(limit(1, Side.BUY, "1", "1000"))
    assert order.status is OPEN


async def test_resting_orders_fill_in_creation_order_with_unique_ids(ex: PaperExchange) -> None:
    await ex.create_order(limit(1, Side.BUY, "0.1", "95"))
    await ex.create_order(limit(2, Side.BUY, "0.1", "96"))
    await ex.on_market(snap("94", "94.5"))
    one, two = await ex.fetch_order(1, "BTC/AUD"), await ex.fetch_order(2, "BTC/AUD")
    assert one.exchange_order_id != two.exchange_order_id
    assert [one.trades[0].trade_id, two.trades[0].trade_id] == ["paper-t1", "paper-t2"]


# ----- cancel, fetch ---------------------------------------------------------------------------


async def test_cancel_releases_reserved_funds(ex: PaperExchange) -> None:
    before = await balances(ex)
    await ex.create_order(limit(1, Side.BUY, "1", "90"))
    await ex.create_order(limit(2, Side.SELL, "0.5", "120"))
    buy = await ex.cancel_order(1, "BTC/AUD")
    sell = await ex.cancel_order(2, "BTC/AUD")
    assert buy.status is sell.status is CANCELED
    assert buy.reason
    assert await balances(ex) == before
    assert await ex.fetch_open_orders("BTC/AUD") == []


async def test_cancelled_order_no_longer_fills(ex: PaperExchange) -> None:
    await ex.create_order(limit(1, Side.BUY, "1", "90"))
    await ex.cancel_order(1, "BTC/AUD")
    await ex.on_market(snap("80", "80.1"))
    assert (await ex.fetch_order(1, "BTC/AUD")).filled == 0


async def test_cancel_is_idempotent_on_finished_orders(ex: PaperExchange) -> None:
    filled = await ex.create_order(market(1, Side.BUY, "0.1"))
    assert await ex.cancel_order(1, "BTC/AUD") == filled
    await ex.create_order(limit(2, Side.BUY, "0.1", "90"))
    cancelled = await ex.cancel_order(2, "BTC/AUD")
    assert await ex.cancel_order(2, "BTC/AUD") == cancelled


async def test_unknown_orders_are_not_found(ex: PaperExchange) -> None:
    await ex.create_order(limit(1, Side.BUY, "0.1", "90"))
    with pytest.raises(OrderNotFound):
        await ex.cancel_order(99, "BTC/AUD")
    with pytest.raises(OrderNotFound):
        await ex.fetch_order(99, "BTC/AUD")
    with pytest.raises(OrderNotFound):
        await ex.fetch_order(1, "ETH/AUD")


async def test_fetch_open_orders_lists_only_open_orders_of_the_symbol(ex: PaperExchange) -> None:
    await ex.create_order(limit(1, Side.BUY, "0.1", "90"))
    await ex.create_order(limit(2, Side.BUY, "0.1", "91"))
    await ex.create_order(market(3, Side.BUY, "0.1"))
    await ex.cancel_order(2, "BTC/AUD")
    assert [o.client_order_id for o in await ex.fetch_open_orders("BTC/AUD")] == [1]
    assert await ex.fetch_open_orders("ETH/AUD") == []


async def test_snapshots_are_immutable_and_do_not_change_afterwards(ex: PaperExchange) -> None:
    ex.set_partial_fill_ratio(D("0.5"))
    first = await ex.create_order(limit(1, Side.BUY, "1", "95"))
    assert first.filled == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.filled = D(1)  # type: ignore[misc]
    await ex.on_market(snap("94", "94.5"))
    assert first.trades == ()
    assert (await ex.fetch_order(1, "BTC/AUD")).filled == D("0.5")


async def test_snapshot_for_another_symbol_is_refused(ex: PaperExchange) -> None:
    with pytest.raises(ExchangeError, match="ETH/AUD"):
        await ex.on_market(snap("1", "2", symbol="ETH/AUD"))


# ----- drills ----------------------------------------------------------------------------------


async def test_reject_next_rejects_that_many_orders_then_recovers(ex: PaperExchange) -> None:
    ex.reject_next(2, reason="drill: venue says no")
    for cid in (1, 2):
        with pytest.raises(OrderRejected, match="drill: venue says no") as info:
            await ex.create_order(market(cid, Side.BUY, "0.1"))
        assert info.value.code == "drill"
        with pytest.raises(OrderNotFound):
            await ex.fetch_order(cid, "BTC/AUD")
    assert (await ex.create_order(market(1, Side.BUY, "0.1"))).status is CLOSED


async def test_fail_next_raises_transient_without_creating_the_order(ex: PaperExchange) -> None:
    before = await balances(ex)
    ex.fail_next(1)
    with pytest.raises(TransientExchangeError, match="drill: paper exchange unavailable"):
        await ex.create_order(limit(1, Side.BUY, "1", "90"))
    with pytest.raises(OrderNotFound):
        await ex.fetch_order(1, "BTC/AUD")
    assert await balances(ex) == before
    assert (await ex.create_order(limit(1, Side.BUY, "1", "90"))).status is OPEN


async def test_drills_refuse_negative_counts(ex: PaperExchange) -> None:
    with pytest.raises(ValueError):
        ex.reject_next(-1)
    with pytest.raises(ValueError):
        ex.fail_next(-1)


async def test_partial_fill_ratio_cancels_market_remainder(ex: PaperExchange) -> None:
    ex.set_partial_fill_ratio(D("0.4"))
    order = await ex.create_order(market(1, Side.BUY, "1"))
    assert order.status is CANCELED
    assert order.reason == PARTIAL_FILL_REASON
    assert order.filled == D("0.4")
    assert order.remaining == D("0.6")
    assert await balances(ex) == {
        "AUD": (D("10000") - D("40.084") - D("0.040084"), D(0)),
        "BTC": (D("1.4"), D(0)),
    }


async def test_partial_fills_leave_a_limit_order_open_until_filled(ex: PaperExchange) -> None:
    ex.set_partial_fill_ratio(D("0.4"))
    await ex.create_order(limit(1, Side.BUY, "1", "90"))
    fills = []
    for _ in range(4):
        await ex.on_market(snap("89", "89.5"))
        order = await ex.fetch_order(1, "BTC/AUD")
        fills.append((order.status, order.filled, (await balances(ex))["AUD"][1]))
    assert fills == [
        (OPEN, D("0.4"), D("0.6") * D("90.09")),
        (OPEN, D("0.8"), D("0.2") * D("90.09")),
        (CLOSED, D("1.0"), D(0)),
        (CLOSED, D("1.0"), D(0)),
    ]
    assert len({t.trade_id for t in order.trades}) == 3
    assert sum(t.amount for t in order.trades) == D(1)


async def test_partial_fill_ratio_must_be_in_range(ex: PaperExchange) -> None:
    for bad in (D(0), D("-0.1"), D("1.01")):
        with pytest.raises(ValueError):
            ex.set_partial_fill_ratio(bad)


# ----- money invariants ------------------------------------------------------------------------


async def test_fee_is_rounded_down_to_eight_decimals() -> None:
    ex = make_exchange(slippage_bps=D(0), fee_rate=D("0.0026"))
    await ex.on_market(snap("3.33", "3.33"))
    order = await ex.create_order(market(1, Side.BUY, "0.00000333"))
    assert order.trades[0].fee == D("0.00000002")  # 0.0000110889 * 0.0026 = 0.0000000288...


async def test_random_trading_never_overdraws_and_balances_add_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(paper_module, "KEEP_CLOSED_ORDERS", 10_000)  # every order, to add up
    rng = random.Random(5)
    ex = make_exchange(aud="1000", btc="10", fee_rate=D("0.0026"), slippage_bps=D(15))
    price = D(100)
    cid = 0
    codes: list[str] = []
    for _ in range(400):
        price = max(D(1), price + D(rng.randint(-300, 300)) / 100)
        await ex.on_market(snap(str(price - D("0.05")), str(price + D("0.05"))))
        if rng.random() < 0.3:
            ex.set_partial_fill_ratio(D(rng.choice(["0.25", "0.5", "1"])))
        cid += 1
        side = rng.choice([Side.BUY, Side.SELL])
        amount = D(rng.randint(1, 300)) / 100
        if rng.random() < 0.3:
            request = market(cid, side, str(amount))
        else:
            offset = D(rng.randint(-500, 500)) / 100
            request = limit(cid, side, str(amount), str(price + offset))
        try:
            await ex.create_order(request)
        except OrderRejected as exc:
            codes.append(exc.code)
        if rng.random() < 0.2:
            for order in await ex.fetch_open_orders("BTC/AUD"):
                if rng.random() < 0.5:
                    await ex.cancel_order(order.client_order_id, "BTC/AUD")
        for balance in (await ex.fetch_balance()).values():
            assert balance.free >= 0
            assert balance.used >= 0
    quote, base = D(1000), D(10)
    for n in range(1, cid + 1):
        try:
            order = await ex.fetch_order(n, "BTC/AUD")
        except OrderNotFound:
            continue
        sign = 1 if order.side is Side.BUY else -1
        for t in order.trades:
            base += sign * t.amount
            quote -= sign * t.amount * t.price + t.fee
    final = await ex.fetch_balance()
    assert (final["AUD"].total, final["BTC"].total) == (quote, base)
    assert set(codes) == {"insufficient_funds"}


@pytest.mark.parametrize(
    ("symbol", "kwargs"),
    [
        ("BTCAUD", {}),
        ("BTC/AUD", {"fee_rate": D(-1)}),
        ("BTC/AUD", {"fee_rate": D(1)}),
        ("BTC/AUD", {"slippage_bps": D(-1)}),
        ("BTC/AUD", {"amount_decimals": -1}),
    ],
)
def test_invalid_construction_is_refused(symbol: str, kwargs: dict[str, object]) -> None:
    options: dict[str, object] = {"fee_rate": D(0), "slippage_bps": D(0)} | kwargs
    with pytest.raises(ValueError):
        PaperExchange("paper", symbol, {}, **options)  # type: ignore[arg-type]


async def test_missing_assets_start_at_zero() -> None:
    ex = PaperExchange("paper", "ETH/AUD", {"USD": D(5)}, fee_rate=D(0), slippage_bps=D(0))
    assert await balances(ex) == {
        "USD": (D(5), D(0)),
        "ETH": (D(0), D(0)),
        "AUD": (D(0), D(0)),
    }
    await ex.close()


# ----- memory: a long-running paper account forgets what no one asks for any more ------------


async def test_only_the_newest_closed_orders_are_kept_and_open_ones_always(
    ex: PaperExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paper_module, "KEEP_CLOSED_ORDERS", 3)
    await ex.create_order(limit(1, Side.BUY, "0.01", "90"))  # rests: never forgotten
    for cid in range(2, 8):
        await ex.create_order(market(cid, Side.BUY, "0.01"))  # fills and closes at once

    for cid in (2, 3, 4):
        with pytest.raises(OrderNotFound):
            await ex.fetch_order(cid, "BTC/AUD")
    assert [(await ex.fetch_order(c, "BTC/AUD")).filled for c in (5, 6, 7)] == [D("0.01")] * 3
    assert (await ex.fetch_order(1, "BTC/AUD")).status is ExchangeOrderStatus.OPEN


async def test_forgotten_trades_move_the_start_of_the_history_the_venue_knows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(paper_module, "KEEP_TRADES", 2)
    seconds = iter(range(100))
    ex = make_exchange(clock=lambda: FIXED + timedelta(seconds=next(seconds)))
    await ex.on_market(snap("99.90", "100.10"))
    began = ex.history_since
    for cid in range(1, 5):
        await ex.create_order(market(cid, Side.BUY, "0.01"))

    trades = await ex.fetch_my_trades("BTC/AUD")
    assert [t.client_order_id for t in trades] == [3, 4]
    assert ex.history_since is not None
    assert began is not None
    assert began < ex.history_since <= trades[0].trade.timestamp

