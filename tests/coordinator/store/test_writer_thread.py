"""The writer's thread: one hop per batch, steps inside the transaction, failures in the thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from coordinator.store import sqlite as store_module
from coordinator.store.sqlite import (
    Expect,
    Priority,
    SqliteStore,
    Statement,
    StoreClosed,
    StoreError,
)
from coordinator.store.steps import TransactionStep

T = TypeVar("T")

CREATE_ITEMS = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, tag TEXT NOT NULL UNIQUE)",
    (),
)


def insert(tag: str) -> Statement:
    return ("INSERT INTO items (tag) VALUES (?)", (tag,))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "store.db")
    await opened.write([CREATE_ITEMS])
    yield opened
    await opened.close()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every `_WriterThread.run` (one hop to the writer's thread and back), by the name of the
    function it ran."""
    calls: list[str] = []
    original = store_module._WriterThread.run

    async def counting_run(
        self: store_module._WriterThread, fn: Callable[[sqlite3.Connection], T]
    ) -> T:
        calls.append(getattr(getattr(fn, "func", fn), "__name__", repr(fn)))
        return await original(self, fn)

    monkeypatch.setattr(store_module._WriterThread, "run", counting_run)
    return calls


async def tags(store: SqliteStore) -> list[str]:
    return [str(row[0]) for row in await store.fetch_all("SELECT tag FROM items ORDER BY id")]


@dataclass(frozen=True)
class Look(TransactionStep):
    """Records the tags the transaction sees at this point, and the thread it runs in."""

    seen: list[list[str]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def apply(self, conn: sqlite3.Connection) -> None:
        self.threads.append(threading.current_thread())
        rows = conn.execute("SELECT tag FROM items ORDER BY id").fetchall()
        self.seen.append([str(tag) for (tag,) in rows])


@dataclass(frozen=True)
class Explode(TransactionStep):
    def apply(self, conn: sqlite3.Connection) -> None:
        raise RuntimeError("the step failed")


@dataclass(frozen=True)
class CloseTheConnection(TransactionStep):
    """The connection dies in the middle of a transaction (its disk went away)."""

    def apply(self, conn: sqlite3.Connection) -> None:
        conn.close()


async def test_a_batch_of_many_jobs_costs_one_thread_hop(
    store: SqliteStore, hops: list[str]
) -> None:
    commits_before = store.stats.commits

    await asyncio.gather(
        *(store.write([insert(f"job-{i}"), insert(f"job-{i}b")]) for i in range(100))
    )

    assert store.stats.commits - commits_before == 1, "the jobs were not in one batch"
    assert store.stats.largest_batch == 100
    assert hops == ["_commit_in_thread"]
    assert len(await tags(store)) == 200


async def test_a_failing_job_is_isolated_within_the_same_single_hop(
    store: SqliteStore, hops: list[str]
) -> None:
    jobs: list[list[Any]] = [[insert(f"good-{i}")] for i in range(10)]
    jobs[4] = [insert("bad-first"), ("INSERT INTO no_such_table (x) VALUES (1)", ())]

    outcomes = await asyncio.gather(*(store.write(job) for job in jobs), return_exceptions=True)

    assert hops == ["_commit_in_thread"]
    assert [i for i, o in enumerate(outcomes) if o is not None] == [4]
    assert isinstance(outcomes[4], StoreError)
    assert "write rolled back" in str(outcomes[4])
    assert "no_such_table" in str(outcomes[4])
    assert store.stats.failed_jobs == 1
    assert await tags(store) == [f"good-{i}" for i in range(10) if i != 4]


async def test_a_step_runs_in_the_writer_thread_and_sees_what_was_queued_before_it(
    store: SqliteStore,
) -> None:
    look = Look()
    jobs: list[list[Any]] = [
        [insert("earlier-job")],
        [insert("a"), insert("b"), look, insert("c")],
    ]

    await asyncio.gather(*(store.write(job) for job in jobs))

    assert store.stats.largest_batch == 2
    # The earlier job of the same batch and the statements before the step, not the one after.
    assert look.seen == [["earlier-job", "a", "b"]]
    (thread,) = look.threads
    assert thread is not threading.main_thread()
    assert thread.name.startswith("store-writer")
    assert await tags(store) == ["earlier-job", "a", "b", "c"]


async def test_a_step_that_raises_rolls_back_only_its_own_job(store: SqliteStore) -> None:
    jobs: list[list[Any]] = [[insert("before")], [insert("doomed"), Explode()], [insert("after")]]

    outcomes = await asyncio.gather(*(store.write(job) for job in jobs), return_exceptions=True)

    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], StoreError)
    assert "the step failed" in str(outcomes[1])
    assert await tags(store) == ["before", "after"]
    assert store.broken is None


