"""Self-trade prevention: which bots share an account, and the gate that keeps one bot from
crossing a sibling's resting order. Real configs, books and intents; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bots.book import BotBook
from bots.journal import JournalOrder, OrderStatus
from bots.models import OrderIntent, OrderType, Side
from coordinator.config.models import BotConfig
from coordinator.safety.self_trade import (
    LiveAccountKey,
    PaperAccountKey,
    SelfTradeRegistry,
    account_key,
)

D = Decimal
AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def bot(name: str, **fields: Any) -> BotConfig:
    """A paper grid bot on kraken BTC/AUD unless `fields` say otherwise (`account` goes into the
    paper section, `api_key_env` into the credentials)."""
    account = fields.pop("account", None)
    api_key_env = fields.pop("api_key_env", None)
    document: dict[str, Any] = {
        "name": name,
        "exchange": "kraken",
        "symbol": "BTC/AUD",
        "mode": "paper",
        "market_data": "offline",
        "tick_interval_seconds": 1,
        "strategy": {"name": "grid"},
        "paper": {"account": account} if account else {},
        "credentials": {"api_key_env": api_key_env} if api_key_env else {},
        **fields,
    }
    return BotConfig.model_validate(document)


def live(name: str, api_key_env: str = "KRAKEN_KEY", **fields: Any) -> BotConfig:
    return bot(name, mode="live", market_data="exchange", api_key_env=api_key_env, **fields)


def resting(
    book: BotBook,
    coid: int,
    side: Side,
    price: str | None,
    status: OrderStatus = OrderStatus.OPEN,
    symbol: str = "BTC/AUD",
) -> None:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    book.live_orders[coid] = JournalOrder(
        coid, "x", "kraken", symbol, side, kind, D(1), D(price) if price else None, status, AT
    )


def buy(price: str | None = None) -> OrderIntent:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderIntent("BTC/AUD", Side.BUY, kind, D("0.1"), D(price) if price else None)


def sell(price: str | None = None) -> OrderIntent:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderIntent("BTC/AUD", Side.SELL, kind, D("0.1"), D(price) if price else None)


# -- who shares an account ------------------------------------------------------------------------


def test_live_bots_share_an_account_by_exchange_and_api_key_variable() -> None:
    assert (
        account_key(live("a")) == account_key(live("b")) == LiveAccountKey("kraken", "KRAKEN_KEY")
    )
    assert account_key(live("c", api_key_env="OTHER_KEY")) != account_key(live("a"))
    assert account_key(live("d", exchange="ndax")) != account_key(live("a"))


def test_paper_bots_share_an_account_only_when_they_name_one() -> None:
    assert account_key(bot("a")) == PaperAccountKey("kraken", "a", shared=False)
    assert account_key(bot("a")) != account_key(bot("b"))
    assert account_key(bot("a", account="desk")) == account_key(bot("b", account="desk"))
    # a bot named like someone's shared account is still an account of its own
    assert account_key(bot("desk")) != account_key(bot("b", account="desk"))


def test_a_paper_bot_never_shares_the_real_account_of_a_live_bot() -> None:
    assert account_key(bot("a", api_key_env="KRAKEN_KEY")) != account_key(live("b"))
    # read-only on the offline feed trades on its paper account, not the real one
    offline = bot("c", mode="read-only", api_key_env="KRAKEN_KEY")
    assert isinstance(account_key(offline), PaperAccountKey)


def test_the_registry_names_each_bots_account_and_siblings_on_its_symbol() -> None:
    registry = SelfTradeRegistry()
    for config in (
        bot("a", account="desk"),
        bot("b", account="desk"),
        bot("c", account="desk", symbol="ETH/AUD"),
        bot("solo"),
        live("l1"),
        live("l2"),
    ):
        registry.register(config, BotBook())

    assert registry.siblings("a") == ["b"]
    assert registry.siblings("c") == []  # same account, other symbol: nothing to cross
    assert registry.siblings("solo") == []
    assert registry.siblings("l1") == ["l2"]
    assert registry.account_of("a") == "paper account 'desk' on kraken"
    assert registry.account_of("solo") == "paper account of solo"
    assert registry.account_of("l1") == "kraken key $KRAKEN_KEY"
    assert registry.account_of("ghost") is None


# -- the gate -------------------------------------------------------------------------------------


def test_a_buy_at_or_above_a_siblings_resting_sell_is_refused_naming_it() -> None:
    registry = SelfTradeRegistry()
    a, b = BotBook(), BotBook()
    gate = registry.register(bot("a", account="desk"), a)
    registry.register(bot("b", account="desk"), b)
    resting(b, 42, Side.SELL, "101")

    at = gate.check(buy("101"), a)
    above = gate.check(buy("102"), a)

    assert at is not None
    assert above is not None
    assert at.code == "self_trade"
    assert at.reason == (
        "a buy at 101 would cross b's resting sell (client id 42) at 101 on the same account "
        "(paper account 'desk' on kraken, BTC/AUD)"
    )
    assert gate.check(buy("100.99"), a) is None


def test_a_sell_at_or_below_a_siblings_resting_buy_is_refused() -> None:
    registry = SelfTradeRegistry()
    a, b = BotBook(), BotBook()
    gate = registry.register(bot("a", account="desk"), a)
    registry.register(bot("b", account="desk"), b)
    resting(b, 7, Side.BUY, "99")

    refusal = gate.check(sell("98"), a)

    assert refusal is not None
    assert refusal.code == "self_trade"
    assert gate.check(sell("99.01"), a) is None


def test_a_market_order_is_refused_while_a_sibling_rests_on_the_other_side() -> None:
    registry = SelfTradeRegistry()
    a, b = BotBook(), BotBook()
    gate = registry.register(bot("a", account="desk"), a)
    registry.register(bot("b", account="desk"), b)
    resting(b, 7, Side.SELL, "150")

    refusal = gate.check(buy(), a)

    assert refusal is not None
    assert refusal.reason.startswith("a buy at market would cross b's resting sell")
    assert gate.check(sell(), a) is None  # same side as the resting order: nothing to match


def test_a_siblings_pending_limit_order_counts_and_its_market_order_does_not() -> None:
    registry = SelfTradeRegistry()
    a, b = BotBook(), BotBook()
    gate = registry.register(bot("a", account="desk"), a)
    registry.register(bot("b", account="desk"), b)
    resting(b, 1, Side.SELL, None, OrderStatus.PENDING_SUBMIT)  # a market sell being sent

    assert gate.check(buy("200"), a) is None
    resting(b, 2, Side.SELL, "101", OrderStatus.PENDING_SUBMIT)  # a limit sell being sent
    refusal = gate.check(buy("200"), a)
    assert refusal is not None
    assert "client id 2" in refusal.reason


def test_the_bots_own_resting_orders_never_count() -> None:
    registry = SelfTradeRegistry()
    a = BotBook()
    gate = registry.register(bot("a", account="desk"), a)
    registry.register(bot("b", account="desk"), BotBook())
    resting(a, 1, Side.SELL, "101")

    assert gate.check(buy("200"), a) is None


def test_bots_on_other_accounts_or_symbols_never_count() -> None:
    registry = SelfTradeRegistry()
    a = BotBook()
    gate = registry.register(bot("a", account="desk"), a)
    for name, config in {
        "other": bot("other", account="other-desk"),
        "own": bot("own"),
        "eth": bot("eth", account="desk", symbol="ETH/AUD"),
    }.items():
        book = BotBook()
        registry.register(config, book)
        resting(book, 1, Side.SELL, "101", symbol=config.symbol)
        assert gate.check(buy("200"), a) is None, name


def test_a_gate_sees_a_sibling_registered_after_it() -> None:
    registry = SelfTradeRegistry()
    a, b = BotBook(), BotBook()
    gate = registry.register(live("a"), a)
    assert gate.check(buy(), a) is None

    registry.register(live("b"), b)
    resting(b, 9, Side.SELL, "101")

    refusal = gate.check(buy(), a)
    assert refusal is not None
    assert "kraken key $KRAKEN_KEY" in refusal.reason


def test_registering_a_bot_again_replaces_its_book() -> None:
    registry = SelfTradeRegistry()
    old, new, a = BotBook(), BotBook(), BotBook()
    gate = registry.register(bot("a", account="desk"), a)
    registry.register(bot("b", account="desk"), old)
    resting(old, 1, Side.SELL, "101")

    registry.register(bot("b", account="desk"), new)

    assert gate.check(buy("200"), a) is None
    assert registry.siblings("a") == ["b"]


# -- the shared paper accounts --------------------------------------------------------------------


def test_bots_naming_one_paper_account_get_seats_on_one_account() -> None:
    registry = SelfTradeRegistry()

    a, b = (
        registry.paper_seat(bot("a", account="desk")),
        registry.paper_seat(bot("b", account="desk")),
    )

    assert a is not None
    assert b is not None
    assert a.account is b.account
    assert (a.bot, b.bot) == ("a", "b")
    assert registry.paper_seat(bot("solo")) is None  # an account of its own: nobody to cross
    assert registry.paper_seat(live("l", account="desk")) is None  # the venue's own rules
