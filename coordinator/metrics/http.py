"""Control plane request durations by route template, method and status.

The route is the template (`/bots/{name}` style), never the raw path, and a method outside
HTTP's usual ones is `other`, so a scan of random URLs or verbs cannot grow the label set: an
unknown path is `unmatched`.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from coordinator.metrics.registry import Metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def record_request_metrics(metrics: Metrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        began = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            method = request.method if request.method in METHODS else "other"
            metrics.http_seconds.labels(_route(request), method, str(status)).observe(
                time.perf_counter() - began
            )

    return middleware


def _route(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None:
        return "unmatched"
    return resource.canonical
