"""The pre-trade risk gate: each limit from both sides, safe mode, daily loss and the global limits.

Real books and intents, a fake clock, no I/O. Unless a test says otherwise the bot is "alpha",
trading BTC/AUD with the last price at 100 AUD, and every limit not under test is unset (or, for
the global ones, far away).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bots.book import BotBook
from bots.journal import JournalOrder, OrderStatus
from bots.ledger import Position
from bots.models import OrderIntent, OrderType, Side
from coordinator.config.models import GlobalLimits, LimitSet, SafeModeFactors
from coordinator.safety.risk import RiskContext, RiskGate

D = Decimal
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SAFE = SafeModeFactors(size_factor=D("0.1"), max_open_orders=1)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def global_limits(
    exposure: str = "1000000", positions: int = 1000, per_minute: int = 100000
) -> GlobalLimits:
    return GlobalLimits(
        max_total_exposure=D(exposure),
        max_concurrent_positions=positions,
        max_orders_per_minute=per_minute,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def context(clock: FakeClock) -> RiskContext:
    return RiskContext(global_limits(), clock)


def make_book(
    price: str | None = "100",
    base: str = "0",
    entry: str | None = None,
    realized: str = "0",
    fees: str = "0",
) -> BotBook:
    avg = D(0) if base == "0" else D(entry or price or "0")
    return BotBook(
        position=Position(D(base), avg, D(realized), D(fees)),
        last_price=D(price) if price is not None else None,
    )


def make_gate(
    context: RiskContext,
    limits: LimitSet,
    book: BotBook | None = None,
    *,
    bot: str = "alpha",
    symbol: str = "BTC/AUD",
    safe_mode: SafeModeFactors | None = None,
) -> tuple[RiskGate, BotBook]:
    book = book if book is not None else make_book()
    context.register(bot, symbol, symbol.split("/")[1], book)
    return RiskGate(bot, limits, context, safe_mode), book


def buy(amount: str, price: str | None = None, symbol: str = "BTC/AUD") -> OrderIntent:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderIntent(symbol, Side.BUY, kind, D(amount), D(price) if price else None)


def sell(amount: str, price: str | None = None, symbol: str = "BTC/AUD") -> OrderIntent:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderIntent(symbol, Side.SELL, kind, D(amount), D(price) if price else None)


def open_orders(book: BotBook, count: int) -> None:
    for coid in range(1, count + 1):
        book.live_orders[coid] = JournalOrder(
            coid, "alpha", "kraken", "BTC/AUD", Side.BUY, OrderType.LIMIT, D(1), D(90),
            OrderStatus.OPEN, START,
        )  # fmt: skip


def journaled(book: BotBook, clock: FakeClock, *seconds_ago: float) -> None:
    """Orders journaled that many seconds ago, oldest first (as the gateway appends them)."""
    for ago in sorted(seconds_ago, reverse=True):
        book.recent_orders.append(clock.now - timedelta(seconds=ago))


def code(gate: RiskGate, intent: OrderIntent, book: BotBook) -> str | None:
    refusal = gate.check(intent, book)
    return refusal.code if refusal is not None else None


# -- symbol and price --------------------------------------------------------------------------


def test_an_order_for_a_symbol_outside_allowed_symbols_is_refused(context: RiskContext) -> None:
    gate, book = make_gate(context, LimitSet(allowed_symbols=("BTC/AUD",)))

    refusal = gate.check(buy("1", symbol="ETH/AUD"), book)

    assert gate.check(buy("1"), book) is None
    assert refusal is not None
    assert refusal.code == "symbol_not_allowed"
    assert "ETH/AUD is not in allowed_symbols (BTC/AUD)" in refusal.reason


def test_a_market_order_with_no_market_price_is_refused_as_unvalued(context: RiskContext) -> None:
    gate, book = make_gate(context, LimitSet(), make_book(price=None))

    assert code(gate, buy("1"), book) == "no_price"
    assert code(gate, buy("1", "100"), book) is None  # a limit price values it


def test_a_limit_order_with_no_market_price_to_collar_it_against_is_refused(
    context: RiskContext,
) -> None:
    gate, book = make_gate(context, LimitSet(price_collar_pct=D(5)), make_book(price=None))

    refusal = gate.check(buy("1", "100"), book)

    assert refusal is not None
    assert refusal.code == "no_price"
    assert "price_collar_pct 5 %" in refusal.reason


@pytest.mark.parametrize(
    ("intent", "expected"),
    [
        (buy("1", "105"), None),  # exactly 5 % above
        (sell("1", "95"), None),  # exactly 5 % below
        (buy("1", "105.01"), "price_collar"),
        (sell("1", "94.99"), "price_collar"),
        (buy("1"), None),  # a market order has no price to collar
    ],
    ids=["at-upper", "at-lower", "over-upper", "over-lower", "market"],
)
def test_a_limit_price_beyond_the_price_collar_is_refused(
    context: RiskContext, intent: OrderIntent, expected: str | None
) -> None:
    gate, book = make_gate(context, LimitSet(price_collar_pct=D(5)))

    assert code(gate, intent, book) == expected


def test_the_price_collar_reason_names_the_distance_and_the_limit(context: RiskContext) -> None:
    gate, book = make_gate(context, LimitSet(price_collar_pct=D(5)))

    refusal = gate.check(buy("1", "110"), book)

    assert refusal is not None
    assert refusal.reason == (
        "limit price 110 is 10 % from the last price 100, beyond price_collar_pct 5 %"
    )


# -- size and position ---------------------------------------------------------------------------


def test_an_order_above_max_order_notional_is_refused_with_the_limit_in_the_reason(
    context: RiskContext,
) -> None:
    gate, book = make_gate(context, LimitSet(max_order_notional=D(1000)))

    refusal = gate.check(buy("10.0001"), book)  # valued at the last price, 100

    assert gate.check(buy("10"), book) is None  # 1000: at the limit
    assert gate.check(buy("20", "50"), book) is None  # a limit order is valued at its price
    assert refusal is not None
    assert refusal.code == "max_order_notional"
    assert refusal.reason == (
        "order notional 1000.01 AUD (10.0001 at 100) exceeds max_order_notional 1000 AUD"
    )


@pytest.mark.parametrize(
    ("base", "intent", "expected"),
    [
        ("0.5", buy("0.5"), None),  # to 1: at the limit
        ("0.5", buy("0.50000001"), "max_position_base"),
        ("-0.5", sell("0.5"), None),  # to -1: shorts are held to the same limit
        ("-0.5", sell("0.6"), "max_position_base"),
    ],
    ids=["long-at", "long-over", "short-at", "short-over"],
)
def test_an_order_that_would_take_the_position_past_max_position_base_is_refused(
    context: RiskContext, base: str, intent: OrderIntent, expected: str | None
) -> None:
    gate, book = make_gate(context, LimitSet(max_position_base=D(1)), make_book(base=base))

    assert code(gate, intent, book) == expected


def test_an_order_that_would_take_the_position_past_max_position_notional_is_refused(
    context: RiskContext,
) -> None:
    gate, book = make_gate(context, LimitSet(max_position_notional=D(5000)), make_book(base="40"))

    refusal = gate.check(buy("10.01"), book)

    assert gate.check(buy("10"), book) is None  # 50 x 100 = 5000: at the limit
    assert refusal is not None
    assert refusal.code == "max_position_notional"
    assert "position would be worth 5001 AUD (50.01 at 100)" in refusal.reason
    assert "max_position_notional 5000 AUD" in refusal.reason


@pytest.mark.parametrize("intent", [sell("1"), sell("3"), sell("1", "100")], ids=str)
def test_an_order_that_reduces_a_position_over_the_limits_passes_the_position_limits(
    context: RiskContext, intent: OrderIntent
) -> None:
    limits = LimitSet(max_position_base=D(1), max_position_notional=D(100))
    gate, book = make_gate(context, limits, make_book(base="3"))  # over both (limits lowered)

    assert gate.check(intent, book) is None


def test_an_order_that_flips_the_position_past_the_limit_is_not_treated_as_reducing(
    context: RiskContext,
) -> None:
    gate, book = make_gate(context, LimitSet(max_position_base=D(1)), make_book(base="3"))

    assert code(gate, sell("4"), book) is None  # to -1: within the limit
    assert code(gate, sell("5"), book) == "max_position_base"  # to -2: a new, too big short


# -- open orders and rates -----------------------------------------------------------------------


def test_an_order_beyond_max_open_orders_is_refused(context: RiskContext) -> None:
    gate, book = make_gate(context, LimitSet(max_open_orders=2))
    open_orders(book, 1)
    assert gate.check(buy("1"), book) is None

    open_orders(book, 2)
    refusal = gate.check(buy("1"), book)

    assert refusal is not None
    assert refusal.code == "max_open_orders"
    assert refusal.reason == "2 order(s) open already, at max_open_orders 2"


def test_an_order_beyond_max_orders_per_minute_is_refused(
    context: RiskContext, clock: FakeClock
) -> None:
    gate, book = make_gate(context, LimitSet(max_orders_per_minute=3))
    journaled(book, clock, 50, 10)
    assert gate.check(buy("1"), book) is None

    journaled(book, clock, 0)
    refusal = gate.check(buy("1"), book)

    assert refusal is not None
    assert refusal.code == "max_orders_per_minute"
    assert refusal.reason == "3 order(s) in the last 60 s, at max_orders_per_minute 3"


def test_orders_journaled_60_seconds_ago_or_earlier_do_not_count_against_the_rate(
    context: RiskContext, clock: FakeClock
) -> None:
    gate, book = make_gate(context, LimitSet(max_orders_per_minute=3))
    journaled(book, clock, 3600, 61, 60, 59.9, 1)
    assert gate.check(buy("1"), book) is None  # two within the window

    clock.advance(seconds=0.2)  # the one 59.9 s old leaves the window as well

    journaled(book, clock, 0)
    assert gate.check(buy("1"), book) is None


def test_the_global_orders_per_minute_counts_every_bots_orders(
    clock: FakeClock,
) -> None:
    context = RiskContext(global_limits(per_minute=4), clock)
    alpha, alpha_book = make_gate(context, LimitSet(max_orders_per_minute=100))
    _, beta_book = make_gate(context, LimitSet(), bot="beta", symbol="ETH/AUD")
    journaled(alpha_book, clock, 30, 20)
    journaled(beta_book, clock, 90, 10)  # one of them too old to count
    assert alpha.check(buy("1"), alpha_book) is None  # 3 in the last minute

    journaled(beta_book, clock, 5)
    refusal = alpha.check(buy("1"), alpha_book)

    assert refusal is not None
    assert refusal.code == "global_max_orders_per_minute"
    assert "4 order(s) by all bots in the last 60 s" in refusal.reason
    clock.advance(seconds=40)  # alpha's two age out: 2 left
    assert alpha.check(buy("1"), alpha_book) is None


# -- daily loss ----------------------------------------------------------------------------------


def test_an_order_is_refused_once_todays_loss_reaches_max_daily_loss(
    context: RiskContext,
) -> None:
    book = make_book(price="1000", base="1")  # baseline taken at registration: PnL 0
    gate, _ = make_gate(context, LimitSet(max_daily_loss=D(100)), book)

    book.last_price = D("900.01")  # -99.99
    assert gate.check(buy("0.01"), book) is None
    book.last_price = D(900)  # -100
    refusal = gate.check(buy("0.01"), book)

    assert refusal is not None
    assert refusal.code == "max_daily_loss"
    assert "today's PnL -100 AUD" in refusal.reason
    assert "max_daily_loss 100 AUD" in refusal.reason


def test_realised_losses_and_fees_count_towards_the_daily_loss(context: RiskContext) -> None:
    book = make_book()
    gate, _ = make_gate(context, LimitSet(max_daily_loss=D(100)), book)

    book.position = Position(D(0), D(0), D(-95), D("4.99"))
    assert gate.check(buy("0.01"), book) is None
    book.position = Position(D(0), D(0), D(-95), D(5))

    assert code(gate, buy("0.01"), book) == "max_daily_loss"  # a flat bot cannot reduce


def test_an_order_that_reduces_the_position_passes_the_daily_loss_stop(
    context: RiskContext,
) -> None:
    book = make_book(price="1000", base="1")
    gate, _ = make_gate(context, LimitSet(max_daily_loss=D(100)), book)
    book.last_price = D(500)

    assert code(gate, sell("0.5"), book) is None
    assert code(gate, sell("1"), book) is None
    assert code(gate, sell("1.5"), book) == "max_daily_loss"  # would open a short
    assert code(gate, buy("0.1"), book) == "max_daily_loss"


def test_an_open_position_with_no_price_to_value_todays_pnl_is_refused(
    context: RiskContext,
) -> None:
    gate, book = make_gate(context, LimitSet(max_daily_loss=D(100)), make_book(None, base="1"))

    assert code(gate, buy("0.1", "100"), book) == "no_price"
    assert code(gate, sell("0.1", "100"), book) is None  # reducing needs no valuation


def test_a_new_utc_day_takes_a_new_daily_loss_baseline(
    context: RiskContext, clock: FakeClock
) -> None:
    book = make_book(price="1000", base="1")
    gate, _ = make_gate(context, LimitSet(max_daily_loss=D(100)), book)
    book.last_price = D(850)
    clock.now = datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC)
    assert code(gate, buy("0.01"), book) == "max_daily_loss"

    clock.now = datetime(2024, 5, 2, 0, 0, 1, tzinfo=UTC)
    assert code(gate, buy("0.01"), book) is None  # today starts at -150
    assert context.baselines()["alpha"] == {"date": "2024-05-02", "value": "-150"}

    book.last_price = D(750)  # another -100 today
    assert code(gate, buy("0.01"), book) == "max_daily_loss"


def test_restored_baselines_keep_the_days_losses_across_a_restart(clock: FakeClock) -> None:
    book = make_book(price="1000", base="1")
    before = RiskContext(global_limits(), clock)
    make_gate(before, LimitSet(max_daily_loss=D(100)), book)
    book.last_price = D(850)
    saved = json.loads(json.dumps(before.baselines()))

    after = RiskContext(global_limits(), clock)  # the restart: the book is loaded at -150
    gate, _ = make_gate(after, LimitSet(max_daily_loss=D(100)), book)
    assert code(gate, buy("0.01"), book) is None  # a fresh baseline forgets the loss...
    after.restore_baselines(saved)

    assert code(gate, buy("0.01"), book) == "max_daily_loss"  # ...the restored one does not
    assert after.daily_pnl("alpha") == D(-150)


def test_malformed_and_stale_baselines_are_not_restored(
    context: RiskContext, caplog: pytest.LogCaptureFixture
) -> None:
    make_gate(context, LimitSet(), make_book(realized="-10"))
    data = {
        "alpha": {"date": "2024-05-01", "value": "not a number"},
        "beta": {"date": "yesterday", "value": "1"},
        "gamma": ["2024-05-01", "1"],
        "delta": {"date": "2024-05-01", "value": 1.5},
        "epsilon": {"date": "2024-04-30", "value": "5"},  # yesterday's: stale, not malformed
        "zeta": {"date": "2024-05-01", "value": "NaN"},
    }

    with caplog.at_level(logging.WARNING, logger="coordinator.safety.risk"):
        context.restore_baselines(data)

    assert context.baselines() == {"alpha": {"date": "2024-05-01", "value": "-10"}}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 5
    assert all("malformed risk baseline" in message for message in warned)


# -- across bots ---------------------------------------------------------------------------------


def test_total_exposure_is_held_per_quote_currency(clock: FakeClock) -> None:
    context = RiskContext(global_limits(exposure="10000"), clock)
    make_gate(context, LimitSet(), make_book(base="95"), bot="cad", symbol="BTC/CAD")  # 9500 CAD
    make_gate(context, LimitSet(), make_book(base="10"), bot="beta")  # 1000 AUD
    gate, book = make_gate(context, LimitSet())

    refusal = gate.check(buy("90.0001"), book)

    assert gate.check(buy("90"), book) is None  # 10000 AUD: at the limit; the CAD is apart
    assert refusal is not None
    assert refusal.code == "max_total_exposure"
    assert "total AUD exposure would be 10000.01 AUD" in refusal.reason
    assert "(other bots 1000)" in refusal.reason


def test_an_order_that_does_not_raise_exposure_passes_over_the_total(clock: FakeClock) -> None:
    context = RiskContext(global_limits(exposure="1000"), clock)
    make_gate(context, LimitSet(), make_book(base="20"), bot="beta")  # 2000 AUD: over already
    gate, book = make_gate(context, LimitSet(), make_book(base="5"))

    assert code(gate, sell("5"), book) is None
    assert code(gate, buy("0.01"), book) == "max_total_exposure"


def test_a_flat_bot_may_not_open_a_position_when_max_concurrent_positions_are_held(
    clock: FakeClock,
) -> None:
    context = RiskContext(global_limits(positions=2), clock)
    make_gate(context, LimitSet(), make_book(base="1"), bot="beta")
    gamma, gamma_book = make_gate(context, LimitSet(), make_book(base="-1"), bot="gamma")
    alpha, alpha_book = make_gate(context, LimitSet())

    refusal = alpha.check(buy("1"), alpha_book)

    assert refusal is not None
    assert refusal.code == "max_concurrent_positions"
    assert "2 bot(s) hold a position" in refusal.reason
    _, delta_book = make_gate(context, LimitSet(), make_book(base="1"), bot="delta")  # 3 > 2
    assert gamma.check(sell("1"), gamma_book) is None  # a holder opens no new position
    gamma_book.position = delta_book.position = Position()  # two close: a slot frees up
    assert alpha.check(buy("1"), alpha_book) is None


def test_the_sums_across_bots_follow_every_change_of_another_bots_position_and_price(
    clock: FakeClock,
) -> None:
    context = RiskContext(global_limits(exposure="10000", positions=1), clock)
    _, beta_book = make_gate(context, LimitSet(), make_book(base="10"), bot="beta")  # 1000 AUD
    gate, book = make_gate(context, LimitSet())
    assert context.total_exposure("AUD") == D(1000)

    beta_book.last_price = D(500)  # 5000 AUD
    beta_book.position = Position(D(12), D(100))  # a fill: 6000 AUD

    assert context.total_exposure("AUD") == D(6000)
    assert context.total_exposure("AUD", excluding="beta") == 0
    assert code(gate, buy("40.0001"), book) == "max_concurrent_positions"
    beta_book.position = Position()  # beta closes: no exposure, no position held
    assert context.total_exposure("AUD") == 0
    assert context.open_positions() == 0
    assert gate.check(buy("99"), book) is None


def test_registering_a_bot_again_replaces_its_share_of_the_sums(clock: FakeClock) -> None:
    context = RiskContext(global_limits(), clock)
    old_book = make_book(base="10")
    make_gate(context, LimitSet(), old_book, bot="beta")
    journaled(old_book, clock, 5)

    new_book = make_book(base="3")
    make_gate(context, LimitSet(), new_book, bot="beta")  # the bot's book, loaded again
    old_book.position = Position(D(50), D(100))  # the old book no longer counts
    old_book.recent_orders.append(clock.now)

    assert context.total_exposure("AUD") == D(300)
    assert context.open_positions() == 1
    assert context.orders_last_minute() == 0


def test_orders_journaled_out_of_time_order_age_out_by_their_own_time(clock: FakeClock) -> None:
    context = RiskContext(global_limits(), clock)
    _, alpha_book = make_gate(context, LimitSet())
    _, beta_book = make_gate(context, LimitSet(), bot="beta")
    journaled(alpha_book, clock, 10)
    journaled(beta_book, clock, 59, 30)  # committed after alpha's, stamped before it

    clock.advance(seconds=1.5)  # the 59 s one is 60.5 s old now
    assert context.orders_last_minute() == 2
    clock.advance(seconds=29)
    assert context.orders_last_minute() == 1


# -- safe mode -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "base", "at", "over", "expected_code", "figure"),
    [
        (LimitSet(max_order_notional=D(1000)), "0", buy("1"), buy("1.01"),
         "max_order_notional", "max_order_notional 100 AUD (safe-mode figure: 0.1 x 1000)"),
        (LimitSet(max_position_base=D(1)), "0.05", buy("0.05"), buy("0.06"),
         "max_position_base", "max_position_base 0.1 BTC (safe-mode figure: 0.1 x 1)"),
        (LimitSet(max_position_notional=D(50000)), "40", buy("10"), buy("10.01"),
         "max_position_notional",
         "max_position_notional 5000 AUD (safe-mode figure: 0.1 x 50000)"),
    ],
    ids=["order-notional", "position-base", "position-notional"],
)  # fmt: skip
def test_safe_mode_scales_the_size_limits_by_size_factor(
    context: RiskContext,
    limits: LimitSet,
    base: str,
    at: OrderIntent,
    over: OrderIntent,
    expected_code: str,
    figure: str,
) -> None:
    gate, book = make_gate(context, limits, make_book(base=base), safe_mode=SAFE)

    refusal = gate.check(over, book)

    assert gate.check(at, book) is None
    assert refusal is not None
    assert refusal.code == expected_code
    assert refusal.reason.endswith(figure)


def test_safe_mode_caps_open_orders_at_its_own_figure(context: RiskContext) -> None:
    gate, book = make_gate(context, LimitSet(max_open_orders=10), safe_mode=SAFE)
    assert gate.check(buy("0.1"), book) is None

    open_orders(book, 1)
    refusal = gate.check(buy("0.1"), book)

    assert refusal is not None
    assert refusal.code == "max_open_orders"
    assert refusal.reason == (
        "1 order(s) open already, at max_open_orders 1 "
        "(safe-mode figure: safe_mode.max_open_orders, own limit 10)"
    )


def test_safe_mode_keeps_an_own_open_orders_limit_that_is_already_tighter(
    context: RiskContext,
) -> None:
    factors = SafeModeFactors(size_factor=D(1), max_open_orders=5)
    gate, book = make_gate(context, LimitSet(max_open_orders=2), safe_mode=factors)
    open_orders(book, 2)

    refusal = gate.check(buy("0.1"), book)

    assert refusal is not None
    assert refusal.reason == "2 order(s) open already, at max_open_orders 2"


def test_safe_mode_caps_open_orders_even_when_the_bot_sets_no_limit(context: RiskContext) -> None:
    gate, book = make_gate(context, LimitSet(), safe_mode=SAFE)
    open_orders(book, 1)

    assert code(gate, buy("0.1"), book) == "max_open_orders"


# -- general -------------------------------------------------------------------------------------


def test_limits_left_unset_are_not_checked(context: RiskContext, clock: FakeClock) -> None:
    gate, book = make_gate(context, LimitSet(), make_book(base="1000", realized="-1000000"))
    open_orders(book, 500)
    journaled(book, clock, *range(50))

    assert gate.check(buy("1000", "1"), book) is None


def test_the_cheapest_most_fundamental_check_answers_first(context: RiskContext) -> None:
    limits = LimitSet(
        allowed_symbols=("BTC/AUD",),
        price_collar_pct=D(5),
        max_order_notional=D(10),
        max_position_base=D(1),
        max_open_orders=1,
    )
    gate, book = make_gate(context, limits)
    open_orders(book, 1)

    assert code(gate, buy("5", "200", symbol="ETH/AUD"), book) == "symbol_not_allowed"
    assert code(gate, buy("5", "200"), book) == "price_collar"
    assert code(gate, buy("5"), book) == "max_order_notional"
    assert code(gate, buy("0.05"), book) == "max_open_orders"


def test_a_bot_not_registered_with_the_context_is_refused(context: RiskContext) -> None:
    gate = RiskGate("ghost", LimitSet(), context)

    assert code(gate, buy("1"), make_book()) == "not_registered"
