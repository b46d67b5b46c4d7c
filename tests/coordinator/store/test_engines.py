"""The store's contract, on SQLite and on PostgreSQL alike: the journal's migrations, group
commit, the safety lane, a failing job failing only its caller, guarded writes, reads by
position and by name, a read-only reader, the audit chain in commit order, a lost write
connection, and close."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from coordinator.store.audit_chain import GENESIS_HASH, AuditAppend, entry_hash
from coordinator.store.migrations import LATEST_VERSION
from coordinator.store.sqlite import Expect, Priority, Statement, StoreClosed, StoreError
from tests.support_postgres import OpenAnyStore

AT = "2026-12-07T12:00:00.000000+00:00"


def bot(name: str) -> Statement:
    return (
        "INSERT INTO bots (name, exchange, symbol, mode, updated_at) VALUES (?, ?, ?, ?, ?)",
        (name, "paper", "BTC/CAD", "paper", AT),
    )


async def bots(store: object) -> list[str]:
    rows = await store.fetch_all("SELECT name FROM bots ORDER BY name")  # type: ignore[attr-defined]
    return [row["name"] for row in rows]


async def test_a_new_store_is_migrated_to_the_latest_schema(open_any_store: OpenAnyStore) -> None:
    store = await open_any_store()

    row = await store.fetch_one("SELECT MAX(version) FROM schema_migrations")

    assert row is not None
    assert row[0] == LATEST_VERSION


async def test_concurrent_writes_share_commits_and_all_land(open_any_store: OpenAnyStore) -> None:
    store = await open_any_store()
    before = store.stats.commits

    await asyncio.gather(*(store.write([bot(f"b{i:03d}")]) for i in range(200)))

    assert len(await bots(store)) == 200
    assert store.stats.commits - before < 200  # group commit: fewer commits than jobs


async def test_a_safety_write_commits_while_order_writes_are_queued(
    open_any_store: OpenAnyStore,
) -> None:
    store = await open_any_store()
    await store.write([bot("b")])
    normal = [
        asyncio.ensure_future(store.write([(
            "UPDATE bots SET restarts = restarts + 1 WHERE name = ?", ("b",))]))
        for _ in range(300)
    ]  # fmt: skip
    await asyncio.sleep(0)
    await store.write(
        [("INSERT INTO safety_state (key, value, updated_at) VALUES (?, ?, ?)",
          ("kill_switch", '{"active": true}', AT))],
        Priority.SAFETY,
    )  # fmt: skip
    pending_when_safety_committed = sum(not f.done() for f in normal)
    await asyncio.gather(*normal)

    row = await store.fetch_one("SELECT restarts FROM bots WHERE name = ?", ("b",))
    assert row is not None
    assert row["restarts"] == 300
    assert pending_when_safety_committed > 0  # it did not wait for the whole backlog
    assert store.stats.safety_commits >= 1


async def test_a_failing_job_fails_only_its_caller_and_the_rest_of_its_batch_commits(
    open_any_store: OpenAnyStore,
) -> None:
    store = await open_any_store()
    await store.write([bot("taken")])
    jobs = [store.write([bot(f"ok{i}")]) for i in range(5)]
    jobs.insert(2, store.write([bot("fresh"), bot("taken")]))  # a duplicate key: rolled back

    results = await asyncio.gather(*jobs, return_exceptions=True)

    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == 1
    assert isinstance(failures[0], StoreError)
    assert "write rolled back" in str(failures[0])
    assert await bots(store) == ["ok0", "ok1", "ok2", "ok3", "ok4", "taken"]  # no "fresh"


async def test_a_guarded_update_that_changes_no_row_rolls_its_job_back(
    open_any_store: OpenAnyStore,
) -> None:
    store = await open_any_store()
    await store.write([bot("b")])

    with pytest.raises(StoreError, match="expected 1 row"):
        await store.write([
            ("UPDATE bots SET restarts = 7 WHERE name = ?", ("b",)),
            Expect("UPDATE bots SET state = ? WHERE name = ? AND state = ?",
                   ("running", "b", "crashed")),
        ])  # fmt: skip

    row = await store.fetch_one("SELECT restarts, state FROM bots WHERE name = ?", ("b",))
    assert row is not None
    assert tuple(row) == (0, "stopped")


async def test_rows_read_by_position_by_name_and_as_a_mapping(
    open_any_store: OpenAnyStore,
) -> None:
    store = await open_any_store()
    await store.write([bot("b")])

    row = await store.fetch_one("SELECT name, restarts FROM bots")

    assert row is not None
    assert row[0] == row["name"] == "b"
    assert dict(row) == {"name": "b", "restarts": 0}
    assert await store.fetch_one("SELECT name FROM bots WHERE name = ?", ("nobody",)) is None


async def test_close_commits_what_was_queued_and_a_later_write_is_refused(
    open_any_store: OpenAnyStore,
) -> None:
    store = await open_any_store()
    queued = [asyncio.ensure_future(store.write([bot(f"q{i}")])) for i in range(20)]
    await asyncio.sleep(0)

    await store.close()

    await asyncio.gather(*queued)
    with pytest.raises(StoreClosed):
        await store.write([bot("late")])


async def test_ping_measures_a_round_trip(open_any_store: OpenAnyStore) -> None:
    store = await open_any_store()

    assert 0 <= await store.ping() < 5


async def test_the_read_connection_cannot_write(open_any_store: OpenAnyStore) -> None:
    store = await open_any_store()
    with pytest.raises((sqlite3.Error, StoreError), match=r"(?i)read-?only"):
        await store.fetch_all(
            "INSERT INTO bots (name, exchange, symbol, mode, updated_at)"
            " VALUES ('sneaky', 'paper', 'BTC/CAD', 'paper', 't') RETURNING name"
        )
    assert await bots(store) == []


async def test_a_constraint_violation_rolls_back_the_whole_job(
    open_any_store: OpenAnyStore,
) -> None:
    store = await open_any_store()
    await store.write([bot("taken")])
    with pytest.raises(StoreError, match=r"(?i)unique"):
        await store.write([bot("new"), bot("taken")])
    assert await bots(store) == ["taken"]
    await store.write([bot("after")])  # the store still works afterwards
    assert await bots(store) == ["after", "taken"]


async def test_an_empty_write_is_a_no_op_and_close_is_idempotent(
    open_any_store: OpenAnyStore,
) -> None:
    store = await open_any_store()
    jobs_before = store.stats.jobs
    await store.write([])
    assert store.stats.jobs == jobs_before
    await store.write([bot("x")])
    await store.close()
    await store.close()


async def test_audit_entries_written_together_chain_in_commit_order(
    open_any_store: OpenAnyStore,
) -> None:
    store = await open_any_store()
    entries = [AuditAppend("t", "test", f"action-{i}", None, None, "ok", "{}") for i in range(5)]

    await asyncio.gather(*(store.write([entry], Priority.SAFETY) for entry in entries))

    rows = await store.fetch_all(
        "SELECT id, at, actor, action, subject, reason, result, details, prev_hash, hash"
        " FROM audit_events ORDER BY id"
    )
    assert sorted(row["action"] for row in rows) == [f"action-{i}" for i in range(5)]
    prev = GENESIS_HASH
    for row in rows:
        assert row["prev_hash"] == prev
        assert row["hash"] == entry_hash(prev, tuple(row)[:8])
        prev = row["hash"]
    head = await store.fetch_one("SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1")
    assert head is not None
    assert (head[0], head[1]) == (rows[-1]["id"], prev)


async def test_once_the_write_connection_is_gone_every_write_fails_with_an_error(
    open_any_store: OpenAnyStore,
) -> None:
    store = await open_any_store()
    await store._writer.run(lambda conn: conn.close())  # the disk or the server went away

    with pytest.raises(StoreError):
        await asyncio.wait_for(store.write([bot("lost")]), timeout=5)
    with pytest.raises(StoreError, match="writer failed earlier"):
        await asyncio.wait_for(store.write([bot("lost-too")]), timeout=5)
    assert store.broken is not None
