"""Pre-trade risk limits: every order is held to its bot's limits and to the global ones.

`RiskGate` is one bot's `OrderGate`; `RiskContext` is shared by every bot's gate and sees all
the books, for the limits that span bots (total exposure, concurrent positions, the global order
rate) and for the daily-loss baselines.

Principles (SEC Rule 15c3-5, the FIA's automated-trading risk controls):

* Fail closed. An order that cannot be valued (no limit price and no market price), a limit
  price with no market price to collar it against, or a PnL that cannot be computed refuses the
  order: a check is never skipped because its input is missing. Only a limit the operator left
  unset (`None`) is not checked.
* Never on a stale price. Market data older than `max_market_data_age_seconds` (measured from
  when it reached us, `BotBook.last_price_at`) refuses every order, reducing ones too, before
  the collar or any limit values the order at that price (`stale_market_data`).
* Reducing risk is always possible. An order that only shrinks the position (opposite side, no
  bigger than the position, so it cannot flip it) passes the position limits and the daily-loss
  stop, so a bot past a limit can still get back inside it.
* Exposure is per quote currency. CAD and AUD amounts are not summed (there is no FX rate here);
  each currency's total is held to `max_total_exposure` on its own.
* A day's losses survive a restart: the owner persists `baselines()` and hands them back to
  `restore_baselines()` before trading resumes.

Every refusal has a stable code (the name of the limit) and a reason naming the limit, its value
(and whether it is the safe-mode figure) and the value that broke it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from bots.book import BotBook
from bots.gateway import Refusal
from bots.models import OrderIntent, OrderType, Side
from coordinator.config.models import GlobalLimits, LimitSet, SafeModeFactors, split_symbol
from coordinator.safety.risk_limits import (
    RATE_WINDOW,
    ZERO,
    EffectiveLimits,
    Limit,
    book_exposure,
    book_pnl,
    fmt,
    orders_since,
)

log = logging.getLogger(__name__)

HUNDRED = Decimal(100)
# The running exposure sums add and subtract every change; with this precision they do so
# exactly, so they never drift from the sum of the books they stand for.
_EXACT = Context(prec=200)

__all__ = ["RiskContext", "RiskGate"]


@dataclass(slots=True)
class _Registered:
    symbol: str
    quote: str
    book: BotBook


@dataclass(frozen=True, slots=True)
class _Baseline:
    day: date
    value: Decimal


class RiskContext:
    """What every bot's gate shares: all the books, the global limits and the daily baselines.

    The figures across bots are kept up to date as the books change, not summed per check: a
    check that scanned every book cost O(bots) per order, which at 1,000 bots was a quarter of
    the process's CPU (docs/benchmarks.md). A registered book tells the context when its
    position or last price is set (`BotBook.on_risk_change`) and each order it journals
    (`OrderTimes.shared`); a book belongs to one context."""

    def __init__(self, global_limits: GlobalLimits, clock: Callable[[], datetime]) -> None:
        self.global_limits = global_limits
        self._clock = clock
        self._bots: dict[str, _Registered] = {}
        self._baselines: dict[str, _Baseline] = {}
        self._exposure: dict[str, Decimal] = {}  # bot -> its exposure as last told
        self._exposure_by_quote: dict[str, Decimal] = {}
        self._holding: set[str] = set()  # bots with a non-zero position
        self._recent: deque[datetime] = deque()  # every bot's journaled orders, oldest first

    def register(self, bot: str, symbol: str, quote_asset: str, book: BotBook) -> None:
        """Add (or replace) a bot's book, and take its baseline if it has none for today yet. A
        bot's gate refuses every order until the bot is registered."""
        previous = self._bots.get(bot)
        if previous is not None:
            self._forget(bot, previous)
        self._bots[bot] = _Registered(symbol, quote_asset, book)
        book.on_risk_change = lambda: self._refresh(bot)
        book.recent_orders.shared = self._note_order
        self._refresh(bot)
        self._recent = deque(sorted(t for r in self._bots.values() for t in r.book.recent_orders))
        self.baseline(bot)

    def _forget(self, bot: str, registered: _Registered) -> None:
        registered.book.on_risk_change = None
        registered.book.recent_orders.shared = None
        old = self._exposure.pop(bot, ZERO)
        quote = registered.quote
        self._exposure_by_quote[quote] = _EXACT.subtract(
            self._exposure_by_quote.get(quote, ZERO), old
        )
        self._holding.discard(bot)

    def _refresh(self, bot: str) -> None:
        registered = self._bots[bot]
        now = book_exposure(registered.book)
        old = self._exposure.get(bot, ZERO)
        if now != old or bot not in self._exposure:
            quote = registered.quote
            total = self._exposure_by_quote.get(quote, ZERO)
            self._exposure_by_quote[quote] = _EXACT.add(_EXACT.subtract(total, old), now)
            self._exposure[bot] = now
        if registered.book.position.base:
            self._holding.add(bot)
        else:
            self._holding.discard(bot)

    def _note_order(self, at: datetime) -> None:
        """One more journaled order in the shared window, kept in time order: bots journal in
        the order their writes commit, which may differ by a few milliseconds from the order of
        their timestamps, so an early one is slotted in from the right."""
        recent = self._recent
        if not recent or recent[-1] <= at:
            recent.append(at)
            return
        index = len(recent) - 1
        while index > 0 and recent[index - 1] > at:
            index -= 1
        recent.insert(index, at)

    def now(self) -> datetime:
        return self._clock()

    def today(self) -> date:
        return self._clock().astimezone(UTC).date()

    def quote_of(self, bot: str) -> str | None:
        registered = self._bots.get(bot)
        return registered.quote if registered is not None else None

    # -- figures across bots (`excluding` leaves out the asking bot, which adds its own book) ----

    def total_exposure(self, quote: str, *, excluding: str | None = None) -> Decimal:
        """Sum of |base| x last price over the bots trading in `quote`."""
        total = self._exposure_by_quote.get(quote, ZERO)
        if excluding is not None and self.quote_of(excluding) == quote:
            total = _EXACT.subtract(total, self._exposure.get(excluding, ZERO))
        return total

    def open_positions(self, *, excluding: str | None = None) -> int:
        """How many bots hold a non-zero position."""
        return len(self._holding) - (excluding in self._holding)

    def orders_last_minute(self) -> int:
        """Orders journaled in the last 60 s by all bots (the asking bot's included)."""
        return orders_since(self._recent, self.now() - RATE_WINDOW)

    # -- daily loss ------------------------------------------------------------------------------

    def baseline(self, bot: str) -> Decimal | None:
        """The bot's PnL figure at the start of today's accounting (UTC).

        Taken the first time it is asked on a new UTC day; None while it cannot be taken (an
        open position and no price yet). The owner should ask for every bot at each market
        update, so the baseline is taken early in the day rather than at the first order."""
        today = self.today()
        current = self._baselines.get(bot)
        if current is not None and current.day == today:
            return current.value
        value = book_pnl(self._bots[bot].book)
        if value is None:
            return None
        self._baselines[bot] = _Baseline(today, value)
        log.info("%s: daily risk baseline for %s taken at PnL %s", bot, today, fmt(value))
        return value

    def daily_pnl(self, bot: str, book: BotBook | None = None) -> Decimal | None:
        """PnL since the day's baseline (negative is a loss); None if it cannot be valued."""
        baseline = self.baseline(bot)
        now = book_pnl(book if book is not None else self._bots[bot].book)
        if baseline is None or now is None:
            return None
        return now - baseline

    def baselines(self) -> dict[str, dict[str, str]]:
        """The baselines as JSON-safe data, for the owner to persist."""
        return {
            bot: {"date": b.day.isoformat(), "value": str(b.value)}
            for bot, b in sorted(self._baselines.items())
        }

    def restore_baselines(self, data: Mapping[str, Any]) -> None:
        """Take back persisted baselines. Today's replace any taken since the start (the
        persisted one is older, so it holds more of the day); other days' are stale and
        dropped; a malformed entry is dropped with a warning."""
        today = self.today()
        for bot, entry in data.items():
            baseline = _parse_baseline(bot, entry)
            if baseline is None:
                continue
            if baseline.day != today:
                log.info("%s: risk baseline of %s is not today's; not restored", bot, baseline.day)
                continue
            self._baselines[bot] = baseline


