"""`bot-coordinator analyze-logs`: what the log says went wrong (runbook 004, step 1).

The options and the command; the scan is `coordinator/log_scan.py` (how a 100 MB log is read in
seconds, and what `--bot` keeps), the summary and its patterns `coordinator/log_summary.py`, the
report `coordinator/logs_report.py`.

Exit codes: 0 the report was printed (whatever it found); 2 bad arguments, no log file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from coordinator.log_scan import analyze, log_files
from coordinator.log_summary import BotMapError, bot_map
from coordinator.logging_setup import LOG_FILE
from coordinator.logs_report import render_text, summary_json

__all__ = [
    "add_analyze_logs_arguments",
    "add_analyze_logs_command",
    "analyze",
    "log_files",
    "parse_since",
    "run_analyze_logs",
]

EXIT_OK: Final = 0
EXIT_BAD_ARGUMENTS: Final = 2
DEFAULT_LOG_DIR: Final = Path("logs")
DEFAULT_TOP: Final = 10
_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# --- the command ------------------------------------------------------------------------------


def parse_since(text: str) -> datetime:
    """`30m`, `1h`, `2d`, `1w` before now, or an ISO time (UTC when it names no zone)."""
    if match := _RELATIVE.fullmatch(text.strip()):
        delta = timedelta(**{_UNITS[match[2]]: int(match[1])})
        return datetime.now(UTC) - delta
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30m, 1h, 2d) nor an ISO time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _top(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 1000")
    return int(text)


def add_analyze_logs_arguments(parser: argparse.ArgumentParser, standalone: bool = False) -> None:
    """The options. As a subcommand, `--log-dir` and `--config-dir` default to SUPPRESS so the
    top-level ones (`bot-coordinator --log-dir D analyze-logs`) are kept when not repeated."""
    suppress = argparse.SUPPRESS
    parser.add_argument(
        "--since",
        dest="analyze_since",
        type=parse_since,
        metavar="WHEN",
        help="only entries from then on: 30m, 1h, 2d, or an ISO time (UTC unless it says)",
    )
    parser.add_argument("--bot", dest="analyze_bot", metavar="NAME", help="one bot's entries")
    parser.add_argument(
        "--json", dest="analyze_json", action="store_true", help="print the summary as JSON"
    )
    parser.add_argument(
        "--log-dir",
        dest="log_dir",
        type=Path,
        metavar="DIR",
        default=DEFAULT_LOG_DIR if standalone else suppress,
        help="the log's directory (./logs)",
    )
    parser.add_argument(
        "--config-dir",
        dest="config_dir",
        type=Path,
        metavar="DIR",
        default=None if standalone else suppress,
        help="read bot -> exchange from DIR/bots.json (default ./config, else the shipped one)",
    )
    parser.add_argument(
        "--top",
        dest="analyze_top",
        type=_top,
        default=DEFAULT_TOP,
        metavar="N",
        help=f"how many types, events and tracebacks to list ({DEFAULT_TOP})",
    )


def add_analyze_logs_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    command = commands.add_parser(
        "analyze-logs",
        help="summarise the log: errors by type, bot, exchange and time; crashes; kill switch"
        " and breaker events",
    )
    add_analyze_logs_arguments(command)


def run_analyze_logs(args: argparse.Namespace) -> int:
    log_dir = Path(getattr(args, "log_dir", None) or DEFAULT_LOG_DIR)
    since = getattr(args, "analyze_since", None)
    try:
        since = parse_since(since) if isinstance(since, str) else since
        exchanges, source = bot_map(getattr(args, "config_dir", None))
    except (argparse.ArgumentTypeError, BotMapError) as exc:
        return _fail(str(exc))
    if not log_dir.is_dir():
        return _fail(f"no log directory {log_dir} (pass --log-dir)")
    paths = log_files(log_dir)
    if not paths:
        return _fail(f"no log file in {log_dir}: {log_dir / LOG_FILE} is not there")
    bot = getattr(args, "analyze_bot", None)
    if bot is not None and exchanges and bot not in exchanges:
        _say(f"analyze-logs: {bot!r} is not a bot in {source}; its entries are looked for anyway")
    summary = analyze(paths, since, bot, bot_exchanges=exchanges)
    summary.bot_map_source = source
    top = getattr(args, "analyze_top", DEFAULT_TOP)
    if getattr(args, "analyze_json", False):
        _emit(json.dumps(summary_json(summary, top), indent=2))
    else:
        _emit(render_text(summary, top))
    return EXIT_OK


def _emit(text: str) -> None:
    """Print; a reader that went away (`| head`, `less` quit) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # What the Python docs advise: point stdout at devnull so the exit flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _fail(message: str) -> int:
    _say(f"analyze-logs: {message}")
    return EXIT_BAD_ARGUMENTS


def _say(line: str) -> None:
    print(line, file=sys.stderr)
