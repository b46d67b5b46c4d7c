"""`bot-coordinator config diff|approve`: the config gate from the command line.

`config diff [--bot NAME ...]` prints, per bot, a unified diff from the last approved effective
config to the one it runs now. `config approve --approved-by WHO [--bot NAME ...] [--reason]
[--yes]` prints the same diff, asks `approve? [y/N]` on a terminal (`--yes` skips the question;
without a terminal and without `--yes` nothing is approved), then approves exactly what was
shown: the request carries the sha256 of each config shown, and a bot whose config is another
one by then is refused.

A coordinator running on the data dir (it holds the data dir's lock) is asked over its control
plane: it approves the config it runs, read at its start (files edited since are named, and
take effect at its next start). Without one, the config dir is read and the approvals are
recorded directly in the journal, with the same audit entries.

Exit codes: 0 approved, or nothing to approve (said so); 1 refused or failed; 2 bad arguments.

Also here: the config gate's lines for `--health-check` (as (name, status, detail) tuples,
which `health_cli` turns into its checks).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator.config.fingerprint import bot_fingerprints, code_version
from coordinator.config.models import CoordinatorConfig
from coordinator.config_approval import ConfigGate, check_approver
from coordinator.control_client import ControlPlaneError, ask_running
from coordinator.errors import CoordinatorError
from coordinator.store.journal import SqliteJournal
from coordinator.store.offline import offline_journal

ACTOR = "cli"
EXIT_OK, EXIT_REFUSED, EXIT_BAD_ARGS = 0, 1, 2
OK, WARN, FAIL = "ok", "warn", "fail"
GateCheck = tuple[str, str, str]  # name, status (ok, warn, fail), detail


def add_config_commands(subparsers: Any) -> None:
    config = subparsers.add_parser(
        "config", help="the config gate: diff and approve each bot's effective config"
    )
    actions = config.add_subparsers(dest="config_action", required=True)
    diff = actions.add_parser(
        "diff", help="per bot, the diff from its approved config to the one it runs"
    )
    approve = actions.add_parser(
        "approve", help="approve the bots' effective configs (shows the diff first; audited)"
    )
    for action in (diff, approve):
        action.add_argument(
            "--bot", dest="bots", action="append", metavar="NAME",
            help="only this bot (repeatable; default: every bot)",
        )  # fmt: skip
    approve.add_argument("--approved-by", required=True, help="who approves the config")
    reload = actions.add_parser(
        "reload",
        help="the running coordinator re-reads config/ and applies what can change live",
    )
    reload.add_argument(
        "--approved-by", help="who approves new effective configs of running bots (limits)"
    )
    reload.add_argument("--reason", help="why (in the audit entry)")
    reload.add_argument(
        "--dry-run", action="store_true", help="show the diff and the plan, apply nothing"
    )
    approve.add_argument("--reason", default="approved from the command line")
    approve.add_argument(
        "--yes", action="store_true", help="approve what the diff shows without asking"
    )


def run_config_reload(args: argparse.Namespace, coordinator_running: Callable[[], bool]) -> int:
    """`config reload`: asks the coordinator holding the data dir (`coordinator_running()`
    says whether one does). Prints each change and when it applies; an invalid config's problems one
    a line. Exit 0 applied (or nothing changed), 1 refused, 2 invalid config."""
    if not coordinator_running():
        _say(
            f"config reload: no coordinator is running on {args.data_dir}; its next start "
            "reads config/ (check it first with --health-check)"
        )
        return EXIT_REFUSED
    body: dict[str, Any] = {"dry_run": bool(args.dry_run)}
    if args.approved_by is not None:
        body["approved_by"] = args.approved_by
    if args.reason is not None:
        body["reason"] = args.reason
    try:
        answer = _ask(args, "POST", "/config/reload", body)
    except ControlPlaneError as exc:
        _say(f"config reload refused: {exc.message}")
        for error in exc.errors:
            _say(f"  {error.get('file')}: {error.get('path')}: {error.get('reason')}")
        return EXIT_BAD_ARGS if exc.errors else EXIT_REFUSED
    for change in answer["changes"]:
        before, after = change["before"], change["after"]
        print(f"{change['file']}: {change['path']}: {before} -> {after}  [{change['applies']}]")
    for bot, entry in answer["bots"].items():
        if entry["needs_bot_restart"]:
            print(f"{bot}: takes effect at its next start: {len(entry['needs_bot_restart'])} "
                  "change(s)")  # fmt: skip
        if entry["needs_coordinator_restart"]:
            print(f"{bot}: needs a coordinator restart: "
                  f"{'; '.join(entry['needs_coordinator_restart'])}")  # fmt: skip
    print(
        f"{answer['result']}: {len(answer['changes'])} change(s); config sha256 "
        f"{answer['sha256_before'][:16]} -> {answer['sha256_after'][:16]}"
    )
    return EXIT_OK


def run_config_command(
    args: argparse.Namespace,
    config: CoordinatorConfig,
    running: bool,
    confirm: Callable[[str], bool] | None = None,
) -> int:
    """`config diff` or `config approve`; `running`: a coordinator holds the data dir.
    `confirm(question)`: asks the operator (a terminal's prompt by default)."""
    approving = args.config_action == "approve"
    if approving and not args.approved_by.strip():
        _say("--approved-by: say who approves the config")
        return EXIT_BAD_ARGS
    try:
        document = _ask(args, "GET", "/config/diff") if running else _offline_diff(args, config)
    except ControlPlaneError as exc:
        _say(f"config {args.config_action}: {exc.message}")
        return EXIT_REFUSED
    bots = document["bots"]
    unknown = [bot for bot in args.bots or () if bot not in bots]
    if unknown:
        _say(f"--bot: no bot named {unknown[0]!r}; configured bots: {', '.join(bots)}")
        return EXIT_BAD_ARGS
    shown = {bot: bots[bot] for bot in args.bots or bots}
    _describe(document, shown, running, args, config)
    changed = [bot for bot, entry in shown.items() if not entry["approved"]]
    if not changed:
        lead = "nothing to approve" if approving else "no differences"
        _say(f"{lead}: every bot shown runs its approved config ({', '.join(shown)})")
        return EXIT_OK
    if not approving:
        _say(
            f"{', '.join(changed)}: not the approved config (a start is refused); approve with "
            "`bot-coordinator config approve --approved-by WHO`"
        )
        return EXIT_OK
    question = f"approve the effective config of {', '.join(changed)} as {args.approved_by}?"
    if not args.yes and not (confirm or _ask_terminal)(question):
        _say("nothing was approved")
        return EXIT_REFUSED
    expected = {bot: shown[bot]["sha256"] for bot in changed}
    try:
        result = (
            _ask(args, "POST", "/config/approve", _approve_body(args, changed, expected))
            if running
            else asyncio.run(_approve_offline(args, config, changed, expected))
        )
    except (ControlPlaneError, CoordinatorError) as exc:
        _say(f"config approve refused: {exc.message}")
        return EXIT_REFUSED
    for approval in result["approved"]:
        print(
            f"approved {approval['bot']}: {approval['previous_sha256'] or '(none)'} -> "
            f"{approval['config_sha256']} by {approval['approved_by']} at {approval['at']}"
        )
    return EXIT_OK


def _describe(
    document: dict[str, Any],
    shown: dict[str, Any],
    running: bool,
    args: argparse.Namespace,
    config: CoordinatorConfig,
) -> None:
    where = (
        f"the running coordinator on {args.host}:{args.port}"
        if running
        else f"{config.source_dir} (no coordinator running on {args.data_dir})"
    )
    _say(f"config gate: {where}, code {document['code_version']}")
    if document.get("changed_since_start"):
        _say(
            f"  note: {', '.join(document['changed_since_start'])} changed on disk since the "
            "coordinator started; it runs what it read then. Restart it to load the files (each "
            "changed bot is then refused until approved)."
        )
    for entry in shown.values():
        if entry["diff"]:
            print(entry["diff"], end="" if entry["diff"].endswith("\n") else "\n")


def _ask_terminal(question: str) -> bool:
    if not sys.stdin.isatty():
        _say("not a terminal: pass --yes to approve what the diff above shows")
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _approve_body(
    args: argparse.Namespace, bots: list[str], expected: dict[str, str]
) -> dict[str, Any]:
    return {
        "approved_by": check_approver(args.approved_by),
        "bots": bots,
        "reason": args.reason,
        "expected_sha256": expected,
    }


def _ask(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    return ask_running(args.data_dir, args.host, args.port, method, path, body)


# -- no coordinator running: the journal directly ----------------------------------------------


def _offline_diff(args: argparse.Namespace, config: CoordinatorConfig) -> dict[str, Any]:
    async def diff(gate: ConfigGate) -> dict[str, Any]:
        return gate.diff_document()

    return asyncio.run(_with_gate(args, config, diff))


async def _approve_offline(
    args: argparse.Namespace, config: CoordinatorConfig, bots: list[str], expected: dict[str, str]
) -> dict[str, Any]:
    async def approve(gate: ConfigGate) -> dict[str, Any]:
        return await gate.approve(bots, args.approved_by, args.reason, ACTOR, expected=expected)

    return await _with_gate(args, config, approve)


async def _with_gate(
    args: argparse.Namespace,
    config: CoordinatorConfig,
    action: Callable[[ConfigGate], Any],
) -> dict[str, Any]:
    async with offline_journal(args.data_dir, args.database) as store:
        gate = await ConfigGate.open(config, SqliteJournal(store), lambda: datetime.now(UTC))
        result: dict[str, Any] = await action(gate)
        return result


# -- --health-check ------------------------------------------------------------------------------

_APPROVE = "review with `bot-coordinator config diff`, then `bot-coordinator config approve`"


def running_gate_checks(data_dir: Path, host: str, port: int) -> list[GateCheck]:
    """The running coordinator's config gate (`GET /config`): files changed on disk since it
    started warn; a bot whose effective config is not approved fails (its start is refused)."""
    try:
        report = ask_running(data_dir, host, port, "GET", "/config")
    except ControlPlaneError as exc:
        return [("config gate", FAIL, exc.message)]
    checks: list[GateCheck] = []
    changed = report.get("changed_since_start", [])
    if changed:
        checks.append((
            "config files", WARN,
            f"{', '.join(changed)} in {report['dir']} changed on disk since the coordinator "
            "started; it runs what it read then: restart it to load them, then approve them",
        ))  # fmt: skip
    else:
        checks.append(("config files", OK, f"{report['dir']} holds what was read at start"))
    checks.extend(_approval_checks(report["bots"], report["code_version"]))
    return checks


def _approval_checks(bots: dict[str, Any], code: str) -> list[GateCheck]:
    checks: list[GateCheck] = []
    for bot, entry in bots.items():
        if entry["approved"]:
            continue
        if entry["approved_sha256"] is None:
            checks.append((
                f"config approval {bot}", WARN,
                f"no approved config yet: the next start approves its config as (first start); "
                f"to review it first: {_APPROVE}",
            ))  # fmt: skip
            continue
        checks.append((
            f"config approval {bot}", FAIL,
            f"effective config {entry['sha256'][:12]} is not the approved "
            f"{entry['approved_sha256'][:12]} (by {entry['approved_by']} at "
            f"{entry['approved_at']}): its start is refused; {_APPROVE}",
        ))  # fmt: skip
    if not checks:
        checks.append(("config approval", OK, f"every bot's config is approved (code {code})"))
    return checks


def offline_gate_checks(config: CoordinatorConfig, database: Path) -> list[GateCheck]:
    """The config dir's effective configs against the journal's approvals (read-only)."""
    if not database.exists():
        return [(
            "config approval", OK,
            "no journal yet: the first start approves every bot's config as (first start)",
        )]  # fmt: skip
    # A journal that cannot be read fails the journal check already: here it only warns.
    unreadable = "cannot read the approvals ({}); the journal check says more"
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [("config approval", WARN, unreadable.format(exc))]
    try:
        rows = conn.execute(
            "SELECT bot, config_sha256, approved_by, at FROM config_approvals"
            " WHERE id IN (SELECT MAX(id) FROM config_approvals GROUP BY bot)"
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            return [("config approval", WARN, unreadable.format(exc))]
        rows = []  # a journal from before the gate: the next start approves as (first start)
    except sqlite3.Error as exc:
        return [("config approval", WARN, unreadable.format(exc))]
    finally:
        conn.close()
    approvals = {row[0]: row[1:] for row in rows}
    bots: dict[str, Any] = {}
    for bot, fingerprint in bot_fingerprints(config).items():
        sha, by, at = approvals.get(bot, (None, None, None))
        bots[bot] = {
            "sha256": fingerprint.sha256,
            "approved": sha == fingerprint.sha256,
            "approved_sha256": sha,
            "approved_by": by,
            "approved_at": at,
        }
    return _approval_checks(bots, code_version().label)


def _say(line: str) -> None:
    print(line, file=sys.stderr)
