"""A backup taken while the journal is being written is one consistent snapshot of it."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from coordinator.backups.service import BackupService
from coordinator.config.models import BackupSettings
from coordinator.runtime import Coordinator
from coordinator.store.sqlite import SqliteStore
from tests.coordinator.backups.support import members
from tests.support_config import eventually

ON_DEMAND = BackupSettings(interval_minutes=0, keep_count=100, keep_days=0)


def extract_database(archive: Path, target: Path) -> Path:
    target.write_bytes(members(archive)["database/coordinator.db"])
    return target


def check_copy(database: Path) -> dict[str, int]:
    """The copy's integrity and referential checks; its row counts."""
    with closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        orphans = conn.execute(
            "SELECT COUNT(*) FROM orders o"
            " WHERE NOT EXISTS (SELECT 1 FROM order_events e WHERE e.client_order_id ="
            " o.client_order_id)"
        ).fetchone()[0]
        assert orphans == 0  # an order and its first event are one job: never half of one
        return {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("orders", "order_events", "fills", "audit_events")
        }


async def test_backups_taken_while_paper_bots_trade_are_consistent(
    coordinator: Coordinator, config_dir: Path, backup_dir: Path, tmp_path: Path
) -> None:
    service = BackupService(
        ON_DEMAND,
        config_dir,
        backup_dir,
        coordinator.store.path,
        coordinator.clock,
        coordinator.journal,
    )
    await coordinator.supervisor.start("ndax")
    await coordinator.supervisor.start("kraken")
    ndax = coordinator.supervisor.runner("ndax")
    await eventually(lambda: ndax.parts.book.fills_count >= 2, what="ndax filling")

    results = []
    for _ in range(5):
        results.append(await service.backup_now("cli", "test"))
        await asyncio.sleep(0.1)
    fills_now = ndax.parts.book.fills_count

    counts = [
        await asyncio.to_thread(
            lambda r=r: check_copy(extract_database(Path(r["archive"]), tmp_path / r["name"]))
        )
        for r in results
    ]
    fills = [c["fills"] for c in counts]
    assert fills == sorted(fills)
    assert fills[0] >= 2
    assert fills[-1] <= fills_now
    assert fills[-1] > fills[0]  # it kept trading while the backups were taken
    assert all(c["orders"] >= c["fills"] for c in counts)
    store = await SqliteStore.open(tmp_path / results[-1]["name"])
    try:
        row = await store.fetch_one("SELECT COUNT(*) FROM fills")
        assert row is not None
        assert row[0] == fills[-1]
    finally:
        await store.close()


async def test_a_backup_during_a_burst_of_writes_holds_whole_jobs_only(
    data_dir: Path, config_dir: Path, backup_dir: Path, tmp_path: Path
) -> None:
    store = await SqliteStore.open(data_dir / "coordinator.db")
    service = BackupService(
        ON_DEMAND, config_dir, backup_dir, store.path, lambda: datetime.now(UTC), None
    )
    await store.write(
        [
            (
                "INSERT INTO bots (name, exchange, symbol, mode, updated_at)"
                " VALUES ('b', 'paper', 'BTC/CAD', 'paper', 'now')",
                (),
            )
        ]
    )
    stop = asyncio.Event()

    async def writer() -> int:
        n = 0
        while not stop.is_set():
            n += 1
            await store.write(
                [
                    (
                        "INSERT INTO orders (client_order_id, bot, exchange, symbol, side, type,"
                        " amount, status, created_at, updated_at)"
                        " VALUES (?, 'b', 'paper', 'BTC/CAD', 'buy', 'market', '1', 'filled',"
                        " 'now', 'now')",
                        (n,),
                    ),
                    (
                        "INSERT INTO order_events (client_order_id, at, to_status)"
                        " VALUES (?, 'now', 'filled')",
                        (n,),
                    ),
                    (
                        "INSERT INTO fills (client_order_id, bot, trade_id, side, amount, price,"
                        " fee, fee_currency, executed_at, recorded_at)"
                        " VALUES (?, 'b', ?, 'buy', '1', '1', '0', 'CAD', 'now', 'now')",
                        (n, f"t{n}"),
                    ),
                ]
            )
        return n

    writing = asyncio.create_task(writer())
    try:
        await asyncio.sleep(0.05)
        results = [await service.backup_now("cli", "test") for _ in range(3)]
    finally:
        stop.set()
        written = await writing
        await store.close()

    for result in results:
        copy = tmp_path / result["name"]
        counts = await asyncio.to_thread(
            lambda r=result, c=copy: check_copy(extract_database(Path(r["archive"]), c))
        )
        assert counts["orders"] == counts["fills"] == counts["order_events"] > 0
        assert counts["orders"] <= written
