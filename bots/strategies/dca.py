"""Dollar-cost averaging: spend a fixed quote amount at market every interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from bots.models import OrderIntent, OrderType, Side
from bots.strategies.base import Decision, TickContext
from bots.strategies.params import DcaParams

_AMOUNT_QUANTUM = Decimal("1e-8")


def _quote_asset(symbol: str) -> str:
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"symbol must look like BASE/QUOTE, got {symbol!r}")
    return quote.split(":", 1)[0]


def _as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, so naive and aware values compare without TypeError."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class DcaStrategy:
    """Buy `quote_amount` worth at the ask once per `interval_seconds`.

    The interval is measured from the last buy the strategy *decided*, not from its fill: a buy the
    gateway refuses is not retried before the next interval, so a persistent refusal cannot turn
    into an order storm. When the quote balance is short, nothing is bought and the next tick
    checks again.
    """

    name = "dca"

    def __init__(self, params: DcaParams, symbol: str) -> None:
        self.params = params
        self.symbol = symbol
        self.quote = _quote_asset(symbol)
        self.interval = timedelta(seconds=params.interval_seconds)
        self.last_buy_at: datetime | None = None

    def on_tick(self, ctx: TickContext) -> list[Decision]:
        last = self.last_buy_at
        if last is not None and _as_utc(ctx.now) - _as_utc(last) < self.interval:
            return []
        quote_amount = self.params.quote_amount
        if ctx.balances.get(self.quote, Decimal(0)) < quote_amount:
            return []
        ask = ctx.market.ask
        if ask <= 0:
            return []
        amount = (quote_amount / ask).quantize(_AMOUNT_QUANTUM, ROUND_DOWN)
        if amount <= 0:
            return []
        self.last_buy_at = ctx.now
        return [
            OrderIntent(
                symbol=self.symbol, side=Side.BUY, type=OrderType.MARKET, amount=amount, tag="dca"
            )
        ]

    def state(self) -> dict[str, Any]:
        return {"last_buy_at": self.last_buy_at.isoformat() if self.last_buy_at else None}

    def restore(self, state: dict[str, Any]) -> None:
        """Read `state()` back; anything unreadable starts fresh rather than failing the bot.

        A timestamp without a zone is taken as UTC (what `state()` writes), so that a restart does
        not buy again early.
        """
        self.last_buy_at = None
        value = state.get("last_buy_at") if isinstance(state, dict) else None
        if not isinstance(value, str):
            return
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return
        self.last_buy_at = _as_utc(parsed)
