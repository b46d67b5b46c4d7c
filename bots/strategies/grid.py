"""A symmetric grid of limit orders around a centre price, re-laid around every fill.

After a buy fills at P the new ladder has a sell one spacing above P (and the reverse after a
sell), so a price that goes down and back up buys low and sells high: the position goes up and
down and the spread between levels is realised as profit.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from bots.models import CancelIntent, OrderIntent, OrderType, Side
from bots.strategies.base import Decision, TickContext
from bots.strategies.params import GridParams


def _split_symbol(symbol: str) -> tuple[str, str]:
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"symbol must look like BASE/QUOTE, got {symbol!r}")
    return base, quote.split(":", 1)[0]


class GridStrategy:
    """Two-sided grid: `levels` buys below and `levels` sells above the centre.

    Per tick: after new fills, cancel every open order and lay a ladder around the last fill's
    price; with no open orders (first tick, or everything cancelled), lay one around the last
    traded price; otherwise leave the ladder alone.

    Only levels the journal balances can pay for are laid, nearest first: buys while the
    cumulative `amount * price` fits the quote balance, sells while the cumulative amount fits the
    base balance. Fees are not counted (the strategy does not know the venue's rate), so with a
    balance spent to the last cent the venue may refuse the farthest buy.
    """

    name = "grid"

    def __init__(self, params: GridParams, symbol: str, price_decimals: int = 2) -> None:
        if price_decimals < 0:
            raise ValueError("price_decimals must be >= 0")
        self.params = params
        self.symbol = symbol
        self.base, self.quote = _split_symbol(symbol)
        self._price_quantum = Decimal(1).scaleb(-price_decimals)
        self.centre: Decimal | None = None

    def on_tick(self, ctx: TickContext) -> list[Decision]:
        decisions: list[Decision] = []
        if ctx.new_fills:
            centre = ctx.new_fills[-1].price
            decisions.extend(CancelIntent(o.client_order_id) for o in ctx.open_orders)
        elif not ctx.open_orders:
            centre = ctx.market.last
        else:
            return []
        self.centre = centre
        decisions.extend(self._ladder(centre, ctx.balances))
        return decisions

    def _ladder(self, centre: Decimal, balances: dict[str, Decimal]) -> list[OrderIntent]:
        amount = self.params.order_amount
        step = self.params.spacing_pct / 100
        quote_left = balances.get(self.quote, Decimal(0))
        base_left = balances.get(self.base, Decimal(0))
        buying = selling = True
        intents: list[OrderIntent] = []
        for level in range(1, self.params.levels + 1):
            if buying:
                price = (centre * (1 - level * step)).quantize(self._price_quantum, ROUND_FLOOR)
                buying = price > 0 and amount * price <= quote_left
                if buying:
                    quote_left -= amount * price
                    intents.append(self._limit(Side.BUY, price, level))
            if selling:
                price = (centre * (1 + level * step)).quantize(self._price_quantum, ROUND_CEILING)
                selling = amount <= base_left
                if selling:
                    base_left -= amount
                    intents.append(self._limit(Side.SELL, price, level))
            if not (buying or selling):
                break
        return intents

    def _limit(self, side: Side, price: Decimal, level: int) -> OrderIntent:
        return OrderIntent(
            symbol=self.symbol,
            side=side,
            type=OrderType.LIMIT,
            amount=self.params.order_amount,
            price=price,
            tag=f"grid:{side.value}:{level}",
        )

    def state(self) -> dict[str, Any]:
        return {"centre": str(self.centre) if self.centre is not None else None}

    def restore(self, state: dict[str, Any]) -> None:
        """Read `state()` back; an unreadable centre is dropped (it is informational only)."""
        self.centre = None
        value = state.get("centre") if isinstance(state, dict) else None
        if not isinstance(value, str):
            return
        try:
            centre = Decimal(value)
        except InvalidOperation:
            return
        if centre.is_finite() and centre > 0:
            self.centre = centre
