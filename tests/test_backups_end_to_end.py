"""Backups against the real process: scheduled while bots trade; a corrupt config stops start-up
with the restore command; that command brings the config back and start-up succeeds."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path
from typing import Any

from coordinator.backups.layout import LATEST_ARCHIVE, archive_sort_key
from tests.support_config import trading_config, write_fast_config
from tests.support_process import CoordinatorProcess, child_env, wait_for

INTERVAL_MINUTES = 0.02  # 1.2 s
KEEP = 3


def fast_backups(documents: dict[str, Any]) -> None:
    trading_config(documents)
    documents["recovery-settings.json"]["backups"] = {
        "interval_minutes": INTERVAL_MINUTES,
        "keep_count": KEEP,
        "keep_days": 0,
        "include_database": True,
    }


def scheduled(backup_dir: Path) -> list[Path]:
    return sorted(backup_dir.glob("config-*.tar.gz"), key=lambda p: archive_sort_key(p.name))


def fills_in(archive: Path, scratch: Path) -> int:
    with tarfile.open(archive, "r:gz") as tar:
        handle = tar.extractfile("database/coordinator.db")
        assert handle is not None
        scratch.write_bytes(handle.read())
    with closing(sqlite3.connect(scratch)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return int(db.execute("SELECT COUNT(*) FROM fills").fetchone()[0])


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, env=child_env(), cwd=cwd, timeout=60, check=False
    )


def test_scheduled_backups_while_trading_then_a_corrupt_config_is_restored(
    tmp_path: Path,
) -> None:
    config_dir = write_fast_config(tmp_path / "config", fast_backups)
    backup_dir = tmp_path / "backups"  # the default, relative to the process's directory
    process = CoordinatorProcess(tmp_path, config_dir).start()
    try:
        process.wait_ready()
        process.control("/start-sequential")
        wait_for(lambda: process.bots()["ndax"]["fills"] > 0, 15, "a first fill")
        first = wait_for(lambda: scheduled(backup_dir)[-1:], 15, "a scheduled backup")[0]
        wait_for(
            lambda: len({p.name for p in scheduled(backup_dir)} - {first.name}) >= 2,
            15,
            "two more scheduled backups",
        )
        newest = scheduled(backup_dir)[-1]
        assert fills_in(newest, tmp_path / "newest.db") > fills_in(first, tmp_path / "first.db")

        status, listed = process.request("GET", "/backups")
        assert status == 200
        assert listed["latest"] is not None
        assert all(b["trigger"] == "schedule" for b in listed["backups"])
        _, state = process.request("GET", "/status")
        assert state["backups"]["result"] == "ok"
        assert state["backups"]["age_seconds"] < 5
        assert process.interrupt(within=5) == 0
    finally:
        process.kill()
    assert len(scheduled(backup_dir)) <= KEEP + 1  # retention: the count (plus one in flight)
    log = process.log_lines()
    assert not [line for line in log if line["level"] in ("ERROR", "CRITICAL")]

    limits = config_dir / "bot-limits.json"
    good = json.loads(
        (backup_dir / "config-latest" / "bot-limits.json").read_text(encoding="utf-8")
    )
    limits.write_text('{"version": 1, "defaults": {"max_order_notional": ', encoding="utf-8")

    refused = run(process.args(), tmp_path)

    assert refused.returncode == 2, refused.stderr
    assert "bot-limits.json: $: invalid JSON" in refused.stderr
    hint = next(line for line in refused.stderr.splitlines() if line.startswith("to restore"))
    command = shlex.split(hint.split(": ", 1)[1])
    assert command[:4] == ["bot-coordinator", "restore", "--latest", "--config-only"]
    assert "Traceback" not in refused.stderr

    restored = run([sys.executable, "-m", "coordinator", *command[1:]], tmp_path)

    assert restored.returncode == 0, restored.stderr
    assert json.loads(limits.read_text(encoding="utf-8")) == good
    assert (backup_dir / LATEST_ARCHIVE).is_file()
    again = CoordinatorProcess(tmp_path, config_dir, data_dir=process.data_dir).start()
    try:
        again.wait_ready()
        assert set(again.bots()) == {"ndax", "kraken"}
        assert again.interrupt(within=5) == 0
    finally:
        again.kill()
