"""`bot-coordinator incident snapshot` beside the real, trading process: the archive holds its
answers and its log, verifies, carries no planted credential, and trading goes on."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support_config import trading_config, write_fast_config
from tests.support_process import CoordinatorProcess, child_env, wait_for

PLANTED_KEY = "PLANTED-e2e-snapshot-key-2b7c4f9d"


def cli(process: CoordinatorProcess, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", "--data-dir", str(process.data_dir),
         "--port", str(process.port), "--config-dir", str(process.config_dir),
         "--log-dir", str(process.log_dir), *command],
        capture_output=True, text=True, env=child_env(), timeout=60,
    )  # fmt: skip


def test_a_snapshot_of_a_running_coordinator_verifies_and_holds_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NDAX_API_KEY", PLANTED_KEY)  # the process and the CLI both see it
    process = CoordinatorProcess(tmp_path, write_fast_config(tmp_path / "config", trading_config))
    process.start()
    try:
        process.wait_ready()
        process.control("/start-sequential")
        wait_for(lambda: process.bots()["ndax"]["fills"] > 0, 15, "ndax's first fill")

        taken = cli(process, "incident", "snapshot")

        assert taken.returncode == 0, taken.stdout + taken.stderr
        assert "(coordinator running)" in taken.stdout
        [archive] = list((process.data_dir / "incidents").glob("incident-*.tar.gz"))
        verified = cli(process, "incident", "verify", str(archive))
        assert verified.returncode == 0, verified.stderr
        assert "members match the manifest" in verified.stdout
        with tarfile.open(archive, "r:gz") as tar:
            content = {}
            for info in tar.getmembers():
                extracted = tar.extractfile(info)
                assert extracted is not None
                content[info.name] = extracted.read()
        for name, data in content.items():
            assert PLANTED_KEY.encode() not in data, name
        status = json.loads(content["status.json"])
        assert {bot["name"] for bot in status["bots"]} == {"ndax", "kraken"}
        assert "logs/bot-coordinator.log" in content
        assert json.loads(content["manifest.json"])["coordinator_running"] is True
        # The same through the control plane: audited, the logs from the process's --log-dir.
        code, answer = process.request(
            "POST", "/incidents/snapshot", {"reason": "drill"}, token=process.token
        )
        assert code == 200, answer
        assert answer["coordinator_running"] is True
        assert Path(answer["path"]).parent == process.data_dir / "incidents"
        assert cli(process, "incident", "verify", answer["path"]).returncode == 0
        code, audit = process.request("GET", "/audit?limit=50")
        [entry] = [e for e in audit["events"] if e["action"] == "incident.snapshot"]
        assert entry["result"] == "ok"
        assert entry["details"]["path"] == answer["path"]
        with tarfile.open(answer["path"], "r:gz") as tar:
            assert "logs/bot-coordinator.log" in tar.getnames()
        # Trading went on, and the kill switch still stops everything at once.
        fills = process.bots()["ndax"]["fills"]
        wait_for(lambda: process.bots()["ndax"]["fills"] > fills, 15, "ndax filling on")
        code, answer = process.request("POST", "/kill-switch")
        assert code == 200, answer
        assert process.interrupt() == 0
    finally:
        process.kill()