async def test_a_stale_expectation_rolls_back_its_job(store: SqliteStore) -> None:
    await store.write([insert("present")])
    stale = Expect("UPDATE items SET tag = 'renamed' WHERE tag = ?", ("absent",))
    fresh = Expect("UPDATE items SET tag = 'renamed' WHERE tag = ?", ("present",))

    with pytest.raises(StoreError, match=r"expected 1 row\(s\) changed, got 0"):
        await store.write([insert("with-stale"), stale])
    assert await tags(store) == ["present"]

    await store.write([fresh, insert("with-fresh")])
    assert await tags(store) == ["renamed", "with-fresh"]


async def test_a_connection_lost_mid_batch_breaks_the_writer_but_keeps_what_committed(
    store: SqliteStore,
) -> None:
    jobs: list[list[Any]] = [
        [("INSERT INTO no_such_table (x) VALUES (1)", ())],  # fails the batch: one by one
        [insert("committed-before-the-loss")],
        [insert("lost"), CloseTheConnection()],
        [insert("never-tried")],
    ]

    outcomes = await asyncio.wait_for(
        asyncio.gather(*(store.write(job) for job in jobs), return_exceptions=True), timeout=5
    )

    assert isinstance(outcomes[0], StoreError)
    assert "write rolled back" in str(outcomes[0])
    assert outcomes[1] is None
    for lost in outcomes[2:]:
        assert isinstance(lost, StoreError)
        assert "the store writer failed" in str(lost)
    assert store.broken is not None
    with pytest.raises(StoreError, match="writer failed earlier"):
        await store.write([insert("later")])
    assert await tags(store) == ["committed-before-the-loss"]


async def test_close_closes_the_connection_and_stops_the_thread(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    thread = await store._writer.run(lambda conn: threading.current_thread())
    writer = store._writer
    assert thread.name.startswith("store-writer")

    await store.close()

    assert not thread.is_alive()
    with pytest.raises(StoreClosed):
        await writer.run(lambda conn: conn.execute("SELECT 1").fetchone())


async def test_safety_writes_that_arrive_together_share_commits(store: SqliteStore) -> None:
    before = store.stats.as_dict()

    await asyncio.gather(
        *(store.write([insert(f"audit-{n}")], Priority.SAFETY) for n in range(50))
    )

    after = store.stats.as_dict()
    commits = after["safety_commits"] - before["safety_commits"]
    assert after["jobs"] - before["jobs"] == 50
    assert 1 <= commits <= 3  # the first alone, the rest together behind it
    assert len(await tags(store)) == 50


async def test_a_failing_safety_write_fails_alone_and_a_cancelled_caller_strands_no_one(
    store: SqliteStore,
) -> None:
    first = asyncio.ensure_future(store.write([insert("a")], Priority.SAFETY))
    queued = [
        asyncio.ensure_future(store.write([insert(tag)], Priority.SAFETY))
        for tag in ("b", "a", "c")  # the second "a" breaks the UNIQUE tag
    ]
    await asyncio.sleep(0)
    first.cancel()  # its commit goes on in the writer's thread

    results = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 5)

    assert results[0] is None
    assert isinstance(results[1], StoreError)
    assert results[2] is None
    assert await tags(store) == ["a", "b", "c"]
