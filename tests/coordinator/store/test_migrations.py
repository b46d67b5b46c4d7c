"""Schema migrations: a fresh database is brought to the latest version, a newer one is refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest

from coordinator.store.audit_chain import GENESIS_HASH, entry_hash
from coordinator.store.journal import SqliteJournal
from coordinator.store.migrations import LATEST_VERSION, MIGRATIONS
from coordinator.store.sqlite import SqliteStore, StoreError

JOURNAL_TABLES = {
    "bots",
    "orders",
    "order_events",
    "fills",
    "positions",
    "balances",
    "balance_adjustments",
    "audit_events",
    "safety_state",
    "kill_switch_activations",
    "audit_chain_head",
    "reconciliation_runs",
    "reconciliation_corrections",
    "config_approvals",
    "incidents",
    "incident_notes",
}


async def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    async with aiosqlite.connect(str(path)) as conn, conn.execute(sql) as cursor:
        return [tuple(row) for row in await cursor.fetchall()]


async def schema(path: Path) -> list[tuple[object, ...]]:
    """Every table, index and trigger with its SQL: the database's whole shape."""
    return await query(path, "SELECT type, name, sql FROM sqlite_master ORDER BY type, name")


async def tables(path: Path) -> set[str]:
    rows = await query(
        path, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    return {str(name) for (name,) in rows}


async def applied(path: Path) -> list[tuple[object, ...]]:
    return await query(path, "SELECT version, name, applied_at FROM schema_migrations ORDER BY 1")


async def open_and_close(path: Path) -> None:
    store = await SqliteStore.open(path)
    await store.close()


async def refused_open(path: Path) -> StoreError:
    """Open `path` expecting a refusal; a store that opens anyway is closed (its threads would
    keep the test process alive) and the test fails."""
    try:
        store = await SqliteStore.open(path)
    except StoreError as exc:
        return exc
    await store.close()
    pytest.fail(f"{path.name} was opened although its schema is newer than the code")


def test_migration_versions_are_contiguous_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[-1].version == LATEST_VERSION


async def test_a_fresh_database_ends_at_the_latest_version_with_every_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fresh.db"
    await open_and_close(path)

    assert await tables(path) == JOURNAL_TABLES | {"schema_migrations"}
    rows = await applied(path)
    assert [version for version, _, _ in rows] == list(range(1, LATEST_VERSION + 1))
    assert [name for _, name, _ in rows] == [m.name for m in MIGRATIONS]
    assert all(applied_at for _, _, applied_at in rows)


async def test_reopening_a_migrated_database_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    await open_and_close(path)
    shape, history = await schema(path), await applied(path)

    await open_and_close(path)
    await open_and_close(path)

    assert await schema(path) == shape
    assert await applied(path) == history


async def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "data.db"
    store = await SqliteStore.open(path)
    try:
        await store.write(
            [
                (
                    "INSERT INTO audit_events (at, actor, action, result) VALUES (?, ?, ?, ?)",
                    ("2026-01-01T00:00:00+00:00", "test", "kept", "ok"),
                )
            ]
        )
    finally:
        await store.close()

    await open_and_close(path)

    assert await query(path, "SELECT actor, action FROM audit_events") == [("test", "kept")]


async def test_a_database_newer_than_the_code_is_refused_and_left_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "newer.db"
    await open_and_close(path)
    newer = LATEST_VERSION + 1
    async with aiosqlite.connect(str(path)) as conn:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (newer, "from the future", "2099-01-01T00:00:00Z"),
        )
        await conn.execute("CREATE TABLE future_table (x INTEGER)")
        await conn.commit()
    shape, history = await schema(path), await applied(path)

    message = str(await refused_open(path))
    assert f"schema version {newer}" in message
    assert f"({LATEST_VERSION})" in message
    assert await schema(path) == shape
    assert await applied(path) == history


async def test_a_bare_database_claiming_a_newer_version_gets_no_tables(tmp_path: Path) -> None:
    path = tmp_path / "bare.db"
    newer = LATEST_VERSION + 5
    async with aiosqlite.connect(str(path)) as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        await conn.execute(
            "INSERT INTO schema_migrations VALUES (?, 'future', '2099-01-01T00:00:00Z')",
            (newer,),
        )
        await conn.commit()

    refusal = await refused_open(path)

    assert re.search(rf"version {newer}\b.*\({LATEST_VERSION}\)", str(refusal))
    assert await tables(path) == {"schema_migrations"}
    assert [version for version, _, _ in await applied(path)] == [newer]


