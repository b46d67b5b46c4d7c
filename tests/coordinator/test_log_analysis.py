"""`analyze-logs`: what it finds in the coordinator's own log, and how an operator gets it.

Logs are written through the project's logging (`configure_logging`, the JSON-lines file the
coordinator writes), by the real kill switch and circuit breaker where those are cheap to drive,
and by log calls with the format strings the coordinator uses elsewhere. Lines with chosen times
go through the same `JsonLinesFormatter`; broken lines are written by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from logging.handlers import QueueListener
from pathlib import Path
from typing import Any

import pytest

from coordinator.cli import build_parser
from coordinator.config import embedded_config_dir, load_config
from coordinator.config.models import CircuitBreakerSettings
from coordinator.log_analysis import (
    add_analyze_logs_arguments,
    add_analyze_logs_command,
    analyze,
    log_files,
    parse_since,
    run_analyze_logs,
)
from coordinator.log_summary import message_template
from coordinator.logging_setup import LOG_FILE, JsonLinesFormatter, configure_logging, stop_logging
from coordinator.safety.breaker import CircuitBreaker
from coordinator.safety.kill_switch import KillSwitch, Trigger
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]
BOTS = {"ndax": "ndax", "kraken": "kraken"}
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class ProjectLogs:
    """The coordinator's logging, set up on a directory; `flush` writes out what is queued."""

    def __init__(self, log_dir: Path) -> None:
        self.dir = log_dir
        self.listener: QueueListener | None = configure_logging(log_dir)

    def flush(self) -> Path:
        if self.listener is not None:
            stop_logging(self.listener)
            self.listener = None
        return self.dir


@pytest.fixture
def project_logging(tmp_path: Path) -> Iterator[ProjectLogs]:
    """configure_logging replaces the root logger's handlers: afterwards its own are removed and
    the ones it found put back (except pytest's per-phase capture handlers, gone by then)."""
    root = logging.getLogger()
    level = root.level
    found = [h for h in root.handlers if not type(h).__module__.startswith("_pytest.")]
    logs = ProjectLogs(tmp_path / "logs")
    installed = root.handlers[:]
    try:
        yield logs
    finally:
        logs.flush()
        for handler in installed:
            root.removeHandler(handler)
        for handler in found:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def crash(bot: str, consecutive: int) -> None:
    """What the supervisor logs when a bot's tick raises: a real exception, a real traceback."""
    try:
        raise RuntimeError("feed went away")
    except RuntimeError as exc:
        logging.getLogger("coordinator.supervisor").error(
            "%s: crashed (%d in a row): %s",
            bot,
            consecutive,
            f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )


@pytest.fixture
def real_log(project_logging: ProjectLogs) -> Path:
    """A log written by the coordinator's logging with the messages its code logs."""
    supervisor = logging.getLogger("coordinator.supervisor")
    gateway = logging.getLogger("bots.gateway")
    supervisor.info("%s: starting%s", "ndax", "")
    supervisor.info("%s: running (first healthy tick)", "kraken")
    gateway.info("%s: fill %s %s %s @ %s (order %d)", "ndax", "buy", "0.0002", "BTC/CAD", 1, 7)
    crash("ndax", 1)
    crash("ndax", 2)
    supervisor.critical(
        "%s: crash loop: %d crashes in a row; not restarting until an operator starts it", "ndax", 3
    )
    gateway.warning("%s: order %d rejected by %s: %s", "kraken", 41, "kraken", "insufficient funds")
    gateway.warning("%s: order %d rejected by %s: %s", "kraken", 42, "kraken", "insufficient funds")
    gateway.error("%s: order %d failed: %s", "kraken", 43, "kraken: 400 bad request")
    logging.getLogger("coordinator.health").error(
        "exchange %s is %s: %s", "kraken", "down", "no answer within 5s"
    )
    logging.getLogger("coordinator.store.sqlite").error(
        "store write failed and was rolled back: %s", "disk I/O error"
    )
    logging.getLogger("coordinator.safety.kill_switch").critical(
        "KILL SWITCH ACTIVATED by %s (%s): %s", "safety-watch", "bot_crash_loop", "ndax: crash loop"
    )
    return project_logging.flush()


