"""The incident records in the journal: open, note (and tick the checklist), close, read.

Every change commits with its audit entry in one write (`incident.open`, `incident.note`,
`incident.close`), so a record never says more or less than the audit log. A closed record is
final: its measured timeline is frozen at the close, and notes go to a new record.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from coordinator.credentials import redact
from coordinator.errors import BadRequest, Conflict, NotFound
from coordinator.incidents.model import (
    CHECKLIST,
    CHECKLIST_KEYS,
    OBJECTIVE_SECONDS,
    IncidentKind,
    Outcome,
)
from coordinator.incidents.timeline import LOOKBACK, TIMELINE_ACTIONS, Measurement, measure
from coordinator.store.audit_chain import append_entry
from coordinator.store.journal import audit_entry, iso, parse_time
from coordinator.store.sqlite import Priority, SqliteStore, Write
from coordinator.store.steps import TransactionStep

MAX_LIST: Final = 200


@dataclass(slots=True)
class _OpenIncident(TransactionStep):
    """Insert the record and its `incident.open` audit entry naming its id, in one
    transaction; `incident_id` is set once it ran."""

    row: tuple[Any, ...]
    actor: str
    at: str
    details: str
    incident_id: int | None = None

    def apply(self, conn: sqlite3.Connection) -> None:
        cursor = conn.execute(
            "INSERT INTO incidents (kind, issue, drill, status, detected_at, opened_at,"
            " opened_by, source, bots) VALUES (?, ?, ?, 'open', ?, ?, ?, ?, ?)",
            self.row,
        )
        self.incident_id = cursor.lastrowid
        append_entry(conn, (self.at, self.actor, "incident.open", f"incident #{self.incident_id}",
                            None, "ok", self.details))  # fmt: skip


class IncidentBook:
    """`drills`: a drill's coordinator (`DRILL_ENV` set): the records a kill switch activation
    opens are a drill's, and one opens on (or notes) the open drill record."""

    def __init__(
        self, store: SqliteStore, clock: Callable[[], datetime], drills: bool = False
    ) -> None:
        self.store = store
        self.clock = clock
        self.drills = drills

    # -- changes -------------------------------------------------------------------------------

    async def open(
        self,
        *,
        kind: IncidentKind,
        issue: str,
        actor: str,
        bots: Sequence[str],
        detected_at: datetime | None = None,
        drill: bool = False,
        source: str | None = None,
    ) -> dict[str, Any]:
        now = self.clock()
        detected = detected_at or now
        if detected > now:
            raise BadRequest(f"detected_at: {iso(detected)} is in the future (now {iso(now)})")
        details = {"kind": kind.value, "issue": issue, "drill": drill, "bots": list(bots),
                   "detected_at": iso(detected), "source": source}  # fmt: skip
        step = _OpenIncident(
            (kind.value, redact(issue), int(drill), iso(detected), iso(now), actor, source,
             json.dumps(list(bots))),
            actor, iso(now), redact(json.dumps(details, sort_keys=True)),
        )  # fmt: skip
        await self.store.write([step], Priority.SAFETY)
        assert step.incident_id is not None
        return await self.get(step.incident_id)

    async def note(
        self,
        incident_id: int,
        *,
        text: str | None,
        actor: str,
        action: bool = False,
        tick: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Add a note (`action`: one of the actions taken) and tick checklist items."""
        unknown = [key for key in tick if key not in CHECKLIST_KEYS]
        if unknown:
            raise BadRequest(f"tick: {', '.join(map(repr, unknown))} is not on the checklist; "
                             f"the items are {', '.join(CHECKLIST_KEYS)}")  # fmt: skip
        if not text and not tick:
            raise BadRequest("text: a note needs text, or items to tick")
        record = await self._open_record(incident_id, "noted")
        moment = self.clock()
        now = iso(moment)
        checklist = dict(record["checklist"])
        for key in tick:
            checklist.setdefault(key, {"by": actor, "at": now})
        writes: list[Write] = []
        if text:
            writes.append((
                "INSERT INTO incident_notes (incident_id, at, author, kind, text)"
                " VALUES (?, ?, ?, ?, ?)",
                (incident_id, now, actor, "action" if action else "note", redact(text)),
            ))  # fmt: skip
        if tick:
            writes.append(("UPDATE incidents SET checklist = ? WHERE id = ?",
                           (json.dumps(checklist, sort_keys=True), incident_id)))  # fmt: skip
        writes.append(audit_entry(
            actor=actor, action="incident.note", subject=f"incident #{incident_id}", result="ok",
            at=moment, details={"action": action, "text": text, "ticked": list(tick)},
        ))  # fmt: skip
        await self.store.write(writes, Priority.SAFETY)
        return await self.get(incident_id)

    async def close(
        self,
        incident_id: int,
        *,
        root_cause: str,
        outcome: Outcome,
        actor: str,
        lessons_learned: str | None = None,
    ) -> dict[str, Any]:
        """Close it with its root cause and outcome; the timeline is measured now and frozen.
        The answer's `unticked` lists the checklist items nobody ticked."""
        record = await self._open_record(incident_id, "closed")
        now = self.clock()
        measurement = await self._measure(record, now)
        unticked = [key for key in CHECKLIST_KEYS if key not in record["checklist"]]
        await self.store.write([
            ("UPDATE incidents SET status = 'closed', root_cause = ?, outcome = ?,"
             " lessons_learned = ?, closed_at = ?, closed_by = ?, measurement = ?"
             " WHERE id = ? AND status = 'open'",
             (redact(root_cause), outcome.value,
              redact(lessons_learned) if lessons_learned else None, iso(now), actor,
              json.dumps(measurement.as_dict(), sort_keys=True), incident_id)),
            audit_entry(
                actor=actor, action="incident.close", subject=f"incident #{incident_id}",
                result="ok", at=now,
                details={"outcome": outcome.value, "root_cause": root_cause,
                         "recover_seconds": measurement.recover_seconds,
                         "objective_met": measurement.objective_met, "unticked": unticked},
            ),
        ], Priority.SAFETY)  # fmt: skip
        closed = await self.get(incident_id)
        closed["unticked"] = unticked
        return closed

    async def on_kill_switch(
        self, *, reason: str, actor: str, at: datetime, bots: Sequence[str], trigger: str
    ) -> dict[str, Any]:
        """A kill switch activation with a reason: a new record, or a note on the newest open
        one (not a drill's) when the switch went on again while it is still being handled."""
        current = await self.store.fetch_one(
            "SELECT id FROM incidents WHERE status = 'open' AND drill = ? ORDER BY id DESC LIMIT 1",
            (int(self.drills),),
        )
        if current is not None:
            return await self.note(
                int(current["id"]), actor=actor, action=True,
                text=f"kill switch activated again ({trigger}) by {actor}: {reason}",
            )  # fmt: skip
        return await self.open(
            kind=IncidentKind.CRITICAL, issue=f"kill switch activated ({trigger}): {reason}",
            actor=actor, bots=bots, detected_at=at, source="kill_switch.activate",
            drill=self.drills,
        )  # fmt: skip

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, incident_id: int) -> dict[str, Any]:
        row = await self.store.fetch_one("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        if row is None:
            raise NotFound(f"no incident #{incident_id}")
        record = _record(dict(row))
        notes = await self.store.fetch_all(
            "SELECT id, at, author, kind, text FROM incident_notes WHERE incident_id = ?"
            " ORDER BY id",
            (incident_id,),
        )
        record["notes"] = [dict(note) for note in notes]
        record["actions_taken"] = [n["text"] for n in record["notes"] if n["kind"] == "action"]
        if record["measurement"] is None:
            record["measurement"] = (await self._measure(record, self.clock())).as_dict()
        return record

    async def list(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first, without notes or timelines."""
        limit = max(1, min(limit, MAX_LIST))
        sql = ("SELECT id, kind, issue, drill, status, detected_at, opened_at, opened_by,"
               " closed_at, outcome FROM incidents")  # fmt: skip
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (status,)
        rows = await self.store.fetch_all(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [{**dict(row), "drill": bool(row["drill"])} for row in rows]

    async def _open_record(self, incident_id: int, verb: str) -> dict[str, Any]:
        row = await self.store.fetch_one("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        if row is None:
            raise NotFound(f"no incident #{incident_id}")
        record = _record(dict(row))
        if record["status"] != "open":
            raise Conflict(f"incident #{incident_id} was closed at {record['closed_at']}: it "
                           f"cannot be {verb}; open a new one")  # fmt: skip
        return record

    async def _measure(self, record: dict[str, Any], until: datetime) -> Measurement:
        detected = parse_time(record["detected_at"])
        assert detected is not None
        actions = sorted(TIMELINE_ACTIONS)
        placeholders = ", ".join("?" * len(actions))
        columns = "id, at, actor, action, subject, reason, result, details"
        sql = f"SELECT {columns} FROM audit_events WHERE at >= ? AND at <= ? AND action IN ({placeholders}) ORDER BY id"  # noqa: E501, S608 -- placeholders only
        rows = await self.store.fetch_all(
            sql,
            (iso(detected - LOOKBACK), iso(until), *actions),
        )
        audit = [{**dict(row), "details": _json(row["details"], {})} for row in rows]
        return measure(IncidentKind(record["kind"]), detected, record["bots"], audit)


def _record(row: dict[str, Any]) -> dict[str, Any]:
    kind = IncidentKind(row["kind"])
    ticked = _json(row["checklist"], {})
    return {
        **row,
        "drill": bool(row["drill"]),
        "bots": _json(row["bots"], []),
        "objective_seconds": OBJECTIVE_SECONDS[kind],
        "checklist": ticked,
        "checklist_items": [
            {"key": key, "item": item, "ticked": key in ticked, **ticked.get(key, {})}
            for key, item in CHECKLIST
        ],
        "measurement": _json(row["measurement"], None) if row["measurement"] else None,
    }


def _json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default
