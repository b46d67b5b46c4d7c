"""A bot's book in memory: position, balances, live orders and counters.

The gateway is the only writer of a bot's book and changes it only after the journal has
committed the same change, so the book is always what the journal says. It outlives bot
restarts within one process; at start-up it is loaded from the journal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from bots.journal import BookSnapshot, JournalOrder
from bots.ledger import Position
from bots.strategies.base import FillView


@dataclass(slots=True)
class BotBook:
    position: Position = field(default_factory=Position)
    balances: dict[str, Decimal] = field(default_factory=dict)
    live_orders: dict[int, JournalOrder] = field(default_factory=dict)  # pending or open
    trade_ids: dict[int, set[str]] = field(default_factory=dict)
    orders_count: int = 0
    fills_count: int = 0
    refusals: dict[str, int] = field(default_factory=dict)  # our gates' reason code -> count
    last_refusal: str | None = None  # the reason of the newest refusal, for /status
    errors: dict[str, int] = field(default_factory=dict)  # exchange failures by kind -> count
    last_order_at: datetime | None = None
    last_price: Decimal | None = None  # the market's last price at the latest sync
    unseen_fills: list[FillView] = field(default_factory=list)  # since the strategy last looked
    # When this process journaled the bot's recent orders (for orders-per-minute limits).
    recent_orders: deque[datetime] = field(default_factory=lambda: deque(maxlen=10_000))
    # How the partial-fill policy ended orders: "completed" / "timed_out" -> count.
    partial_fill_outcomes: dict[str, int] = field(default_factory=dict)
    # Orders in a row that the exchange rejected or that failed; a sent order resets it.
    consecutive_failures: int = 0

    @classmethod
    def from_snapshot(cls, snapshot: BookSnapshot) -> BotBook:
        return cls(
            position=snapshot.position,
            balances=dict(snapshot.balances),
            live_orders={o.client_order_id: o for o in snapshot.open_orders},
            trade_ids={k: set(v) for k, v in snapshot.trade_ids.items()},
            orders_count=snapshot.orders_count,
            fills_count=snapshot.fills_count,
            last_order_at=snapshot.last_order_at,
        )

    def take_unseen_fills(self) -> list[FillView]:
        fills, self.unseen_fills = self.unseen_fills, []
        return fills
