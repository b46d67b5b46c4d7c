from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bots.exchanges.paper import PaperExchange
from bots.models import CancelIntent, MarketSnapshot, OrderIntent, OrderRequest, OrderType, Side
from bots.strategies.base import FillView, OpenOrderView, TickContext
from bots.strategies.grid import GridStrategy
from bots.strategies.params import GridParams
from bots.strategies.registry import STRATEGIES

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SYMBOL = "BTC/AUD"


def make(levels: int = 2, spacing: str = "1", amount: str = "0.1") -> GridStrategy:
    params = GridParams(levels=levels, spacing_pct=D(spacing), order_amount=D(amount))
    return GridStrategy(params, SYMBOL)


def ctx(
    last: str = "100",
    aud: str = "10000",
    btc: str = "10",
    open_orders: tuple[OpenOrderView, ...] = (),
    fills: tuple[FillView, ...] = (),
) -> TickContext:
    market = MarketSnapshot(SYMBOL, D(last), D(last) - D("0.05"), D(last) + D("0.05"), T0)
    return TickContext(market, T0, D(btc), {"AUD": D(aud), "BTC": D(btc)}, open_orders, fills)


def ladder(decisions: Sequence[object]) -> list[tuple[Side, Decimal | None, str]]:
    return [(d.side, d.price, d.tag) for d in decisions if isinstance(d, OrderIntent)]


def test_first_tick_lays_a_ladder_around_the_last_price() -> None:
    decisions = make(levels=2, spacing="1").on_tick(ctx(last="100"))
    assert all(
        d.type is OrderType.LIMIT and d.amount == D("0.1") and d.symbol == SYMBOL
        for d in decisions
        if isinstance(d, OrderIntent)
    )
    assert ladder(decisions) == [
        (Side.BUY, D("99.00"), "grid:buy:1"),
        (Side.SELL, D("101.00"), "grid:sell:1"),
        (Side.BUY, D("98.00"), "grid:buy:2"),
        (Side.SELL, D("102.00"), "grid:sell:2"),
    ]


def test_prices_round_away_from_the_centre() -> None:
    decisions = make(levels=1, spacing="1").on_tick(ctx(last="100.555"))
    # 99.54945 -> 99.54 (down), 101.56055 -> 101.57 (up)
    assert [p for _, p, _ in ladder(decisions)] == [D("99.54"), D("101.57")]


def test_price_decimals_are_honoured() -> None:
    params = GridParams(levels=1, spacing_pct=D("0.5"), order_amount=D(1))
    decisions = GridStrategy(params, SYMBOL, 0).on_tick(ctx(last="65432", aud="100000"))
    assert [p for _, p, _ in ladder(decisions)] == [D(65104), D(65760)]


def test_open_ladder_without_fills_is_left_alone() -> None:
    open_order = OpenOrderView(1, Side.BUY, OrderType.LIMIT, D("0.1"), D(99), D(0), "grid:buy:1")
    assert make().on_tick(ctx(open_orders=(open_order,))) == []


def test_grid_recentres_and_relays_the_ladder_after_a_fill() -> None:
    grid = make(levels=2, spacing="1")
    open_orders = (
        OpenOrderView(11, Side.BUY, OrderType.LIMIT, D("0.1"), D(98), D(0), "grid:buy:2"),
        OpenOrderView(12, Side.SELL, OrderType.LIMIT, D("0.1"), D(101), D(0), "grid:sell:1"),
    )
    fills = (
        FillView(9, Side.BUY, D("0.05"), D(99), "grid:buy:1"),
        FillView(10, Side.BUY, D("0.1"), D("98.50"), "grid:buy:1"),
    )
    decisions = grid.on_tick(ctx(last="98.7", open_orders=open_orders, fills=fills))
    assert decisions[:2] == [CancelIntent(11), CancelIntent(12)]
    assert ladder(decisions[2:]) == [
        (Side.BUY, D("97.51"), "grid:buy:1"),  # 97.515 down
        (Side.SELL, D("99.49"), "grid:sell:1"),  # 99.485 up
        (Side.BUY, D("96.53"), "grid:buy:2"),
        (Side.SELL, D("100.47"), "grid:sell:2"),
    ]
    assert grid.state() == {"centre": "98.50"}


def test_buys_are_limited_by_the_quote_balance() -> None:
    # 99 fits, 99 + 98 = 197 does not
    decisions = make(levels=3, spacing="1", amount="1").on_tick(ctx(aud="196.99", btc="0"))
    assert ladder(decisions) == [(Side.BUY, D("99.00"), "grid:buy:1")]


