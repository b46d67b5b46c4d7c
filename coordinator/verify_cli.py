"""`bot-coordinator --verify-data [--json] [--data-dir D | --database DSN]`: check the journal
and exit.

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
from coordinator.store.choice import database_target
from coordinator.store.sqlite import StoreError

EXIT_CLEAN = 0
EXIT_INCONSISTENT = 1
EXIT_NO_DATABASE = 2


def run_verify_data(args: argparse.Namespace) -> int:
    """The journal in the data dir, or on PostgreSQL with `--database` (or the env var)."""
    path = args.data_dir / DATABASE_FILE
    try:
        database = database_target(getattr(args, "database", None))
    except StoreError as exc:
        print(f"bot-coordinator --verify-data: {exc}", file=sys.stderr)
        return EXIT_NO_DATABASE
    try:
        if database is not None:
            from coordinator.integrity.postgres import verify_postgres

            report = asyncio.run(verify_postgres(database))
        else:
            report = asyncio.run(verify_database(path))
    except NoDatabase as exc:
        hint = f"pass the coordinator's {'--database' if database else '--data-dir'}"
        print(f"bot-coordinator --verify-data: {exc}; {hint}", file=sys.stderr)
        return EXIT_NO_DATABASE
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.render_text())
    return EXIT_CLEAN if report.ok else EXIT_INCONSISTENT
