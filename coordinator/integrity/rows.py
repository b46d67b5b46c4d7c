"""What every check shares: reading rows, parsing stored decimals, the shape of a result."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import aiosqlite

from coordinator.integrity.report import Inconsistency


class CheckResult(NamedTuple):
    checked: int  # rows the check looked at
    found: list[Inconsistency]


async def fetch_all(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    async with conn.execute(sql, params) as cursor:
        return [tuple(row) for row in await cursor.fetchall()]


async def table_exists(conn: aiosqlite.Connection, name: str) -> bool:
    if getattr(conn, "engine", "sqlite") == "postgresql":  # integrity/postgres.py's snapshot
        sql = "SELECT 1 FROM information_schema.tables WHERE table_schema = 'public'" \
            " AND table_name = ?"
    else:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    rows = await fetch_all(conn, sql, (name,))
    return bool(rows)


def parse_decimal(value: object) -> Decimal | None:
    """A stored amount as a Decimal; None when it is not a finite decimal (NULL, garbage,
    NaN): the caller reports it rather than comparing something it cannot read."""
    if value is None or isinstance(value, bytes):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def shown(value: object) -> str:
    """A stored value as an operator should read it: NULL as NULL, text as is."""
    return "NULL" if value is None else str(value)
