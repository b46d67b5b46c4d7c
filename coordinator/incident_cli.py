"""`bot-coordinator incident snapshot|verify`: preserve the evidence of an incident; and the
incident records (`incident open|note|close|show|list|export`, `coordinator/incidents/cli.py`).

`incident snapshot [--out DIR]` writes one archive (`coordinator/incident_snapshot.py`) into
DIR (default: `<data dir>/incidents`), whether or not a coordinator is running, and whether or
not the config is valid; it prints the archive's path and what it holds. `incident verify
FILE` checks every member against the manifest. Exit codes: 0 written / verified, 1 failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from coordinator.incident_snapshot import SnapshotError, take_snapshot, verify_snapshot
from coordinator.incidents.cli import (
    RECORD_ACTIONS,
    OnJournal,
    add_record_commands,
    run_record_command,
)

EXIT_OK, EXIT_FAILED = 0, 1


def add_incident_commands(subparsers: Any) -> None:
    incident = subparsers.add_parser(
        "incident", help="incident records and evidence (runbook 004, Step 7 and Scenario 6)"
    )
    actions = incident.add_subparsers(dest="incident_action", required=True)
    snapshot = actions.add_parser(
        "snapshot", help="one archive: logs, status, audit, verify-data, config, versions"
    )
    snapshot.add_argument(
        "--out", type=Path, help="where to write it (default: <data dir>/incidents)"
    )
    verify = actions.add_parser("verify", help="check a snapshot's members against its manifest")
    verify.add_argument("archive", type=Path)
    add_record_commands(actions)


def run_incident_command(args: argparse.Namespace, config_dir: Path, on_journal: OnJournal) -> int:
    if args.incident_action in RECORD_ACTIONS:
        return run_record_command(args, config_dir, on_journal)
    if args.incident_action == "verify":
        try:
            manifest = verify_snapshot(args.archive)
        except SnapshotError as exc:
            print(f"incident verify: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"{args.archive}: {len(manifest['members'])} members match the manifest "
              f"(taken {manifest['created_at']})")  # fmt: skip
        return EXIT_OK
    out = args.out or args.data_dir / "incidents"
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104
    try:
        snapshot = take_snapshot(
            args.data_dir, config_dir, args.log_dir, out, f"http://{host}:{args.port}"
        )
    except (OSError, SnapshotError) as exc:
        print(f"incident snapshot: could not write it: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for note in snapshot.notes:
        print(f"note: {note}")
    source = "coordinator running" if snapshot.coordinator_running else "no coordinator"
    print(f"{snapshot.path}: {len(snapshot.members)} members ({source})")
    print(f"check it with: bot-coordinator incident verify {snapshot.path}")
    return EXIT_OK
