"""`bot-coordinator kill-switch ...` and `bot enable`: through a running coordinator, and
written to the journal when none runs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coordinator.cli import main
from coordinator.config import load_config
from coordinator.runtime import Coordinator
from tests.support_config import write_fast_config
from tests.support_process import CoordinatorProcess, child_env, wait_for


def cli(process: CoordinatorProcess, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", "--port", str(process.port),
         "--config-dir", str(process.config_dir), "--data-dir", str(process.data_dir),
         "--log-dir", str(process.root / "cli-logs"), *command],
        capture_output=True, text=True, env=child_env(), cwd=process.root, timeout=60,
        check=False,
    )  # fmt: skip


def test_the_cli_scopes_the_kill_switch_of_a_running_coordinator(tmp_path: Path) -> None:
    config_dir = write_fast_config(tmp_path / "config")
    process = CoordinatorProcess(tmp_path, config_dir).start()
    try:
        process.wait_ready()
        process.control("/start-sequential")

        halted = cli(process, "kill-switch", "activate", "--exchange", "kraken",
                     "--reason", "kraken maintenance")
        assert halted.returncode == 0, halted.stderr
        assert json.loads(halted.stdout)["switch"]["scope"] == {"exchange": "kraken"}
        wait_for(lambda: process.bots()["kraken"]["state"] == "stopped", 10, "kraken stopped")
        fills = process.bots()["ndax"]["fills"]
        wait_for(lambda: process.bots()["ndax"]["fills"] > fills, 10, "ndax trading on")

        lift = cli(process, "kill-switch", "override", "--exchange", "kraken", "--reason", "ok")
        assert lift.returncode == 1
        assert "cooldown" in lift.stderr
        forced = cli(process, "kill-switch", "force-override", "--exchange", "kraken",
                     "--reason", "done", "--approved-by", "alice")
        assert forced.returncode == 0, forced.stderr
        _, status = process.request("GET", "/status")
        assert status["trading_controls"]["scopes"] == []
        assert process.interrupt() == 0
    finally:
        process.kill()


@pytest.fixture
def journal_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A config dir and a data dir whose journal a coordinator made and left."""
    config_dir = write_fast_config(tmp_path / "config")
    data_dir = tmp_path / "data"
    data_dir.mkdir()

    config = load_config(config_dir)

    async def make() -> None:
        coordinator = await Coordinator.open(config, data_dir)
        await coordinator.close(grace_seconds=0.1)

    asyncio.run(make())
    return config_dir, data_dir


def run(journal_dir: tuple[Path, Path], tmp_path: Path, *command: str) -> int:
    config_dir, data_dir = journal_dir
    return main(["--config-dir", str(config_dir), "--data-dir", str(data_dir),
                 "--log-dir", str(tmp_path / "logs"), *command])


def reopened(journal_dir: tuple[Path, Path]) -> dict[str, Any]:
    config_dir, data_dir = journal_dir
    config = load_config(config_dir)

    async def read() -> dict[str, Any]:
        coordinator = await Coordinator.open(config, data_dir)
        try:
            return coordinator.status()
        finally:
            await coordinator.close(grace_seconds=0.1)

    return asyncio.run(read())


def test_with_no_coordinator_running_a_scope_is_written_and_holds_from_the_next_start(
    journal_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(journal_dir, tmp_path, "kill-switch", "reduce-only", "--bot", "kraken",
               "--reason", "unwind before the open")

    assert code == 0
    assert "holds from the next start" in capsys.readouterr().err
    status = reopened(journal_dir)
    [scope] = status["trading_controls"]["scopes"]
    assert (scope["key"], scope["state"], scope["by"]) == ("bot:kraken", "reducing", "cli")


def test_with_no_coordinator_running_the_kill_switch_is_activated_in_the_journal(
    journal_dir: tuple[Path, Path], tmp_path: Path
) -> None:
    assert run(journal_dir, tmp_path, "kill-switch", "activate", "--reason", "weekend") == 0

    status = reopened(journal_dir)
    assert status["kill_switch_active"] is True
    assert status["kill_switch"]["by"] == "cli"


def test_lifting_needs_a_running_coordinator_and_enabling_a_bot_that_is_not_disabled_fails(
    journal_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lift = run(journal_dir, tmp_path, "kill-switch", "override", "--reason", "x")
    enable = run(journal_dir, tmp_path, "bot", "enable", "kraken", "--approved-by", "alice")
    unknown = run(journal_dir, tmp_path, "bot", "enable", "nobody", "--approved-by", "alice")
    blank = run(journal_dir, tmp_path, "bot", "enable", "kraken", "--approved-by", " ")

    err = capsys.readouterr().err
    assert (lift, enable, unknown, blank) == (1, 1, 2, 2)
    assert "no coordinator is running" in err
    assert "bot 'kraken' is not disabled" in err
    assert "no bot named 'nobody'" in err
    assert "--approved-by: must not be blank" in err


def test_activating_from_the_cli_needs_no_reason(
    journal_dir: tuple[Path, Path], tmp_path: Path
) -> None:
    assert run(journal_dir, tmp_path, "kill-switch", "activate") == 0

    status = reopened(journal_dir)
    assert status["kill_switch"]["reason"] == "(no reason given)"
