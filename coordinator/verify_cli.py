"""`bot-coordinator --verify-data [--json] [--data-dir D]`: check the journal and exit.

Runs before the configuration is loaded (an operator must be able to check the data while the
config is broken) and takes no lock on the data dir: it only reads, so it works beside a running
coordinator. Exit codes: 0 clean, 1 inconsistencies (each one listed), 2 no database there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from coordinator.integrity import NoDatabase, verify_database
from coordinator.runtime import DATABASE_FILE

EXIT_CLEAN = 0
EXIT_INCONSISTENT = 1
EXIT_NO_DATABASE = 2


def run_verify_data(args: argparse.Namespace) -> int:
    path = args.data_dir / DATABASE_FILE
    try:
        report = asyncio.run(verify_database(path))
    except NoDatabase as exc:
        print(
            f"bot-coordinator --verify-data: {exc}; pass the coordinator's --data-dir",
            file=sys.stderr,
        )
        return EXIT_NO_DATABASE
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.render_text())
    return EXIT_CLEAN if report.ok else EXIT_INCONSISTENT
