"""Benchmark: `analyze-logs` over a large log and its rotated files.

Writes a realistic log of about `--mb` MB into a temporary directory, as `--files` files
(`bot-coordinator.log.N` ... `.1`, then `bot-coordinator.log`), every line made by the
coordinator's own `JsonLinesFormatter` from a `LogRecord` whose time moves forward over `--days`
days. The mix follows what the coordinator logs: fills, refusals and bot starts at INFO (about
94 % of the lines), order rejections, retries and breaker moves at WARNING, order failures,
exchange outages and bot crashes at ERROR (the crashes with a real traceback), crash loops and
kill switch activations at CRITICAL, and a few plain-text lines. The bot names and their
exchanges are passed as the bot map.

Each analysis then runs in a process of its own (so its peak RSS is its own): the whole log, the
whole log for one bot (`--bot`), and the last day (`--since`); then `scripts/analyze-logs.py`
as an operator runs it (wall clock: start-up, analysis, text report). Printed as JSON: seconds,
MB/s, peak RSS (`ru_maxrss`), what was found, and the machine.

    .venv/bin/python scripts/bench_analyze_logs.py                 # ~100 MB in 6 files
    .venv/bin/python scripts/bench_analyze_logs.py --mb 20 --files 2

The files were just written, so they are read from the page cache: a cold read adds the disk's
time to read them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.logging_setup import LOG_FILE, JsonLinesFormatter

START = datetime(2026, 11, 20, tzinfo=UTC)
EXCHANGES = ("ndax", "kraken")

CHILD = """
import json, resource, sys, time
from datetime import datetime
from pathlib import Path
from coordinator.log_analysis import analyze, log_files
from coordinator.logs_report import render_text, summary_json
log_dir, since, bot, bot_map = sys.argv[1], sys.argv[2] or None, sys.argv[3] or None, sys.argv[4]
paths = log_files(Path(log_dir))
began = time.perf_counter()
summary = analyze(
    paths, datetime.fromisoformat(since) if since else None, bot,
    bot_exchanges=json.loads(bot_map),
)
analysed = time.perf_counter() - began
render_text(summary, 10); summary_json(summary, 10)
print(json.dumps({
    "seconds": round(analysed, 3),
    "seconds_with_report": round(time.perf_counter() - began, 3),
    "bytes_read": sum(f.bytes for f in summary.files if f.skipped is None),
    "lines": summary.lines,
    "entries": summary.entries,
    "levels": dict(summary.levels),
    "error_types": len(summary.error_types),
    "tracebacks": summary.tracebacks,
    "kill_switch_events": sum(summary.kill_switch_counts.values()),
    "breaker_moves": sum(sum(s.values()) for s in summary.breaker_states.values()),
    "unparsable": summary.unparsable,
    "files_skipped": [f.path for f in summary.files if f.skipped is not None],
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
"""


def _traceback_text() -> str:
    """A real traceback, from a real raise three frames deep."""

    def fetch(symbol: str) -> None:
        raise ConnectionError(f"{symbol}: connection reset by peer")

    def tick(symbol: str) -> None:
        fetch(symbol)

    try:
        tick("BTC/CAD")
    except ConnectionError as exc:
        return logging.Formatter().formatException((type(exc), exc, exc.__traceback__))
    raise AssertionError("unreachable")


class Lines:
    """Log lines in the coordinator's format, in time order."""

    def __init__(self, bots: int, seconds_per_line: float, seed: int) -> None:
        self.random = random.Random(seed)
        self.bots = [f"{EXCHANGES[i % 2]}-{i:02d}" for i in range(bots)]
        self.formatter = JsonLinesFormatter()
        self.trace = _traceback_text()
        self.step = seconds_per_line
        self.now = START.timestamp()
        self.order = 1000

    def bot_map(self) -> dict[str, str]:
        return {bot: bot.split("-")[0] for bot in self.bots}

    def __iter__(self) -> Iterator[str]:
        while True:
            self.now += self.random.expovariate(1 / self.step)
            self.order += 1
            yield self._line()

    def _line(self) -> str:
        roll = self.random.random()
        bot = self.random.choice(self.bots)
        if roll < 0.0005:
            return "Traceback (most recent call last): a plain-text line from outside the logger"
        if roll < 0.94:
            return self._info(bot)
        if roll < 0.99:
            return self._warning(bot)
        if roll < 0.9995:
            return self._error(bot)
        return self._critical(bot)

    def _record(self, name: str, level: int, msg: str, *args: Any, trace: str | None = None) -> str:
        record = logging.makeLogRecord(
            {"name": name, "levelno": level, "levelname": logging.getLevelName(level)}
        )
        record.msg, record.args, record.created, record.exc_text = msg, args, self.now, trace
        return self.formatter.format(record)

    def _info(self, bot: str) -> str:
        pick = self.random.random()
        if pick < 0.7:
            price = round(self.random.uniform(120000, 160000), 2)
            return self._record(
                "bots.gateway",
                logging.INFO,
                "%s: fill %s %s %s @ %s (order %d)",
                bot,
                self.random.choice(("buy", "sell")),
                "0.00019",
                "BTC/CAD",
                price,
                self.order,
            )
        if pick < 0.95:
            return self._record(
                "bots.gateway",
                logging.INFO,
                "%s: order refused (%s): %s",
                bot,
                "max_open_orders",
                "3 orders open, the limit is 3",
            )
        return self._record("coordinator.supervisor", logging.INFO, "%s: starting", bot)

    def _warning(self, bot: str) -> str:
        pick = self.random.random()
        exchange = bot.split("-")[0]
        if pick < 0.6:
            return self._record(
                "bots.gateway",
                logging.WARNING,
                "%s: order %d rejected by %s: %s",
                bot,
                self.order,
                exchange,
                "insufficient funds",
            )
        if pick < 0.97:
            return self._record(
                "bots.retry",
                logging.WARNING,
                "%s failed (attempt %d of %d): %s: %s; retrying in %.3fs",
                f"create order {self.order}",
                1,
                5,
                "RequestTimeout",
                "read timed out",
                0.25,
            )
        state, why = self.random.choice(
            (
                ("half_open", "recovery timeout passed: up to 1 probe send(s) may go"),
                ("closed", "a probe send succeeded"),
            )
        )
        return self._record(
            "coordinator.safety.breaker",
            logging.WARNING,
            "circuit breaker %r is now %s: %s",
            exchange,
            state,
            why,
        )

    def _error(self, bot: str) -> str:
        pick = self.random.random()
        exchange = bot.split("-")[0]
        if pick < 0.5:
            return self._record(
                "bots.gateway",
                logging.ERROR,
                "%s: order %d failed: %s",
                bot,
                self.order,
                f"{exchange}: 400 bad request",
            )
        if pick < 0.7:
            return self._record(
                "coordinator.health",
                logging.ERROR,
                "exchange %s is %s: %s",
                exchange,
                "down",
                "no answer within 5s",
            )
        if pick < 0.8:
            return self._record(
                "coordinator.safety.breaker",
                logging.ERROR,
                "circuit breaker %r is now %s: %s",
                exchange,
                "open",
                "5 transient failures within 60s",
            )
        return self._record(
            "coordinator.supervisor",
            logging.ERROR,
            "%s: crashed (%d in a row): %s",
            bot,
            self.random.randint(1, 3),
            "ConnectionError: BTC/CAD: connection reset by peer",
            trace=self.trace,
        )

    def _critical(self, bot: str) -> str:
        if self.random.random() < 0.5:
            return self._record(
                "coordinator.supervisor",
                logging.CRITICAL,
                "%s: crash loop: %d crashes in a row; not restarting until an operator starts it",
                bot,
                3,
            )
        return self._record(
            "coordinator.safety.kill_switch",
            logging.CRITICAL,
            "KILL SWITCH ACTIVATED by %s (%s): %s",
            "safety-watch",
            "bot_crash_loop",
            f"{bot}: crash loop: 3 crashes in a row",
        )


def write_log(log_dir: Path, total_bytes: int, files: int, lines: Lines) -> dict[str, Any]:
    """`files` files of total_bytes / files each, oldest (the highest suffix) first."""
    names = [f"{LOG_FILE}.{n}" for n in range(files - 1, 0, -1)] + [LOG_FILE]
    per_file = total_bytes // files
    source = iter(lines)
    written = 0
    count = 0
    for name in names:
        size = 0
        with (log_dir / name).open("w", encoding="utf-8") as handle:
            while size < per_file:
                line = next(source) + "\n"
                handle.write(line)
                size += len(line.encode())
                count += 1
        written += size
    return {"bytes": written, "lines": count, "files": names}


def run_child(log_dir: Path, since: str, bot: str, bot_map: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(log_dir), since, bot, json.dumps(bot_map)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    figures: dict[str, Any] = json.loads(done.stdout)
    figures["mb_per_s"] = round(figures["bytes_read"] / 1e6 / figures["seconds"], 1)
    return figures


def run_script(log_dir: Path) -> dict[str, Any]:
    """`scripts/analyze-logs.py` as an operator runs it: start-up, analysis, the text report."""
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "scripts/analyze-logs.py", "--log-dir", str(log_dir)],
        stdout=subprocess.DEVNULL,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return {"seconds": round(time.perf_counter() - began, 3)}


def _cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="total size, MB (100)")
    parser.add_argument("--files", type=int, default=6, help="files, the current one too (6)")
    parser.add_argument("--days", type=float, default=3.0, help="time the log spans (3)")
    parser.add_argument("--bots", type=int, default=20, help="bots named in it (20)")
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()
    total = int(options.mb * 1e6)
    sample = Lines(options.bots, 1.0, options.seed)
    average_line = sum(len(line) + 1 for line, _ in zip(sample, range(5000), strict=False)) / 5000
    lines = Lines(options.bots, options.days * 86400 / (total / average_line), options.seed)
    with tempfile.TemporaryDirectory(prefix="bench-analyze-logs-") as scratch:
        log_dir = Path(scratch)
        began = time.perf_counter()
        built = write_log(log_dir, total, options.files, lines)
        built["seconds"] = round(time.perf_counter() - began, 1)
        print(f"log written: {json.dumps(built)}", file=sys.stderr)
        last = datetime.fromtimestamp(lines.now, UTC)
        runs: dict[str, Any] = {
            "whole log": run_child(log_dir, "", "", lines.bot_map()),
            "--bot ndax-00": run_child(log_dir, "", "ndax-00", lines.bot_map()),
            "--since (last day)": run_child(
                log_dir, (last - timedelta(days=1)).isoformat(), "", lines.bot_map()
            ),
        }
        runs["script, text report, wall clock"] = run_script(log_dir)
    report = {
        "log": {
            "mb": round(built["bytes"] / 1e6, 1),
            "files": options.files,
            "lines": built["lines"],
            "days": options.days,
            "bots": options.bots,
        },
        "runs": runs,
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_model() or platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
