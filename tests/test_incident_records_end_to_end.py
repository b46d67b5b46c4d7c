"""Incident records against the real process, as an operator keeps them: a kill switch
activation with a reason opens one, the CLI notes and closes it, its Markdown export shows the
timeline and the verdict, a backup carries it, and with the coordinator stopped the CLI writes
the journal itself."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path
from typing import Any

from coordinator.api.auth import ADMIN_TOKEN_FILE
from tests.support_config import trading_config, write_fast_config
from tests.support_process import CoordinatorProcess, child_env, wait_for


def with_database_backups(documents: dict[str, Any]) -> None:
    trading_config(documents)
    documents["recovery-settings.json"].setdefault("backups", {})["include_database"] = True


def cli(process: CoordinatorProcess, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", "--data-dir", str(process.data_dir),
         "--port", str(process.port), "--config-dir", str(process.config_dir), *command],
        capture_output=True, text=True, env=child_env(), timeout=60, cwd=process.root,
    )  # fmt: skip


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def incidents_in_backup(archive: Path, scratch: Path) -> list[tuple[int, str]]:
    with tarfile.open(archive, "r:gz") as tar:
        handle = tar.extractfile("database/coordinator.db")
        assert handle is not None
        scratch.write_bytes(handle.read())
    with closing(sqlite3.connect(scratch)) as db:
        return [(int(i), str(s)) for i, s in db.execute("SELECT id, status FROM incidents")]


def test_an_incident_from_kill_switch_to_closed_record_with_its_recovery_measured(
    tmp_path: Path,
) -> None:
    process = CoordinatorProcess(tmp_path, write_fast_config(tmp_path / "config",
                                                             with_database_backups))  # fmt: skip
    process.start()
    try:
        process.wait_ready()
        process.control("/start-sequential")
        wait_for(lambda: process.bots()["ndax"]["fills"] > 0, 15, "ndax's first fill")

        status, activated = process.request("POST", "/kill-switch", {"reason": "ndax drawdown"})
        assert status == 200, activated
        incident = activated["incident"]
        assert "waiting for ndax, kraken" in ok(cli(process, "incident", "show", str(incident)))

        ok(cli(process, "incident", "note", str(incident), "checked the fills", "--by", "alice",
               "--action", "--tick", "document", "review_logs"))  # fmt: skip
        admin = (process.data_dir / ADMIN_TOKEN_FILE).read_text().strip()
        status, lifted = process.request(
            "POST", "/kill-switch",
            {"action": "force_override", "reason": "fixed", "approved_by": "risk"}, token=admin,
        )  # fmt: skip
        assert status == 200, lifted
        process.control("/start-sequential")
        cause = "drawdown in a fast market"
        closed = ok(cli(process, "incident", "close", str(incident), "--root-cause", cause,
                        "--outcome", "success", "--by", "alice"))  # fmt: skip
        assert "MET: recovered in" in closed
        assert "checklist left unticked (8)" in closed
        out = tmp_path / "incident.md"
        ok(cli(process, "incident", "export", str(incident), "--out", str(out)))
        text = out.read_text()
        for row in ("| kill switch activated |", "| kill switch overridden |",
                    "| first bot back |", "| all bots back |"):  # fmt: skip
            assert row in text, row
        assert "- **Objective:** MET: recovered in" in text
        assert "  - checked the fills" in text
        assert "- [x] Review logs for patterns (`review_logs`), alice (operator-token)" in text

        backup = process.control("/backups")
        archive = Path(backup["archive"])
        archive = archive if archive.is_absolute() else process.root / archive
        assert incidents_in_backup(archive, tmp_path / "restored.db") == [(incident, "closed")]
        assert process.interrupt(within=15) == 0
    finally:
        process.kill()

    # No coordinator: the CLI opens the journal itself (and the data dir's lock).
    opened = ok(cli(process, "incident", "open", "--issue", "failover rehearsal", "--drill",
                    "--kind", "full_recovery", "--bots", "kraken"))  # fmt: skip
    assert "(full_recovery, drill) open" in opened
    listed = ok(cli(process, "incident", "list"))
    assert "open (drill)" in listed
    assert "closed" in listed
    refused = cli(process, "incident", "note", str(incident), "too late")
    assert refused.returncode == 1
    assert "was closed" in refused.stderr
    verified = cli(process, "--verify-data")
    assert verified.returncode == 0, verified.stdout + verified.stderr
