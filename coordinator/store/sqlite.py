"""The SQLite store: one write connection with group commit, one read connection.

Writes are jobs (a list of SQL statements that must commit together). A single writer task takes
every job queued since its last commit and commits them in one transaction, so a hundred bots that
write in the same instant pay for one fsync, not a hundred. Jobs submitted with
`Priority.SAFETY` (the kill switch, the audit of a control action) skip the queue and the writer
task: each goes straight to the writer's thread in a transaction of its own, so a safety write
waits at most for the one batch already being committed, never behind a backlog of order writes
nor for the writer task's turn on a busy event loop.

One thread hop per batch. The write connection is a plain `sqlite3` connection owned by one
dedicated thread (`_WriterThread`), and a whole batch (BEGIN IMMEDIATE, every job's statements,
the `Expect` row-count checks, the `TransactionStep`s, COMMIT, or ROLLBACK) is one synchronous
function run in that thread. The writer used to go through aiosqlite, one thread hop per
statement: a profile of 1,000 bots showed each hop costing the event loop a queue put, a
`call_soon_threadsafe` and a future wakeup, about 1,000 of them per commit. Now a commit costs the
loop one. aiosqlite is still used to open, configure and migrate the database (migrations are
async and run before the writer starts) and for the read connection.

A statement that fails makes the writer roll the batch back and commit its jobs one by one (still
in the same hop), so only the failing job's caller sees the error and the others still commit. A
connection that can no longer roll back (closed, gone with its disk) stops the writer for good:
every waiting and later caller gets a `StoreError` rather than a future no one will resolve.

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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from coordinator.store.migrations import LATEST_VERSION, MIGRATIONS, Migration
from coordinator.store.steps import TransactionStep

log = logging.getLogger(__name__)

Statement = tuple[str, Sequence[Any]]

T = TypeVar("T")


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


class _WriterThread:
    """The write connection and the one thread that ever touches it.

    `run(fn)` calls `fn(conn)` in that thread: one hop from the event loop and back, however much
    `fn` does. The connection is opened, configured and closed in the thread too."""

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection):
        self._executor = executor
        self._conn = conn
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> _WriterThread:
        return await cls.open_with(lambda: _connect_writer(path), "store-writer")

    @classmethod
    async def open_with(cls, connect: Callable[[], Any], name: str) -> _WriterThread:
        """A thread named `name` and the connection `connect()` makes in it (PostgreSQL's
        store opens its connections so too)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)`, run in the writer's thread; its result or its exception."""
        return await self.submit(fn)

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """`fn(conn)` queued for the writer's thread; a future of the running loop for it."""
        if self._closed:
            raise StoreClosed("the store writer is closed")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    async def close(self) -> None:
        """Close the connection (in its thread), then stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        finally:
            # Joining the thread blocks, if only for a moment: not on the event loop.
            await asyncio.to_thread(self._executor.shutdown, wait=True)


def _connect_writer(path: Path) -> sqlite3.Connection:
    """In the writer's thread: the write connection, configured. WAL is a property of the file,
    set when the store was opened; check that it is still in force."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        row = conn.execute("PRAGMA journal_mode").fetchone()
        if row is None or str(row[0]).lower() != "wal":
            raise StoreError(f"the database is not in WAL mode (journal_mode={row and row[0]})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteStore:
    """The embedded store. Open with `await SqliteStore.open(path)`; close with `close()`."""

    engine = "sqlite"  # PostgresStore (coordinator/store/postgres.py) is the other

    def __init__(
        self,
        path: Path,
        writer: _WriterThread,
        reader: aiosqlite.Connection,
        max_batch_jobs: int = MAX_BATCH_JOBS,
    ):
        self.path = path
        self._writer = writer
        self._reader_conn = reader
        self._queue: deque[_Job] = deque()  # order writes, for the writer task's next batch
        self._wakeup = asyncio.Event()
        self._safety_pending: list[_Job] = []  # safety writes waiting for the next commit
        self._safety_in_flight = False
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
        migrator = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await _configure(migrator)
            await _migrate(migrator)
        finally:
            await migrator.close()
        writer = await _WriterThread.open(path)
        try:
            reader = await aiosqlite.connect(str(path), isolation_level=None)
            try:
                await reader.execute("PRAGMA query_only=ON")
            except BaseException:
                await reader.close()
                raise
        except BaseException:
            await writer.close()
            raise
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
        if priority is Priority.SAFETY:
            await self._write_safety(statements)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(statements, future))
        self._wakeup.set()
        await future

    async def _write_safety(self, statements: Sequence[Write]) -> None:
        """A safety write goes straight to the writer's thread, not through the queue of order
        writes and the writer task: it waits for at most the one batch the thread may be
        committing, never for the writer task's turn on a busy event loop. Safety writes that
        arrive while one is being committed go together in the next commit (a burst of audit
        entries is a few fsyncs, not one each)."""
        job = _Job(statements, asyncio.get_running_loop().create_future())
        self._safety_pending.append(job)
        if not self._safety_in_flight:
            self._submit_safety()
        await job.future

    def _submit_safety(self) -> None:
        """Commit every pending safety job in one transaction. Driven by callbacks, not by a
        caller: a caller cancelled mid-commit cannot leave the others waiting."""
        jobs = list(self._safety_pending)
        self._safety_pending.clear()
        try:
            done = self._writer.submit(partial(_commit_in_thread, [j.statements for j in jobs]))
        except StoreError as exc:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self._safety_in_flight = True
        began = time.perf_counter()
        done.add_done_callback(lambda finished: self._safety_committed(finished, jobs, began))

    def _safety_committed(
        self, finished: asyncio.Future[_BatchOutcome], jobs: list[_Job], began: float
    ) -> None:
        self._safety_in_flight = False
        failure: Exception | None = None
        if finished.cancelled():
            failure = StoreClosed("the safety write was cancelled")
        elif finished.exception() is not None:
            failure = StoreError(f"the store writer failed: {finished.exception()!r}")
        else:
            outcome = finished.result()
            self._settle(jobs, outcome)
            if outcome.unusable is not None:
                self._break(outcome.unusable)
                failure = StoreError(f"the store writer failed: {outcome.unusable!r}")
            else:
                self._count_commit(len(jobs), True, time.perf_counter() - began)
        if failure is not None:
            for job in jobs + list(self._safety_pending):
                if not job.future.done():
                    job.future.set_exception(failure)
            self._safety_pending.clear()
            return
        if self._safety_pending:
            self._submit_safety()

    async def fetch_all(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[aiosqlite.Row]:
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
        return len(self._queue) + len(self._safety_pending)

    async def close(self) -> None:
        """Commit what is queued, stop the writer, close both connections and the writer's
        thread."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        try:
            if self._writer_task is not None:
                await self._writer_task
        finally:
            try:
                await self._reader_conn.close()
            finally:
                await self._writer.close()

    # -- the writer ------------------------------------------------------------------------------

    def _next_batch(self) -> list[_Job]:
        queue = self._queue
        return [queue.popleft() for _ in range(min(len(queue), self._max_batch_jobs))]

    async def _write_loop(self) -> None:
        try:
            await self._write_batches()
        except Exception as exc:
            self._break(exc)

    def _break(self, exc: Exception) -> None:
        """Nothing can be written any more: say so to every waiting and later caller rather
        than leave them hanging on futures no one will resolve."""
        if self._broken is not None:
            return
        log.critical(
            "the store writer failed; no further writes are possible: %r", exc, exc_info=exc
        )
        self._broken = exc
        for job in [*self._queue, *self._safety_pending]:
            if not job.future.done():
                job.future.set_exception(StoreError(f"the store writer failed: {exc!r}"))
        self._queue.clear()
        self._safety_pending.clear()
        self._wakeup.set()

    async def _write_batches(self) -> None:
        while True:
            if not self.backlog:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            jobs = self._next_batch()
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
            self._count_commit(len(jobs), False, time.perf_counter() - began)

    def _count_commit(self, jobs: int, is_safety: bool, seconds: float) -> None:
        self.stats.commits += 1
        self.stats.safety_commits += int(is_safety)
        self.stats.jobs += jobs
        self.stats.largest_batch = max(self.stats.largest_batch, jobs)
        self.last_commit_seconds = seconds
        if self.on_commit is not None:
            self.on_commit(seconds, is_safety)

    async def _commit_batch(self, jobs: list[_Job]) -> None:
        """Commit `jobs` in one hop to the writer's thread, then settle their futures here, on
        the loop (futures are not thread-safe)."""
        outcome = await self._writer.run(
            partial(_commit_in_thread, [job.statements for job in jobs])
        )
        self._settle(jobs, outcome)
        if outcome.unusable is not None:
            # The jobs without an outcome are failed by the caller; the writer stops.
            raise outcome.unusable

    def _settle(self, jobs: list[_Job], outcome: _BatchOutcome) -> None:
        """Each job's outcome to its caller's future (on the loop: futures are not
        thread-safe); jobs past `outcome.errors` (the connection went) are left for the caller."""
        for job, error in zip(jobs, outcome.errors, strict=False):
            if error is None:
                if not job.future.done():
                    job.future.set_result(None)
            else:
                self._fail(job, error)

    def _fail(self, job: _Job, exc: Exception) -> None:
        self.stats.failed_jobs += 1
        log.error("store write failed and was rolled back: %s", exc)
        if not job.future.done():
            job.future.set_exception(StoreError(f"write rolled back: {exc}"))


# -- in the writer's thread ----------------------------------------------------------------------


class _ConnectionUnusable(Exception):
    """A failed transaction could not be rolled back: the connection cannot be trusted again."""


@dataclass(slots=True)
class _BatchOutcome:
    # Per job, in order: None if it committed, else why it was rolled back. Shorter than the
    # batch when the connection became unusable part-way (`unusable` says why).
    errors: list[Exception | None] = field(default_factory=list)
    unusable: _ConnectionUnusable | None = None


def _commit_in_thread(jobs: list[Sequence[Write]], conn: sqlite3.Connection) -> _BatchOutcome:
    """Commit `jobs` in one transaction; if that fails, roll back and commit them one by one, so
    that only a failing job fails. Runs in the writer's thread, never on the event loop."""
    outcome = _BatchOutcome()
    try:
        try:
            _transaction(conn, jobs)
        except Exception as exc:
            # Usually a sqlite3.Error; but a parameter sqlite3 cannot bind (a str holding a lone
            # surrogate, an int beyond 64 bits) raises UnicodeEncodeError or OverflowError, and
            # a TransactionStep may raise anything: each fails only its own job.
            _rollback(conn, exc)
            if len(jobs) == 1:
                outcome.errors.append(exc)
                return outcome
            log.warning("batch of %d writes failed (%s); committing one by one", len(jobs), exc)
            for job in jobs:
                try:
                    _transaction(conn, [job])
                except Exception as job_exc:
                    _rollback(conn, job_exc)
                    outcome.errors.append(job_exc)
                else:
                    outcome.errors.append(None)
            return outcome
        outcome.errors.extend([None] * len(jobs))
    except _ConnectionUnusable as exc:
        outcome.unusable = exc
    return outcome


def _transaction(conn: sqlite3.Connection, jobs: list[Sequence[Write]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for statements in jobs:
        _execute_all(conn, statements)
    conn.execute("COMMIT")


def _execute_all(conn: sqlite3.Connection, statements: Sequence[Write]) -> None:
    for statement in statements:
        if isinstance(statement, TransactionStep):
            statement.apply(conn)
        elif isinstance(statement, Expect):
            cursor = conn.execute(statement.sql, statement.params)
            if cursor.rowcount != statement.rows:
                raise StaleWrite(
                    f"expected {statement.rows} row(s) changed, got {cursor.rowcount}: "
                    f"{statement.sql.split(' WHERE ')[0]}"
                )
        else:
            conn.execute(*statement)


def _rollback(conn: sqlite3.Connection, cause: Exception) -> None:
    """Roll back after `cause`. SQLite may have rolled back already (some errors end the
    transaction themselves): that is fine. Any other failure means the connection is unusable
    (closed, its file gone): raise `_ConnectionUnusable`."""
    try:
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "no transaction is active" in str(exc):
            return
        raise _ConnectionUnusable(f"rollback failed ({exc!r}) after {cause!r}") from exc
    except Exception as exc:
        raise _ConnectionUnusable(f"rollback failed ({exc!r}) after {cause!r}") from exc


# -- opening and migrating (aiosqlite, before the writer starts) ---------------------------------


async def _rollback_migration(conn: aiosqlite.Connection) -> None:
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
            await _rollback_migration(conn)
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
        await _rollback_migration(conn)
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
