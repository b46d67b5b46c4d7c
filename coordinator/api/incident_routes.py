"""The incident routes: the records (`coordinator/incidents/`) and the evidence snapshot.

    GET  /incidents[?status=open|closed&limit=N]   the records, newest first
    POST /incidents                                open one (token)
    GET  /incidents/{id}                           one record: notes, checklist, timeline
    GET  /incidents/{id}/markdown                  the same as Markdown (text/plain)
    POST /incidents/{id}/notes                     a note or action taken, checklist ticks (token)
    POST /incidents/{id}/close                     root cause, outcome, lessons (token)
    POST /incidents/snapshot                       the evidence archive (token)

A record's writes name who made them: `by` (a person's name) beside the token's role, so the
checklist says who ticked what.

`POST /incidents/snapshot` (token): the incident snapshot (`coordinator/incident_snapshot.py`)
taken by the running coordinator, in a thread, into `<data dir>/incidents`; audited.

The snapshot asks this same control plane for `/status`, `/alerts` and `/reconcile` over HTTP,
which the event loop serves while the thread works: neither trading nor the kill switch waits
for it. One snapshot at a time (409 while one is being written)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from coordinator.api.app import COORDINATOR, OPERATOR, fast_json
from coordinator.api.requests import parse_body
from coordinator.errors import BadRequest, Conflict, NotFound
from coordinator.incident_snapshot import take_snapshot
from coordinator.incidents.book import MAX_LIST
from coordinator.incidents.markdown import to_markdown
from coordinator.incidents.model import IncidentKind, Outcome

SNAPSHOT_LOCK = web.AppKey("incident_snapshot_lock", asyncio.Lock)


class SnapshotRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str | None = Field(default=None, min_length=1, max_length=500)


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class OpenIncidentRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    issue: Text = Field(description="what happened, as first seen")
    kind: IncidentKind = Field(
        default=IncidentKind.CRITICAL, description="sets the recovery time objective"
    )
    bots: list[Name] | None = Field(
        default=None,
        max_length=1000,
        description="the bots it took down, whose return ends the recovery (default: those "
        "running, starting or crashed, else every bot)",
    )
    detected_at: AwareDatetime | None = Field(default=None, description="default: now")
    drill: bool = False
    by: Name | None = Field(default=None, description="who (recorded beside the token's role)")


class IncidentNoteRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    text: Text | None = None
    action: bool = Field(default=False, description="one of the record's actions taken")
    tick: list[Name] = Field(
        default_factory=list, max_length=20, description="post-recovery checklist keys to tick"
    )
    by: Name | None = None


class CloseIncidentRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    root_cause: Text
    outcome: Outcome
    lessons_learned: Text | None = None
    by: Name | None = None


def add_incident_routes(app: web.Application) -> None:
    app[SNAPSHOT_LOCK] = asyncio.Lock()
    app.router.add_post("/incidents/snapshot", post_incident_snapshot)
    app.router.add_get("/incidents", get_incidents)
    app.router.add_post("/incidents", post_incident)
    app.router.add_get("/incidents/{id}", get_incident)
    app.router.add_get("/incidents/{id}/markdown", get_incident_markdown)
    app.router.add_post("/incidents/{id}/notes", post_incident_note)
    app.router.add_post("/incidents/{id}/close", post_incident_close)


def _actor(by: str | None) -> str:
    return f"{by} ({OPERATOR})" if by else OPERATOR


def _incident_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound(f"no incident {raw!r}: ids are whole numbers (GET /incidents lists them)")
    return int(raw)


_LIST_QUERY = frozenset({"status", "limit"})


async def get_incidents(request: web.Request) -> web.Response:
    unknown = sorted(set(request.query) - _LIST_QUERY)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown query parameter (known: status, limit)")
    status = request.query.get("status")
    if status not in (None, "open", "closed"):
        raise BadRequest(f"status: must be 'open' or 'closed', got {status!r}")
    raw = request.query.get("limit", "50")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIST:
        raise BadRequest(f"limit: must be a whole number from 1 to {MAX_LIST}, got {raw!r}")
    book = request.app[COORDINATOR].incidents
    return fast_json({"incidents": await book.list(status, int(raw))})


async def post_incident(request: web.Request) -> web.Response:
    body = await parse_body(request, OpenIncidentRequest)
    coordinator = request.app[COORDINATOR]
    known = list(coordinator.supervisor.runners)
    bots = body.bots if body.bots is not None else coordinator.affected_bots()
    strangers = [bot for bot in bots if bot not in known]
    if strangers:
        raise BadRequest(f"bots: {', '.join(map(repr, strangers))} is not a bot here "
                         f"(the bots: {', '.join(known)})")  # fmt: skip
    record = await coordinator.incidents.open(
        kind=body.kind, issue=body.issue, actor=_actor(body.by), bots=list(dict.fromkeys(bots)),
        detected_at=body.detected_at, drill=body.drill, source="POST /incidents",
    )  # fmt: skip
    return fast_json(record)


async def get_incident(request: web.Request) -> web.Response:
    book = request.app[COORDINATOR].incidents
    return fast_json(await book.get(_incident_id(request)))


async def get_incident_markdown(request: web.Request) -> web.Response:
    record = await request.app[COORDINATOR].incidents.get(_incident_id(request))
    return web.Response(text=to_markdown(record), content_type="text/plain")


async def post_incident_note(request: web.Request) -> web.Response:
    incident_id = _incident_id(request)
    body = await parse_body(request, IncidentNoteRequest)
    record = await request.app[COORDINATOR].incidents.note(
        incident_id, text=body.text, actor=_actor(body.by), action=body.action, tick=body.tick
    )
    return fast_json(record)


async def post_incident_close(request: web.Request) -> web.Response:
    incident_id = _incident_id(request)
    body = await parse_body(request, CloseIncidentRequest)
    record = await request.app[COORDINATOR].incidents.close(
        incident_id, root_cause=body.root_cause, outcome=body.outcome, actor=_actor(body.by),
        lessons_learned=body.lessons_learned,
    )  # fmt: skip
    return fast_json(record)


async def post_incident_snapshot(request: web.Request) -> web.Response:
    body = await parse_body(request, SnapshotRequest)
    coordinator = request.app[COORDINATOR]
    lock = request.app[SNAPSHOT_LOCK]
    if lock.locked():
        raise Conflict("a snapshot is being written; try again when it is done")
    host, port = _own_address(request)
    evidence = coordinator.evidence

    async def take() -> dict[str, Any]:
        async with lock:
            snapshot = await asyncio.to_thread(
                take_snapshot,
                evidence.data_dir,
                coordinator.config.source_dir,
                evidence.log_dir,
                evidence.data_dir / "incidents",
                f"http://{host}:{port}",
            )
        return {
            "path": str(snapshot.path),
            "members": len(snapshot.members),
            "coordinator_running": snapshot.coordinator_running,
            "notes": snapshot.notes,
        }

    details = {"reason": body.reason} if body.reason else {}
    result: dict[str, Any] = await coordinator._audited(
        OPERATOR, "incident.snapshot", None, take, details,
        outcome_details=lambda done: {"path": done["path"], "members": done["members"]},
    )  # fmt: skip
    return fast_json(result)


def _own_address(request: web.Request) -> tuple[str, int]:
    """Where this control plane listens, as seen by the request's socket."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return "127.0.0.1", 8000
    return str(sockname[0]), int(sockname[1])
