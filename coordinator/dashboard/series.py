"""A bot's position and PnL over time, from the journal's fills, downsampled for a chart.

Cheap at a million fills: the journal is never replayed per request. Fills are summed by SQLite
into one-minute slots (change of position, change of cash, the last fill price), once, and after
that only the fills with a higher id than the last one seen are read (the `fills_by_bot` index
holds the rowid, so that read is a range scan). A request re-buckets the slots, at most a few
tens of thousands of numbers, into the points asked for.

PnL here is mark-to-market: the cash the fills moved (sells in, buys out, fees out) plus the
position valued at the last fill price up to that moment, the same total as `/status`'s
`pnl.total` (realized + unrealized - fees) for a bot whose position started flat. A fee charged
in the base asset reduces the position; one in a third currency is not counted (it is not in
the bot's quote currency). Floats: this is a picture, the journal keeps the exact Decimals.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from coordinator.store.journal import iso
from coordinator.store.sqlite import SqliteStore

SLOT_SECONDS = 60
MAX_POINTS = 2000
DEFAULT_POINTS = 300
CHUNK = 2000  # slots summed between two turns of the event loop
MAX_CACHED_BOTS = 32  # a dashboard charts one bot at a time; slots for 32 stay in memory

_SLOTS_SQL = """
SELECT CAST(strftime('%s', executed_at) AS INTEGER) / :slot AS slot,
       SUM(CASE side WHEN 'buy' THEN CAST(amount AS REAL) ELSE -CAST(amount AS REAL) END
           - CASE WHEN fee_currency = :base THEN CAST(fee AS REAL) ELSE 0 END) AS d_base,
       SUM(CASE side WHEN 'buy' THEN -CAST(amount AS REAL) ELSE CAST(amount AS REAL) END
           * CAST(price AS REAL)
           - CASE WHEN fee_currency = :quote THEN CAST(fee AS REAL) ELSE 0 END) AS d_cash,
       COUNT(*) AS fills,
       MAX(id) AS last_id,
       price,
       executed_at
FROM fills
WHERE bot = :bot AND id > :after
GROUP BY slot
"""
# The same on PostgreSQL, which has no bare columns: the newest fill's price and time are the
# first of their slot's values ordered by id, newest first.
_SLOTS_SQL_POSTGRES = """
SELECT FLOOR(EXTRACT(EPOCH FROM executed_at::timestamptz) / :slot)::bigint AS slot,
       SUM(CASE side WHEN 'buy' THEN amount::float8 ELSE -amount::float8 END
           - CASE WHEN fee_currency = :base THEN fee::float8 ELSE 0 END) AS d_base,
       SUM(CASE side WHEN 'buy' THEN -amount::float8 ELSE amount::float8 END * price::float8
           - CASE WHEN fee_currency = :quote THEN fee::float8 ELSE 0 END) AS d_cash,
       COUNT(*) AS fills,
       MAX(id) AS last_id,
       (ARRAY_AGG(price ORDER BY id DESC))[1] AS price,
       (ARRAY_AGG(executed_at ORDER BY id DESC))[1] AS executed_at
