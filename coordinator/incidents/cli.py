"""`bot-coordinator incident open|note|close|show|list|export`: the incident records.

    incident open --issue TEXT [--kind K] [--bots A,B] [--detected-at ISO] [--drill] [--by WHO]
    incident note ID [TEXT] [--action] [--tick KEY ...] [--by WHO]
    incident close ID --root-cause TEXT --outcome success|failure [--lessons TEXT] [--by WHO]
    incident show ID [--json]        the record as Markdown (or its JSON)
    incident list [--status open|closed]
    incident export ID [--out FILE]  Markdown, to FILE (written atomically) or stdout

With a coordinator running on the data dir each is asked of it over the control plane (the
operator token of the data dir), so its audit and its answer are the ones curl gets. With none
running the journal is opened directly, holding the data dir's lock so none starts meanwhile;
no config is needed (the bots a record waits for default to those of the config, when it
loads). Exit codes: 0 done, 1 refused or failed (the message says why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator.control_client import ControlPlaneError, ask_running
from coordinator.errors import CoordinatorError
from coordinator.incidents.book import IncidentBook
from coordinator.incidents.markdown import duration, to_markdown, verdict
from coordinator.incidents.model import CHECKLIST_KEYS, IncidentKind, Outcome
from coordinator.store.offline import offline_journal

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CLI_ACTOR = "cli"
RECORD_ACTIONS = ("open", "note", "close", "show", "list", "export")

# Runs `command(running)` on the data dir's journal (cli._on_journal): True when a
# coordinator holds it, False while this process holds its lock.
OnJournal = Callable[[Callable[[bool], int]], int]


def add_record_commands(actions: Any) -> None:
    opening = actions.add_parser("open", help="open an incident record (runbook 004, Step 7)")
    opening.add_argument("--issue", required=True, help="what happened, as first seen")
    opening.add_argument("--kind", choices=[k.value for k in IncidentKind],
                         default=IncidentKind.CRITICAL.value,
                         help="sets the recovery objective (default critical: 15 min)")  # fmt: skip
    opening.add_argument("--bots", help="comma-separated: the bots whose return ends the "
                         "recovery (default: the affected ones, else every bot)")  # fmt: skip
    opening.add_argument("--detected-at", help="ISO 8601 with its offset (default: now)")
    opening.add_argument("--drill", action="store_true", help="a rehearsal, not an incident")
    note = actions.add_parser("note", help="add a note or action taken; tick checklist items")
    note.add_argument("id")
    note.add_argument("text", nargs="?")
    note.add_argument("--action", action="store_true", help="record it as an action taken")
    note.add_argument("--tick", nargs="+", default=[], metavar="KEY",
                      help=f"checklist items: {', '.join(CHECKLIST_KEYS)}")  # fmt: skip
    close = actions.add_parser("close", help="close a record; lists the unticked checklist")
    close.add_argument("id")
    close.add_argument("--root-cause", required=True)
    close.add_argument("--outcome", required=True, choices=[o.value for o in Outcome])
    close.add_argument("--lessons", help="lessons learned")
    show = actions.add_parser("show", help="one record, as Markdown")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="the record as JSON")
    listing = actions.add_parser("list", help="the records, newest first")
    listing.add_argument("--status", choices=["open", "closed"])
    export = actions.add_parser("export", help="one record as Markdown, to a file or stdout")
    export.add_argument("id")
    export.add_argument("--out", type=Path, help="write here (atomically) instead of stdout")
    for parser in (opening, note, close):
        parser.add_argument("--by", help="who (recorded with each change)")


def run_record_command(args: argparse.Namespace, config_dir: Path, on_journal: OnJournal) -> int:
    try:
        request = _request(args)
    except ValueError as exc:
        _say(f"incident {args.incident_action}: {exc}")
        return EXIT_USAGE

    def command(running: bool) -> int:
        try:
            if running:
                answer = _over_http(args, request)
            else:
                answer = asyncio.run(_on_store(args, config_dir, request))
        except ControlPlaneError as exc:
            _say(f"incident {args.incident_action}: {exc}")
            return EXIT_FAILED
        except CoordinatorError as exc:
            _say(f"incident {args.incident_action} refused: {exc.message}")
            return EXIT_FAILED
        except ValueError as exc:
            _say(f"incident {args.incident_action}: {exc}")
            return EXIT_USAGE
        return _print(args, answer)

    return on_journal(command)


# -- what is asked -----------------------------------------------------------------------------


def _request(args: argparse.Namespace) -> dict[str, Any]:
    """The HTTP body of the action, checked here so both paths refuse the same input."""
    action = args.incident_action
    by = getattr(args, "by", None)
    if by is not None and not by.strip():
        raise ValueError("--by: must not be blank")
    if action in ("note", "close", "show", "export"):
        _record_id(args.id)
    body: dict[str, Any] = {"by": by} if by else {}
    build = {"open": _open_body, "note": _note_body, "close": _close_body}.get(action)
    return body | build(args) if build else body


def _open_body(args: argparse.Namespace) -> dict[str, Any]:
    if not args.issue.strip():
        raise ValueError("--issue: must not be blank")
    body: dict[str, Any] = {"issue": args.issue, "kind": args.kind, "drill": args.drill}
    if args.bots is not None:
        bots = [b.strip() for b in args.bots.split(",") if b.strip()]
        if not bots:
            raise ValueError("--bots: name at least one bot")
        body["bots"] = bots
    if args.detected_at is not None:
        body["detected_at"] = _detected_at(args.detected_at).isoformat()
    return body


def _note_body(args: argparse.Namespace) -> dict[str, Any]:
    if not (args.text and args.text.strip()) and not args.tick:
        raise ValueError("a note needs TEXT, or --tick items")
    unknown = [key for key in args.tick if key not in CHECKLIST_KEYS]
    if unknown:
        raise ValueError(f"--tick: {', '.join(map(repr, unknown))} is not on the checklist; "
                         f"the items are {', '.join(CHECKLIST_KEYS)}")  # fmt: skip
    body: dict[str, Any] = {"action": args.action, "tick": args.tick}
    if args.text and args.text.strip():
        body["text"] = args.text
    return body


def _close_body(args: argparse.Namespace) -> dict[str, Any]:
    if not args.root_cause.strip():
        raise ValueError("--root-cause: must not be blank")
    body: dict[str, Any] = {"root_cause": args.root_cause, "outcome": args.outcome}
    if args.lessons:
        body["lessons_learned"] = args.lessons
    return body


def _record_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ValueError(f"ID: must be a record's number (incident list shows them), got {raw!r}")
    return int(raw)


def _detected_at(raw: str) -> datetime:
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"--detected-at: not an ISO 8601 time: {raw!r}") from None
    if at.tzinfo is None:
        raise ValueError(f"--detected-at: give its UTC offset (e.g. {raw}+00:00), got {raw!r}")
    return at


def _over_http(args: argparse.Namespace, body: dict[str, Any]) -> Any:
    action = args.incident_action
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104

    def ask(method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return ask_running(args.data_dir, host, args.port, method, path, payload)

    if action == "open":
        return ask("POST", "/incidents", body)
    if action == "list":
        query = f"?status={args.status}" if args.status else ""
        return ask("GET", f"/incidents{query}")["incidents"]
    path = f"/incidents/{_record_id(args.id)}"
    if action == "note":
        return ask("POST", f"{path}/notes", body)
    if action == "close":
        return ask("POST", f"{path}/close", body)
    return ask("GET", path)


async def _on_store(args: argparse.Namespace, config_dir: Path, body: dict[str, Any]) -> Any:

    async with offline_journal(args.data_dir, args.database) as store:
        book = IncidentBook(store, lambda: datetime.now(UTC))
        return await _apply(book, args, body, lambda: asyncio.to_thread(_config_bots, config_dir))


async def _apply(
    book: IncidentBook,
    args: argparse.Namespace,
    body: dict[str, Any],
    config_bots: Callable[[], Awaitable[list[str] | None]],
) -> Any:
    action = args.incident_action
    actor = f"{body['by']} ({CLI_ACTOR})" if body.get("by") else CLI_ACTOR
    if action == "list":
        return await book.list(args.status)
    if action == "open":
        known = await config_bots()
        bots = body.get("bots", known or [])
        strangers = [b for b in bots if known is not None and b not in known]
        if strangers:
            raise ValueError(f"--bots: {', '.join(map(repr, strangers))} is not a bot of the "
                             f"config (the bots: {', '.join(known or [])})")  # fmt: skip
        detected = body.get("detected_at")
        return await book.open(
            kind=IncidentKind(body["kind"]), issue=body["issue"], actor=actor,
            bots=list(dict.fromkeys(bots)), drill=body["drill"], source="cli",
            detected_at=datetime.fromisoformat(detected) if detected else None,
        )  # fmt: skip
    incident_id = _record_id(args.id)
    if action == "note":
        return await book.note(incident_id, text=body.get("text"), actor=actor,
                               action=body["action"], tick=body["tick"])  # fmt: skip
    if action == "close":
        return await book.close(incident_id, root_cause=body["root_cause"],
                                outcome=Outcome(body["outcome"]), actor=actor,
                                lessons_learned=body.get("lessons_learned"))  # fmt: skip
    return await book.get(incident_id)


def _config_bots(config_dir: Path) -> list[str] | None:
    """The config's bot names, or None when it does not load (records need no config)."""
    from coordinator.config import load_config

    try:
        return [bot.name for bot in load_config(config_dir).bots.bots]
    except Exception:
        return None


