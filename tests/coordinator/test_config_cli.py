"""`bot-coordinator config diff|approve` and the config gate in `--health-check`: on the journal
when no coordinator runs, through the control plane when one does."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from coordinator.cli import build_parser, main
from coordinator.config import load_config
from coordinator.config_cli import offline_gate_checks, run_config_command
from coordinator.runtime import Coordinator
from tests.support_config import trading_config, write_fast_config
from tests.support_process import CoordinatorProcess, wait_for


def change_ndax(documents: dict[str, Any]) -> None:
    bots = documents["bots.json"]["bots"]
    assert bots[0]["name"] == "ndax"
    bots[0]["strategy"]["params"]["quote_amount"] = 30


def first_start(config_dir: Path, data_dir: Path) -> None:
    """A journal whose bots' configs were approved at a coordinator's first start."""
    config = load_config(config_dir)  # file reads: outside the loop

    async def run() -> None:
        coordinator = await Coordinator.open(config, data_dir)
        await coordinator.close(grace_seconds=0.1)

    asyncio.run(run())


def approvals(data_dir: Path) -> dict[str, tuple[str, str]]:
    """The newest approval of each bot: (approved_by, config_sha256)."""
    with closing(sqlite3.connect(data_dir / "coordinator.db")) as db:
        rows = db.execute(
            "SELECT bot, approved_by, config_sha256 FROM config_approvals"
            " WHERE id IN (SELECT MAX(id) FROM config_approvals GROUP BY bot)"
        ).fetchall()
    return {bot: (by, sha) for bot, by, sha in rows}


def last_audit(data_dir: Path) -> tuple[Any, ...]:
    with closing(sqlite3.connect(data_dir / "coordinator.db")) as db:
        row = db.execute(
            "SELECT actor, action, subject, result, details FROM audit_events"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
    return (*row[:4], json.loads(row[4]))


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A config dir whose ndax config changed since the journal's first start approved it."""
    config_dir = write_fast_config(tmp_path / "config")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    first_start(config_dir, data_dir)
    write_fast_config(config_dir, change_ndax)
    return config_dir, data_dir


def common(tmp_path: Path, config_dir: Path, data_dir: Path) -> list[str]:
    return [
        "--config-dir", str(config_dir), "--data-dir", str(data_dir),
        "--log-dir", str(tmp_path / "cli-logs"),
    ]  # fmt: skip


