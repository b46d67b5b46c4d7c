"""One JSON error shape for every failure: `{"error": {"code": ..., "message": ...}}`.

4xx for the caller's mistakes, 5xx only for ours, and never a traceback in a body: an unexpected
exception is logged with a reference the body repeats, so an operator can find it in the log.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from coordinator.credentials import redact
from coordinator.errors import CoordinatorError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, str]] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": redact(message)}
    if errors is not None:
        error["errors"] = [{key: redact(value) for key, value in e.items()} for e in errors]
    return web.json_response({"error": error}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CoordinatorError as exc:
        return error_response(exc.status, exc.code, exc.message, errors=exc.errors)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep the Allow header a 405 must carry (RFC 9110 15.5.6).
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(
            exc.status, _HTTP_CODES.get(exc.status, "http_error"), _message(request, exc), allow
        )
    except Exception as exc:
        ref = secrets.token_hex(4)
        log.error(
            "internal error on %s %s (ref %s): %r",
            request.method,
            request.path,
            ref,
            exc,
            exc_info=exc,
        )
        return error_response(
            500,
            "internal_error",
            f"internal error (ref {ref}); details are in logs/bot-coordinator.log",
        )


def _message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {request.path}"
    if exc.status == 405 and isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed on {request.path}; use {allowed}"
    if exc.status == 413:
        return "request body too large"
    return exc.reason
