"""What a standby coordinator answers while another node leads (coordinator/leadership.py).

`GET /status` and `GET /health` say `standby`, which node leads, its term and when its lease
runs out; both are 200 (a standby is healthy: it is ready to take over). `POST /kill-switch`
stops everything from here too (the kill switch always wins): it files a request the leader
applies. Nothing else is served: a standby has no bots, and every other request is 503 naming
the leader, so an operator's command goes where it can act. The Host and Origin rules are
the leader's (`coordinator.api.origin`).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from coordinator import __version__
from coordinator.api.errors import error_response, json_errors
from coordinator.api.origin import ALLOWED_HOSTS, allowed_hosts, same_origin, security_headers
from coordinator.leadership import Leadership

LEADERSHIP = web.AppKey("leadership", Leadership)
STARTED = web.AppKey("standby_started", datetime)


def make_standby_app(leadership: Leadership, bind_host: str | None = None) -> web.Application:
    app = web.Application(middlewares=[security_headers, json_errors, same_origin])
    app[ALLOWED_HOSTS] = allowed_hosts(bind_host)
    app[LEADERSHIP] = leadership
    app[STARTED] = datetime.now(UTC)
    app.router.add_get("/status", get_status)
    app.router.add_get("/health", get_health)
    app.router.add_post("/kill-switch", post_kill_switch)
    app.router.add_route("*", "/{tail:.*}", elsewhere)
    return app


async def _document(request: web.Request) -> dict[str, Any]:
    leadership = request.app[LEADERSHIP]
    view = leadership.last_view or await leadership.view()
    return {
        "role": "standby",
        "node": leadership.node,
        "leader": view.as_dict(),
        "lease_seconds": leadership.lease_seconds,
        "coordinator": {
            "version": __version__,
            "role": {"role": "standby", "node": leadership.node},
            "standby_since": request.app[STARTED].isoformat(),
        },
        "bots": [],
    }


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(await _document(request))


async def get_health(request: web.Request) -> web.Response:
    document = await _document(request)
    return web.json_response({"status": "standby", **document})


APPLIED_WITHIN = 3.0  # seconds the answer waits for the leader to apply a request


async def post_kill_switch(request: web.Request) -> web.Response:
    """Stopping is never refused, here either: any request that is not a lift files an
    activation the leader applies within half a second (a new leader at its takeover, before
    any bot starts). The answer says whether the leader has applied it yet. A lift goes to
    the leader (503)."""
    leadership = request.app[LEADERSHIP]
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        body = {}
    body = body if isinstance(body, dict) else {}
    if body.get("action") in ("override", "force_override"):
        return await elsewhere(request)
    reason = str(body.get("reason") or "(no reason given)")[:500]
    request_id = await leadership.request_kill_switch(reason)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + APPLIED_WITHIN
    applied = await leadership.applied_term(request_id)
    while applied is None and loop.time() < deadline:
        await asyncio.sleep(0.1)
        applied = await leadership.applied_term(request_id)
    view = await leadership.view()
    document = {
        "requested": request_id,
        "applied": applied is not None,
        "applied_by_term": applied,
        "leader": view.as_dict(),
        "message": (
            f"the leader (term {applied}) activated the kill switch"
            if applied is not None
            else "filed: the leader applies it within half a second, or the next leader at "
            "its takeover, before any bot starts"
        ),
    }
    return web.json_response(document, status=200 if applied is not None else 202)


async def elsewhere(request: web.Request) -> web.Response:
    leadership = request.app[LEADERSHIP]
    view = leadership.last_view
    leader = view.holder if view is not None else "unknown"
    return error_response(
        503,
        "standby",
        f"{request.method} {request.path}: this coordinator ({leadership.node}) is a standby; "
        f"{leader} leads (GET /status here says who and until when): send it there",
        {"Retry-After": str(max(1, round(leadership.lease_seconds)))},
    )
