"""What a standby coordinator answers while another node leads (coordinator/leadership.py).

`GET /status` and `GET /health` say `standby`, which node leads, its term and when its lease
runs out; both are 200 (a standby is healthy: it is ready to take over). Nothing else is
served: a standby has no bots, and every other request is 503 naming the leader, so an
operator's command goes where it can act. The Host and Origin rules are the leader's
(`coordinator.api.origin`).
"""

from __future__ import annotations

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
