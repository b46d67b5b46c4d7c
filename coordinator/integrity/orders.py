"""Orders, their status history (`order_events`) and their fills.

An order's `filled` is the sum of its fills; its events form one chain from the intent
(NULL -> pending_submit) through moves `ORDER_TRANSITIONS` allows to its current status. The one
exception is a reconciliation correction: an event whose detail starts with
"reconciliation correction #N", N a `reconciliation_corrections` row of the same bot, may move
an order between any two statuses (the journal corrected to match the exchange); it must still
link to the event before it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any, NamedTuple

import aiosqlite

from bots.journal import ORDER_TRANSITIONS, TERMINAL_STATUSES, OrderStatus
from coordinator.integrity.report import Inconsistency
from coordinator.integrity.rows import CheckResult, fetch_all, parse_decimal, shown, table_exists

_STATUSES = frozenset(status.value for status in OrderStatus)
_TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
_CORRECTION = re.compile(r"reconciliation correction #(\d+)")


class _Event(NamedTuple):
    id: int
    from_status: str | None
    to_status: str
    detail: str | None


# -- orders ---------------------------------------------------------------------------------------


async def check_orders(conn: aiosqlite.Connection) -> CheckResult:
    """Status, 0 <= filled <= amount, and filled == the sum of the order's fills."""
    found: list[Inconsistency] = []
    checked = 0
    async with conn.execute(
        "SELECT o.client_order_id, o.status, o.amount, o.filled,"
        " (SELECT group_concat(f.amount, ' ') FROM fills f"
        "  WHERE f.client_order_id = o.client_order_id)"
        " FROM orders o ORDER BY o.client_order_id"
    ) as cursor:
        async for cid, status, amount, filled, fill_amounts in cursor:
            checked += 1
            found.extend(_check_order(int(cid), status, amount, filled, fill_amounts))
    return CheckResult(checked, found)


def _check_order(
    cid: int, status: Any, amount: Any, filled: Any, fill_amounts: str | None
) -> Iterator[Inconsistency]:
    row = f"client_order_id {cid}"
    if status not in _STATUSES:
        yield Inconsistency(
            "orders", "orders", row, f"a status in {sorted(_STATUSES)}", shown(status)
        )
    amount_n, filled_n = parse_decimal(amount), parse_decimal(filled)
    if amount_n is None or filled_n is None:
        yield Inconsistency(
            "orders",
            "orders",
            row,
            "decimal amount and filled",
            f"amount {shown(amount)}, filled {shown(filled)}",
        )
        return
    if not (amount_n > 0 and 0 <= filled_n <= amount_n):
        yield Inconsistency(
            "orders",
            "orders",
            row,
            "0 <= filled <= amount (amount > 0)",
            f"filled {filled_n}, amount {amount_n}",
        )
    parts = (fill_amounts or "").split()
    total = sum((parse_decimal(part) or Decimal(0) for part in parts), Decimal(0))
    if total != filled_n:
        live = "" if status in _TERMINAL else "; it is live: a venue's trades may lag its fill"
        yield Inconsistency(
            "orders",
            "orders",
            row,
            f"filled {total} (the sum of its {len(parts)} fill{'' if len(parts) == 1 else 's'})",
            f"filled {filled_n}",
            f"orders.filled differs from the sum of the order's fills: a fill row is missing,"
            f" extra or changed{live}",
        )


# -- order events ---------------------------------------------------------------------------------


async def check_order_events(conn: aiosqlite.Connection) -> CheckResult:
    """Each order's events, one order at a time: a journal of millions of events is read as a
    stream (holding them all took about 1 KiB a fill, docs/benchmarks.md)."""
    corrections = await _corrections(conn)
    found: list[Inconsistency] = []
    checked = 0
    async for cid, order, events in _events_by_order(conn):
        checked += len(events)
        if order is None:
            found.append(
                Inconsistency(
                    "order_events",
                    "order_events",
                    f"id {events[0].id}",
                    f"an order with client_order_id {cid}",
                    "none",
                    f"{len(events)} events of a missing order",
                )
            )
            continue
        bot, status = order
        found.extend(_check_chain(cid, bot, status, events, corrections))
    async with conn.execute(
        "SELECT client_order_id FROM orders o WHERE NOT EXISTS"
        " (SELECT 1 FROM order_events e WHERE e.client_order_id = o.client_order_id)"
        " ORDER BY client_order_id"
    ) as cursor:
        async for (cid,) in cursor:
            found.append(
                Inconsistency(
                    "order_events",
                    "order_events",
                    f"client_order_id {cid}",
                    "an intent event (NULL -> pending_submit)",
                    "no events",
                    "every status of an order is an order_events row",
                )
            )
    return CheckResult(checked, found)


async def _corrections(conn: aiosqlite.Connection) -> dict[int, str]:
    """reconciliation_corrections id -> bot (the table exists from schema version 3)."""
    if not await table_exists(conn, "reconciliation_corrections"):
        return {}
    rows = await fetch_all(conn, "SELECT id, bot FROM reconciliation_corrections")
    return {int(row_id): str(bot) for row_id, bot in rows}