def _parse_baseline(bot: object, entry: object) -> _Baseline | None:
    try:
        if not isinstance(bot, str) or not isinstance(entry, Mapping):
            raise TypeError("not a bot name with a mapping")
        day, value = entry["date"], entry["value"]
        if not isinstance(day, str) or not isinstance(value, str):
            raise TypeError("date and value must be strings")
        parsed = _Baseline(date.fromisoformat(day), Decimal(value))
        if not parsed.value.is_finite():
            raise ValueError("value is not a finite number")
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        log.warning("ignoring malformed risk baseline %r: %r (%s)", bot, entry, exc)
        return None
    return parsed


@dataclass(frozen=True, slots=True)
class _Proposed:
    """One order as the checks see it: valued, and the position it would leave."""

    intent: OrderIntent
    book: BotBook
    quote: str
    price: Decimal  # the limit price, or the last price for a market order
    base: Decimal  # the position now (signed)
    after: Decimal  # the position if the order filled completely (signed)

    @property
    def notional(self) -> Decimal:
        return self.intent.amount * self.price

    @property
    def reduces(self) -> bool:
        """Only shrinks the position: it cannot open one, grow one or flip one."""
        return self.base != 0 and abs(self.after) < abs(self.base) and (self.after * self.base) >= 0

    @property
    def grows(self) -> bool:
        return abs(self.after) > abs(self.base)