def test_sells_are_limited_by_the_base_balance() -> None:
    decisions = make(levels=3, spacing="1", amount="1").on_tick(ctx(aud="0", btc="2.5"))
    assert [tag for *_, tag in ladder(decisions)] == ["grid:sell:1", "grid:sell:2"]


def test_no_buys_at_or_below_zero() -> None:
    decisions = make(levels=3, spacing="40").on_tick(ctx(btc="0"))
    assert [p for _, p, _ in ladder(decisions)] == [D("60.00"), D("20.00")]


def test_state_round_trips_and_bad_state_is_ignored() -> None:
    grid = make()
    assert grid.state() == {"centre": None}
    grid.on_tick(ctx(last="100.5"))
    saved = json.loads(json.dumps(grid.state()))
    restored = make()
    restored.restore(saved)
    assert restored.centre == D("100.5")
    for bad in ({}, {"centre": "abc"}, {"centre": 5}, {"centre": "-1"}, {"centre": "NaN"}):
        restored.restore(bad)
        assert restored.centre is None


def test_registry_builds_it_from_params_and_symbol() -> None:
    spec = STRATEGIES["grid"]
    params = spec.params_model.model_validate(
        {"levels": 3, "spacing_pct": "0.5", "order_amount": "0.01"}
    )
    strategy = spec.build(params, SYMBOL)
    assert isinstance(strategy, GridStrategy)
    assert strategy.name == "grid"


# ----- the grid trading on the paper exchange --------------------------------------------------


class _Loop:
    """A minimal bot: feed the market to the exchange, tell the strategy, apply its decisions."""

    def __init__(self, strategy: GridStrategy, exchange: PaperExchange) -> None:
        self.strategy = strategy
        self.exchange = exchange
        self.tags: dict[int, str] = {}
        self.trades_seen: dict[int, int] = {}
        self.fills: list[FillView] = []
        self.now = T0

    async def tick(self, last: str) -> None:
        price = D(last)
        self.now += timedelta(seconds=1)
        market = MarketSnapshot(SYMBOL, price, price - D("0.05"), price + D("0.05"), self.now)
        await self.exchange.on_market(market)
        new_fills: list[tuple[int, FillView]] = []
        for cid, tag in self.tags.items():
            order = await self.exchange.fetch_order(cid, SYMBOL)
            for trade in order.trades[self.trades_seen.get(cid, 0) :]:
                seq = int(trade.trade_id.rsplit("-t", 1)[1])
                new_fills.append((seq, FillView(cid, order.side, trade.amount, trade.price, tag)))
            self.trades_seen[cid] = len(order.trades)
        fills = [fill for _, fill in sorted(new_fills, key=lambda pair: pair[0])]
        self.fills.extend(fills)
        open_orders = [
            OpenOrderView(o.client_order_id, o.side, o.type, o.amount, o.price, o.filled, "")
            for o in await self.exchange.fetch_open_orders(SYMBOL)
        ]
        balances = {a: b.total for a, b in (await self.exchange.fetch_balance()).items()}
        context = TickContext(market, self.now, balances["BTC"], balances, open_orders, fills)
        for decision in self.strategy.on_tick(context):
            if isinstance(decision, CancelIntent):
                await self.exchange.cancel_order(decision.client_order_id, SYMBOL)
                continue
            cid = len(self.tags) + 1
            self.tags[cid] = decision.tag
            request = OrderRequest(
                cid, decision.symbol, decision.side, decision.type, decision.amount, decision.price
            )
            await self.exchange.create_order(request)


async def test_grid_realises_pnl_when_price_oscillates() -> None:
    exchange = PaperExchange(
        "paper", SYMBOL, {"AUD": D(1000)}, fee_rate=D("0.001"), slippage_bps=D(0)
    )
    loop = _Loop(make(levels=2, spacing="1", amount="0.1"), exchange)
    path = ["100", "99.5", "98.9", "99.5", "100.1", "99.4", "98.9", "99.6", "100.1", "100"]
    for last in path:
        await loop.tick(last)

    assert [(f.side, f.price) for f in loop.fills] == [
        (Side.BUY, D(99)),  # down: the first buy level
        (Side.SELL, D("99.99")),  # up: one spacing above the buy
        (Side.BUY, D("98.99")),  # down again: one spacing below the sell
        (Side.SELL, D("99.98")),  # 98.99 * 1.01 = 99.9799, rounded up
    ]
    balance = await exchange.fetch_balance()
    assert balance["BTC"].total == 0  # position went up and back down
    # two round trips of 0.1 BTC, each earning ~0.099 AUD of spread less ~0.02 AUD of fees
    assert balance["AUD"].total == D("1000.158204")
    assert balance["AUD"].total > 1000
    assert len(await exchange.fetch_open_orders(SYMBOL)) == 2  # the ladder is laid again
