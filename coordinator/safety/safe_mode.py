"""Safe mode: a bot started with `safe_mode: true` trades under tightened limits.

The limits are the bot's own (bot-limits.json, defaults merged with its overrides) scaled by the
`safe_mode` factors: each order's notional at most `size_factor` of `max_order_notional`, and at
most `safe_mode.max_open_orders` orders live at once. The full pre-trade risk set applies to
every mode in the safety layer; safe mode only tightens it.
"""

from __future__ import annotations

from decimal import Decimal

from bots.book import BotBook
from bots.gateway import Refusal
from bots.models import OrderIntent
from coordinator.config.models import LimitSet, SafeModeFactors


class SafeModeGate:
    def __init__(self, limits: LimitSet, factors: SafeModeFactors) -> None:
        self.max_open_orders = factors.max_open_orders
        self.max_order_notional: Decimal | None = (
            limits.max_order_notional * factors.size_factor
            if limits.max_order_notional is not None
            else None
        )

    def check(self, intent: OrderIntent, book: BotBook) -> Refusal | None:
        if len(book.live_orders) >= self.max_open_orders:
            return Refusal(
                "safe_mode_max_open_orders",
                f"safe mode allows {self.max_open_orders} open order(s); "
                f"{len(book.live_orders)} open",
            )
        if self.max_order_notional is None:
            return None
        price = intent.price if intent.price is not None else book.last_price
        if price is None:
            return Refusal("no_price", "no market price yet to value the order in safe mode")
        notional = intent.amount * price
        if notional > self.max_order_notional:
            return Refusal(
                "safe_mode_max_order_notional",
                f"order notional {notional:.2f} exceeds the safe-mode limit "
                f"{self.max_order_notional:.2f}",
            )
        return None