def test_approve_with_no_coordinator_running_shows_the_diff_and_records_it_audited(
    tmp_path: Path, dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir, data_dir = dirs
    before = approvals(data_dir)

    code = main([*common(tmp_path, *dirs), "config", "approve", "--approved-by", "ops lead",
                 "--reason", "new DCA amount", "--yes"])  # fmt: skip

    out, err = capsys.readouterr()
    assert code == 0, err
    assert '-        "quote_amount": "25"' in out
    assert '+        "quote_amount": "30"' in out
    after = approvals(data_dir)
    assert after["ndax"][0] == "ops lead"
    assert after["ndax"][1] != before["ndax"][1]
    assert after["kraken"] == before["kraken"]
    assert f"approved ndax: {before['ndax'][1]} -> {after['ndax'][1]} by ops lead" in out
    actor, action, subject, result, details = last_audit(data_dir)
    assert (actor, action, subject, result) == ("cli", "config.approve", "ndax", "ok")
    assert details["previous_sha256"] == before["ndax"][1]
    assert details["config_sha256"] == after["ndax"][1]
    assert details["approved_by"] == "ops lead"
    assert str(config_dir) in err


def test_approve_when_nothing_changed_says_so_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = write_fast_config(tmp_path / "config")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    first_start(config_dir, data_dir)

    code = main([*common(tmp_path, config_dir, data_dir), "config", "approve",
                 "--approved-by", "ops"])  # fmt: skip

    assert code == 0
    assert "nothing to approve: every bot shown runs its approved config" in capsys.readouterr().err


def test_approve_without_a_terminal_and_without_yes_approves_nothing(
    tmp_path: Path,
    dirs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # piped input is not a terminal
    before = approvals(dirs[1])

    code = main([*common(tmp_path, *dirs), "config", "approve", "--approved-by", "ops"])

    assert code == 1
    err = capsys.readouterr().err
    assert "not a terminal: pass --yes" in err
    assert "nothing was approved" in err
    assert approvals(dirs[1]) == before


@pytest.mark.parametrize(("answer", "code", "approver"), [(True, 0, "ops"), (False, 1, None)])
def test_approve_asks_first_and_only_a_yes_approves(
    tmp_path: Path,
    dirs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    answer: bool,
    code: int,
    approver: str | None,
) -> None:
    config_dir, data_dir = dirs
    args = build_parser().parse_args(
        [*common(tmp_path, *dirs), "config", "approve", "--approved-by", "ops"]
    )
    asked: list[str] = []

    def confirm(question: str) -> bool:
        asked.append(question)
        return answer

    done = run_config_command(args, load_config(config_dir), False, confirm)

    assert done == code, capsys.readouterr().err
    assert asked == ["approve the effective config of ndax as ops?"]
    assert (approvals(data_dir)["ndax"][0] == "ops") is (approver == "ops")


def test_diff_prints_each_changed_bot_and_approves_nothing(
    tmp_path: Path, dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = approvals(dirs[1])

    code = main([*common(tmp_path, *dirs), "config", "diff"])

    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith("--- ndax approved ")
    assert "+++ ndax effective " in out
    assert "kraken" not in out
    assert "ndax: not the approved config" in err
    assert approvals(dirs[1]) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["config", "diff", "--bot", "nope"], "--bot: no bot named 'nope'"),
        (["config", "approve", "--approved-by", " "], "--approved-by: say who approves"),
    ],
)
def test_bad_arguments_exit_2_naming_them(
    tmp_path: Path,
    dirs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    assert main([*common(tmp_path, *dirs), *argv]) == 2
    assert message in capsys.readouterr().err


def test_with_no_journal_there_is_nothing_to_approve_against(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = write_fast_config(tmp_path / "config")

    code = main([*common(tmp_path, config_dir, tmp_path / "nowhere"), "config", "diff"])

    assert code == 1
    assert "no journal at" in capsys.readouterr().err


def test_the_offline_health_check_fails_a_bot_whose_config_is_not_approved(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    config_dir, data_dir = dirs

    changed = offline_gate_checks(load_config(config_dir), data_dir / "coordinator.db")
    fresh = offline_gate_checks(load_config(config_dir), tmp_path / "none.db")

    assert [(name, status) for name, status, _ in changed] == [("config approval ndax", "fail")]
    assert "its start is refused" in changed[0][2]
    assert [status for _, status, _ in fresh] == ["ok"]


def test_the_offline_health_check_reports_the_gate_and_exits_1(
    tmp_path: Path, dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*common(tmp_path, *dirs), "--backup-dir", str(tmp_path / "backups"),
                 "--health-check", "--json"])  # fmt: skip

    report = json.loads(capsys.readouterr().out)
    gate = [c for c in report["checks"] if c["name"].startswith("config approval")]
    assert code == 1
    assert gate == [{"name": "config approval ndax", "status": "fail", "detail": gate[0]["detail"]}]


# -- with the real process ------------------------------------------------------------------------


def test_an_edit_under_a_running_coordinator_shows_and_after_a_restart_is_refused_until_approved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = write_fast_config(tmp_path / "config", trading_config)
    data_dir = tmp_path / "data"
    first = CoordinatorProcess(tmp_path, config_dir, data_dir).start()
    try:
        first.wait_ready()
        write_fast_config(config_dir, lambda docs: (trading_config(docs), change_ndax(docs)))

        def changed_files() -> list[str]:
            status, answer = first.request("GET", "/status")
            assert status == 200
            found: list[str] = answer["config"]["changed_since_start"]
            return found

        assert wait_for(changed_files, 15, "the edit in /status") == ["bots.json"]
        assert first.interrupt(within=5) == 0
    finally:
        first.kill()

    second = CoordinatorProcess(tmp_path, config_dir, data_dir).start()
    try:
        second.wait_ready()
        refused = second.control("/start-sequential")
        assert refused["ok"] is False
        assert list(refused["refused"]) == ["ndax"]
        assert refused["started"] == ["kraken"]
        health = main([*common(tmp_path, config_dir, data_dir), "--port", str(second.port),
                       "--health-check", "--json"])  # fmt: skip
        checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
        assert health == 1
        assert checks["config approval ndax"]["status"] == "fail"
        assert checks["config files"]["status"] == "ok"

        code = main([*common(tmp_path, config_dir, data_dir), "--port", str(second.port),
                     "config", "approve", "--approved-by", "ops lead", "--yes"])  # fmt: skip

        out, err = capsys.readouterr()
        assert code == 0, err
        assert "the running coordinator on 127.0.0.1" in err
        assert "approved ndax: " in out
        assert second.bots()["ndax"]["config"]["approved_by"] == "ops lead"
        started = second.control("/start-sequential")
        assert started["ok"] is True
        assert started["started"] == ["ndax"]
        assert started["already_running"] == ["kraken"]
        status, events = second.request("GET", "/audit?limit=200")
        assert status == 200
        approve = next(e for e in events["events"] if e["action"] == "config.approve")
        assert (approve["actor"], approve["subject"]) == ("operator-token", "ndax")
        assert approve["details"]["previous_sha256"] != approve["details"]["config_sha256"]
        assert second.interrupt(within=5) == 0
    finally:
        second.kill()