FROM fills
WHERE bot = :bot AND id > :after
GROUP BY 1
"""
# `price` and `executed_at` are bare columns beside the one MAX() aggregate: SQLite takes them
# from the row that holds MAX(id), the slot's newest fill (sqlite.org/lang_select.html#bareagg).


@dataclass(slots=True)
class _Slot:
    d_base: float = 0.0
    d_cash: float = 0.0
    fills: int = 0
    last_id: int = 0
    price: float = 0.0
    last_at: str = ""


@dataclass(slots=True)
class _BotSlots:
    after_id: int = 0
    slots: dict[int, _Slot] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class Live:
    """The bot's figures now (its book), for the series' last point."""

    position: float
    pnl: float
    price: float | None


class FillSeries:
    def __init__(self, store: SqliteStore, slot_seconds: int = SLOT_SECONDS) -> None:
        self.store = store
        self.slot_seconds = slot_seconds
        self._bots: OrderedDict[str, _BotSlots] = OrderedDict()

    async def series(
        self,
        bot: str,
        base: str,
        quote: str,
        points: int = DEFAULT_POINTS,
        live: Live | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """At most `points` points from the bot's first fill to now, each the state at the end
        of its interval: {t, position, pnl, price, fills}; then `live` as the last point."""
        if not 1 <= points <= MAX_POINTS:
            raise ValueError(f"points: must be from 1 to {MAX_POINTS}, got {points}")
        entry = self._entry(bot)
        async with entry.lock:  # one reader of new fills at a time; none sees a half-merged one
            await self._read_new_fills(entry, bot, base, quote)
            out = self._downsample(entry.slots, points)
            total = sum(s.fills for s in entry.slots.values())
        if live is not None:
            at = iso(now or datetime.now(UTC))
            out.append(
                {"t": at, "position": live.position, "pnl": live.pnl, "price": live.price,
                 "fills": total}
            )
        return {
            "bot": bot,
            "currency": quote,
            "base": base,
            "fills": total,
            "slot_seconds": self.slot_seconds,
            "pnl": "mark-to-market: cash moved by fills plus the position at the last fill price",
            "points": out,
        }

    def _entry(self, bot: str) -> _BotSlots:
        entry = self._bots.get(bot)
        if entry is None:
            entry = self._bots[bot] = _BotSlots()
            while len(self._bots) > MAX_CACHED_BOTS:
                self._bots.popitem(last=False)
        self._bots.move_to_end(bot)
        return entry

    async def _read_new_fills(self, entry: _BotSlots, bot: str, base: str, quote: str) -> None:
        """Sum the fills past `entry.after_id` into its slots (the caller holds its lock)."""
        rows = await self.store.fetch_all(
            _SLOTS_SQL_POSTGRES if self.store.engine == "postgresql" else _SLOTS_SQL,
            {"slot": self.slot_seconds, "base": base, "quote": quote, "bot": bot,
             "after": entry.after_id},
        )
        try:
            for n, row in enumerate(rows, 1):
                if n % CHUNK == 0:
                    await asyncio.sleep(0)  # a year of minutes is 525,600 rows: let others run
                slot = entry.slots.get(row["slot"])
                if slot is None:
                    slot = entry.slots[row["slot"]] = _Slot()
                slot.d_base += row["d_base"]
                slot.d_cash += row["d_cash"]
                slot.fills += row["fills"]
                if row["last_id"] > slot.last_id:  # a fill recorded late may land in an old slot
                    slot.last_id, slot.price = row["last_id"], float(row["price"])
                    slot.last_at = row["executed_at"]
        except BaseException:
            # Cancelled half-way (the client went away): some slots hold the new fills, some
            # not. Forget them all; the next request reads the journal again from the start.
            entry.slots.clear()
            entry.after_id = 0
            raise
        entry.after_id = max([entry.after_id, *(row["last_id"] for row in rows)])

    def _downsample(self, slots: dict[int, _Slot], points: int) -> list[dict[str, Any]]:
        if not slots:
            return []
        keys = sorted(slots)
        first, last = keys[0], keys[-1]
        per_point = max(1, math.ceil((last - first + 1) / points))  # slots per point
        out: list[dict[str, Any]] = []
        position = cash = price = 0.0
        fills = 0
        at = ""
        current = 0  # the output interval being summed; empty intervals give no point
        for key in keys:
            interval = (key - first) // per_point
            if interval != current:
                out.append(_point(at, position, cash, price, fills))
                current = interval
            slot = slots[key]
            position += slot.d_base
            cash += slot.d_cash
            price = slot.price
            fills += slot.fills
            at = slot.last_at
        out.append(_point(at, position, cash, price, fills))
        return out


def _point(at: str, position: float, cash: float, price: float, fills: int) -> dict[str, Any]:
    """The state after the interval's newest fill (at its time)."""
    return {
        "t": at,
        "position": round(position, 12),
        "pnl": round(cash + position * price, 8),
        "price": price,
        "fills": fills,
    }
