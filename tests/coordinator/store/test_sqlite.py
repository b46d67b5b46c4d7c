"""The SQLite store: durability, group commit, the safety lane, failure isolation, close."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiosqlite
import pytest

from coordinator.store.sqlite import (
    MAX_BATCH_JOBS,
    Priority,
    SqliteStore,
    Statement,
    StoreClosed,
    StoreError,
)

OpenStore = Callable[..., Awaitable[SqliteStore]]

CREATE_ITEMS = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, tag TEXT NOT NULL UNIQUE)",
    (),
)


def insert(tag: str) -> Statement:
    return ("INSERT INTO items (tag) VALUES (?)", (tag,))


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Open stores in tmp_path (with an `items` scratch table); every one is closed afterwards."""
    opened: list[SqliteStore] = []

    async def factory(name: str = "store.db", *, with_items: bool = True) -> SqliteStore:
        store = await SqliteStore.open(tmp_path / name)
        opened.append(store)
        if with_items:
            await store.write([CREATE_ITEMS])
        return store

    yield factory
    for store in opened:
        await store.close()


async def read_from_new_connection(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What a brand-new connection (another process, after a crash) sees on disk."""
    async with aiosqlite.connect(str(path)) as conn, conn.execute(sql) as cursor:
        return [tuple(row) for row in await cursor.fetchall()]


async def tags_on_disk(path: Path) -> list[str]:
    return [str(r[0]) for r in await read_from_new_connection(path, "SELECT tag FROM items")]


async def test_wal_and_synchronous_full_are_in_force(open_store: OpenStore) -> None:
    store = await open_store(with_items=False)
    # journal_mode is a property of the database file: every connection sees it.
    assert (await read_from_new_connection(store.path, "PRAGMA journal_mode")) == [("wal",)]
    row = await store.fetch_one("PRAGMA journal_mode")
    assert row is not None
    assert row[0] == "wal"
    # synchronous and foreign_keys are per connection: read them on the writer itself, in its
    # thread.
    writer = store._writer
    synchronous = await writer.run(lambda conn: conn.execute("PRAGMA synchronous").fetchone())
    foreign_keys = await writer.run(lambda conn: conn.execute("PRAGMA foreign_keys").fetchone())
    busy_timeout = await writer.run(lambda conn: conn.execute("PRAGMA busy_timeout").fetchone())
    assert synchronous is not None
    assert synchronous[0] == 2  # FULL
    assert foreign_keys is not None
    assert foreign_keys[0] == 1
    assert busy_timeout is not None
    assert busy_timeout[0] == 5000


async def test_the_read_connection_cannot_write(open_store: OpenStore) -> None:
    store = await open_store()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await store.fetch_all("INSERT INTO items (tag) VALUES ('sneaky') RETURNING id")
    assert await tags_on_disk(store.path) == []


async def test_a_write_is_visible_from_a_new_connection_once_write_returns(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    await store.write([insert("first"), insert("second")])
    assert await tags_on_disk(store.path) == ["first", "second"]


async def test_concurrent_writes_share_commits(open_store: OpenStore) -> None:
    store = await open_store()
    jobs_before, commits_before = store.stats.jobs, store.stats.commits

    await asyncio.gather(*(store.write([insert(f"job-{i}")]) for i in range(200)))

    jobs = store.stats.jobs - jobs_before
    commits = store.stats.commits - commits_before
    assert jobs == 200
    assert commits < jobs
    assert commits <= 20, f"group commit barely grouped: {commits} commits for {jobs} jobs"
    assert store.stats.largest_batch > 1
    assert store.stats.as_dict()["jobs_per_commit"] > 1
    assert sorted(await tags_on_disk(store.path)) == sorted(f"job-{i}" for i in range(200))


async def test_a_safety_write_overtakes_a_backlog_of_normal_writes(open_store: OpenStore) -> None:
    store = await open_store()
    backlog = 4 * MAX_BATCH_JOBS
    normal = [asyncio.create_task(store.write([insert(f"normal-{i}")])) for i in range(backlog)]
    # Let the writer commit its first batch, so the rest is a backlog behind a batch in flight.
    await asyncio.wait(normal, return_when=asyncio.FIRST_COMPLETED)
    assert store.backlog > 0

    await store.write([insert("safety")], Priority.SAFETY)
    still_queued = sum(not task.done() for task in normal)

    await asyncio.gather(*normal)
    assert still_queued > 0, "the safety write waited for the whole backlog"
    assert store.stats.safety_commits == 1
    # Commit order, as AUTOINCREMENT ids record it: normal writes landed after the safety write.
    rows = await read_from_new_connection(store.path, "SELECT tag FROM items ORDER BY id")
    order = [str(tag) for (tag,) in rows]
    assert len(order) == backlog + 1
    after_safety = order[order.index("safety") + 1 :]
    assert len(after_safety) >= MAX_BATCH_JOBS
    assert all(tag.startswith("normal-") for tag in after_safety)


async def test_a_failing_job_fails_only_its_own_caller_and_the_rest_of_its_batch_commits(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    good = [[insert(f"good-{i}")] for i in range(5)]
    bad = [insert("bad-first-half"), ("INSERT INTO no_such_table (x) VALUES (1)", ())]
    jobs = [*good[:2], bad, *good[2:]]

    outcomes = await asyncio.gather(*(store.write(job) for job in jobs), return_exceptions=True)

    assert store.stats.largest_batch >= len(jobs), "the jobs were not in one batch"
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) == 1
    assert outcomes[2] is failures[0]
    assert isinstance(failures[0], StoreError)
    assert not isinstance(failures[0], StoreClosed)
    assert "no_such_table" in str(failures[0])
    assert store.stats.failed_jobs == 1
    # The failing job is atomic: its first statement did not commit either.
    assert sorted(await tags_on_disk(store.path)) == [f"good-{i}" for i in range(5)]


@pytest.mark.parametrize(
    "unbindable",
    [
        pytest.param("\ud800", id="lone-surrogate"),  # json.loads('"\\ud800"') makes one
        pytest.param(2**64, id="int-beyond-64-bits"),
    ],
)
async def test_a_value_sqlite_cannot_bind_fails_its_job_and_the_writer_carries_on(
    open_store: OpenStore, unbindable: object
) -> None:
    store = await open_store()
    jobs = [
        [insert("before")],
        [insert("same-job"), ("INSERT INTO items (tag) VALUES (?)", (unbindable,))],
        [insert("after")],
    ]

    outcomes = await asyncio.gather(*(store.write(job) for job in jobs), return_exceptions=True)

    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], StoreError)
    # The writer survived: later writes still commit, and close() does not hang.
    await asyncio.wait_for(store.write([insert("later")]), timeout=5)
    assert sorted(await tags_on_disk(store.path)) == ["after", "before", "later"]


async def test_a_constraint_violation_rolls_back_the_whole_job(open_store: OpenStore) -> None:
    store = await open_store()
    await store.write([insert("taken")])
    with pytest.raises(StoreError, match="UNIQUE"):
        await store.write([insert("new"), insert("taken")])
    assert await tags_on_disk(store.path) == ["taken"]
    # The store still works afterwards.
    await store.write([insert("after")])
    assert await tags_on_disk(store.path) == ["taken", "after"]


async def test_write_after_close_raises_store_closed_and_writes_nothing(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    await store.close()
    with pytest.raises(StoreClosed):
        await store.write([insert("too-late")])
    with pytest.raises(StoreClosed):
        await store.write([insert("too-late-safety")], Priority.SAFETY)
    assert store.backlog == 0
    assert await tags_on_disk(store.path) == []


async def test_close_commits_what_was_queued(open_store: OpenStore) -> None:
    store = await open_store()
    pending = [asyncio.create_task(store.write([insert(f"queued-{i}")])) for i in range(50)]
    pending.append(asyncio.create_task(store.write([insert("queued-safety")], Priority.SAFETY)))
    await asyncio.sleep(0)  # the jobs are queued; the writer has not taken them yet
    assert store.backlog > 0

    await store.close()

    assert all(task.done() for task in pending)
    await asyncio.gather(*pending)  # none of them failed
    assert len(await tags_on_disk(store.path)) == 51


async def test_close_is_idempotent(open_store: OpenStore) -> None:
    store = await open_store()
    await store.write([insert("x")])
    await store.close()
    await store.close()
    assert await tags_on_disk(store.path) == ["x"]


async def test_an_empty_write_is_a_no_op(open_store: OpenStore) -> None:
    store = await open_store()
    jobs_before = store.stats.jobs
    await store.write([])
    assert store.stats.jobs == jobs_before