def at(moment: datetime, level: int, logger: str, msg: str, *args: Any) -> str:
    """One line as the coordinator's formatter writes it, at a chosen time."""
    record = logging.makeLogRecord(
        {"name": logger, "levelno": level, "levelname": logging.getLevelName(level)}
    )
    record.msg, record.args, record.created = msg, args, moment.timestamp()
    return JsonLinesFormatter().format(record) + "\n"


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def rotated_log(log_dir: Path) -> Path:
    """Three files an hour apart: `.2` (oldest), `.1`, and the current one."""
    ERROR, INFO = logging.ERROR, logging.INFO
    supervisor, gateway = "coordinator.supervisor", "bots.gateway"
    write(
        log_dir / f"{LOG_FILE}.2",
        at(T0, INFO, supervisor, "%s: starting%s", "ndax", ""),
        at(T0 + timedelta(minutes=5), ERROR, gateway, "%s: order %d failed: %s", "ndax", 1, "x"),
    )
    write(
        log_dir / f"{LOG_FILE}.1",
        at(T0 + timedelta(hours=1), ERROR, gateway, "%s: order %d failed: %s", "kraken", 2, "y"),
    )
    write(
        log_dir / LOG_FILE,
        at(T0 + timedelta(hours=2), ERROR, gateway, "%s: order %d failed: %s", "ndax", 3, "z"),
        at(T0 + timedelta(hours=2, minutes=1), INFO, supervisor, "%s: stopped (%s)", "ndax", "x"),
    )
    return log_dir


