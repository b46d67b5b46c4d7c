"""`--verify-data` on a journal in PostgreSQL: the same checks as on SQLite's file.

The checks read through an aiosqlite connection (`conn.execute(sql)` as an async context
manager, a cursor to fetch or iterate). `PgSnapshot` offers the same on a psycopg connection
in a thread of its own, inside one REPEATABLE READ READ ONLY transaction: every check reads the
same snapshot, so writes a running leader commits meanwhile cannot make rows disagree, and
nothing is ever written. The SQL differs in two places, translated here: SQLite's
`group_concat` is `string_agg`, and the table list is `information_schema.tables`, not
`sqlite_master` (`rows.table_exists`). SQLite's own file checks (`PRAGMA integrity_check`,
`foreign_key_check`) have no equivalent to run: PostgreSQL enforces foreign keys itself.

Rows are streamed as the SQLite checks stream them: a query read with `async with` is a
server-side cursor (DECLARE, in the snapshot's transaction), fetched `BATCH_ROWS` at a time, so
a check holds one batch of a million-fill journal, not the table.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from coordinator.integrity.report import IntegrityReport
from coordinator.store.pg_connection import translate
from coordinator.store.postgres_dsn import redact_dsn

T = TypeVar("T")

_GROUP_CONCAT = re.compile(r"\bgroup_concat\(", re.IGNORECASE)


BATCH_ROWS = 2_000


class _Rows:
    """Rows fetched whole: `await conn.execute(...)` (statements, one-row answers)."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None


class _Cursor:
    """One query's server-side cursor: `async for` streams its rows `BATCH_ROWS` at a time;
    `fetchall` and `fetchone` read what is left. Closed when its `async with` ends."""

    def __init__(self, snapshot: PgSnapshot, cursor: Any) -> None:
        self._snapshot, self._cursor = snapshot, cursor

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return await self._snapshot.call(lambda: [tuple(r) for r in self._cursor.fetchall()])

    async def fetchone(self) -> tuple[Any, ...] | None:
        row = await self._snapshot.call(self._cursor.fetchone)
        return None if row is None else tuple(row)

    def __aiter__(self) -> AsyncIterator[tuple[Any, ...]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[Any, ...]]:
        while True:
            batch = await self._snapshot.call(lambda: self._cursor.fetchmany(BATCH_ROWS))
            if not batch:
                return
            for row in batch:
                yield tuple(row)

    async def close(self) -> None:
        await self._snapshot.call(self._cursor.close)


class _Query:
    def __init__(self, snapshot: PgSnapshot, sql: str, params: Sequence[Any]) -> None:
        self.snapshot, self.sql, self.params = snapshot, sql, params
        self._cursor: _Cursor | None = None

    async def __aenter__(self) -> _Cursor:
        self._cursor = await self.snapshot.declare(self.sql, self.params)
        return self._cursor

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._cursor is not None:
            await self._cursor.close()

    def __await__(self) -> Any:  # `await conn.execute(...)`, as aiosqlite allows
        return self._whole().__await__()

    async def _whole(self) -> _Rows:
        return _Rows(await self.snapshot.rows(self.sql, self.params))


class PgSnapshot:
    engine = "postgresql"

    def __init__(self, conn: Any, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor
        self._declared = 0

    @classmethod
    async def open(cls, dsn: str) -> PgSnapshot:
        from coordinator.store.pg_connection import PgConnection

        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-data")

        def connect() -> PgConnection:
            conn = PgConnection.connect(dsn)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return conn

        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Query:
        return _Query(self, _GROUP_CONCAT.sub("string_agg(", sql), params)

    async def call(self, work: Callable[[], T]) -> T:
        """Run `work` on the snapshot's own thread (psycopg's connection is not shared)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self.call(
            lambda: [tuple(r) for r in self._conn.execute(sql, params).fetchall()]
        )

    async def declare(self, sql: str, params: Sequence[Any]) -> _Cursor:
        """A server-side cursor for `sql`, in the snapshot's transaction."""
        self._declared += 1
        name = f"verify_data_{self._declared}"

        def declare() -> Any:
            cursor = self._conn.raw.cursor(name=name)
            cursor.execute(translate(sql, with_params=bool(params)), params or None)
            return cursor

        return _Cursor(self, await self.call(declare))

    async def close(self) -> None:
        def end() -> None:
            try:
                self._conn.execute("ROLLBACK")
            finally:
                self._conn.close()

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, end)
        finally:
            await asyncio.to_thread(self._executor.shutdown, wait=True)


async def verify_postgres(dsn: str) -> IntegrityReport:
    """Every check but SQLite's file checks, on one snapshot of the journal at `dsn`. Raises
    NoDatabase when the server cannot be reached or the database does not exist."""
    import psycopg

    from coordinator.integrity.verify import NoDatabase, run_checks

    where = Path(redact_dsn(dsn))
    try:
        snapshot = await PgSnapshot.open(dsn)
    except psycopg.Error as exc:
        raise NoDatabase(where, str(exc).strip()) from exc
    report = IntegrityReport(where)
    try:
        await run_checks(snapshot, report, skip=("sqlite", "foreign_keys"))  # type: ignore[arg-type]
    finally:
        await snapshot.close()
    return report
