"""`bot-coordinator reconcile [--bot NAME] [--apply] [--json]`: journal against exchanges.

When a coordinator runs on the data dir (it holds the data dir's lock), the reconciliation is
asked of it over the control plane, so the corrections go through its bots' books. Otherwise
the coordinator is opened here without its control plane and without starting any bot (orders
left in flight by a previous run are resolved first, as at every start), reconciled, and closed.

Exit codes: 0 the journal matches (after --apply: nothing left to correct); 1 differences remain
or an exchange could not be read; 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from coordinator.accounts import MissingCredentials
from coordinator.config.models import CoordinatorConfig
from coordinator.control_client import ControlPlaneError, post_to_running
from coordinator.errors import CoordinatorError
from coordinator.reconcile.model import render_table
from coordinator.runtime import Coordinator
from coordinator.store.offline import held_lease

ACTOR = "cli"


def add_reconcile_command(subparsers: Any) -> None:
    command = subparsers.add_parser(
        "reconcile",
        help="compare the journal with the exchanges; --apply corrects the journal (audited)",
    )
    command.add_argument("--bot", dest="reconcile_bot", metavar="NAME", help="one bot only")
    command.add_argument(
        "--apply",
        dest="reconcile_apply",
        action="store_true",
        help="correct the journal to match the exchange, each correction a journal entry",
    )
    command.add_argument(
        "--json", dest="reconcile_json", action="store_true", help="print the report as JSON"
    )


def reconcile(args: argparse.Namespace, config: CoordinatorConfig, running: bool) -> int:
    names = [bot.name for bot in config.bots.bots]
    if args.reconcile_bot is not None and args.reconcile_bot not in names:
        _say(f"reconcile: --bot: no bot named {args.reconcile_bot!r}; bots: {', '.join(names)}")
        return 2
    if running:
        report = _through_control_plane(args)
    else:
        try:
            report = asyncio.run(_in_process(args, config))
        except MissingCredentials as exc:
            _say(f"reconcile: {exc}")
            return 2
        except CoordinatorError as exc:
            _say(f"reconcile refused: {exc.message}")
            return 1
    if report is None:
        return 1
    if args.reconcile_json:
        print(json.dumps(report, indent=2))
    else:
        print(render_table(report))
    return 0 if report["clean"] else 1


async def _in_process(args: argparse.Namespace, config: CoordinatorConfig) -> dict[str, Any]:
    async with held_lease(args.database) as fence:  # on PostgreSQL: led by this command
        coordinator = await Coordinator.open(
            config, args.data_dir, database=args.database, fence=fence
        )
        try:
            await coordinator.orders_resolved()  # compare a settled journal
            return await coordinator.reconcile(
                args.reconcile_bot, args.reconcile_apply, ACTOR, trigger="cli"
            )
        finally:
            await coordinator.close("reconcile from the command line")


def _through_control_plane(args: argparse.Namespace) -> dict[str, Any] | None:
    body = {"bot": args.reconcile_bot, "apply": args.reconcile_apply}
    try:
        # A reconciliation reads every bot's exchange: give it time.
        return post_to_running(args.data_dir, args.host, args.port, "/reconcile", body, 300)
    except ControlPlaneError as exc:
        _say(f"reconcile: {exc.message}")
        return None


def _say(line: str) -> None:
    print(line, file=sys.stderr)
