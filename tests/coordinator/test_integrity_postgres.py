"""`--verify-data` on PostgreSQL (coordinator/integrity/postgres.py): the same checks read
through server-side cursors, streamed a batch at a time. Batches of two rows here, so every
check's rows cross batch boundaries: a clean journal counts every row, and a fill deleted by
hand is named as on SQLite."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import psycopg
import pytest

from coordinator.integrity import postgres as pg_integrity
from coordinator.integrity.postgres import verify_postgres
from coordinator.store.postgres import PostgresStore
from tests.coordinator.test_integrity import AUDIT_ENTRIES, GRID, write_journal
from tests.support_postgres import PostgresServer


@pytest.fixture
async def dsn(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(pg_integrity, "BATCH_ROWS", 2)
    dsn = await asyncio.to_thread(postgres_server.create_database)
    store = await PostgresStore.open(dsn)
    try:
        await write_journal(store)
    finally:
        await store.close()
    return dsn


def tamper(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


async def test_a_clean_journal_on_postgresql_is_read_whole_a_batch_at_a_time(dsn: str) -> None:
    report = await verify_postgres(dsn)

    assert report.ok, report.render_text()
    assert report.checked["orders"] == 5
    assert report.checked["fills"] == 4
    assert report.checked["audit"] == AUDIT_ENTRIES
    assert report.checked["order_events"] == 12


async def test_a_fill_deleted_by_hand_on_postgresql_is_named_with_its_order_and_book(
    dsn: str,
) -> None:
    await asyncio.to_thread(tamper, dsn, "DELETE FROM fills WHERE trade_id = 't-1'")

    report = await verify_postgres(dsn)

    assert not report.ok
    found = {(i.check, i.row) for i in report.inconsistencies}
    assert ("orders", "client_order_id 101") in found
    assert ("books", f"bot {GRID}") in found
    btc = next(i for i in report.inconsistencies if i.row == f"bot {GRID} asset BTC")
    assert (Decimal(btc.expected), Decimal(btc.found)) == (Decimal("0.9"), Decimal("1.1"))
