"""`bot-coordinator --verify-data` against a journal the real process wrote.

Synchronous, like the other real-process tests (tests/test_end_to_end.py): the coordinator
and the verifier are child processes; the test edits the stopped journal with sqlite3.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from coordinator.runtime import DATABASE_FILE
from tests.support_config import trading_config, write_fast_config
from tests.support_process import CoordinatorProcess, child_env, wait_for

RUN_WITHIN = 30


def verify_data(data_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", "--verify-data", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=cwd,
        timeout=RUN_WITHIN,
        check=False,
    )


def test_verify_data_is_clean_on_a_real_journal_and_names_a_fill_deleted_by_hand(
    tmp_path: Path,
) -> None:
    config_dir = write_fast_config(tmp_path / "config", trading_config)
    process = CoordinatorProcess(tmp_path, config_dir).start()
    try:
        process.wait_ready()
        process.control("/start-sequential")

        def traded() -> dict[str, dict[str, Any]] | None:
            bots = process.bots()
            return bots if all(bot["fills"] >= 3 for bot in bots.values()) else None

        wait_for(traded, 20, "three fills on every bot")
        beside = verify_data(process.data_dir, tmp_path)  # while it runs: read-only, no lock
        assert process.interrupt(within=5) == 0
    finally:
        process.kill()

    assert beside.returncode == 0, beside.stdout + beside.stderr
    clean = verify_data(process.data_dir, tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.splitlines()[-1].startswith("clean: ")

    database = process.data_dir / DATABASE_FILE
    with closing(sqlite3.connect(database)) as db:
        fill_id, client_order_id, bot = db.execute(
            "SELECT id, client_order_id, bot FROM fills ORDER BY id LIMIT 1"
        ).fetchone()
        db.execute("DELETE FROM fills WHERE id = ?", (fill_id,))
        db.commit()

    broken = verify_data(process.data_dir, tmp_path)

    assert broken.returncode == 1, broken.stdout + broken.stderr
    lines = broken.stdout.splitlines()
    assert any(
        line.split()[:3] == ["orders", "orders", "client_order_id"]
        and line.split()[3] == str(client_order_id)
        for line in lines
    ), broken.stdout
    assert any(line.split()[:4] == ["books", "positions", "bot", bot] for line in lines), (
        broken.stdout
    )
    assert lines[-1].endswith("inconsistencies") or "inconsistencies (" in lines[-1]
