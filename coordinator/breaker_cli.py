"""`bot-coordinator breaker reset NAME --approved-by WHO`: reset one circuit breaker, audited.

No state file to delete by hand. When a coordinator is running on the data dir (it holds the
data dir's lock), the reset is asked of it over the control plane with the operator token;
otherwise the stored state is reset directly in the store, with the same audit entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from coordinator.config.models import CoordinatorConfig
from coordinator.control_client import ControlPlaneError, post_to_running
from coordinator.errors import CoordinatorError
from coordinator.safety.layer import SafetyLayer
from coordinator.store.journal import SqliteJournal
from coordinator.store.offline import journal_label, offline_journal

ACTOR = "cli"


def add_breaker_commands(subparsers: Any) -> None:
    breaker = subparsers.add_parser("breaker", help="circuit breakers")
    actions = breaker.add_subparsers(dest="breaker_action", required=True)
    reset = actions.add_parser("reset", help="reset one circuit breaker to closed (audited)")
    reset.add_argument("name", help="'global' or an exchange id, e.g. kraken")
    reset.add_argument("--approved-by", required=True, help="who approved the reset")
    reset.add_argument("--reason", default="reset from the command line")


def reset_breaker(args: argparse.Namespace, config: CoordinatorConfig, running: bool) -> int:
    if not args.approved_by.strip():
        _say("--approved-by: say who approved the reset")
        return 2
    if running:
        return _reset_through_control_plane(args)
    try:
        result = asyncio.run(_reset_in_store(args, config))
    except CoordinatorError as exc:
        _say(f"breaker reset refused: {exc.message}")
        return 1
    where = journal_label(args.data_dir, args.database)
    _say(f"breaker {args.name} reset in {where} (no coordinator running)")
    print(json.dumps(result, indent=2))
    return 0


async def _reset_in_store(args: argparse.Namespace, config: CoordinatorConfig) -> dict[str, Any]:
    async with offline_journal(args.data_dir, args.database) as store:
        journal = SqliteJournal(store)
        safety = SafetyLayer(config, journal, lambda: datetime.now(UTC))
        await safety.load()
        by = f"{ACTOR} (approved by {args.approved_by})"
        try:
            result = safety.reset_breaker(args.name, by, args.reason)
        except CoordinatorError as exc:
            await journal.audit(
                actor=ACTOR,
                action="breaker.reset",
                subject=args.name,
                result=f"refused: {exc.message}",
                at=datetime.now(UTC),
                details={"approved_by": args.approved_by, "reason": args.reason},
            )
            raise
        await safety.flush()
        await journal.audit(
            actor=ACTOR,
            action="breaker.reset",
            subject=args.name,
            result="ok",
            at=datetime.now(UTC),
            details={"approved_by": args.approved_by, "reason": args.reason},
        )
        return result


def _reset_through_control_plane(args: argparse.Namespace) -> int:
    body = {"name": args.name, "approved_by": args.approved_by, "reason": args.reason}
    try:
        result = post_to_running(args.data_dir, args.host, args.port, "/breakers/reset", body)
    except ControlPlaneError as exc:
        _say(f"breaker reset: {exc.message}")
        return 1
    _say(f"breaker {args.name} reset by the running coordinator")
    print(json.dumps(result, indent=2))
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr)
