"""`bot-coordinator`: exit codes and the messages an operator sees when it cannot start."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from coordinator.bot_test import with_mode
from coordinator.cli import EXIT_BAD_CONFIG, EXIT_START_FAILED, main
from coordinator.config import load_config
from coordinator.config.models import BotMode
from coordinator.runtime import Coordinator
from tests.support_config import write_fast_config
from tests.support_process import CoordinatorProcess, child_env

RUN_WITHIN = 30


def run_cli(process: CoordinatorProcess) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end; it is expected not to start."""
    return subprocess.run(
        process.args(),
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=process.root,
        timeout=RUN_WITHIN,
        check=False,
    )


def test_a_bad_config_dir_exits_2_listing_every_problem_of_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def break_two_files(documents: dict[str, Any]) -> None:
        documents["bots.json"]["bots"][0]["colour"] = "red"

    config_dir = write_fast_config(tmp_path / "config", break_two_files)
    (config_dir / "recovery-settings.json").write_text('{"version": 1,\n  "restart": }\n')
    data_dir, log_dir = tmp_path / "data", tmp_path / "logs"

    code = main(
        ["--config-dir", str(config_dir), "--data-dir", str(data_dir), "--log-dir", str(log_dir)]
    )

    assert code == EXIT_BAD_CONFIG == 2
    err = capsys.readouterr().err
    assert str(config_dir) in err
    assert "bots.json: $.bots[0].colour:" in err
    assert "recovery-settings.json: $: invalid JSON at line 2, column 14" in err
    assert err.index("bots.json") < err.index("recovery-settings.json")
    assert "nothing was started" in err
    assert not data_dir.exists()
    assert not log_dir.exists()


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ("0x", "--port: '0x' is not a number"),
        ("0", "--port: 0 is outside 1-65535"),
        ("65536", "--port: 65536 is outside 1-65535"),
    ],
)
def test_a_bad_port_is_an_argument_error(
    port: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--port", port])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.startswith("usage: bot-coordinator")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])

    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith("bot-coordinator ")


def test_a_port_in_use_exits_1_naming_the_port(tmp_path: Path) -> None:
    config_dir = write_fast_config(tmp_path / "config")
    process = CoordinatorProcess(tmp_path, config_dir)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process.port = taken.getsockname()[1]

        done = run_cli(process)

    assert done.returncode == EXIT_START_FAILED == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{process.port}" in done.stderr
    assert "already in use" in done.stderr
    assert "Traceback" not in done.stderr
    log = [json.loads(line) for line in process.log_file.read_text().splitlines()]
    assert any(f"127.0.0.1:{process.port}" in line["message"] for line in log)


def test_a_second_coordinator_on_the_same_data_dir_exits_1_naming_the_first(
    tmp_path: Path,
) -> None:
    config_dir = write_fast_config(tmp_path / "config")
    first = CoordinatorProcess(tmp_path, config_dir).start()
    try:
        first.wait_ready()
        assert first.proc is not None
        second = CoordinatorProcess(tmp_path, config_dir, data_dir=first.data_dir)

        done = run_cli(second)

        assert done.returncode == EXIT_START_FAILED == 1, done.stderr
        assert f"another coordinator (pid {first.proc.pid}) is running on" in done.stderr
        assert "Traceback" not in done.stderr
        # The first one is unharmed and still answers.
        assert first.request("GET", "/health")[0] == 200
        assert first.interrupt(within=5) == 0
    finally:
        first.kill()


def _open_kraken_breaker(config_dir: Path, data_dir: Path) -> None:
    """A journal whose kraken breaker is open, as a coordinator that stopped would leave it."""

    config = load_config(config_dir)  # file reads: outside the loop

    async def prepare() -> None:
        coordinator = await Coordinator.open(config, data_dir)
        threshold = coordinator.config.recovery.circuit_breaker.failure_threshold
        for _ in range(threshold):
            coordinator.safety.board.after_send("kraken", "transient")
        await coordinator.close(grace_seconds=0.1)

    asyncio.run(prepare())


def test_breaker_reset_with_no_coordinator_running_resets_the_stored_state_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = write_fast_config(tmp_path / "config")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _open_kraken_breaker(config_dir, data_dir)
    common = [
        "--config-dir",
        str(config_dir),
        "--data-dir",
        str(data_dir),
        "--log-dir",
        str(tmp_path / "logs"),
    ]

    code = main([*common, "breaker", "reset", "kraken", "--approved-by", "ops lead"])

    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["state"] == "closed"
    with closing(sqlite3.connect(data_dir / "coordinator.db")) as db:
        stored = json.loads(
            db.execute("SELECT value FROM safety_state WHERE key = 'breaker:kraken'").fetchone()[0]
        )
        audit = db.execute(
            "SELECT actor, action, subject, result, details FROM audit_events"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert stored["state"] == "closed"
    assert audit[:4] == ("cli", "breaker.reset", "kraken", "ok")
    assert json.loads(audit[4])["approved_by"] == "ops lead"


def test_breaker_reset_of_an_unknown_breaker_fails_naming_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = write_fast_config(tmp_path / "config")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _open_kraken_breaker(config_dir, data_dir)
    common = [
        "--config-dir",
        str(config_dir),
        "--data-dir",
        str(data_dir),
        "--log-dir",
        str(tmp_path / "logs"),
    ]

    code = main([*common, "breaker", "reset", "binance", "--approved-by", "ops"])

    assert code == 1
    assert "no circuit breaker named 'binance'" in capsys.readouterr().err


def _common(tmp_path: Path) -> list[str]:
    config_dir = write_fast_config(tmp_path / "config")
    return [
        "--config-dir",
        str(config_dir),
        "--data-dir",
        str(tmp_path / "data"),
        "--log-dir",
        str(tmp_path / "logs"),
    ]


def test_bot_test_runs_one_bot_for_n_ticks_on_a_throw_away_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*_common(tmp_path), "--bot", "ndax", "--test", "--ticks", "4"])

    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["bot"] == "ndax"
    assert summary["mode"] == "paper"
    assert summary["ticks"] >= 4
    assert summary["fills"] >= 1  # the fast DCA buys every 200 ms
    assert not (tmp_path / "data" / "coordinator.db").exists()  # the real journal is untouched


