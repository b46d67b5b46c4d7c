"""The issue's "done when", on the real process and the real CLI: a fill row deleted by hand is
named by --verify-data, shown by `reconcile` against the paper exchange, and repaired by
`reconcile --apply` with journal entries, after which --verify-data is clean again."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.support_config import trading_config, write_fast_config
from tests.support_process import CoordinatorProcess, child_env, wait_for


@pytest.fixture
def running(tmp_path: Path) -> Iterator[CoordinatorProcess]:
    process = CoordinatorProcess(tmp_path, write_fast_config(tmp_path / "config", trading_config))
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()


def cli(process: CoordinatorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "coordinator",
        "--config-dir",
        str(process.config_dir),
        "--data-dir",
        str(process.data_dir),
        "--log-dir",
        str(process.root / "cli-logs"),
        "--port",
        str(process.port),
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env=child_env(), timeout=60, check=False
    )


def test_a_deleted_fill_is_found_by_verify_data_shown_by_reconcile_and_repaired_by_apply(
    running: CoordinatorProcess,
) -> None:
    running.control("/start", {"bot": "ndax"})
    wait_for(lambda: running.bots()["ndax"]["fills"] >= 3, 15, "three ndax fills")
    running.control("/stop", {"bot": "ndax"})
    database = running.data_dir / "coordinator.db"
    assert cli(running, "--verify-data").returncode == 0

    with closing(sqlite3.connect(database)) as conn, conn:
        fill_id, order_id, trade_id = conn.execute(
            "SELECT id, client_order_id, trade_id FROM fills WHERE bot = 'ndax'"
            " ORDER BY id LIMIT 1 OFFSET 1"
        ).fetchone()
        conn.execute("DELETE FROM fills WHERE id = ?", (fill_id,))

    verify = cli(running, "--verify-data")
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert str(order_id) in verify.stdout
    assert "ndax" in verify.stdout
    assert "positions" in verify.stdout

    report = cli(running, "reconcile", "--bot", "ndax")
    assert report.returncode == 1, report.stdout + report.stderr
    assert "missing_fill" in report.stdout
    assert f"trade {trade_id} of order {order_id}" in report.stdout

    applied = cli(running, "reconcile", "--bot", "ndax", "--apply", "--json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    result = json.loads(applied.stdout)
    (bot,) = result["bots"]
    assert [c["kind"] for c in bot["corrections"]] == ["missing_fill"]
    assert bot["remaining"] == []

    assert cli(running, "--verify-data").returncode == 0
    with closing(sqlite3.connect(database)) as conn:
        assert conn.execute(
            "SELECT COUNT(*) FROM fills WHERE client_order_id = ? AND trade_id = ?",
            (order_id, trade_id),
        ).fetchone() == (1,)
        assert conn.execute("SELECT COUNT(*) FROM reconciliation_corrections").fetchone() == (1,)
    status, audit = running.request("GET", "/audit?limit=10")
    assert status == 200
    assert [e["action"] for e in audit["events"] if e["action"].startswith("reconcile")] == [
        "reconcile.apply",
        "reconcile.report",
    ]


def test_reconcile_without_a_running_coordinator_opens_the_journal_itself(
    running: CoordinatorProcess,
) -> None:
    running.control("/start", {"bot": "ndax"})
    wait_for(lambda: running.bots()["ndax"]["fills"] >= 1, 15, "an ndax fill")
    assert running.interrupt(within=10) == 0

    report = cli(running, "reconcile")

    # A fresh paper exchange knows none of the earlier trades; its balances are the journal's.
    assert report.returncode == 0, report.stdout + report.stderr
    assert "journal and exchange agree" in report.stdout
