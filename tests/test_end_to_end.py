"""The real process: `python -m coordinator`, driven over HTTP like an operator would.

These tests are synchronous (one run each, not one per event loop): the coordinator runs in a
child process with its own loop, and the test talks to it with urllib.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from coordinator.api.auth import TOKEN_FILE
from tests.support_config import trading_config, write_fast_config
from tests.support_process import CoordinatorProcess, wait_for


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return write_fast_config(tmp_path / "config", trading_config)


@pytest.fixture
def running(tmp_path: Path, config_dir: Path) -> Iterator[CoordinatorProcess]:
    process = CoordinatorProcess(tmp_path, config_dir).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()


def live_orders(data_dir: Path) -> int:
    """Orders the journal holds pending or open."""
    with closing(sqlite3.connect(data_dir / "coordinator.db")) as db:
        count: int = db.execute(
            "SELECT COUNT(*) FROM orders WHERE status IN ('pending_submit', 'open')"
        ).fetchone()[0]
    return count


def fills_grew_twice(process: CoordinatorProcess, names: list[str]) -> None:
    """Wait until every bot has filled, then filled again."""

    def all_filled() -> dict[str, dict[str, Any]] | None:
        bots = process.bots()
        return bots if all(bots[n]["fills"] > 0 for n in names) else None

    first = wait_for(all_filled, 15, "a first fill on every bot")
    wait_for(
        lambda: all(process.bots()[n]["fills"] > first[n]["fills"] for n in names),
        15,
        "more fills on every bot",
    )


def test_an_operator_session_starts_trades_stops_and_shuts_down_cleanly(
    running: CoordinatorProcess,
) -> None:
    assert set(b["state"] for b in running.bots().values()) == {"stopped"}
    assert oct(os.stat(running.data_dir / TOKEN_FILE).st_mode & 0o777) == "0o600"

    answer = running.control("/start-sequential")

    assert answer["ok"] is True
    assert answer["started"] == ["ndax", "kraken"]
    fills_grew_twice(running, ["ndax", "kraken"])
    for name in ("ndax", "kraken"):
        stopped = running.control("/stop", {"bot": name, "reason": "end of session"})
        assert stopped["bot"]["state"] == "stopped"
        assert stopped["bot"]["open_orders"] == 0
        assert stopped["bot"]["cancel_errors"] == []
    bots = running.bots()
    assert {name: b["state"] for name, b in bots.items()} == {
        "ndax": "stopped",
        "kraken": "stopped",
    }
    assert all(b["open_orders"] == 0 and b["error"] is None for b in bots.values())

    began = time.monotonic()
    assert running.interrupt(within=5) == 0
    assert time.monotonic() - began < 5

    lines = running.log_lines()
    assert lines, "the log file has JSON lines"
    assert {"ts", "level", "logger", "message"} <= set(lines[0])
    bad = [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]
    assert bad == []
    messages = [line["message"] for line in lines]
    for expected in ("SIGINT received", "shutting down", "stopped cleanly"):
        assert any(expected in m for m in messages), expected
    assert "stopped cleanly" in messages[-1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_bots_trade_stops_them_and_cancels_their_orders(
    running: CoordinatorProcess, sig: signal.Signals
) -> None:
    running.control("/start-sequential")
    wait_for(lambda: running.bots()["kraken"]["open_orders"] > 0, 10, "resting grid orders")

    assert running.interrupt(within=5, sig=sig) == 0

    with closing(sqlite3.connect(running.data_dir / "coordinator.db")) as db:
        live = db.execute(
            "SELECT COUNT(*) FROM orders WHERE status IN ('pending_submit', 'open')"
        ).fetchone()[0]
        states = dict(db.execute("SELECT name, state FROM bots").fetchall())
    assert live == 0
    assert states == {"ndax": "stopped", "kraken": "stopped"}
    lines = running.log_lines()
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]
    assert any(f"{sig.name} received" in line["message"] for line in lines)


def test_after_kill_9_a_new_process_recovers_the_journal_and_resolves_live_orders(
    tmp_path: Path, config_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    for _attempt in range(3):
        first = CoordinatorProcess(tmp_path, config_dir, data_dir=data_dir).start()
        try:
            first.wait_ready()
            token = first.token
            first.control("/start-sequential")
            fills_grew_twice(first, ["ndax", "kraken"])

            def with_resting_orders(
                process: CoordinatorProcess = first,
            ) -> dict[str, dict[str, Any]] | None:
                bots = process.bots()
                return bots if bots["kraken"]["open_orders"] > 0 else None

            before = wait_for(with_resting_orders, 10, "resting grid orders")
            assert first.proc is not None
            first.proc.send_signal(signal.SIGKILL)
            assert first.proc.wait(timeout=5) == -signal.SIGKILL
        finally:
            first.kill()
        # The grid cancels its whole ladder and lays a new one after each fill: a kill in that
        # gap leaves no order live in the journal, and nothing for the next start to resolve.
        if live_orders(data_dir) > 0:
            break

    second = CoordinatorProcess(tmp_path, config_dir, data_dir=data_dir).start()
    try:
        second.wait_ready()
        after = second.bots()
        for name in ("ndax", "kraken"):
            assert after[name]["state"] == "stopped"
            assert after[name]["orders"] >= before[name]["orders"] > 0
            assert after[name]["fills"] >= before[name]["fills"] > 0
            assert after[name]["open_orders"] == 0
            assert after[name]["error"] is None
        assert second.token == token, "the token file is reused"
        status, audit = second.request("GET", "/audit?limit=20")
        assert status == 200
        recovered = {
            e["subject"]: e["details"]["was"]
            for e in audit["events"]
            if e["action"] == "bot.recovered_after_unclean_end"
        }
        assert recovered == {"ndax": "running", "kraken": "running"}
        # The bots can trade again from the recovered journal.
        second.control("/start", {"bot": "kraken"})
        wait_for(lambda: second.bots()["kraken"]["state"] == "running", 10, "kraken running")
        assert second.interrupt(within=5) == 0
    finally:
        second.kill()

    live = live_orders(data_dir)
    with closing(sqlite3.connect(data_dir / "coordinator.db")) as db:
        # A paper exchange does not outlive its process: the new one knows none of the orders.
        resolved = db.execute(
            "SELECT COUNT(*) FROM order_events WHERE detail = ? AND to_status IN (?, ?)",
            ("the exchange does not know this order (resolved at start-up)", "canceled", "failed"),
        ).fetchone()[0]
    assert live == 0
    assert resolved >= 1, "the grid's resting orders were resolved at the next start"