def test_bot_test_read_only_sends_nothing_and_counts_the_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*_common(tmp_path), "--bot", "ndax", "--test", "--ticks", "4", "--read-only"])

    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "read-only"
    assert summary["orders"] == 0
    assert summary["fills"] == 0
    assert summary["refusals"]["read_only"] >= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bot", "binance", "--test"], "no bot named 'binance'; configured bots: ndax, kraken"),
        (["--test"], "--test needs --bot NAME"),
        (["--bot", "ndax"], "--bot needs --test"),
        (["--bot", "ndax", "--test", "--ticks", "0"], "0 is outside 1-100000"),
    ],
)
def test_bot_test_arguments_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    try:
        code = main([*_common(tmp_path), *argv])
    except SystemExit as exit_:  # argparse's own errors
        code = int(exit_.code or 0)
    assert code == EXIT_BAD_CONFIG
    assert message in capsys.readouterr().err


def test_read_only_puts_every_bot_in_read_only_mode(tmp_path: Path) -> None:
    config = load_config(write_fast_config(tmp_path / "config"))
    forced = with_mode(config, BotMode.READ_ONLY)
    assert {bot.mode for bot in forced.bots.bots} == {BotMode.READ_ONLY}
    assert {bot.mode for bot in config.bots.bots} == {BotMode.PAPER}  # frozen: a copy


@pytest.mark.parametrize(
    ("value", "expected"),
    [("-1", "must be from 1 to 300 seconds, got -1"), ("abc", "must be a number of seconds")],
)
def test_a_bad_lease_length_is_refused_naming_the_flag(
    value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--lease-seconds", value])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--lease-seconds" in err
    assert expected in err