def cli_args(*argv: str) -> argparse.Namespace:
    """Parsed by the real top-level parser, with the command added as cli.py adds it (unless
    cli.py does already)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "analyze-logs" not in commands.choices:
        add_analyze_logs_command(commands)
    return parser.parse_args(argv)


# --- what it finds ----------------------------------------------------------------------------


def test_errors_are_grouped_by_exception_class_or_message_template(real_log: Path) -> None:
    summary = analyze(log_files(real_log), bot_exchanges=BOTS)

    assert summary.levels == {"INFO": 3, "WARNING": 2, "ERROR": 5, "CRITICAL": 2}
    assert {kind: stats.count for kind, stats in summary.error_types.items()} == {
        "RuntimeError": 2,
        "<bot>: crash loop: ...": 1,
        "<bot>: order <n> failed: ...": 1,
        "exchange <x> is down: ...": 1,
        "store write failed and was rolled back: ...": 1,
        "KILL SWITCH ACTIVATED by <actor> (bot_crash_loop): ...": 1,
    }
    crashes = summary.error_types["RuntimeError"]
    assert crashes.last_message == "ndax: crashed (2 in a row): RuntimeError: feed went away"
    assert summary.warning_types["<bot>: order <n> rejected by <x>: ..."].count == 2
    assert summary.unparsable == 0


def test_errors_are_counted_by_bot_and_by_exchange_through_the_bot_map(real_log: Path) -> None:
    summary = analyze(log_files(real_log), bot_exchanges=BOTS)

    # ndax: two crashes and the crash loop; kraken: the failed order. The store error and the
    # kill switch activation are about no bot; the exchange outage names its exchange.
    assert summary.error_bots == {"ndax": 3, "kraken": 1}
    assert summary.error_exchanges == {"ndax": 3, "kraken": 2}


def test_explicit_bot_and_exchange_fields_win_over_the_message(
    project_logging: ProjectLogs,
) -> None:
    logging.getLogger("coordinator.api").error(
        "order placement refused: %s", "timeout", extra={"bot": "alpha", "exchange": "binance"}
    )
    logging.getLogger("bots.gateway").error(
        "%s: order %d failed: %s", "ndax", 7, "x", extra={"exchange": "kraken"}
    )

    summary = analyze(log_files(project_logging.flush()), bot_exchanges=BOTS)

    assert summary.error_bots == {"alpha": 1, "ndax": 1}
    assert summary.error_exchanges == {"binance": 1, "kraken": 1}


def test_a_crash_traceback_is_kept_with_its_bot_time_and_last_line(real_log: Path) -> None:
    summary = analyze(log_files(real_log))

    assert summary.tracebacks == 2
    newest = summary.recent_tracebacks[-1]
    assert (newest.bot, newest.level, newest.last_line) == (
        "ndax",
        "ERROR",
        "RuntimeError: feed went away",
    )
    assert newest.message.startswith("ndax: crashed (2 in a row)")
    assert newest.ts == summary.error_types["RuntimeError"].last_ts


def test_the_real_kill_switch_and_breaker_moves_are_listed(
    project_logging: ProjectLogs, tmp_path: Path
) -> None:
    config = load_config(embedded_config_dir())
    now = datetime.now(UTC)

    async def drive() -> None:
        store = await SqliteStore.open(tmp_path / "k.db")
        try:
            switch = KillSwitch(
                config.kill_switch, config.recovery, SqliteJournal(store), lambda: now
            )
            await switch.load()
            await switch.activate("drill", "loopback", Trigger.MANUAL)
            await switch.force_override("drill over", "admin-token", "alice")
        finally:
            await store.close()

    asyncio.run(drive())
    settings = CircuitBreakerSettings(
        failure_threshold=2, monitoring_window=60, recovery_timeout=30, half_open_max_calls=1
    )
    breaker = CircuitBreaker("kraken", settings, lambda: now)
    breaker.record_transient_failure()
    breaker.record_transient_failure()
    breaker.reset("alice", "exchange back")

    summary = analyze(log_files(project_logging.flush()))

    events = [(e.kind, e.actor, e.trigger, e.reason, e.approved_by) for e in summary.kill_switch]
    assert events == [
        ("activated", "loopback", "manual", "drill", None),
        ("force_override", "admin-token", None, "drill over", "alice"),
    ]
    moves = [(m.breaker, m.state) for m in summary.breaker_moves]
    assert moves == [("kraken", "open"), ("kraken", "closed")]
    assert summary.breaker_moves[0].reason == "2 transient failures within 60s"
    assert summary.breaker_states == {"kraken": {"open": 1, "closed": 1}}


def test_plain_text_and_a_truncated_last_line_are_counted_unparsable(tmp_path: Path) -> None:
    log = write(
        tmp_path / LOG_FILE,
        at(T0, logging.INFO, "coordinator", "started"),
        "Traceback (most recent call last): printed by something else\n",
        "[1, 2, 3]\n",
        at(T0, logging.ERROR, "coordinator", "%s: order %d failed: %s", "ndax", 5, "x"),
        at(T0, logging.ERROR, "coordinator", "cut short")[:40],  # the process died mid-write
    )

    summary = analyze([log])

    assert summary.unparsable == 3
    assert summary.unparsable_at == [f"{LOG_FILE}:2", f"{LOG_FILE}:3", f"{LOG_FILE}:5"]
    assert summary.levels == {"INFO": 1, "ERROR": 1}
    assert summary.lines == 5


def test_rotated_files_are_read_oldest_first(tmp_path: Path) -> None:
    log_dir = rotated_log(tmp_path / "logs")

    paths = log_files(log_dir)
    summary = analyze(paths)

    assert [p.name for p in paths] == [f"{LOG_FILE}.2", f"{LOG_FILE}.1", LOG_FILE]
    assert [Path(f.path).name for f in summary.files] == [p.name for p in paths]
    assert [f.lines for f in summary.files] == [2, 1, 2]
    assert summary.first_ts == "2026-11-23T09:00:00.000+00:00"
    assert summary.last_ts == "2026-11-23T11:01:00.000+00:00"
    assert summary.error_types["<bot>: order <n> failed: ..."].last_message.endswith(": z")


def test_since_skips_older_entries_and_files_holding_only_older_ones(tmp_path: Path) -> None:
    log_dir = rotated_log(tmp_path / "logs")

    summary = analyze(log_files(log_dir), since=T0 + timedelta(minutes=30))

    assert summary.files[0].skipped == "every entry is older than --since"
    assert summary.files[1].skipped is None
    assert summary.levels == {"ERROR": 2, "INFO": 1}
    assert summary.first_ts == "2026-11-23T10:00:00.000+00:00"
    assert summary.error_bots == {"kraken": 1, "ndax": 1}

    within = analyze(log_files(log_dir), since=T0 + timedelta(minutes=2))
    assert within.files[0].skipped is None
    assert within.before_since == 1  # the 09:00 start; its 09:05 error is kept
    assert within.levels["ERROR"] == 3


def test_bot_counts_only_that_bot_but_lists_every_kill_switch_event(real_log: Path) -> None:
    summary = analyze(log_files(real_log), bot="kraken", bot_exchanges=BOTS)

    assert summary.levels == {"INFO": 1, "WARNING": 2, "ERROR": 1}
    assert list(summary.error_types) == ["<bot>: order <n> failed: ..."]
    assert summary.tracebacks == 0
    assert summary.other_bots == 8
    assert [event.kind for event in summary.kill_switch] == ["activated"]


def test_messages_are_templated_with_names_numbers_and_details_replaced() -> None:
    assert (
        message_template("ndax: order 17 rejected by ndax: insufficient funds", "ndax")
        == "<bot>: order <n> rejected by <x>: ..."
    )
    assert (
        message_template("kraken: could not cancel order 9912: timed out", "kraken")
        == "<bot>: could not cancel order <n>: ..."
    )
    assert (
        message_template("kraken: could not cancel OX4F2A-91BC7D: 503", None, "kraken")
        == "<exchange>: could not cancel <id>: ..."
    )
    assert (
        message_template("backup (schedule) failed; the previous latest is kept: disk full")
        == "backup (schedule) failed; the previous latest is kept: ..."
    )
    assert (
        message_template("kill switch is ACTIVE (since 2026-11-23 09:00:00+00:00, manual: x)")
        == "kill switch is ACTIVE (since <time>, manual: ..."
    )


# --- the command ------------------------------------------------------------------------------


def test_the_command_parses_beside_the_top_level_flags_without_clashing(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    args = cli_args(
        "--log-dir", str(tmp_path), "analyze-logs", "--since", "1h", "--json", "--bot", "ndax"
    )
    after = datetime.now(UTC)

    assert args.command == "analyze-logs"
    assert (args.analyze_json, args.analyze_bot, args.analyze_top) == (True, "ndax", 10)
    assert (args.json, args.bot, args.log_dir) == (False, None, tmp_path)
    assert before - timedelta(hours=1) <= args.analyze_since <= after - timedelta(hours=1)
    repeated = cli_args("analyze-logs", "--log-dir", str(tmp_path / "x"))
    assert repeated.log_dir == tmp_path / "x"


def test_json_output_has_counts_types_events_and_windows(
    real_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = write(tmp_path / "config" / "bots.json", json.dumps({"bots": []})).parent
    args = cli_args(
        "--log-dir",
        str(real_log),
        "--config-dir",
        str(config_dir),
        "analyze-logs",
        "--since",
        "1h",
        "--json",
        "--top",
        "3",
    )

    assert run_analyze_logs(args) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["levels"] == {"INFO": 3, "WARNING": 2, "ERROR": 5, "CRITICAL": 2}
    assert report["bot_map"] == str(config_dir / "bots.json")
    errors = report["errors"]
    assert errors["total"] == 7
    assert errors["distinct_types"] == 6
    assert len(errors["by_type"]) == 3
    assert errors["by_type"][0] == {
        "type": "RuntimeError",
        "count": 2,
        "criticals": 0,
        "last_ts": errors["by_type"][0]["last_ts"],
        "last_message": "ndax: crashed (2 in a row): RuntimeError: feed went away",
    }
    assert errors["by_bot"] == {"ndax": 3, "kraken": 1}
    assert errors["windows"]["minutes"] == 10
    assert sum(w["errors"] + w["criticals"] for w in errors["windows"]["buckets"]) == 7
    assert report["tracebacks"]["count"] == 2
    assert report["tracebacks"]["recent"][0]["last_line"] == "RuntimeError: feed went away"
    assert report["kill_switch"]["activations"] == 1
    assert report["kill_switch"]["recent"][0]["trigger"] == "bot_crash_loop"
    assert report["circuit_breakers"]["moves"] == 0
    assert report["files"][0]["path"] == str(real_log / LOG_FILE)


def test_the_text_report_leads_with_what_needs_attention(
    real_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_analyze_logs(cli_args("--log-dir", str(real_log), "analyze-logs")) == 0

    out = capsys.readouterr().out
    assert "ATTENTION: 2 CRITICAL, 5 ERROR" in out
    assert "Kill switch: 1 activation(s), 0 override(s)" in out
    assert "activated       by safety-watch (bot_crash_loop): ndax: crash loop" in out
    assert "      2  RuntimeError" in out
    assert "by bot: ndax 3, kraken 1, no bot 3" in out
    assert "Tracebacks: 2 (newest 2)" in out


def test_a_missing_log_dir_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"

    assert run_analyze_logs(cli_args("analyze-logs", "--log-dir", str(missing))) == 2

    assert str(missing) in capsys.readouterr().err


def test_a_log_dir_without_the_log_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_analyze_logs(cli_args("analyze-logs", "--log-dir", str(tmp_path))) == 2

    assert str(tmp_path / LOG_FILE) in capsys.readouterr().err


def test_a_config_dir_without_bots_json_exits_2_naming_it(
    real_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args("--config-dir", str(tmp_path), "analyze-logs", "--log-dir", str(real_log))

    assert run_analyze_logs(args) == 2

    assert str(tmp_path / "bots.json") in capsys.readouterr().err


def test_since_takes_durations_and_iso_times_and_refuses_anything_else() -> None:
    assert parse_since("2026-11-23T09:00") == T0
    assert parse_since("2026-11-23T10:00+01:00") == T0
    before = datetime.now(UTC)
    since = parse_since("2d")
    assert before - timedelta(days=2) <= since <= datetime.now(UTC) - timedelta(days=2)
    with pytest.raises(argparse.ArgumentTypeError, match="yesterday"):
        parse_since("yesterday")
    parser = argparse.ArgumentParser()
    add_analyze_logs_arguments(parser, standalone=True)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--since", "yesterday"])
    assert exited.value.code == 2


def test_the_script_runs_from_the_repo_root(tmp_path: Path) -> None:
    log_dir = rotated_log(tmp_path / "logs")
    script = [sys.executable, "scripts/analyze-logs.py", "--log-dir", str(log_dir)]

    done = subprocess.run(
        [*script, "--since", "2026-11-23T10:30", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["levels"] == {"ERROR": 1, "INFO": 1}
    assert report["errors"]["by_bot"] == {"ndax": 1}
    missing = subprocess.run(
        [sys.executable, "scripts/analyze-logs.py", "--log-dir", str(tmp_path / "none")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert missing.returncode == 2
    assert str(tmp_path / "none") in missing.stderr