# -- what is printed ---------------------------------------------------------------------------


def _print(args: argparse.Namespace, answer: Any) -> int:
    action = args.incident_action
    if action == "list":
        print(_table(answer))
        return EXIT_OK
    if action == "show" and args.json:
        print(json.dumps(answer, indent=2, default=str))
        return EXIT_OK
    if action in ("show", "export"):
        text = to_markdown(answer)
        if action == "export" and args.out is not None:
            try:
                _write_atomically(args.out, text)
            except OSError as exc:
                _say(f"incident export: could not write {args.out}: {exc}")
                return EXIT_FAILED
            print(f"incident #{answer['id']} written to {args.out}")
        else:
            sys.stdout.write(text)
        return EXIT_OK
    print(_summary(action, answer))
    return EXIT_OK


def _summary(action: str, record: dict[str, Any]) -> str:
    m = record["measurement"]
    lines = [f"incident #{record['id']} ({record['kind']}{', drill' if record['drill'] else ''}) "
             f"{record['status']}: {record['issue']}",
             f"  respond {duration(m['respond_seconds'])}; {verdict(m)}"]  # fmt: skip
    if action == "close":
        unticked = record.get("unticked") or []
        left = f"  checklist left unticked ({len(unticked)}): {', '.join(unticked)}"
        lines.append(left if unticked else "  checklist: every item ticked")
    lines.append(f"  bot-coordinator incident show {record['id']}")
    return "\n".join(lines)


def _table(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no incident records"
    rows = [("id", "status", "kind", "detected", "outcome", "issue")]
    for r in records:
        status = r["status"] + (" (drill)" if r["drill"] else "")
        rows.append((str(r["id"]), status, r["kind"], r["detected_at"][:19], r["outcome"] or "",
                     r["issue"][:60]))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    )


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _say(message: str) -> None:
    print(message, file=sys.stderr)
