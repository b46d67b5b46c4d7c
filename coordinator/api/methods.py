"""HTTP's rules for methods, ahead of authentication (RFC 9110 9.3.2, 9.3.7, 15.5.6).

An unknown route is 404 and a method a route does not have is 405 with `Allow`, before any
token is asked for: a client must not be told to authenticate for something that does not exist.
`OPTIONS` on a route answers 204 with `Allow` (no CORS headers: the control plane serves no other
origin). `HEAD` is served by aiohttp for every GET route, as a GET without its body.
"""

from __future__ import annotations

from aiohttp import web

from coordinator.api.errors import Handler


@web.middleware
async def method_rules(request: web.Request, handler: Handler) -> web.StreamResponse:
    failed = request.match_info.http_exception
    if request.method == "OPTIONS":
        if isinstance(failed, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted({*failed.allowed_methods, "OPTIONS"}))
            return web.Response(status=204, headers={"Allow": allowed})
        if failed is None:  # a route that registered OPTIONS itself
            return await handler(request)
    if failed is not None:
        raise failed  # 404, or 405 with Allow: json_errors answers it as JSON
    return await handler(request)