async def test_a_version_1_database_is_migrated_to_the_latest_keeping_its_rows(
    tmp_path: Path,
) -> None:
    """An operator's existing journal survives the upgrade: v1 rows stay, v2 tables appear."""
    path = tmp_path / "v1.db"
    async with aiosqlite.connect(str(path)) as conn:
        await conn.executescript(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TEXT NOT NULL);"
            + MIGRATIONS[0].sql
            + "INSERT INTO schema_migrations VALUES (1, 'v1', '2026-01-01T00:00:00Z');"
            "INSERT INTO audit_events (at, actor, action, result)"
            " VALUES ('t', 'old', 'kept', 'ok');"
        )

    await open_and_close(path)

    assert await query(path, "SELECT actor FROM audit_events") == [("old",)]
    versions = await query(path, "SELECT version FROM schema_migrations ORDER BY version")
    assert versions == [(v.version,) for v in MIGRATIONS]
    assert await query(path, "SELECT COUNT(*) FROM safety_state") == [(0,)]


async def test_audit_entries_written_before_version_3_are_chained_by_the_migration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.db"
    async with aiosqlite.connect(str(path)) as conn:
        await conn.executescript(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TEXT NOT NULL);"
            + MIGRATIONS[0].sql
            + MIGRATIONS[1].sql
            + "INSERT INTO schema_migrations VALUES (1, 'v1', '2026-01-01T00:00:00Z');"
            "INSERT INTO schema_migrations VALUES (2, 'v2', '2026-01-01T00:00:00Z');"
            "INSERT INTO audit_events (at, actor, action, result) VALUES ('t1', 'a', 'one', 'ok');"
            "INSERT INTO audit_events (at, actor, action, result) VALUES ('t2', 'b', 'two', 'ok');"
        )

    await open_and_close(path)

    rows = await query(
        path,
        "SELECT id, at, actor, action, subject, reason, result, details, prev_hash, hash"
        " FROM audit_events ORDER BY id",
    )
    assert rows[0][8] == GENESIS_HASH
    assert rows[0][9] == entry_hash(GENESIS_HASH, rows[0][:8])
    assert rows[1][8] == rows[0][9]
    assert rows[1][9] == entry_hash(str(rows[0][9]), rows[1][:8])
    assert await query(path, "SELECT last_id, last_hash FROM audit_chain_head") == [(2, rows[1][9])]


async def test_each_audit_entry_links_to_the_one_before_and_moves_the_head(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chain.db"
    store = await SqliteStore.open(path)
    try:
        journal = SqliteJournal(store)
        at = datetime(2026, 11, 23, tzinfo=UTC)
        for action in ("first", "second", "third"):
            await journal.audit(actor="test", action=action, result="ok", at=at)
    finally:
        await store.close()

    rows = await query(
        path,
        "SELECT id, at, actor, action, subject, reason, result, details, prev_hash, hash"
        " FROM audit_events ORDER BY id",
    )
    previous = GENESIS_HASH
    for row in rows:
        assert row[8] == previous
        assert row[9] == entry_hash(previous, row[:8])
        previous = str(row[9])
    assert [row[0] for row in rows] == [1, 2, 3]
    assert await query(path, "SELECT last_id, last_hash FROM audit_chain_head") == [(3, previous)]


async def test_an_audit_still_commits_after_a_row_was_inserted_behind_the_chains_back(
    tmp_path: Path,
) -> None:
    """A kill switch activation must be recorded even in a tampered log: the chain carries on
    from its head, past the foreign row, which --verify-data then names."""
    path = tmp_path / "foreign.db"
    store = await SqliteStore.open(path)
    try:
        journal = SqliteJournal(store)
        at = datetime(2026, 11, 23, tzinfo=UTC)
        await journal.audit(actor="test", action="first", result="ok", at=at)
        await store.write(
            [
                (
                    "INSERT INTO audit_events (at, actor, action, result) VALUES (?, ?, ?, ?)",
                    ("t", "intruder", "forged", "ok"),
                )
            ]
        )
        await journal.audit(actor="test", action="after", result="ok", at=at)
    finally:
        await store.close()

    rows = await query(path, "SELECT id, action, prev_hash FROM audit_events ORDER BY id")
    first_hash = (await query(path, "SELECT hash FROM audit_events WHERE id = 1"))[0][0]
    assert [(r[0], r[1]) for r in rows] == [(1, "first"), (2, "forged"), (3, "after")]
    assert rows[2][2] == first_hash
