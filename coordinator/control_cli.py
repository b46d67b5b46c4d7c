"""`bot-coordinator kill-switch ...` and `bot-coordinator bot enable ...`: the trading controls
from a terminal.

    kill-switch activate    [--exchange X | --bot B] [--reason R]
    kill-switch reduce-only [--exchange X | --bot B] [--reason R]
    kill-switch override    [--exchange X | --bot B] --reason R
    kill-switch force-override [--exchange X | --bot B] --reason R --approved-by WHO
    bot enable NAME --approved-by WHO [--reason R]

With a coordinator running on the data dir, each is asked of it over the control plane (the
operator token from the data dir; force-override reads the admin token); it closes its gates,
halts and audits, as for curl. With none running, activate, reduce-only and enable are written
to the journal's safety state directly, audited, and the next start honours them: a switch can
be set before anything trades. Lifting a switch needs a running coordinator (its cooldown and
breakers are its own to judge).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from coordinator.api.auth import TokenError, load_or_create_admin_token
from coordinator.config.models import CoordinatorConfig
from coordinator.control_client import ControlPlaneError, ask_running
from coordinator.errors import CoordinatorError
from coordinator.incidents.book import IncidentBook
from coordinator.safety.kill_switch import NO_REASON, Trigger
from coordinator.safety.layer import SafetyLayer
from coordinator.safety.scopes import TradingState
from coordinator.store.journal import SqliteJournal, audit_entry
from coordinator.store.offline import LeaderRunning, journal_label, offline_journal

ACTOR = "cli"
ACTIONS = {
    "activate": "activate",
    "reduce-only": "reduce_only",
    "override": "override",
    "force-override": "force_override",
}


def add_control_commands(subparsers: Any) -> None:
    switch = subparsers.add_parser(
        "kill-switch", help="activate, reduce-only or lift the kill switch or one scope's switch"
    )
    actions = switch.add_subparsers(dest="switch_action", required=True)
    for name in ACTIONS:
        action = actions.add_parser(name, help=f"{name} (everything, one exchange or one bot)")
        scope = action.add_mutually_exclusive_group()
        scope.add_argument("--exchange", help="only the bots on this exchange")
        scope.add_argument("--bot", dest="scope_bot", help="only this bot")
        lifting = name in ("override", "force-override")
        action.add_argument(
            "--reason",
            required=lifting,
            default=None if lifting else NO_REASON,
            help="why (recorded and audited)" + ("" if lifting else f"; default {NO_REASON!r}"),
        )
        if name == "force-override":
            action.add_argument("--approved-by", required=True, help="who approved it")
    bot = subparsers.add_parser("bot", help="one bot's controls")
    bot_actions = bot.add_subparsers(dest="bot_action", required=True)
    enable = bot_actions.add_parser(
        "enable", help="re-enable a bot the execution throttle disabled (it stays stopped)"
    )
    enable.add_argument("name")
    enable.add_argument("--approved-by", required=True, help="who approved it")
    enable.add_argument("--reason", default="re-enabled from the command line")


def run_control_command(args: argparse.Namespace, config: CoordinatorConfig, running: bool) -> int:
    for field in ("reason", "approved_by"):
        value = getattr(args, field, None)
        if value is not None and not value.strip():
            _say(f"--{field.replace('_', '-')}: must not be blank")
            return 2
    if args.command == "bot":
        return _enable(args, config, running)
    return _switch(args, config, running)


# -- kill-switch -----------------------------------------------------------------------------------


def _switch(args: argparse.Namespace, config: CoordinatorConfig, running: bool) -> int:
    action = ACTIONS[args.switch_action]
    scope = {"exchange": args.exchange} if args.exchange else {}
    if args.scope_bot:
        scope = {"bot": args.scope_bot}
    if running:
        body: dict[str, Any] = {"action": action, "reason": args.reason}
        if scope:
            body["scope"] = scope
        if action == "force_override":
            body["approved_by"] = args.approved_by
        return _ask(args, "POST", "/kill-switch", body, admin=action == "force_override")
    if action in ("override", "force_override"):
        _say(f"{args.switch_action}: no coordinator is running on {args.data_dir}; start it "
             "(the switch keeps every bot stopped) and lift the switch through it")
        return 1
    try:
        result = asyncio.run(_set_in_store(args, config, action, scope))
    except CoordinatorError as exc:
        _say(f"{args.switch_action} refused: {exc.message}")
        return 1
    except LeaderRunning as exc:
        if action != "activate" or scope:
            raise
        # The kill switch always wins: a leader elsewhere gets the activation as a standby
        # would file it (one row; it applies it within half a second).
        request = asyncio.run(_file_kill_switch_request(args.database, args.reason))
        _say(f"{exc}; the activation was filed for it instead (request {request}): the "
             "leader applies it within half a second, and a leader that takes over applies "
             "it before any bot starts")
        return 0
    where = journal_label(args.data_dir, args.database)
    _say(f"{args.switch_action} written to {where} (no coordinator running); it holds from "
         "the next start")
    print(json.dumps(result, indent=2, default=str))
    return 0


async def _file_kill_switch_request(database: str, reason: str | None) -> int:
    from coordinator.leadership import Leadership

    leadership = await Leadership.open(database, f"cli:{socket.gethostname()}:{os.getpid()}")
    try:
        return await leadership.request_kill_switch(reason or NO_REASON)
    finally:
        await leadership.close()


@asynccontextmanager
async def _safety_in_store(
    args: argparse.Namespace, config: CoordinatorConfig
) -> AsyncIterator[tuple[SqliteJournal, SafetyLayer]]:
    """The journal of the data dir and its safety state read back, as a coordinator would."""
    async with offline_journal(args.data_dir, args.database) as store:
        journal = SqliteJournal(store)
        safety = SafetyLayer(config, journal, lambda: datetime.now(UTC))
        await safety.load()
        yield journal, safety
        await safety.flush()


async def _set_in_store(
    args: argparse.Namespace, config: CoordinatorConfig, action: str, scope: dict[str, str]
) -> dict[str, Any]:
    async with _safety_in_store(args, config) as (journal, safety):
        now = datetime.now(UTC)
        audit_details = {"reason": args.reason, "scope": scope or "everything"}
        if action == "activate" and not scope:
            audit = audit_entry(actor=ACTOR, action="kill_switch.activate", result="ok", at=now,
                                reason=args.reason, details=audit_details)
            result = await safety.kill_switch.activate(
                args.reason, ACTOR, Trigger.MANUAL, audit=audit
            )
            if not result["already_active"] and args.reason != NO_REASON:
                book = IncidentBook(journal.store, lambda: datetime.now(UTC))
                record = await book.on_kill_switch(
                    reason=args.reason, actor=ACTOR, at=now, trigger=Trigger.MANUAL.value,
                    bots=[bot.name for bot in config.bots.bots],
                )  # fmt: skip
                result["incident"] = record["id"]
            return result
        switches = safety.scopes
        target = switches.scope(exchange=scope.get("exchange"), bot=scope.get("bot"))
        state = TradingState.REDUCING if action == "reduce_only" else TradingState.HALTED
        name = "trading.reduce_only" if action == "reduce_only" else "trading.halt"
        audit = audit_entry(actor=ACTOR, action=name, subject=target.key, result="ok", at=now,
                            reason=args.reason, details=audit_details)
        return await switches.set(target, state, args.reason, ACTOR, Trigger.MANUAL.value, audit)


# -- bot enable ------------------------------------------------------------------------------------


def _enable(args: argparse.Namespace, config: CoordinatorConfig, running: bool) -> int:
    body = {"approved_by": args.approved_by, "reason": args.reason}
    if running:
        return _ask(args, "POST", f"/bots/{args.name}/enable", body)
    if args.name not in {bot.name for bot in config.bots.bots}:
        _say(f"bot enable: no bot named {args.name!r} in the config")
        return 2
    try:
        result = asyncio.run(_enable_in_store(args, config))
    except CoordinatorError as exc:
        _say(f"bot enable refused: {exc.message}")
        return 1
    where = journal_label(args.data_dir, args.database)
    _say(f"{args.name} enabled in {where} (no coordinator running)")
    print(json.dumps(result, indent=2))
    return 0


async def _enable_in_store(args: argparse.Namespace, config: CoordinatorConfig) -> dict[str, Any]:
    async with _safety_in_store(args, config) as (journal, safety):
        details = {"approved_by": args.approved_by, "reason": args.reason}
        try:
            result = await safety.throttle.enable(args.name, ACTOR, args.approved_by, args.reason)
        except CoordinatorError as exc:
            await journal.audit(actor=ACTOR, action="bot.enable", subject=args.name,
                                result=f"refused: {exc.message}", at=datetime.now(UTC),
                                reason=args.reason, details=details)
            raise
        await journal.audit(actor=ACTOR, action="bot.enable", subject=args.name, result="ok",
                            at=datetime.now(UTC), reason=args.reason, details=details)
        return result


# -- the running coordinator ---------------------------------------------------------------------


def _ask(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any], admin: bool = False
) -> int:
    token = None
    if admin:
        try:
            token = load_or_create_admin_token(args.data_dir).value
        except TokenError as exc:
            _say(f"cannot read the admin token: {exc}")
            return 1
    try:
        result = ask_running(args.data_dir, args.host, args.port, method, path, body,
                             token=token)
    except ControlPlaneError as exc:
        _say(f"{path}: {exc.message}")
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr)
