"""The order journal, bot registry and audit log on top of the SQLite store.

Every method turns domain objects into statements for one atomic `SqliteStore.write`. Amounts are
stored as TEXT (exact decimals); times as ISO-8601 UTC strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bots.journal import (
    BookSnapshot,
    FillRecord,
    JournalOrder,
    OrderStatus,
    OrderUpdate,
    check_order_transition,
)
from bots.ledger import Position
from bots.models import OrderType, Side
from coordinator.credentials import redact
from coordinator.store.audit_chain import AuditAppend
from coordinator.store.sqlite import Expect, Priority, SqliteStore, Statement, Write

_ORDER_COLUMNS = (
    "client_order_id, bot, exchange, symbol, side, type, amount, price, status,"
    " exchange_order_id, filled, tag, reason, created_at"
)
_INSERT_ORDER = (
    f"INSERT INTO orders ({_ORDER_COLUMNS}, updated_at)"  # noqa: S608 (constant column list)
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_LIVE_ORDERS = (
    f"SELECT {_ORDER_COLUMNS} FROM orders"  # noqa: S608 (constant column list)
    " WHERE bot = ? AND status IN (?, ?) ORDER BY client_order_id"
)


def iso(at: datetime | str) -> str:
    """UTC ISO 8601 with microseconds; text already formatted passes through (a write that
    stamps several rows with one time formats it once)."""
    if isinstance(at, str):
        return at
    if at.tzinfo is not UTC:  # most times are UTC already: astimezone costs a fifth of this
        at = at.astimezone(UTC)
    return at.isoformat(timespec="microseconds")


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class SqliteJournal:
    """Implements `bots.journal.OrderJournal` plus what the coordinator reads and audits."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    # -- orders ----------------------------------------------------------------------------------

    async def record_intent(self, order: JournalOrder) -> None:
        if order.status is not OrderStatus.PENDING_SUBMIT:
            raise ValueError("an intent is journaled as pending_submit")
        created = iso(order.created_at)
        await self.store.write(
            [
                (
                    _INSERT_ORDER,
                    (
                        order.client_order_id,
                        order.bot,
                        order.exchange,
                        order.symbol,
                        order.side.value,
                        order.type.value,
                        str(order.amount),
                        _dec(order.price),
                        order.status.value,
                        order.exchange_order_id,
                        str(order.filled),
                        order.tag,
                        order.reason,
                        created,
                        created,
                    ),
                ),
                _order_event(order.client_order_id, created, None, order.status, "intent"),
            ]
        )

    async def record_update(self, update: OrderUpdate) -> None:
        order = update.order
        check_order_transition(order.client_order_id, update.previous_status, order.status)
        at = iso(update.at)
        statements: list[Write] = [
            Expect(
                "UPDATE orders SET status = ?, exchange_order_id = ?, filled = ?, reason = ?,"
                " updated_at = ? WHERE client_order_id = ? AND status = ?",
                (
                    order.status.value,
                    order.exchange_order_id,
                    str(order.filled),
                    order.reason,
                    at,
                    order.client_order_id,
                    update.previous_status.value,
                ),
            )
        ]
        if order.status is not update.previous_status:
            statements.append(
                _order_event(
                    order.client_order_id,
                    at,
                    update.previous_status,
                    order.status,
                    update.detail,
                )
            )
        statements.extend(_fill_insert(fill, at) for fill in update.fills)
        if update.position is not None:
            statements.append(_position_upsert(order.bot, order.symbol, update.position, at))
        statements.extend(_balance_upserts(order.bot, update.balances, at))
        await self.store.write(statements)

    async def load_book(self, bot: str) -> BookSnapshot:
        position_row = await self.store.fetch_one(
            "SELECT base, avg_entry_price, realized_pnl, fees_paid FROM positions WHERE bot = ?",
            (bot,),
        )
        position = (
            Position(*(Decimal(position_row[i]) for i in range(4))) if position_row else Position()
        )
        balances = {
            row["asset"]: Decimal(row["total"])
            for row in await self.store.fetch_all(
                "SELECT asset, total FROM balances WHERE bot = ?", (bot,)
            )
        }
        open_rows = await self.store.fetch_all(
            _SELECT_LIVE_ORDERS,
            (bot, OrderStatus.PENDING_SUBMIT.value, OrderStatus.OPEN.value),
        )
        open_orders = [_order_from_row(dict(row)) for row in open_rows]
        trade_ids: dict[int, set[str]] = {order.client_order_id: set() for order in open_orders}
        for order in open_orders:
            for row in await self.store.fetch_all(
                "SELECT trade_id FROM fills WHERE client_order_id = ?", (order.client_order_id,)
            ):
                trade_ids[order.client_order_id].add(row["trade_id"])
        counts = await self.store.fetch_one(
            "SELECT (SELECT COUNT(*) FROM orders WHERE bot = ?),"
            " (SELECT COUNT(*) FROM fills WHERE bot = ?),"
            " (SELECT MAX(created_at) FROM orders WHERE bot = ?)",
            (bot, bot, bot),
        )
        assert counts is not None
        return BookSnapshot(
            position=position,
            balances=balances,
            open_orders=open_orders,
            trade_ids=trade_ids,
            orders_count=int(counts[0]),
            fills_count=int(counts[1]),
            last_order_at=parse_time(counts[2]),
        )

    async def max_client_order_id(self) -> int:
        row = await self.store.fetch_one("SELECT MAX(client_order_id) FROM orders")
        return int(row[0]) if row and row[0] is not None else 0

    async def count_orders_since(self, bot: str, since: datetime) -> int:
        row = await self.store.fetch_one(
            "SELECT COUNT(*) FROM orders WHERE bot = ? AND created_at >= ?", (bot, iso(since))
        )
        return int(row[0]) if row else 0

    # -- bots ------------------------------------------------------------------------------------

    async def register_bot(
        self, name: str, exchange: str, symbol: str, mode: str, at: datetime
    ) -> None:
        """Create or refresh the bot's row from config; its state, counters and history stay."""
        await self.store.write(
            [
                (
                    "INSERT INTO bots (name, exchange, symbol, mode, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                    " exchange = excluded.exchange, symbol = excluded.symbol,"
                    " mode = excluded.mode, updated_at = excluded.updated_at",
                    (name, exchange, symbol, mode, iso(at)),
                )
            ]
        )

    async def load_bot_row(self, name: str) -> Mapping[str, Any] | None:
        row = await self.store.fetch_one("SELECT * FROM bots WHERE name = ?", (name,))
        return dict(row) if row is not None else None

    async def save_bot_state(self, name: str, at: datetime, **fields: Any) -> None:
        """Persist some of: state, safe_mode, restarts, last_error, last_tick_at, strategy_state."""
        allowed = {"state", "safe_mode", "restarts", "last_error", "last_tick_at", "strategy_state"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown bot fields: {sorted(unknown)}")
        values = {k: _bot_value(v) for k, v in fields.items()}
        assignments = ", ".join(f"{key} = ?" for key in values)
        await self.store.write(
            [
                (
                    f"UPDATE bots SET {assignments}, updated_at = ? WHERE name = ?",  # noqa: S608
                    (*values.values(), iso(at), name),
                )
            ]
        )

    async def seed_balances(
        self, bot: str, balances: Mapping[str, Decimal], reason: str, at: datetime
    ) -> None:
        """Open a paper account: each opening balance is an adjustment entry and a balance row."""
        statements: list[Statement] = []
        for asset, amount in balances.items():
            statements.append(
                (
                    "INSERT INTO balance_adjustments (bot, asset, amount, reason, at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (bot, asset, str(amount), reason, iso(at)),
                )
            )
        statements.extend(_balance_upserts(bot, balances, at))
        await self.store.write(statements)

    # -- safety state ----------------------------------------------------------------------------

    async def save_safety_state(
        self,
        key: str,
        value: Mapping[str, Any],
        at: datetime,
        also: Sequence[Write] = (),
    ) -> None:
        """Persist one safety component's state (and `also`, atomically) in the safety lane."""
        await self.store.write(
            [
                (
                    "INSERT INTO safety_state (key, value, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (key, json.dumps(dict(value), default=str, sort_keys=True), iso(at)),
                ),
                *also,
            ],
            Priority.SAFETY,
        )

    async def load_safety_state(self) -> dict[str, dict[str, Any]]:
        """Every stored safety state. A row that is not a JSON object comes back as
        `{"unreadable": why}`, which each component treats as unsafe (the kill switch as
        active, a breaker as tripped) instead of refusing to start."""
        rows = await self.store.fetch_all("SELECT key, value FROM safety_state")
        states: dict[str, dict[str, Any]] = {}
        for row in rows:
            try:
                value = json.loads(row["value"])
            except ValueError as exc:
                value = {"unreadable": f"not JSON: {exc}"}
            if not isinstance(value, dict):
                value = {"unreadable": f"not a JSON object: {type(value).__name__}"}
            states[row["key"]] = value
        return states

    async def kill_switch_activation_times_since(self, since: datetime) -> list[datetime]:
        """When the kill switch was activated since `since`, oldest first."""
        rows = await self.store.fetch_all(
            "SELECT at FROM kill_switch_activations WHERE at >= ? ORDER BY at", (iso(since),)
        )
        return [t for t in (parse_time(row[0]) for row in rows) if t is not None]

    # -- audit -----------------------------------------------------------------------------------

    async def audit(
        self,
        *,
        actor: str,
        action: str,
        result: str,
        at: datetime,
        subject: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        priority: Priority = Priority.SAFETY,
    ) -> None:
        entry = audit_entry(
            actor=actor,
            action=action,
            result=result,
            at=at,
            subject=subject,
            reason=reason,
            details=details,
        )
        await self.store.write([entry], priority)

    async def recent_audit(self, limit: int) -> list[dict[str, Any]]:
        rows = await self.store.fetch_all(
            "SELECT id, at, actor, action, subject, reason, result, details FROM audit_events"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [{**dict(row), "details": json.loads(row["details"])} for row in rows]


def _bot_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return int(value)
    return value


def audit_entry(
    *,
    actor: str,
    action: str,
    result: str,
    at: datetime,
    subject: str | None = None,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditAppend:
    """An audit entry as a write step, for a caller that commits it with what it records."""
    return AuditAppend(
        iso(at),
        actor,
        action,
        subject,
        redact(reason) if reason is not None else None,
        redact(result),
        redact(json.dumps(dict(details or {}), default=str, sort_keys=True)),
    )


def _order_event(
    client_order_id: int,
    at: datetime | str,
    from_status: OrderStatus | None,
    to_status: OrderStatus,
    detail: str,
) -> Statement:
    return (
        "INSERT INTO order_events (client_order_id, at, from_status, to_status, detail)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            client_order_id,
            iso(at),
            from_status.value if from_status else None,
            to_status.value,
            detail or None,
        ),
    )


def _fill_insert(fill: FillRecord, at: datetime | str) -> Statement:
    return (
        "INSERT INTO fills (client_order_id, bot, trade_id, side, amount, price, fee,"
        " fee_currency, executed_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            fill.client_order_id,
            fill.bot,
            fill.trade_id,
            fill.side.value,
            str(fill.amount),
            str(fill.price),
            str(fill.fee),
            fill.fee_currency,
            iso(fill.executed_at),
            iso(at),
        ),
    )


def _position_upsert(
    bot: str, symbol: str, position: Position, at: datetime | str
) -> Statement:
    return (
        "INSERT INTO positions (bot, symbol, base, avg_entry_price, realized_pnl, fees_paid,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (bot) DO UPDATE SET"
        " symbol = excluded.symbol, base = excluded.base,"
        " avg_entry_price = excluded.avg_entry_price, realized_pnl = excluded.realized_pnl,"
        " fees_paid = excluded.fees_paid, updated_at = excluded.updated_at",
        (
            bot,
            symbol,
            str(position.base),
            str(position.avg_entry_price),
            str(position.realized_pnl),
            str(position.fees_paid),
            iso(at),
        ),
    )


def _balance_upserts(
    bot: str, balances: Mapping[str, Decimal], at: datetime | str
) -> Iterable[Statement]:
    at = iso(at)
    for asset, total in balances.items():
        yield (
            "INSERT INTO balances (bot, asset, total, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (bot, asset) DO UPDATE SET total = excluded.total,"
            " updated_at = excluded.updated_at",
            (bot, asset, str(total), iso(at)),
        )


def _order_from_row(row: Mapping[str, Any]) -> JournalOrder:
    return JournalOrder(
        client_order_id=int(row["client_order_id"]),
        bot=row["bot"],
        exchange=row["exchange"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        type=OrderType(row["type"]),
        amount=Decimal(row["amount"]),
        price=Decimal(row["price"]) if row["price"] is not None else None,
        status=OrderStatus(row["status"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        filled=Decimal(row["filled"]),
        tag=row["tag"],
        exchange_order_id=row["exchange_order_id"],
        reason=row["reason"],
    )
