"""The strategy seam: a strategy turns one market observation into order intents.

Strategies are pure decision functions with a little state: they never talk to an exchange or the
store. The bot hands them a `TickContext` and sends what they return through the order gateway,
which may refuse it. Their state is JSON-serialisable so the bot can persist it across restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from pydantic import BaseModel

from bots.models import CancelIntent, MarketSnapshot, OrderIntent, OrderType, Side


@dataclass(frozen=True, slots=True)
class OpenOrderView:
    """An order of this bot's that the journal holds open."""

    client_order_id: int
    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None
    filled: Decimal
    tag: str


@dataclass(frozen=True, slots=True)
class FillView:
    """A fill recorded since the previous tick."""

    client_order_id: int
    side: Side
    amount: Decimal
    price: Decimal
    tag: str


@dataclass(frozen=True, slots=True)
class TickContext:
    market: MarketSnapshot
    now: datetime
    position_base: Decimal  # signed base quantity held by this bot
    balances: dict[str, Decimal]  # journal totals per asset for this bot
    open_orders: Sequence[OpenOrderView]
    new_fills: Sequence[FillView]


Decision = OrderIntent | CancelIntent


class Strategy(Protocol):
    name: str

    def on_tick(self, ctx: TickContext) -> list[Decision]: ...

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state to persist (restored with `restore` after a restart)."""
        ...

    def restore(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """How to validate a strategy's parameters and build it."""

    name: str
    params_model: type[BaseModel]
    build: Callable[[Any, str], Strategy]  # (validated params, symbol) -> Strategy
