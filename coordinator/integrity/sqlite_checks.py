"""SQLite's own checks: the file's structure (`PRAGMA integrity_check`) and every reference
between tables (`PRAGMA foreign_key_check`, which also finds rows inserted while foreign keys
were off)."""

from __future__ import annotations

import aiosqlite

from coordinator.integrity.report import Inconsistency
from coordinator.integrity.rows import CheckResult, fetch_all, shown


async def check_sqlite_integrity(conn: aiosqlite.Connection) -> CheckResult:
    """Anything but a single "ok" is listed, one message per row (SQLite stops at 100)."""
    pages = await fetch_all(conn, "PRAGMA page_count")
    messages = [str(row[0]) for row in await fetch_all(conn, "PRAGMA integrity_check")]
    found = [
        Inconsistency("sqlite", "(database file)", "-", "ok", message, "PRAGMA integrity_check")
        for message in messages
        if message != "ok"
    ]
    return CheckResult(int(pages[0][0]) if pages else 0, found)


async def check_foreign_keys(conn: aiosqlite.Connection) -> CheckResult:
    violations = await fetch_all(conn, "PRAGMA foreign_key_check")
    found: list[Inconsistency] = []
    for table, rowid, parent, fkid in violations:
        column, parent_column, value = await _reference(conn, str(table), rowid, int(fkid))
        found.append(
            Inconsistency(
                "foreign_keys",
                str(table),
                f"rowid {shown(rowid)}",
                f"{parent}.{parent_column} = {shown(value)}",
                "none",
                f"{table}.{column} points at a missing {parent} row"
                " (written while foreign keys were off)",
            )
        )
    return CheckResult(len(violations), found)


async def _reference(
    conn: aiosqlite.Connection, table: str, rowid: object, fkid: int
) -> tuple[str, str, object]:
    """The referencing column, the referenced column and the dangling value of one violation."""
    keys = await fetch_all(conn, f'PRAGMA foreign_key_list("{_ident(table)}")')
    column, parent_column = next(
        ((str(k[3]), str(k[4] or "rowid")) for k in keys if int(k[0]) == fkid), ("?", "?")
    )
    if column == "?" or rowid is None:
        return column, parent_column, None
    rows = await fetch_all(
        conn,
        f'SELECT "{_ident(column)}" FROM "{_ident(table)}" WHERE rowid = ?',  # noqa: S608
        (rowid,),
    )
    return column, parent_column, rows[0][0] if rows else None


def _ident(name: str) -> str:
    """A table or column name SQLite gave us, quoted for an identifier."""
    return name.replace('"', '""')
