"""What reconciliation reads from the journal and the corrections it writes.

Every correction is a row in `reconciliation_corrections` committed in the same transaction as
the change it makes (a fill, an order's new status, a balance adjustment, a recomputed book),
and the rows it changes point back to it ("reconciliation correction #id"). Ids are chosen here,
not by SQLite, so a correction can name itself in the rows it writes; reconciliations run one at
a time (`Reconciler` holds a lock), so nothing else allocates them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import chain
from pathlib import Path
from typing import Any

from bots.journal import FillRecord, JournalOrder, OrderStatus
from bots.ledger import LedgerFill, Position, replay
from bots.models import Side
from coordinator.store.journal import (
    _INSERT_ORDER,
    _ORDER_COLUMNS,
    _balance_upserts,
    _fill_insert,
    _order_event,
    _order_from_row,
    _position_upsert,
    iso,
)
from coordinator.store.restored import RESTORED_KEY, RestoredJournal
from coordinator.store.sqlite import Expect, SqliteStore, Statement, Write

LIVE = (OrderStatus.PENDING_SUBMIT.value, OrderStatus.OPEN.value)


@dataclass(slots=True)
class JournalView:
    """One bot's journal, as reconciliation compares it."""

    orders: dict[int, JournalOrder]  # live, recent, and any the exchange mentioned
    fills: dict[tuple[int, str], FillRecord]  # of those orders, and every fill in the window
    balances: dict[str, Decimal]  # as stored
    position: Position  # as stored
    replayed_balances: dict[str, Decimal]  # what its adjustments and fills add up to

    def order_by_exchange_id(self) -> dict[str, int]:
        return {o.exchange_order_id: cid for cid, o in self.orders.items() if o.exchange_order_id}


@dataclass(frozen=True, slots=True)
class BookWrite:
    """A bot's position and balances to store (assets in `stale` are removed)."""

    symbol: str
    position: Position
    balances: Mapping[str, Decimal]
    stale: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class CorrectionRow:
    id: int
    run_id: int
    at: datetime
    bot: str
    kind: str
    subject: str
    journal: str
    exchange: str
    action: str

    def statement(self) -> Statement:
        return (
            "INSERT INTO reconciliation_corrections (id, run_id, at, bot, kind, subject,"
            " journal, exchange, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.id,
                self.run_id,
                iso(self.at),
                self.bot,
                self.kind,
                self.subject,
                self.journal,
                self.exchange,
                self.action,
            ),
        )

    @property
    def tag(self) -> str:
        return f"reconciliation correction #{self.id}"


