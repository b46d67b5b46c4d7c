"""A bot's book in memory: position, balances, live orders and counters.

The gateway is the only writer of a bot's book and changes it only after the journal has
committed the same change, so the book is always what the journal says. It outlives bot
restarts within one process; at start-up it is loaded from the journal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from bots.journal import BookSnapshot, JournalOrder
from bots.ledger import Position
from bots.strategies.base import FillView


class OrderTimes(deque[datetime]):
    """When this process journaled a bot's recent orders, oldest first.

    A plain deque, except that each `append` is also told to `shared` (the risk context's
    coordinator-wide window, once the book is registered), so the global orders-per-minute
    limit is a count of one window rather than a scan of every bot's."""

    def __init__(self, times: Iterable[datetime] = (), maxlen: int | None = 10_000) -> None:
        super().__init__(times, maxlen)
        self.shared: Callable[[datetime], None] | None = None

    def append(self, at: datetime) -> None:
        super().append(at)
        if self.shared is not None:
            self.shared(at)


class TrackedDict(dict[Any, Any]):
    """A dict that tells its owner of every change made through it (set, delete, pop, ...), so
    the book's `revision` moves when one of its counters does."""

    __slots__ = ("_changed",)

    def __init__(self, items: Any, changed: Callable[[], None]) -> None:
        super().__init__(items)
        self._changed = changed

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._changed()

    def pop(self, *args: Any) -> Any:
        value = super().pop(*args)
        self._changed()
        return value

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self._changed()
        return item

    def setdefault(self, key: Any, default: Any = None) -> Any:
        value = super().setdefault(key, default)
        self._changed()
        return value

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def __ior__(self, other: Any) -> TrackedDict:  # type: ignore[misc]
        self.update(other)
        return self


# The fields whose change moves the figures the risk context sums across bots (exposure, open
# positions): setting one tells the book's `on_risk_change`.
_RISK_FIELDS = frozenset({"position", "last_price"})
# The dicts that /status shows: changed in place, they are TrackedDicts that move `revision`.
_TRACKED_DICTS = frozenset(
    {"balances", "live_orders", "refusals", "errors", "partial_fill_outcomes"}
)


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
    # When that price reached us (the gateway's clock at the sync), for the stale-data guard.
    last_price_at: datetime | None = None
    unseen_fills: list[FillView] = field(default_factory=list)  # since the strategy last looked
    # When this process journaled the bot's recent orders (for orders-per-minute limits).
    recent_orders: OrderTimes = field(default_factory=OrderTimes)
    # How many of `recent_orders` the rate limits must not count: the gateway's second check
    # of an order sets it to 1 while it judges the order against everything but itself.
    uncounted_orders: int = 0
    # How the partial-fill policy ended orders: "completed" / "timed_out" -> count.
    partial_fill_outcomes: dict[str, int] = field(default_factory=dict)
    # Orders in a row that the exchange rejected or that failed; a sent order resets it.
    consecutive_failures: int = 0
    # Called after `position` or `last_price` is set (the risk context keeps its sums so).
    on_risk_change: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    # Moves on every change of a field or of a dict /status shows: the status document of a
    # bot is rebuilt only when it moved (coordinator/runtime.py, `bot_status`).
    revision: int = field(default=0, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _TRACKED_DICTS:
            object.__setattr__(self, name, TrackedDict(getattr(self, name), self._touch))

    def _touch(self) -> None:
        # getattr: a copy of a book (copy.deepcopy) fills its dicts before its revision
        object.__setattr__(self, "revision", getattr(self, "revision", 0) + 1)

    def __setattr__(self, name: str, value: object) -> None:
        if name in _TRACKED_DICTS and getattr(self, "revision", None) is not None:
            value = TrackedDict(value, self._touch)  # a dict handed in is copied into one
        object.__setattr__(self, name, value)
        revision = getattr(self, "revision", None)  # unset while __init__ runs
        if revision is None:
            return
        object.__setattr__(self, "revision", revision + 1)
        if name in _RISK_FIELDS:
            listener = getattr(self, "on_risk_change", None)
            if listener is not None:
                listener()

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
