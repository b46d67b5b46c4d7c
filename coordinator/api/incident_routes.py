"""`POST /incidents/snapshot` (token): the incident snapshot (`coordinator/incident_snapshot.py`)
taken by the running coordinator, in a thread, into `<data dir>/incidents`; audited.

The snapshot asks this same control plane for `/status`, `/alerts` and `/reconcile` over HTTP,
which the event loop serves while the thread works: neither trading nor the kill switch waits
for it. One snapshot at a time (409 while one is being written)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.app import COORDINATOR, OPERATOR, fast_json
from coordinator.api.requests import parse_body
from coordinator.errors import Conflict
from coordinator.incident_snapshot import take_snapshot

SNAPSHOT_LOCK = web.AppKey("incident_snapshot_lock", asyncio.Lock)


class SnapshotRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str | None = Field(default=None, min_length=1, max_length=500)


def add_incident_routes(app: web.Application) -> None:
    app[SNAPSHOT_LOCK] = asyncio.Lock()
    app.router.add_post("/incidents/snapshot", post_incident_snapshot)


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
