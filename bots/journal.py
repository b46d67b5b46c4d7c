"""The order journal's contract: what the gateway writes, and the order state machine.

The gateway writes an order's intent before anything is sent and every later change (the
acknowledgement, fills, and the position and balances they move) as one `OrderUpdate` that the
journal must commit atomically. The SQLite implementation lives in `coordinator.store.journal`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from bots.ledger import Position
from bots.models import OrderType, Side


class OrderStatus(enum.StrEnum):
    PENDING_SUBMIT = "pending_submit"  # journaled, not yet acknowledged by the exchange
    OPEN = "open"  # acknowledged and resting (may be partly filled)
    FILLED = "filled"
    CANCELED = "canceled"  # may have been partly filled first
    REJECTED = "rejected"  # the exchange refused it
    FAILED = "failed"  # it could not be sent; nothing is on the exchange


TERMINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.FAILED}
)

ORDER_TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING_SUBMIT: frozenset(
        {
            OrderStatus.OPEN,
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
            OrderStatus.REJECTED,
            OrderStatus.FAILED,
        }
    ),
    OrderStatus.OPEN: frozenset({OrderStatus.OPEN, OrderStatus.FILLED, OrderStatus.CANCELED}),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.FAILED: frozenset(),
}


class InvalidOrderTransition(Exception):
    def __init__(self, client_order_id: int, current: OrderStatus, target: OrderStatus) -> None:
        super().__init__(
            f"order {client_order_id}: impossible transition {current.value} -> {target.value}"
        )
        self.current = current
        self.target = target


def check_order_transition(client_order_id: int, current: OrderStatus, target: OrderStatus) -> None:
    if target not in ORDER_TRANSITIONS[current]:
        raise InvalidOrderTransition(client_order_id, current, target)


@dataclass(frozen=True, slots=True)
class JournalOrder:
    client_order_id: int
    bot: str
    exchange: str
    symbol: str
    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None
    status: OrderStatus
    created_at: datetime
    filled: Decimal = Decimal(0)
    tag: str = ""
    exchange_order_id: str | None = None
    reason: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class FillRecord:
    client_order_id: int
    bot: str
    trade_id: str
    side: Side
    amount: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    executed_at: datetime


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """One atomic change: an order's new state with the fills and book changes it brings."""

    order: JournalOrder
    previous_status: OrderStatus
    at: datetime
    fills: Sequence[FillRecord] = ()
    position: Position | None = None
    balances: Mapping[str, Decimal] = field(default_factory=dict)  # new totals, changed only
    detail: str = ""


@dataclass(slots=True)
class BookSnapshot:
    """What the journal knows about one bot, loaded when its coordinator starts."""

    position: Position
    balances: dict[str, Decimal]
    open_orders: list[JournalOrder]
    trade_ids: dict[int, set[str]]  # per open order, the trades already recorded
    orders_count: int
    fills_count: int
    last_order_at: datetime | None


class OrderJournal(Protocol):
    async def record_intent(self, order: JournalOrder) -> None: ...

    async def record_update(self, update: OrderUpdate) -> None: ...