class RiskGate:
    """One bot's pre-trade risk checks (an `OrderGate`).

    Checks run cheapest and most fundamental first: symbol, price, market data age, collar,
    order size, position, open orders, order rates, daily loss, then the limits shared across
    bots."""

    def __init__(
        self,
        bot: str,
        limits: LimitSet,
        context: RiskContext,
        safe_mode: SafeModeFactors | None = None,
    ) -> None:
        self.bot = bot
        self.context = context
        self.limits = EffectiveLimits.build(limits, safe_mode)
        self.safe_mode = safe_mode
        self._checks: tuple[Callable[[_Proposed], Refusal | None], ...] = (
            self._market_data_age,  # first: every later check values the order at that price
            self._price_collar,
            self._order_notional,
            self._position_base,
            self._position_notional,
            self._open_orders,
            self._orders_per_minute,
            self._global_orders_per_minute,
            self._daily_loss,
            self._concurrent_positions,
            self._total_exposure,
        )

    def set_limits(self, limits: LimitSet, safe_mode: SafeModeFactors | None = None) -> None:
        """New limits from a config reload: the next order is checked against them."""
        self.limits = EffectiveLimits.build(limits, safe_mode)
        self.safe_mode = safe_mode

    def check(self, intent: OrderIntent, book: BotBook) -> Refusal | None:
        quote = self.context.quote_of(self.bot)
        if quote is None:
            return Refusal("not_registered", f"{self.bot} is not registered with the risk context")
        allowed = self.limits.allowed_symbols
        if allowed is not None and intent.symbol not in allowed:
            return Refusal(
                "symbol_not_allowed",
                f"{intent.symbol} is not in allowed_symbols ({', '.join(allowed)})",
            )
        price = intent.price if intent.price is not None else book.last_price
        if price is None:
            return Refusal("no_price", "no limit price and no market price yet to value the order")
        signed = intent.amount if intent.side is Side.BUY else -intent.amount
        base = book.position.base
        order = _Proposed(intent, book, quote, price, base, base + signed)
        for check in self._checks:
            refusal = check(order)
            if refusal is not None:
                return refusal
        return None

    # -- the order itself ------------------------------------------------------------------------

    def _market_data_age(self, o: _Proposed) -> Refusal | None:
        """Every order, market or limit, reducing or not: the collar, the notional and the
        exposure all read `last_price`, and none of them may judge by a price that has aged."""
        limit = self.limits.max_market_data_age_seconds
        if limit is None:
            return None
        at, last = o.book.last_price_at, o.book.last_price
        if last is None:
            return Refusal(
                "no_price", f"no market data yet, which {limit.describe('s')} asks to be fresh"
            )
        if at is None:  # a price nobody stamped: its age is unknown, so it is not fresh
            return Refusal(
                "stale_market_data",
                f"the last price {fmt(last)} has no arrival time, so its age is unknown; "
                f"orders need market data within {limit.describe('s')}",
            )
        age = Decimal(str(max(0.0, (self.context.now() - at).total_seconds())))
        if age <= limit.value:
            return None
        return Refusal(
            "stale_market_data",
            f"market data is {fmt(age, 1)} s old (the last price {fmt(last)} arrived at "
            f"{at.astimezone(UTC).isoformat(timespec='seconds')}), beyond "
            f"{limit.describe('s')}: no order goes on a stale price",
        )

    def _price_collar(self, o: _Proposed) -> Refusal | None:
        limit = self.limits.price_collar_pct
        if limit is None or o.intent.type is not OrderType.LIMIT:
            return None
        last = o.book.last_price
        if last is None:
            return Refusal(
                "no_price",
                f"no market price to hold the limit price {fmt(o.price)} to "
                f"{limit.describe('%')} against",
            )
        away = abs(o.price - last) / last * HUNDRED
        if away <= limit.value:
            return None
        return Refusal(
            "price_collar",
            f"limit price {fmt(o.price)} is {fmt(away, 2)} % from the last price {fmt(last)}, "
            f"beyond {limit.describe('%')}",
        )

    def _order_notional(self, o: _Proposed) -> Refusal | None:
        limit = self.limits.max_order_notional
        if limit is None or o.notional <= limit.value:
            return None
        return Refusal(
            "max_order_notional",
            f"order notional {fmt(o.notional)} {o.quote} ({fmt(o.intent.amount)} at "
            f"{fmt(o.price)}) exceeds {limit.describe(o.quote)}",
        )

    def _position_base(self, o: _Proposed) -> Refusal | None:
        limit = self.limits.max_position_base
        if limit is None or o.reduces or abs(o.after) <= limit.value:
            return None
        return Refusal(
            "max_position_base",
            f"position would be {fmt(o.after)} (now {fmt(o.base)}) if the order filled, "
            f"beyond {limit.describe(split_symbol(o.intent.symbol)[0])}",
        )

    def _position_notional(self, o: _Proposed) -> Refusal | None:
        limit = self.limits.max_position_notional
        value = abs(o.after) * o.price
        if limit is None or o.reduces or value <= limit.value:
            return None
        return Refusal(
            "max_position_notional",
            f"position would be worth {fmt(value)} {o.quote} ({fmt(o.after)} at {fmt(o.price)}) "
            f"if the order filled, beyond {limit.describe(o.quote)}",
        )

    def _open_orders(self, o: _Proposed) -> Refusal | None:
        limit = self.limits.max_open_orders
        open_now = len(o.book.live_orders)
        if limit is None or open_now < limit.value:
            return None
        return Refusal(
            "max_open_orders", f"{open_now} order(s) open already, at {limit.describe()}"
        )

    # -- rates -----------------------------------------------------------------------------------

    # Both rates leave out `book.uncounted_orders`: on the gateway's second check the order
    # being judged is journaled already, and it must not count against itself.

    def _orders_per_minute(self, o: _Proposed) -> Refusal | None:
        limit = self.limits.max_orders_per_minute
        if limit is None:
            return None
        since = self.context.now() - RATE_WINDOW
        count = orders_since(o.book.recent_orders, since) - o.book.uncounted_orders
        return _rate_refusal("max_orders_per_minute", count, limit)

    def _global_orders_per_minute(self, o: _Proposed) -> Refusal | None:
        limit = Limit(
            "global max_orders_per_minute",
            Decimal(self.context.global_limits.max_orders_per_minute),
        )
        count = self.context.orders_last_minute() - o.book.uncounted_orders
        return _rate_refusal("global_max_orders_per_minute", count, limit, "by all bots ")

    # -- loss ------------------------------------------------------------------------------------

    def _daily_loss(self, o: _Proposed) -> Refusal | None:
        limit = self.limits.max_daily_loss
        if limit is None or o.reduces:
            return None
        pnl = self.context.daily_pnl(self.bot, o.book)
        if pnl is None:
            return Refusal(
                "no_price",
                f"no market price to value today's PnL against {limit.describe(o.quote)}; "
                "only orders that reduce the position are allowed",
            )
        if pnl > -limit.value:
            return None
        return Refusal(
            "max_daily_loss",
            f"today's PnL {fmt(pnl)} {o.quote} (since 00:00 UTC) has reached "
            f"-{limit.describe(o.quote)}; only orders that reduce the position are allowed",
        )

    # -- across bots -----------------------------------------------------------------------------

    def _concurrent_positions(self, o: _Proposed) -> Refusal | None:
        if o.base != 0:
            return None  # this bot holds a position already: the order opens no new one
        limit = self.context.global_limits.max_concurrent_positions
        held = self.context.open_positions(excluding=self.bot)
        if held < limit:
            return None
        return Refusal(
            "max_concurrent_positions",
            f"{held} bot(s) hold a position; the order would open another, beyond "
            f"global max_concurrent_positions {limit}",
        )

    def _total_exposure(self, o: _Proposed) -> Refusal | None:
        if not o.grows:
            return None
        limit = self.context.global_limits.max_total_exposure
        others = self.context.total_exposure(o.quote, excluding=self.bot)
        total = others + abs(o.after) * o.price
        if total <= limit:
            return None
        return Refusal(
            "max_total_exposure",
            f"total {o.quote} exposure would be {fmt(total)} {o.quote} if the order filled "
            f"(other bots {fmt(others)}), beyond global max_total_exposure {fmt(limit)} "
            f"{o.quote} (per quote currency)",
        )


def _rate_refusal(code: str, count: int, limit: Limit, whose: str = "") -> Refusal | None:
    if count < limit.value:
        return None
    return Refusal(
        code,
        f"{count} order(s) {whose}in the last 60 s, at {limit.describe()}",
    )
