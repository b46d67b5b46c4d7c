"""Build each bot's parts from its config: account, market feed, book, strategy, gates."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from bots.book import BotBook
from bots.exchanges.base import ExchangeAdapter
from bots.exchanges.ccxt_adapter import CcxtExchange
from bots.exchanges.paper import PaperExchange
from bots.exchanges.paper_account import AccountSeat
from bots.feeds.base import MarketFeed
from bots.feeds.ccxt_public import CcxtPublicFeed, make_public_exchange
from bots.feeds.simulated import SimulatedFeed
from bots.gateway import BotIdentity, ReadOnlyGate
from bots.strategies.base import Strategy
from bots.strategies.registry import STRATEGIES
from coordinator.accounts import Accounts
from coordinator.config.models import BotConfig, BotMode, MarketDataSource
from coordinator.safety.layer import SafetyLayer
from coordinator.store.journal import SqliteJournal
from coordinator.supervisor import BotParts

log = logging.getLogger(__name__)


class PublicExchanges:
    """One public (keyless) ccxt instance per exchange id, shared by every feed on it, with one
    SSL context for all; closed at shutdown."""

    def __init__(self, rate_limits: Mapping[str, int] | None = None) -> None:
        self._instances: dict[str, Any] = {}
        self._ssl_context: ssl.SSLContext | None = None
        self._rate_limits = dict(rate_limits or {})  # accounts.drill_rate_limits

    def get(self, exchange_id: str) -> Any:
        if exchange_id not in self._instances:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            self._instances[exchange_id] = make_public_exchange(
                exchange_id, self._ssl_context, self._rate_limits.get(exchange_id)
            )
        return self._instances[exchange_id]

    async def close(self) -> None:
        for exchange_id, instance in self._instances.items():
            try:
                await instance.close()
            except Exception as exc:  # closing is best effort; say so
                log.warning("closing the %s market data connection failed: %r", exchange_id, exc)
        self._instances.clear()


async def build_bot_parts(
    bot: BotConfig,
    journal: SqliteJournal,
    public: PublicExchanges,
    accounts: Accounts,
    safety: SafetyLayer,
    clock: Callable[[], datetime],
) -> BotParts:
    book = BotBook.from_snapshot(await journal.load_book(bot.name))
    prepare: Callable[[], Awaitable[None]] | None = None
    if not trades_on_exchange(bot):
        seat = safety.self_trade.paper_seat(bot)  # None unless it shares a paper account
        adapter: ExchangeAdapter = await _paper_account(bot, book, journal, clock, seat)
        feed = _build_feed(bot, public, clock)
    else:
        client = accounts.client_for(bot)  # MissingCredentials names the variables
        ccxt_adapter = CcxtExchange(bot.exchange, client, clock=clock)
        for order in book.live_orders.values():
            # The venue's id from the journal: a live order from an earlier run is looked up by
            # it, not by a search of the venue's lists, which lag and page.
            if order.exchange_order_id:
                ccxt_adapter.remember(order.client_order_id, order.exchange_order_id)
        adapter = ccxt_adapter
        feed = CcxtPublicFeed(client, bot.symbol)  # the account's own client: one rate limit

        async def read_opening_balances() -> None:
            if not book.balances:
                await _seed_from_exchange(bot, book, journal, ccxt_adapter, clock)

        prepare = read_opening_balances
    spec = STRATEGIES[bot.strategy.name]
    params = bot.strategy.params

    def make_strategy() -> Strategy:
        return spec.build(params, bot.symbol)

    gates, risk_gate, safe_mode_risk_gate = safety.gates_for(bot, book)
    if bot.mode is BotMode.READ_ONLY:
        gates.append(ReadOnlyGate())
    return BotParts(
        config=bot,
        identity=BotIdentity(bot.name, bot.exchange, bot.symbol, bot.base_asset, bot.quote_asset),
        adapter=adapter,
        feed=feed,
        book=book,
        make_strategy=make_strategy,
        gates=gates,
        risk_gate=risk_gate,
        safe_mode_risk_gate=safe_mode_risk_gate,
        send_guard=safety.board,
        prepare=prepare,
    )


def trades_on_exchange(bot: BotConfig) -> bool:
    """Whether the bot works on its real exchange account. A paper bot never does; nor does a
    bot on the offline feed (the loader allows that only for paper bots, and `--read-only`
    keeps an offline paper bot on its paper account with every order refused)."""
    return bot.mode is not BotMode.PAPER and bot.market_data is MarketDataSource.EXCHANGE


async def _paper_account(
    bot: BotConfig,
    book: BotBook,
    journal: SqliteJournal,
    clock: Callable[[], datetime],
    seat: AccountSeat | None = None,
) -> PaperExchange:
    if not book.balances:
        opening = dict(bot.paper.initial_balances)
        await journal.seed_balances(bot.name, opening, "paper account opening balance", clock())
        book.balances = opening
        log.info("%s: paper account opened with %s", bot.name, _show_balances(opening))
    return PaperExchange(
        f"paper-{bot.exchange}",
        bot.symbol,
        book.balances,
        fee_rate=bot.paper.fee_rate,
        slippage_bps=bot.paper.slippage_bps,
        amount_decimals=bot.paper.amount_decimals,
        price_decimals=bot.feed.price_decimals,
        clock=clock,
        account=seat,
    )


async def _seed_from_exchange(
    bot: BotConfig,
    book: BotBook,
    journal: SqliteJournal,
    adapter: CcxtExchange,
    clock: Callable[[], datetime],
) -> None:
    """A live bot's first start: its balances of the pair's two assets as the exchange reports
    them, recorded as adjustments, so later balances are these plus the bot's fills."""
    balances = await adapter.fetch_balance()
    opening = {
        asset: balances[asset].total if asset in balances else Decimal(0)
        for asset in (bot.base_asset, bot.quote_asset)
    }
    await journal.seed_balances(
        bot.name, opening, f"balance read from {bot.exchange} at the bot's first start", clock()
    )
    book.balances = dict(opening)
    log.info("%s: balances read from %s: %s", bot.name, bot.exchange, _show_balances(opening))


def _build_feed(
    bot: BotConfig, public: PublicExchanges, clock: Callable[[], datetime]
) -> MarketFeed:
    if bot.market_data is MarketDataSource.EXCHANGE:
        return CcxtPublicFeed(public.get(bot.exchange), bot.symbol)
    return SimulatedFeed(
        bot.symbol,
        bot.feed.start_price,
        drift_per_hour=bot.feed.drift_per_hour,
        volatility_per_hour=bot.feed.volatility_per_hour,
        spread_bps=bot.feed.spread_bps,
        seed=bot.feed.seed,
        step_seconds=bot.tick_interval_seconds,
        price_decimals=bot.feed.price_decimals,
        clock=clock,
    )


def _show_balances(balances: dict[str, Any]) -> str:
    return ", ".join(f"{amount} {asset}" for asset, amount in sorted(balances.items()))
