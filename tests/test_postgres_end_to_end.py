"""The real coordinator process with its journal on PostgreSQL (`--database`): paper bots trade,
a kill -9 loses nothing that was acknowledged, the next process recovers and trades on, and the
journal holds every order once, every fill once and an unbroken audit hash chain."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from coordinator.store.audit_chain import AUDIT_FIELDS, GENESIS_HASH, entry_hash
from tests.support_config import write_fast_config
from tests.support_postgres import PostgresServer
from tests.support_process import CoordinatorProcess, wait_for


class PostgresCoordinator(CoordinatorProcess):
    def __init__(self, root: Path, config_dir: Path, dsn: str, data_dir: Path) -> None:
        super().__init__(root, config_dir, data_dir)
        self.dsn = dsn

    def args(self) -> list[str]:
        return [*super().args(), "--database", self.dsn]


def leads(process: CoordinatorProcess) -> bool:
    try:
        status, document = process.request("GET", "/status", timeout=1)
    except OSError:
        return False
    return status == 200 and document["coordinator"]["role"]["role"] == "leader"


def fills_of(process: CoordinatorProcess, bot: str) -> int:
    return int(process.bots()[bot]["fills"])


def test_on_postgresql_bots_trade_and_after_kill_9_the_journal_is_whole(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    dsn = postgres_server.create_database()
    config_dir = write_fast_config(tmp_path / "config")
    data_dir = tmp_path / "data"
    first = PostgresCoordinator(tmp_path, config_dir, dsn, data_dir).start()
    try:
        first.wait_ready()
        first.control("/start-sequential")
        wait_for(lambda: fills_of(first, "ndax") >= 5, 15, "five ndax fills")
        before = first.bots()
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        assert first.proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        first.kill()
    assert not list(data_dir.glob("coordinator.db*")), "the journal is on PostgreSQL, not here"

    second = PostgresCoordinator(tmp_path, config_dir, dsn, data_dir).start()
    try:
        second.wait_ready()
        # The killed process still held the leader lease: the new one stands by until it
        # lapses (5 s by default), then leads.
        wait_for(lambda: leads(second), 15, "the new process to lead")
        after = second.bots()
        assert after["ndax"]["state"] == "stopped"
        assert after["ndax"]["orders"] >= before["ndax"]["orders"] > 0
        assert after["ndax"]["fills"] >= before["ndax"]["fills"] >= 5
        _, audit = second.request("GET", "/audit?limit=30")
        recovered = {
            e["subject"]
            for e in audit["events"]
            if e["action"] == "bot.recovered_after_unclean_end"
        }
        assert "ndax" in recovered
        second.control("/start", {"bot": "ndax"})
        fills = fills_of(second, "ndax")
        wait_for(lambda: fills_of(second, "ndax") > fills, 10, "ndax trading again")
        status, series = second.request("GET", "/bots/ndax/series?points=20")
        assert status == 200, series
        assert series["fills"] >= fills
        status, report = second.request("POST", "/reconcile", {"bot": "ndax"})
        assert status == 200, report
        backup = second.control("/backups", {})  # taken by the leader while ndax trades
        assert "database/coordinator.pgdump" in backup["files"], backup
        assert second.interrupt(within=10) == 0
        final = {"orders": after["ndax"]["orders"]}
    finally:
        second.kill()

    with psycopg.connect(dsn) as db:
        assert orders_once(db) >= final["orders"]
        assert_audit_chain_unbroken(db)

    clean = verify_data(dsn)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = json.loads(clean.stdout)
    assert report["ok"] is True
    assert report["checked"]["fills"] > 0
    assert report["checked"]["audit"] > 0
    assert "sqlite" not in report["checked"]  # SQLite's file checks have no PostgreSQL twin

    # The leader's backup restored with the CLI (no coordinator running): the journal goes
    # back to the backup's time, whole, with the kill switch active.
    restore = subprocess.run(
        [sys.executable, "-m", "coordinator", "restore", "--latest", "--database", dsn,
         "--config-dir", str(config_dir), "--data-dir", str(data_dir),
         "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert restore.returncode == 0, restore.stdout + restore.stderr
    with psycopg.connect(dsn) as db:
        orders_once(db)
        assert_audit_chain_unbroken(db)
        row = db.execute("SELECT value FROM safety_state WHERE key = 'kill_switch'").fetchone()
        assert row is not None
        assert json.loads(row[0])["active"] is True
    restored = verify_data(dsn)
    assert restored.returncode == 0, restored.stdout + restored.stderr

    # A fill deleted by hand: --verify-data on PostgreSQL names it, as on SQLite.
    with psycopg.connect(dsn) as db:
        db.execute("DELETE FROM fills WHERE id = (SELECT MAX(id) FROM fills)")
    damaged = verify_data(dsn)
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert not json.loads(damaged.stdout)["ok"]


def orders_once(db: psycopg.Connection[Any]) -> int:
    """Every order and fill once, every fill's order there; how many orders."""
    orders = db.execute("SELECT COUNT(*), COUNT(DISTINCT client_order_id) FROM orders").fetchone()
    assert orders is not None
    assert orders[0] == orders[1], "a client order id twice"
    fills = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT (client_order_id, trade_id)) FROM fills"
    ).fetchone()
    assert fills is not None
    assert fills[0] == fills[1], "a fill twice"
    orphans = db.execute(
        "SELECT COUNT(*) FROM fills f LEFT JOIN orders o USING (client_order_id)"
        " WHERE o.client_order_id IS NULL"
    ).fetchone()
    assert orphans == (0,), "a fill without its order"
    return int(orders[0])


def verify_data(dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", "--verify-data", "--json", "--database", dsn],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def assert_audit_chain_unbroken(db: psycopg.Connection[Any]) -> None:
    rows = db.execute(
        f"SELECT {', '.join(AUDIT_FIELDS)}, prev_hash, hash FROM audit_events ORDER BY id"
    ).fetchall()
    assert rows, "the audit log is empty"
    previous = GENESIS_HASH
    for expected_id, row in enumerate(rows, 1):
        fields, prev_hash, digest = row[: len(AUDIT_FIELDS)], row[-2], row[-1]
        assert fields[0] == expected_id, f"a gap before audit entry {fields[0]}"
        assert prev_hash == previous, f"entry {expected_id} does not link to the one before"
        assert digest == entry_hash(previous, fields), f"entry {expected_id} was altered"
        previous = digest
    head = db.execute("SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1").fetchone()
    assert head == (len(rows), previous)
