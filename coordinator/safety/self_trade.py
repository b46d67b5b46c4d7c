"""Self-trade prevention: bots on one account never cross each other's resting orders.

Two bots trading one symbol on one account would, if one's order matched the other's resting
order, trade with themselves: a wash trade, fees paid for nothing, and a fill that moves two
books against each other. Which bots share an account:

* bots that trade on the exchange share it when they use the same exchange and API key
  variable (`LiveAccountKey`: the key by which `coordinator/accounts.py` shares one ccxt
  client, kept here so the safety layer does not import ccxt);
* paper bots only when they say so, by naming one `paper.account` (on one exchange, which the
  config loader checks); a paper bot that names none has an account of its own.

`SelfTradeRegistry` (owned by the `SafetyLayer`) keeps the books of the bots per (account,
symbol) and hands each bot a `SelfTradeGate`, an `OrderGate` in the bot's gate list: it runs
before the journal write and again right before the send, and refuses (code `self_trade`) an
order that would cross a sibling's live order (`bots/exchanges/paper_account.py:would_cross`).
Only the siblings' live (pending or open) limit orders count: a market order takes liquidity
and does not rest, and a bot's own orders are the bot's business, not a self-trade between bots.

The registry also builds the shared paper accounts (`paper_seat`), so the paper venue rejects
what the gate would refuse even when an order gets past the gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bots.book import BotBook
from bots.exchanges.paper_account import SELF_TRADE, AccountSeat, PaperAccount, would_cross
from bots.gateway import Refusal
from bots.journal import JournalOrder, OrderStatus
from bots.models import OrderIntent, OrderType
from coordinator.config.models import BotConfig, BotMode, MarketDataSource

__all__ = [
    "SELF_TRADE",
    "LiveAccountKey",
    "PaperAccountKey",
    "SelfTradeGate",
    "SelfTradeRegistry",
    "account_key",
    "describe_account",
]

_RESTING = frozenset({OrderStatus.PENDING_SUBMIT, OrderStatus.OPEN})


@dataclass(frozen=True, slots=True)
class LiveAccountKey:
    """A real account: `coordinator/accounts.py:AccountKey`'s (exchange, API key variable)."""

    exchange: str
    api_key_env: str  # the variable's name identifies the account, never its value


@dataclass(frozen=True, slots=True)
class PaperAccountKey:
    exchange: str
    name: str  # the `paper.account` named, or the bot's own name
    shared: bool  # False: the bot's own account (it named none), which nobody else can share


Account = LiveAccountKey | PaperAccountKey


def account_key(bot: BotConfig) -> Account:
    """The account a bot trades on. A bot trades on its real account when it is not a paper
    bot and reads the exchange's market data (`coordinator/wiring.py:trades_on_exchange`)."""
    if bot.mode is not BotMode.PAPER and bot.market_data is MarketDataSource.EXCHANGE:
        return LiveAccountKey(bot.exchange, bot.credentials.api_key_env or "")
    if bot.paper.account is not None:
        return PaperAccountKey(bot.exchange, bot.paper.account, shared=True)
    return PaperAccountKey(bot.exchange, bot.name, shared=False)


def describe_account(key: Account) -> str:
    if isinstance(key, LiveAccountKey):
        return f"{key.exchange} key ${key.api_key_env}"
    if key.shared:
        return f"paper account {key.name!r} on {key.exchange}"
    return f"paper account of {key.name}"


class SelfTradeGate:
    """One bot's self-trade check (an `OrderGate`): cheap, a look at the few live orders of the
    bots on its (account, symbol); nothing at all for a bot alone there."""

    def __init__(self, bot: str, account: Account, books: Mapping[str, BotBook]) -> None:
        self.bot = bot
        self.account = account
        self._books = books  # the registry's live view of every book on (account, symbol)

    def check(self, intent: OrderIntent, book: BotBook) -> Refusal | None:
        if len(self._books) < 2:
            return None
        price = intent.price if intent.type is OrderType.LIMIT else None
        for sibling, other in self._books.items():
            if sibling == self.bot:
                continue
            for order in other.live_orders.values():
                resting = order.price
                if resting is None or not _rests(order, intent.symbol):
                    continue
                if would_cross(intent.side, price, order.side, resting):
                    return self._refusal(intent, sibling, order)
        return None

    def _refusal(self, intent: OrderIntent, sibling: str, order: JournalOrder) -> Refusal:
        what = f"at {intent.price}" if intent.type is OrderType.LIMIT else "at market"
        return Refusal(
            SELF_TRADE,
            f"a {intent.side.value} {what} would cross {sibling}'s resting {order.side.value} "
            f"(client id {order.client_order_id}) at {order.price} on the same account "
            f"({describe_account(self.account)}, {intent.symbol})",
        )


def _rests(order: JournalOrder, symbol: str) -> bool:
    return order.status in _RESTING and order.type is OrderType.LIMIT and order.symbol == symbol


class SelfTradeRegistry:
    """The books of the bots per (account, symbol), their gates, and the shared paper accounts."""

    def __init__(self) -> None:
        self._groups: dict[tuple[Account, str], dict[str, BotBook]] = {}
        self._where: dict[str, tuple[Account, str]] = {}
        self._paper: dict[PaperAccountKey, PaperAccount] = {}

    def register(self, bot: BotConfig, book: BotBook) -> SelfTradeGate:
        """Add (or replace) a bot's book and return its gate. A gate sees the siblings
        registered after it too: it reads the group, not a copy."""
        self._forget(bot.name)
        account = account_key(bot)
        where = (account, bot.symbol)
        group = self._groups.setdefault(where, {})
        group[bot.name] = book
        self._where[bot.name] = where
        return SelfTradeGate(bot.name, account, group)

    def _forget(self, bot: str) -> None:
        where = self._where.pop(bot, None)
        if where is None:
            return
        group = self._groups[where]
        group.pop(bot, None)

    def account_of(self, bot: str) -> str | None:
        where = self._where.get(bot)
        return describe_account(where[0]) if where is not None else None

    def siblings(self, bot: str) -> list[str]:
        """The other bots on the bot's account and symbol, by name."""
        where = self._where.get(bot)
        if where is None:
            return []
        return sorted(name for name in self._groups[where] if name != bot)

    def paper_seat(self, bot: BotConfig) -> AccountSeat | None:
        """The bot's seat on the shared paper account it names; None for a bot that names none
        (nobody to cross) or that trades on its real account (the venue's own rules apply)."""
        key = account_key(bot)
        if not isinstance(key, PaperAccountKey) or not key.shared:
            return None
        account = self._paper.get(key)
        if account is None:
            account = self._paper[key] = PaperAccount(key.exchange, key.name)
        return account.seat(bot.name)
