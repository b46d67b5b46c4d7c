"""The kill-switch drill from the runbook, against the real process, as an operator runs it:
activate with no token while both bots trade, every bot stops and nothing more is recorded;
override inside the cooldown is refused; after kill -9 and a restart the switch is still active
and no bot may start; force_override needs an approver and the admin token."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from coordinator.api.auth import ADMIN_TOKEN_FILE
from tests.support_config import trading_config, write_fast_config
from tests.support_process import CoordinatorProcess, wait_for


@pytest.fixture
def process(tmp_path: Path) -> Iterator[CoordinatorProcess]:
    config_dir = write_fast_config(tmp_path / "config", trading_config)
    running = CoordinatorProcess(tmp_path, config_dir).start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.kill()


def journal_counts(data_dir: Path) -> tuple[int, int]:
    with closing(sqlite3.connect(data_dir / "coordinator.db")) as db:
        orders = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        fills = db.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    return int(orders), int(fills)


def test_the_kill_switch_drill(process: CoordinatorProcess, tmp_path: Path) -> None:
    process.control("/start-sequential")
    wait_for(
        lambda: all(bot["fills"] > 0 for bot in process.bots().values()), 15, "both bots filling"
    )

    status, activated = process.request(
        "POST", "/kill-switch", {"action": "activate", "reason": "drill"}
    )

    assert status == 200, activated
    assert activated["active"] is True
    wait_for(
        lambda: {b["state"] for b in process.bots().values()} == {"stopped"}, 5, "bots stopped"
    )
    after = journal_counts(process.data_dir)
    time.sleep(0.5)  # five tick intervals
    assert journal_counts(process.data_dir) == after, "an order or fill was recorded after it"

    status, refused = process.request(
        "POST", "/kill-switch", {"action": "override", "reason": "too soon"}, token=process.token
    )
    assert status == 409, refused
    assert "cooldown" in refused["error"]["message"]

    process.kill()  # kill -9
    restarted = CoordinatorProcess(tmp_path, process.config_dir, process.data_dir).start()
    try:
        restarted.wait_ready()
        _, snapshot = restarted.request("GET", "/status")
        assert snapshot["kill_switch_active"] is True
        status, start = restarted.request("POST", "/start", {"bot": "ndax"}, token=restarted.token)
        assert status == 409, start

        force = {"action": "force_override", "reason": "drill over"}
        status, _ = restarted.request("POST", "/kill-switch", force, token=restarted.token)
        assert status == 400  # no approved_by
        approved = {**force, "approved_by": "risk officer"}
        status, _ = restarted.request("POST", "/kill-switch", approved, token=restarted.token)
        assert status == 403  # the operator token
        admin = (restarted.data_dir / ADMIN_TOKEN_FILE).read_text().strip()
        status, lifted = restarted.request("POST", "/kill-switch", approved, token=admin)
        assert status == 200, lifted
        assert lifted["active"] is False
        assert restarted.interrupt() == 0
    finally:
        restarted.kill()
