"""`verify_database`: every integrity check over one journal file, read-only."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from coordinator.integrity.audit import check_audit_chain
from coordinator.integrity.books import check_books
from coordinator.integrity.orders import check_fills, check_order_events, check_orders
from coordinator.integrity.report import Inconsistency, IntegrityReport
from coordinator.integrity.rows import CheckResult, fetch_all, table_exists
from coordinator.integrity.sqlite_checks import check_foreign_keys, check_sqlite_integrity
from coordinator.store.migrations import LATEST_VERSION


class NoDatabase(Exception):
    """There is no database to verify at the path (missing, not a file, or not openable)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"no database at {path}: {why}")
        self.path = path


@dataclass(frozen=True, slots=True)
class _Check:
    name: str
    run: Callable[[aiosqlite.Connection], Awaitable[CheckResult]]
    since: int  # the schema version that created the tables it reads (0: any SQLite file)


CHECKS = (
    _Check("sqlite", check_sqlite_integrity, 0),
    _Check("foreign_keys", check_foreign_keys, 0),
    _Check("books", check_books, 1),
    _Check("orders", check_orders, 1),
    _Check("order_events", check_order_events, 1),
    _Check("fills", check_fills, 1),
    _Check("audit", check_audit_chain, 3),
)


async def verify_database(path: Path) -> IntegrityReport:
    """Check the journal at `path` and report every inconsistency found.

    The file is opened read-only (`mode=ro`, `query_only`) and never migrated or written, so
    this is safe while a coordinator runs on it: all checks read inside one read transaction,
    i.e. one WAL snapshot, so writes committed meanwhile cannot make rows disagree. (To read a
    WAL database SQLite may create its `-wal` and `-shm` files beside it; the database file
    itself is not touched.)

    A schema older than this code's (`LATEST_VERSION`) is one inconsistency telling the operator
    to start the coordinator once to migrate it; the checks whose tables that schema already has
    still run (the audit chain needs version 3). A schema newer than this code, or a file without
    `schema_migrations`, gets only SQLite's own checks. A check the file is too damaged to run
    (or that meets a value of the wrong type) is reported as an inconsistency of that check,
    and the others still run.

    Raises `NoDatabase` when there is nothing to open at `path` (an empty database is never
    created).
    """
    uri = await asyncio.to_thread(_read_only_uri, path)
    try:
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise NoDatabase(path, str(exc)) from exc
    report = IntegrityReport(path)
    try:
        await conn.execute("PRAGMA query_only=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("BEGIN")
        await run_checks(conn, report)
    finally:
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        await conn.close()
    return report


async def run_checks(
    conn: aiosqlite.Connection, report: IntegrityReport, skip: tuple[str, ...] = ()
) -> None:
    """Every check on `conn` (one read snapshot) but those named in `skip`."""
    try:
        version = await _schema_version(conn)
    except sqlite3.DatabaseError as exc:
        report.inconsistencies.append(
            Inconsistency("sqlite", "(database file)", "-", "an SQLite database", str(exc))
        )
        return
    schema_problem = _schema_problem(version)
    if schema_problem is not None:
        report.inconsistencies.append(schema_problem)
    usable = version if version is not None and version <= LATEST_VERSION else 0
    for check in CHECKS:
        if check.since > usable or check.name in skip:
            continue
        try:
            result = await check.run(conn)
        except Exception as exc:  # a damaged file or a value of the wrong type: say, go on
            report.inconsistencies.append(
                Inconsistency(
                    check.name, "-", "-", "the check to run", f"error: {exc!r}", "check not run"
                )
            )
            continue
        report.checked[check.name] = result.checked
        report.inconsistencies.extend(result.found)


async def _schema_version(conn: aiosqlite.Connection) -> int | None:
    if not await table_exists(conn, "schema_migrations"):
        return None
    rows = await fetch_all(conn, "SELECT MAX(version) FROM schema_migrations")
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def _schema_problem(version: int | None) -> Inconsistency | None:
    expected = f"version {LATEST_VERSION}"
    if version is None:
        return Inconsistency(
            "schema",
            "schema_migrations",
            "-",
            expected,
            "no schema version",
            "not a coordinator journal (or never migrated): only SQLite's own checks ran",
        )
    if version < LATEST_VERSION:
        skipped = ", ".join(c.name for c in CHECKS if c.since > version)
        return Inconsistency(
            "schema",
            "schema_migrations",
            f"version {version}",
            expected,
            f"version {version}",
            "start the coordinator once on this data dir to migrate it (--verify-data never"
            f" migrates); skipped until then: {skipped or 'nothing'}",
        )
    if version > LATEST_VERSION:
        return Inconsistency(
            "schema",
            "schema_migrations",
            f"version {version}",
            expected,
            f"version {version}",
            "the database is newer than this bot-coordinator: verify it with the newer one;"
            " only SQLite's own checks ran",
        )
    return None


def _read_only_uri(path: Path) -> str:
    """The SQLite URI that opens `path` read-only; blocking (stat, realpath)."""
    if not path.exists():
        raise NoDatabase(path, "the file does not exist")
    if not path.is_file():
        raise NoDatabase(path, "not a file")
    return f"{path.resolve().as_uri()}?mode=ro"
