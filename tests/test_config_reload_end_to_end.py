"""Live config reload against the real process, as an operator would do it: edit a file in
config/, then `POST /config/reload`, `bot-coordinator config reload` or SIGHUP. A broken file is
refused with every problem and the bots trade on; a valid change applies without a restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support_config import trading_config, write_fast_config
from tests.support_process import CoordinatorProcess, child_env, wait_for

LIMITS = "bot-limits.json"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[CoordinatorProcess]:
    process = CoordinatorProcess(tmp_path, write_fast_config(tmp_path / "config", trading_config))
    process.start()
    try:
        process.wait_ready()
        process.control("/start-sequential")
        wait_for(lambda: process.bots()["ndax"]["fills"] > 0, 15, "ndax's first fill")
        yield process
    finally:
        process.kill()


def rewrite(process: CoordinatorProcess, name: str, change: Callable[[Any], None]) -> None:
    path = process.config_dir / name
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")


def audit(process: CoordinatorProcess, action: str) -> list[dict[str, Any]]:
    status, answer = process.request("GET", "/audit?limit=1000")
    assert status == 200
    return [e for e in answer["events"] if e["action"] == action]


def fills_grow(process: CoordinatorProcess, bot: str) -> None:
    before = process.bots()[bot]["fills"]
    wait_for(lambda: process.bots()[bot]["fills"] > before, 15, f"{bot} to fill again")


def test_a_broken_limits_file_is_refused_and_the_bots_trade_on_with_the_old_limits(
    running: CoordinatorProcess,
) -> None:
    original = (running.config_dir / LIMITS).read_text(encoding="utf-8")

    def break_it(limits: Any) -> None:
        limits["defaults"]["max_order_notional"] = 0
        del limits["safe_mode"]

    rewrite(running, LIMITS, break_it)
    status, answer = running.request(
        "POST", "/config/reload", {"approved_by": "alice"}, token=running.token
    )

    assert status == 422, answer
    error = answer["error"]
    assert error["code"] == "config_invalid"
    assert "the running config is kept" in error["message"]
    paths = {(e["file"], e["path"]) for e in error["errors"]}
    assert (LIMITS, "$.defaults.max_order_notional") in paths
    assert (LIMITS, "$.safe_mode") in paths or (LIMITS, "$") in paths
    fills_grow(running, "ndax")  # on the old limits: 25 CAD buys under 250
    assert running.bots()["ndax"]["refusals"].get("max_order_notional", 0) == 0
    [entry] = audit(running, "config.reload")
    assert entry["result"].startswith("refused: the configuration in")
    assert entry["actor"] == "operator-token"
    # Put back, it reloads clean and changes nothing.
    (running.config_dir / LIMITS).write_text(original, encoding="utf-8")
    status, answer = running.request("POST", "/config/reload", token=running.token)
    assert (status, answer["result"], answer["changes"]) == (200, "unchanged", [])


def test_a_valid_change_applies_without_a_restart_once_approved(
    running: CoordinatorProcess,
) -> None:
    pid = running.proc.pid if running.proc else None
    rewrite(running, LIMITS, lambda limits: limits["bots"]["ndax"].update(max_order_notional=5))

    status, answer = running.request("POST", "/config/reload", {}, token=running.token)
    assert status == 409, answer
    assert answer["error"]["code"] == "config_not_approved"
    assert "running bot ndax" in answer["error"]["message"]

    status, preview = running.request(
        "POST", "/config/reload", {"dry_run": True}, token=running.token
    )
    assert (status, preview["result"], preview["needs_approval"]) == (200, "dry_run", ["ndax"])

    status, answer = running.request(
        "POST", "/config/reload", {"approved_by": "alice", "reason": "smaller buys"},
        token=running.token,
    )  # fmt: skip
    assert status == 200, answer
    assert answer["result"] == "applied"
    assert [(c["path"], c["before"], c["after"]) for c in answer["changes"]] == [
        ("$.bots.ndax.max_order_notional", "250", "5")
    ]
    # Applied to the running bot: its next buys are refused by the new limit.
    wait_for(
        lambda: running.bots()["ndax"]["refusals"].get("max_order_notional", 0) > 0,
        10, "a buy refused by the reloaded limit",
    )  # fmt: skip
    ndax = running.bots()["ndax"]
    assert ndax["state"] == "running"
    assert ndax["config"]["approved"] is True
    assert ndax["config"]["approved_by"] == "alice"
    assert running.proc is not None
    assert running.proc.pid == pid
    assert running.proc.poll() is None
    entry, refusal = audit(running, "config.reload")  # newest first
    assert refusal["result"].startswith("refused: the effective config of running bot ndax")
    assert entry["result"] == "ok"
    assert entry["details"]["sha256_before"] == answer["sha256_before"]
    assert entry["details"]["sha256_after"] == answer["sha256_after"]
    status, config = running.request("GET", "/config")
    assert config["reload"]["reloads"] == 1
    assert config["changed_since_start"] == []


def test_sighup_applies_safety_settings_and_refuses_what_needs_an_approver(
    running: CoordinatorProcess,
) -> None:
    assert running.proc is not None
    rewrite(running, "kill-switch.json",
            lambda document: document["triggers"].update(max_consecutive_order_failures=3))

    running.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: audit(running, "config.reload"), 10, "the SIGHUP reload's audit entry")

    [entry] = audit(running, "config.reload")
    assert (entry["actor"], entry["result"], entry["details"]["via"]) == ("sighup", "ok", "SIGHUP")
    assert [c["path"] for c in entry["details"]["changes"]] == [
        "$.triggers.max_consecutive_order_failures"
    ]
    # A change to a running bot's limits: SIGHUP cannot approve it.
    rewrite(running, LIMITS, lambda limits: limits["bots"]["ndax"].update(max_order_notional=5))
    running.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(audit(running, "config.reload")) == 2, 10, "the second SIGHUP reload")
    refused = audit(running, "config.reload")[0]
    assert refused["result"].startswith("refused: the effective config of running bot ndax")
    assert "config reload --approved-by WHO" in refused["result"]
    fills_grow(running, "ndax")  # still on 250
    assert running.proc.poll() is None

    # The command line approves it.
    done = subprocess.run(
        [sys.executable, "-m", "coordinator", "--data-dir", str(running.data_dir),
         "--port", str(running.port), "--config-dir", str(running.config_dir),
         "--log-dir", str(running.root / "cli-logs"), "config", "reload", "--approved-by", "bob"],
        capture_output=True, text=True, env=child_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "$.bots.ndax.max_order_notional: 250 -> 5  [now]" in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("applied: 1 change(s)")
    assert running.bots()["ndax"]["config"]["approved_by"] == "bob"
