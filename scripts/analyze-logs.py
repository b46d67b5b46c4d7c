"""Summarise the coordinator's log: `bot-coordinator analyze-logs` without the CLI around it.

    .venv/bin/python scripts/analyze-logs.py --since 1h
    .venv/bin/python scripts/analyze-logs.py --bot ndax --since 2026-11-23T09:00 --json

Same options and exit codes as the subcommand (see `coordinator/log_analysis.py`): 0 the report
was printed, 2 bad arguments or no log file. It runs from a checkout without the package
installed too: it puts the checkout first on the import path, and needs only the standard library.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.log_analysis import add_analyze_logs_arguments, run_analyze_logs


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="analyze-logs.py",
        description="Summarise logs/bot-coordinator.log and its rotated files: errors by type,"
        " bot, exchange and time; tracebacks; kill switch and circuit breaker events.",
    )
    add_analyze_logs_arguments(parser, standalone=True)
    return run_analyze_logs(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
