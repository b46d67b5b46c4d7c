"""The parts of the risk gate (`risk.py`) that are not checks.

A bot's limits as its risk gate applies them: safe mode laid over, each able to name itself.

Safe mode tightens, never loosens: the size limits (order notional, position base and notional)
are scaled by `size_factor` (at most 1), and open orders are capped at the smaller of the bot's
own limit and `safe_mode.max_open_orders` (the cap applies even when the bot sets none). The
daily-loss stop, the rates, the collar, the market data age and the symbols are the bot's own
in every mode.

And the figures read off a book: PnL, exposure, orders in a time window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from bots.book import BotBook
from coordinator.config.models import LimitSet, SafeModeFactors

ZERO = Decimal(0)
RATE_WINDOW = timedelta(seconds=60)


def fmt(value: Decimal, places: int | None = None) -> str:
    """A Decimal for an operator: plain notation (no exponent), no trailing zeros, exact unless
    `places` asks for rounding."""
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = f"{value.normalize():f}"
    return "0" if text == "-0" else text


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit's value and where it came from, so a refusal can say which figure it broke."""

    name: str
    value: Decimal
    safe_mode_note: str = ""  # e.g. "0.1 x 1000": set when the value is the safe-mode figure

    def describe(self, unit: str = "") -> str:
        text = f"{self.name} {fmt(self.value)}" + (f" {unit}" if unit else "")
        if self.safe_mode_note:
            text += f" (safe-mode figure: {self.safe_mode_note})"
        return text


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    max_order_notional: Limit | None
    max_position_base: Limit | None
    max_position_notional: Limit | None
    max_open_orders: Limit | None
    max_orders_per_minute: Limit | None
    max_daily_loss: Limit | None
    price_collar_pct: Limit | None
    allowed_symbols: tuple[str, ...] | None
    max_market_data_age_seconds: Limit | None = None

    @classmethod
    def build(cls, limits: LimitSet, safe_mode: SafeModeFactors | None = None) -> EffectiveLimits:
        return cls(
            max_order_notional=_scaled("max_order_notional", limits.max_order_notional, safe_mode),
            max_position_base=_scaled("max_position_base", limits.max_position_base, safe_mode),
            max_position_notional=_scaled(
                "max_position_notional", limits.max_position_notional, safe_mode
            ),
            max_open_orders=_open_orders(limits.max_open_orders, safe_mode),
            max_orders_per_minute=_plain("max_orders_per_minute", limits.max_orders_per_minute),
            max_daily_loss=_plain("max_daily_loss", limits.max_daily_loss),
            price_collar_pct=_plain("price_collar_pct", limits.price_collar_pct),
            allowed_symbols=limits.allowed_symbols,
            max_market_data_age_seconds=_plain(
                "max_market_data_age_seconds", limits.max_market_data_age_seconds
            ),
        )


def _plain(name: str, value: Decimal | int | float | None) -> Limit | None:
    # str() first: a float duration reads as written (0.1, not 0.1000000000000000055...).
    return Limit(name, Decimal(str(value))) if value is not None else None


def _scaled(name: str, own: Decimal | None, safe_mode: SafeModeFactors | None) -> Limit | None:
    if own is None or safe_mode is None:
        return _plain(name, own)
    factor = safe_mode.size_factor
    return Limit(name, own * factor, f"{fmt(factor)} x {fmt(own)}")


def _open_orders(own: int | None, safe_mode: SafeModeFactors | None) -> Limit | None:
    if safe_mode is None or (own is not None and own <= safe_mode.max_open_orders):
        return _plain("max_open_orders", own)
    note = "safe_mode.max_open_orders" + (f", own limit {own}" if own is not None else "")
    return Limit("max_open_orders", Decimal(safe_mode.max_open_orders), note)


# -- figures read off a book ----------------------------------------------------------------------


def book_pnl(book: BotBook) -> Decimal | None:
    """Realised PnL minus fees plus the unrealised PnL at the last price, in the quote asset.

    None when a position is open and there is no market price to value it: a guess (the entry
    price) would make a baseline taken now disagree with every later figure."""
    position = book.position
    unrealized = ZERO
    if position.base:
        if book.last_price is None:
            return None
        unrealized = position.unrealized_pnl(book.last_price)
    return position.realized_pnl - position.fees_paid + unrealized


def book_exposure(book: BotBook) -> Decimal:
    """|base| at the last price; before the first price (just after a start-up) at the entry
    price, so an unpriced position still counts rather than counting as nothing."""
    base = abs(book.position.base)
    if not base:
        return ZERO
    price = book.last_price if book.last_price is not None else book.position.avg_entry_price
    return base * price


def orders_since(times: deque[datetime], since: datetime) -> int:
    """How many of `times` (in the order they were journaled) are later than `since`.

    The rate window only moves forward, so entries at or before `since` are dropped from the
    left as they age out and the count is the deque's length: O(1) amortised, where scanning
    every bot's window on every check cost a third of the process's CPU with 100 bots
    (docs/benchmarks.md). `recent_orders` is appended as orders are journaled, by one clock."""
    while times and times[0] <= since:
        times.popleft()
    return len(times)