async def _events_by_order(
    conn: aiosqlite.Connection,
) -> AsyncIterator[tuple[int, tuple[str, Any] | None, list[_Event]]]:
    """(client order id, (bot, status) or None when no such order, its events in order)."""
    cid: int | None = None
    order: tuple[str, Any] | None = None
    events: list[_Event] = []
    async with conn.execute(
        "SELECT e.client_order_id, e.id, e.from_status, e.to_status, e.detail, o.bot, o.status,"
        " o.client_order_id IS NOT NULL FROM order_events e"
        " LEFT JOIN orders o ON o.client_order_id = e.client_order_id"
        " ORDER BY e.client_order_id, e.id"
    ) as cursor:
        async for row_cid, event_id, from_status, to_status, detail, bot, status, known in cursor:
            if row_cid != cid:
                if cid is not None:
                    yield cid, order, events
                cid, events = int(row_cid), []
                order = (str(bot), status) if known else None
            events.append(_Event(int(event_id), from_status, to_status, detail))
    if cid is not None:
        yield cid, order, events


def _check_chain(
    cid: int, bot: str, status: Any, events: list[_Event], corrections: dict[int, str]
) -> Iterator[Inconsistency]:
    row = f"client_order_id {cid}"
    previous: str | None = None
    for index, event in enumerate(events):
        where = f"event id {event.id}"
        if event.from_status != previous:
            want = "NULL (the intent)" if index == 0 else previous
            yield Inconsistency(
                "order_events",
                "order_events",
                row,
                f"from_status {want}",
                f"from_status {shown(event.from_status)}",
                f"{where} does not follow the event before it",
            )
        problem = _move_problem(index, event, bot, corrections)
        if problem:
            yield Inconsistency(
                "order_events",
                "order_events",
                row,
                problem[0],
                problem[1],
                f"{where}: {problem[2]}",
            )
        previous = event.to_status
    if previous != status:
        yield Inconsistency(
            "order_events",
            "orders",
            row,
            f"status {shown(previous)} (its last event)",
            f"status {shown(status)}",
            "orders.status is not where its events lead",
        )


def _move_problem(
    index: int, event: _Event, bot: str, corrections: dict[int, str]
) -> tuple[str, str, str] | None:
    """(expected, found, why) when this event's move is not one the journal can make."""
    move = f"{shown(event.from_status)} -> {shown(event.to_status)}"
    if event.to_status not in _STATUSES or (
        event.from_status is not None and event.from_status not in _STATUSES
    ):
        return "statuses in OrderStatus", move, "unknown status"
    if index == 0:
        if event.to_status == OrderStatus.PENDING_SUBMIT.value:
            return None
        return "NULL -> pending_submit", move, "the first event must be the intent"
    if event.from_status is None:
        return "a from_status", move, "only the intent has no from_status"
    if OrderStatus(event.to_status) in ORDER_TRANSITIONS[OrderStatus(event.from_status)]:
        return None
    cited = _CORRECTION.match(event.detail or "")
    if cited is None:
        return "a move ORDER_TRANSITIONS allows", move, "impossible transition"
    number = int(cited.group(1))
    if corrections.get(number) == bot:
        return None
    return (
        f"reconciliation correction #{number} of bot {bot}",
        "no such correction" if number not in corrections else f"one of bot {corrections[number]}",
        f"impossible transition citing reconciliation correction #{number}",
    )


# -- fills ----------------------------------------------------------------------------------------


async def check_fills(conn: aiosqlite.Connection) -> CheckResult:
    found: list[Inconsistency] = []
    checked = 0
    async with conn.execute(
        "SELECT f.id, f.client_order_id, f.bot, f.side, f.amount, f.price,"
        " o.client_order_id IS NOT NULL, o.bot, o.side"
        " FROM fills f LEFT JOIN orders o ON o.client_order_id = f.client_order_id"
        " ORDER BY f.id"
    ) as cursor:
        async for row in cursor:
            checked += 1
            found.extend(_check_fill(tuple(row)))
    return CheckResult(checked, found)


def _check_fill(fill: tuple[Any, ...]) -> Iterator[Inconsistency]:
    fill_id, cid, bot, side, amount, price, has_order, order_bot, order_side = fill
    row = f"id {fill_id}"
    of = f"fill of client_order_id {shown(cid)}"
    if not has_order:
        yield Inconsistency(
            "fills",
            "fills",
            row,
            f"an order with client_order_id {shown(cid)}",
            "none",
            f"{of}: no such order; the fill was written while foreign keys were off",
        )
    else:
        if bot != order_bot:
            yield Inconsistency(
                "fills",
                "fills",
                row,
                f"bot {order_bot}",
                f"bot {shown(bot)}",
                f"{of}: the fill's bot is not its order's",
            )
        if side != order_side:
            yield Inconsistency(
                "fills",
                "fills",
                row,
                f"side {order_side}",
                f"side {shown(side)}",
                f"{of}: the fill's side is not its order's",
            )
    for column, value in (("amount", amount), ("price", price)):
        number = parse_decimal(value)
        if number is None or number <= 0:
            yield Inconsistency(
                "fills", "fills", row, f"{column} > 0", f"{column} {shown(value)}", of
            )
