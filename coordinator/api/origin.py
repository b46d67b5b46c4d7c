"""Who may reach the control plane through a browser: the Host names and the same-origin rule.

The kill switch is activated from this machine without a token, and a browser on this machine is
"this machine" to a socket. So a page elsewhere must not be able to use the operator's browser:

- **Host** (every request): only the coordinator's own names are served (the loopback names, the
  address it binds, and `$BOT_COORDINATOR_ALLOWED_HOSTS`). A page on `evil.example` that has its
  name re-pointed at 127.0.0.1 (DNS rebinding) is same-origin to the browser, but its requests
  carry `Host: evil.example`, and are refused before anything is read or done.
- **Origin** (mutating requests): a browser names the page that sent a POST in `Origin` (and,
  in `Sec-Fetch-Site`, whether it was another site). A POST that a browser says came from
  anywhere but this coordinator's own page is refused, before the token is looked at, so a page
  elsewhere can neither activate, override nor start anything, nor use up the operator's
  failed-authentication allowance. A client that sends no Origin (curl, the CLI, scripts) is
  not a browser acting for a page and is judged by the token rules alone.

No response carries CORS headers: no other origin is ever allowed to read an answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web

from coordinator.api.errors import Handler, error_response

log = logging.getLogger(__name__)

ALLOWED_HOSTS_ENV = "BOT_COORDINATOR_ALLOWED_HOSTS"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
ALLOWED_HOSTS = web.AppKey("allowed_hosts", frozenset[str])
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CROSS_SITE = frozenset({"cross-site", "same-site"})


def allowed_hosts(
    bind_host: str | None = None, environ: dict[str, str] | None = None
) -> frozenset[str]:
    """The loopback names, the bound address (unless it is every interface), and the names in
    `$BOT_COORDINATOR_ALLOWED_HOSTS` (comma-separated), lower-cased, without brackets."""
    env = os.environ if environ is None else environ
    names = set(LOOPBACK_NAMES)
    if bind_host and bind_host not in ("0.0.0.0", "::", ""):  # noqa: S104 (a comparison)
        names.add(_bare(bind_host))
    names.update(_bare(n) for n in env.get(ALLOWED_HOSTS_ENV, "").split(",") if n.strip())
    return frozenset(names)


def _bare(host: str) -> str:
    return host.strip().lower().strip("[]")


def host_name(authority: str) -> str:
    """`localhost:8000` -> `localhost`, `[::1]:8000` -> `::1`, lower-cased."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority[1:]
    if authority.count(":") > 1:  # a bare IPv6 address, no port
        return authority
    return authority.partition(":")[0]


def _listing(hosts: Iterable[str]) -> str:
    return ", ".join(sorted(hosts))


@web.middleware
async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a request for a Host that is not ours (421), and a mutating request a browser
    sent for another origin (403); see the module docstring."""
    allowed = request.app[ALLOWED_HOSTS]
    host_header = request.headers.get("Host")
    if host_header is not None and host_name(host_header) not in allowed:
        log.warning(
            "refused %s %s for Host %r (not a name of this coordinator)",
            request.method, request.path, host_header,
        )
        return error_response(
            421,
            "host_not_allowed",
            f"Host: {host_header!r} is not a name of this coordinator (it answers to "
            f"{_listing(allowed)}); a page that reached it under another name, as DNS "
            f"rebinding does, is refused. Add a name with ${ALLOWED_HOSTS_ENV}.",
        )
    if request.method in _MUTATING:
        refusal = _cross_origin(request, host_header, allowed)
        if refusal is not None:
            log.warning("refused %s %s: %s", request.method, request.path, refusal)
            return error_response(403, "cross_origin", refusal)
    return await handler(request)


def _cross_origin(
    request: web.Request, host_header: str | None, allowed: frozenset[str]
) -> str | None:
    """Why a browser's mutating request is not from this coordinator's own page; None if it is
    (or if no browser says where it came from)."""
    where = f"{request.method} {request.path}"
    site = request.headers.get("Sec-Fetch-Site", "").lower()
    origin = request.headers.get("Origin")
    if site in _CROSS_SITE:
        return (
            f"{where} came from a page on another site (Sec-Fetch-Site: {site}, Origin: "
            f"{origin or 'not sent'}); the control plane takes changes only from its own page "
            f"or from a client such as curl"
        )
    if origin is None:
        return None
    parts = urlsplit(origin)
    own = f"http://{host_header}" if host_header else "this coordinator's own origin"
    if (
        origin == "null"
        or parts.scheme not in ("http", "https")
        or parts.hostname is None
        or parts.hostname.lower() not in allowed
        or (host_header is not None and parts.netloc.lower() != host_header.strip().lower())
    ):
        return (
            f"{where} came from the page at Origin {origin!r}, not from {own}; the control "
            f"plane takes changes only from its own page or from a client such as curl"
        )
    return None


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Headers every answer carries: nothing here may be framed, sniffed as another type, or
    leak its address in a Referer. The dashboard's own pages add their Content-Security-Policy
    (`coordinator.dashboard.routes`); every other answer gets the strictest one."""
    response = await handler(request)
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    return response