def _replay_file(
    path: Path, bot: str, base: str, quote: str, extra: Sequence[LedgerFill]
) -> tuple[Position, dict[str, Decimal]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        conn.execute("BEGIN")  # adjustments and fills from one snapshot
        adjustments = [
            (asset, Decimal(amount))
            for asset, amount in conn.execute(
                "SELECT asset, amount FROM balance_adjustments WHERE bot = ? ORDER BY id", (bot,)
            )
        ]
        fills = (
            LedgerFill(Side(side), Decimal(amount), Decimal(price), Decimal(fee), currency)
            for side, amount, price, fee, currency in conn.execute(
                "SELECT side, amount, price, fee, fee_currency FROM fills WHERE bot = ?"
                " ORDER BY id",
                (bot,),
            )
        )
        return replay(chain(fills, extra), adjustments, base, quote)


def _replay_postgres(
    dsn: str, bot: str, base: str, quote: str, extra: Sequence[LedgerFill]
) -> tuple[Position, dict[str, Decimal]]:
    """`_replay_file` on PostgreSQL: one REPEATABLE READ snapshot on a connection of its own,
    the fills streamed through a server-side cursor."""
    import psycopg  # only when the journal is on PostgreSQL

    with psycopg.connect(dsn) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        adjustments = [
            (asset, Decimal(amount))
            for asset, amount in conn.execute(
                "SELECT asset, amount FROM balance_adjustments WHERE bot = %s ORDER BY id", (bot,)
            )
        ]
        with conn.cursor(name="replay_fills") as cursor:
            cursor.execute(
                "SELECT side, amount, price, fee, fee_currency FROM fills WHERE bot = %s"
                " ORDER BY id",
                (bot,),
            )
            fills = (
                LedgerFill(Side(side), Decimal(amount), Decimal(price), Decimal(fee), currency)
                for side, amount, price, fee, currency in cursor
            )
            return replay(chain(fills, extra), adjustments, base, quote)


class ReconciliationStore:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    # -- reads -----------------------------------------------------------------------------------

    async def restored(self) -> RestoredJournal | None:
        """The mark of the restore the journal came from, if it came from one."""
        row = await self.store.fetch_one(
            "SELECT value FROM safety_state WHERE key = ?", (RESTORED_KEY,)
        )
        if row is None:
            return None
        try:
            return RestoredJournal.from_json(json.loads(row["value"]))
        except ValueError:
            return None

    async def next_ids(self) -> tuple[int, int]:
        """The next run id and the next correction id."""
        row = await self.store.fetch_one(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM reconciliation_runs),"
            " (SELECT COALESCE(MAX(id), 0) FROM reconciliation_corrections)"
        )
        assert row is not None
        return int(row[0]) + 1, int(row[1]) + 1

    async def journal_view(
        self,
        bot: str,
        since: datetime,
        base: str,
        quote: str,
        client_order_ids: Iterable[int] = (),
        exchange_order_ids: Iterable[str] = (),
    ) -> JournalView:
        orders = await self._orders(bot, since, client_order_ids, exchange_order_ids)
        fills = await self._fills(bot, since, orders)
        balances = {
            row["asset"]: Decimal(row["total"])
            for row in await self.store.fetch_all(
                "SELECT asset, total FROM balances WHERE bot = ?", (bot,)
            )
        }
        position_row = await self.store.fetch_one(
            "SELECT base, avg_entry_price, realized_pnl, fees_paid FROM positions WHERE bot = ?",
            (bot,),
        )
        position = (
            Position(*(Decimal(position_row[i]) for i in range(4))) if position_row else Position()
        )
        _, replayed = await self.replay(bot, base, quote)
        return JournalView(orders, fills, balances, position, replayed)

    async def replay(
        self, bot: str, base: str, quote: str, extra: Sequence[LedgerFill] = ()
    ) -> tuple[Position, dict[str, Decimal]]:
        """The position and balances the bot's adjustments and fills (then `extra`) add up to.

        Replaying a ledger costs about 5 us a fill: at a million fills it would stall the loop
        for seconds (docs/benchmarks.md). It runs in a thread, on a read-only connection of its
        own, streaming the fills, so neither the loop nor the store's reader waits for it."""
        if self.store.engine == "postgresql":
            dsn: str = getattr(self.store, "dsn")  # noqa: B009 (PostgresStore's)
            return await asyncio.to_thread(_replay_postgres, dsn, bot, base, quote, extra)
        return await asyncio.to_thread(_replay_file, self.store.path, bot, base, quote, extra)

    async def _orders(
        self,
        bot: str,
        since: datetime,
        client_order_ids: Iterable[int],
        exchange_order_ids: Iterable[str],
    ) -> dict[int, JournalOrder]:
        rows = await self.store.fetch_all(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE bot = ?"  # noqa: S608 (constant)
            " AND (status IN (?, ?) OR created_at >= ?)",
            (bot, *LIVE, iso(since)),
        )
        orders = {int(row["client_order_id"]): _order_from_row(dict(row)) for row in rows}
        for cid in set(client_order_ids) - set(orders):
            row = await self.store.fetch_one(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE client_order_id = ?"  # noqa: S608
                " AND bot = ?",
                (cid, bot),
            )
            if row is not None:
                orders[cid] = _order_from_row(dict(row))
        known = {o.exchange_order_id for o in orders.values()}
        for exchange_order_id in set(exchange_order_ids) - known:
            row = await self.store.fetch_one(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE exchange_order_id = ?"  # noqa: S608
                " AND bot = ?",
                (exchange_order_id, bot),
            )
            if row is not None:
                order = _order_from_row(dict(row))
                orders[order.client_order_id] = order
        return orders

    async def _fills(
        self, bot: str, since: datetime, orders: Mapping[int, JournalOrder]
    ) -> dict[tuple[int, str], FillRecord]:
        """The bot's fills in the window, and every fill of the orders in the view (one query
        for the live and recent ones, one per order the exchange brought in from further back)."""
        columns = (
            "SELECT client_order_id, trade_id, side, amount, price, fee, fee_currency,"
            " executed_at FROM fills"
        )
        rows = list(
            await self.store.fetch_all(
                f"{columns} WHERE bot = ? AND (executed_at >= ? OR client_order_id IN"  # noqa: S608
                " (SELECT client_order_id FROM orders WHERE bot = ?"
                " AND (status IN (?, ?) OR created_at >= ?)))",
                (bot, iso(since), bot, *LIVE, iso(since)),
            )
        )
        for cid, order in orders.items():
            if order.is_terminal and order.created_at < since:
                rows.extend(
                    await self.store.fetch_all(
                        f"{columns} WHERE client_order_id = ?",
                        (cid,),
                    )
                )
        return {
            (int(row["client_order_id"]), row["trade_id"]): FillRecord(
                int(row["client_order_id"]),
                bot,
                row["trade_id"],
                Side(row["side"]),
                Decimal(row["amount"]),
                Decimal(row["price"]),
                Decimal(row["fee"]),
                row["fee_currency"],
                datetime.fromisoformat(row["executed_at"]),
            )
            for row in rows
        }

    # -- writes ----------------------------------------------------------------------------------

    async def begin_run(
        self,
        run_id: int,
        at: datetime,
        actor: str,
        trigger: str,
        applied: bool,
        bots: Sequence[str],
    ) -> None:
        await self.store.write(
            [
                (
                    "INSERT INTO reconciliation_runs (id, started_at, finished_at, actor, trigger,"
                    " applied, bots, differences, corrections, report)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, '{}')",
                    (
                        run_id,
                        iso(at),
                        iso(at),
                        actor,
                        trigger,
                        int(applied),
                        json.dumps(list(bots)),
                    ),
                )
            ]
        )

    async def finish_run(
        self, run_id: int, at: datetime, differences: int, corrections: int, report: dict[str, Any]
    ) -> None:
        await self.store.write(
            [
                Expect(
                    "UPDATE reconciliation_runs SET finished_at = ?, differences = ?,"
                    " corrections = ?, report = ? WHERE id = ?",
                    (iso(at), differences, corrections, json.dumps(report, default=str), run_id),
                )
            ]
        )

    async def record(self, correction: CorrectionRow) -> None:
        """A correction whose change another component writes (the gateway)."""
        await self.store.write([correction.statement()])

    async def correct_order(
        self,
        correction: CorrectionRow,
        before: JournalOrder,
        after: JournalOrder,
        fills: Sequence[FillRecord],
        book: BookWrite | None = None,
    ) -> None:
        """Give an order the exchange's status and record its missing fills, in one commit,
        with an order event that names the correction. A move the transition table forbids
        (failed -> open, filled -> filled) is allowed here because the event names this
        correction; --verify-data accepts it for that reason only."""
        statements: list[Write] = [correction.statement()]
        if (before.status, before.filled, before.exchange_order_id) != (
            after.status,
            after.filled,
            after.exchange_order_id,
        ):
            statements.append(
                Expect(
                    "UPDATE orders SET status = ?, exchange_order_id = ?, filled = ?, reason = ?,"
                    " updated_at = ? WHERE client_order_id = ? AND status = ?",
                    (
                        after.status.value,
                        after.exchange_order_id,
                        str(after.filled),
                        after.reason,
                        iso(correction.at),
                        after.client_order_id,
                        before.status.value,
                    ),
                )
            )
        # Always an event, even when the status stays: it is what names the correction in the
        # order's history (a fill written back does not change the status).
        statements.append(
            _order_event(
                after.client_order_id,
                correction.at,
                before.status,
                after.status,
                f"{correction.tag}: {correction.action}",
            )
        )
        statements.extend(_fill_insert(fill, correction.at) for fill in fills)
        if book is not None:
            statements.extend(self._book_statements(correction, after.bot, book))
        await self.store.write(statements)

    async def adopt_order(
        self,
        correction: CorrectionRow,
        order: JournalOrder,
        fills: Sequence[FillRecord],
        book: BookWrite | None = None,
    ) -> None:
        """Put back an order the journal lost (placed between a backup and its restore), as
        the exchange shows it, with its fills and the book they move: one commit. Its history
        is an intent and one move to the exchange's status, both naming the correction."""
        created = iso(order.created_at)
        row = (
            order.client_order_id, order.bot, order.exchange, order.symbol, order.side.value,
            order.type.value, str(order.amount), None if order.price is None else str(order.price),
            order.status.value, order.exchange_order_id, str(order.filled), order.tag,
            order.reason, created, iso(correction.at),
        )  # fmt: skip
        intent = f"intent (lost from the journal; put back by {correction.tag})"
        moved = f"{correction.tag}: {correction.action}"
        cid, pending = order.client_order_id, OrderStatus.PENDING_SUBMIT
        statements: list[Write] = [
            correction.statement(),
            (_INSERT_ORDER, row),
            _order_event(cid, created, None, pending, intent),
            _order_event(cid, correction.at, pending, order.status, moved),
        ]
        statements.extend(_fill_insert(fill, correction.at) for fill in fills)
        if book is not None:
            statements.extend(self._book_statements(correction, order.bot, book))
        await self.store.write(statements)

    @staticmethod
    def _book_statements(correction: CorrectionRow, bot: str, book: BookWrite) -> list[Write]:
        return [
            _position_upsert(bot, book.symbol, book.position, correction.at),
            *_balance_upserts(bot, book.balances, correction.at),
            *(
                ("DELETE FROM balances WHERE bot = ? AND asset = ?", (bot, asset))
                for asset in book.stale
            ),
        ]

    async def adjust_balance(
        self, correction: CorrectionRow, bot: str, asset: str, amount: Decimal, total: Decimal
    ) -> None:
        """A balance the exchange reports differently: an adjustment entry, never an edit."""
        await self.store.write(
            [
                correction.statement(),
                (
                    "INSERT INTO balance_adjustments (bot, asset, amount, reason, at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        bot,
                        asset,
                        str(amount),
                        f"{correction.tag}: {correction.action}",
                        iso(correction.at),
                    ),
                ),
                *_balance_upserts(bot, {asset: total}, correction.at),
            ]
        )

    async def recent_runs(self, limit: int) -> list[dict[str, Any]]:
        rows = await self.store.fetch_all(
            "SELECT id, started_at, finished_at, actor, trigger, applied, bots, differences,"
            " corrections FROM reconciliation_runs ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            {**dict(row), "applied": bool(row["applied"]), "bots": json.loads(row["bots"])}
            for row in rows
        ]
