"""The SQLite store: one write connection with group commit, one read connection.

Writes are jobs (a list of SQL statements that must commit together). A single writer task takes
every job queued since its last commit and commits them in one transaction, so a hundred bots that
write in the same instant pay for one fsync, not a hundred. Jobs submitted with
`Priority.SAFETY` (the kill switch, the audit of a control action) go into a lane the writer
always empties first, in a transaction of their own, so a safety write waits at most for the one
batch already being committed, never behind a backlog of order writes.

A statement that fails makes the writer roll the batch back and commit its jobs one by one, so
only the failing job's caller sees the error and the others still commit.

Durability: WAL journal with `synchronous=FULL`: a job's `write()` returns only after the commit
that contains it is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from coordinator.store.migrations import LATEST_VERSION, MIGRATIONS, Migration
from coordinator.store.steps import TransactionStep

log = logging.getLogger(__name__)

Statement = tuple[str, Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Expect:
    """A statement that must change exactly `rows` rows, or its whole job is rolled back.

    For guarded updates (`... WHERE status = ?`): a stale expectation must not let the rest of
    the job (fills, balances) commit against a row it did not change."""

    sql: str
    params: Sequence[Any]
    rows: int = 1


class StaleWrite(Exception):
    """An `Expect` statement changed a different number of rows than expected."""


Write = Statement | Expect | TransactionStep

MAX_BATCH_JOBS = 512


class Priority(enum.IntEnum):
    SAFETY = 0
    NORMAL = 1


class StoreError(Exception):
    """The store could not do what was asked (closed, newer schema, failed write)."""


class StoreClosed(StoreError):
    pass


@dataclass(slots=True)
class _Job:
    statements: Sequence[Write]
    future: asyncio.Future[None]


@dataclass(slots=True)
class WriterStats:
    """Counters that show group commit working: jobs per commit is the saving."""

    jobs: int = 0
    commits: int = 0
    safety_commits: int = 0
    failed_jobs: int = 0
    largest_batch: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "commits": self.commits,
            "safety_commits": self.safety_commits,
            "failed_jobs": self.failed_jobs,
            "largest_batch": self.largest_batch,
            "jobs_per_commit": round(self.jobs / self.commits, 2) if self.commits else 0.0,
        }


class SqliteStore:
    """The embedded store. Open with `await SqliteStore.open(path)`; close with `close()`."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        max_batch_jobs: int = MAX_BATCH_JOBS,
    ):
        self.path = path
        self._writer_conn = writer
        self._reader_conn = reader
        self._lanes: dict[Priority, deque[_Job]] = {p: deque() for p in Priority}
        self._wakeup = asyncio.Event()
        self._closing = False
        self._writer_task: asyncio.Task[None] | None = None
        self._max_batch_jobs = max_batch_jobs
        self._broken: Exception | None = None
        self.stats = WriterStats()
        # Told of every commit: (seconds from BEGIN to COMMIT, safety lane). Metrics listen.
        self.on_commit: Callable[[float, bool], None] | None = None
        self.last_commit_seconds: float | None = None

    @classmethod
    async def open(cls, path: Path, max_batch_jobs: int = MAX_BATCH_JOBS) -> SqliteStore:
        """Open (creating if needed) and migrate the database at `path`, then start the writer."""
        writer = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await _configure(writer)
            await _migrate(writer)
            reader = await aiosqlite.connect(str(path), isolation_level=None)
        except BaseException:
            await writer.close()
            raise
        await reader.execute("PRAGMA query_only=ON")
        reader.row_factory = aiosqlite.Row
        store = cls(path, writer, reader, max_batch_jobs)
        store._writer_task = asyncio.create_task(store._write_loop(), name="store-writer")
        return store

    async def write(
        self, statements: Sequence[Write], priority: Priority = Priority.NORMAL
    ) -> None:
        """Commit `statements` atomically; returns once they are durable on disk."""
        if self._closing:
            raise StoreClosed("the store is closed; nothing was written")
        if self._broken is not None:
            raise StoreError(f"the store writer failed earlier: {self._broken!r}; nothing written")
        if not statements:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lanes[priority].append(_Job(statements, future))
        self._wakeup.set()
        await future

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self._reader_conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self._reader_conn.execute(sql, params) as cursor:
            row: aiosqlite.Row | None = await cursor.fetchone()
            return row

    async def ping(self) -> float:
        """One real round trip to the database (a query on the read connection, through its
        thread): its duration in seconds. Raises StoreError when the store cannot answer."""
        if self._closing:
            raise StoreClosed("the store is closed")
        began = time.perf_counter()
        try:
            await self.fetch_one("SELECT 1")
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"the database does not answer: {exc}") from exc
        return time.perf_counter() - began

    @property
    def broken(self) -> Exception | None:
        """Why the writer stopped for good, or None while it can write."""
        return self._broken

    @property
    def backlog(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    async def close(self) -> None:
        """Commit what is queued, stop the writer, close both connections."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        if self._writer_task is not None:
            await self._writer_task
        await self._reader_conn.close()
        await self._writer_conn.close()

    # -- the writer ------------------------------------------------------------------------------

    def _next_batch(self) -> tuple[list[_Job], bool]:
        safety = self._lanes[Priority.SAFETY]
        if safety:
            jobs = list(safety)
            safety.clear()
            return jobs, True
        normal = self._lanes[Priority.NORMAL]
        jobs = [normal.popleft() for _ in range(min(len(normal), self._max_batch_jobs))]
        return jobs, False

    async def _write_loop(self) -> None:
        try:
            await self._write_batches()
        except Exception as exc:
            # Nothing can be written any more: say so to every waiting and later caller rather
            # than leave them hanging on futures no one will resolve.
            log.critical(
                "the store writer failed; no further writes are possible: %r", exc, exc_info=exc
            )
            self._broken = exc
            for lane in self._lanes.values():
                while lane:
                    job = lane.popleft()
                    if not job.future.done():
                        job.future.set_exception(StoreError(f"the store writer failed: {exc!r}"))

    async def _write_batches(self) -> None:
        while True:
            if not self.backlog:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            jobs, is_safety = self._next_batch()
            began = time.perf_counter()
            try:
                await self._commit_batch(jobs)
            except BaseException as exc:
                failure = (
                    StoreClosed("store writer cancelled")
                    if isinstance(exc, asyncio.CancelledError)
                    else StoreError(f"the store writer failed: {exc!r}")
                )
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(failure)
                raise
            self.stats.commits += 1
            self.stats.safety_commits += int(is_safety)
            self.stats.jobs += len(jobs)
            self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
            self.last_commit_seconds = time.perf_counter() - began
            if self.on_commit is not None:
                self.on_commit(self.last_commit_seconds, is_safety)

    async def _commit_batch(self, jobs: list[_Job]) -> None:
        conn = self._writer_conn
        try:
            await conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                await _execute_all(conn, job.statements)
            await conn.execute("COMMIT")
        except Exception as exc:
            # Usually a sqlite3.Error; but a parameter sqlite3 cannot bind (a str holding a lone
            # surrogate, an int beyond 64 bits) raises UnicodeEncodeError or OverflowError, and
            # letting that escape would kill the writer and leave every later write() hanging.
            await _rollback(conn)
            if len(jobs) == 1:
                self._fail(jobs[0], exc)
                return
            log.warning("batch of %d writes failed (%s); committing one by one", len(jobs), exc)
            for job in jobs:
                await self._commit_batch([job])
            return
        for job in jobs:
            if not job.future.done():
                job.future.set_result(None)

    def _fail(self, job: _Job, exc: Exception) -> None:
        self.stats.failed_jobs += 1
        log.error("store write failed and was rolled back: %s", exc)
        if not job.future.done():
            job.future.set_exception(StoreError(f"write rolled back: {exc}"))


async def _execute_all(conn: aiosqlite.Connection, statements: Iterable[Write]) -> None:
    for statement in statements:
        if isinstance(statement, TransactionStep):
            await statement.apply(conn)
        elif isinstance(statement, Expect):
            cursor = await conn.execute(statement.sql, statement.params)
            if cursor.rowcount != statement.rows:
                raise StaleWrite(
                    f"expected {statement.rows} row(s) changed, got {cursor.rowcount}: "
                    f"{statement.sql.split(' WHERE ')[0]}"
                )
        else:
            await conn.execute(*statement)


async def _rollback(conn: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        await conn.execute("ROLLBACK")


async def _configure(conn: aiosqlite.Connection) -> None:
    async with conn.execute("PRAGMA journal_mode=WAL") as cursor:
        row = await cursor.fetchone()
    if row is None or str(row[0]).lower() != "wal":
        raise StoreError(f"could not switch the database to WAL (journal_mode={row and row[0]})")
    await conn.execute("PRAGMA synchronous=FULL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=5000")


async def schema_version(conn: aiosqlite.Connection) -> int:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    async with conn.execute("SELECT MAX(version) FROM schema_migrations") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def _migrate(conn: aiosqlite.Connection) -> None:
    current = await schema_version(conn)
    if current > LATEST_VERSION:
        raise StoreError(
            f"the database is at schema version {current}, newer than this coordinator "
            f"knows ({LATEST_VERSION}): run the newer coordinator or restore a backup"
        )
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        if migration.after is not None:
            await _migrate_with_step(conn, migration)
            continue
        script = (
            "BEGIN IMMEDIATE;\n"
            f"{migration.sql}\n"
            "INSERT INTO schema_migrations (version, name, applied_at) "
            f"VALUES ({migration.version}, '{migration.name}', "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));\n"
            "COMMIT;"
        )
        try:
            await conn.executescript(script)
        except sqlite3.Error as exc:
            await _rollback(conn)
            raise StoreError(
                f"migration {migration.version} ({migration.name}) failed: {exc}"
            ) from exc
        log.info("store migrated to schema version %d: %s", migration.version, migration.name)


async def _migrate_with_step(conn: aiosqlite.Connection, migration: Migration) -> None:
    """A migration with a Python step: its statements one by one, then the step, in one
    transaction (executescript would commit the transaction before the step could run)."""
    assert migration.after is not None
    try:
        await conn.execute("BEGIN IMMEDIATE")
        for statement in split_statements(migration.sql):
            await conn.execute(statement)
        await migration.after(conn)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)"
            " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (migration.version, migration.name),
        )
        await conn.execute("COMMIT")
    except sqlite3.Error as exc:
        await _rollback(conn)
        raise StoreError(f"migration {migration.version} ({migration.name}) failed: {exc}") from exc
    log.info("store migrated to schema version %d: %s", migration.version, migration.name)


def split_statements(script: str) -> list[str]:
    """The complete SQL statements in `script`, in order (sqlite3 decides where one ends)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buffer.strip()!r}")
    return statements
