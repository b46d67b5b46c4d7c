"""The control plane: an aiohttp application over a `Coordinator`.

Handlers parse, call the coordinator, and answer JSON. Reads are open to the local machine;
every mutating request needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from coordinator.api.auth import AuthThrottle, ControlToken, FailureAudit, is_loopback_address
from coordinator.api.errors import Handler, error_response, json_errors
from coordinator.api.kill_switch_request import StopSwitchRequest, read_kill_switch_request
from coordinator.api.methods import method_rules
from coordinator.api.origin import ALLOWED_HOSTS, allowed_hosts, same_origin, security_headers
from coordinator.api.requests import (
    MAX_BODY_BYTES,
    BreakerResetRequest,
    EmptyRequest,
    EnableRequest,
    KillSwitchRequest,
    PaperDrillRequest,
    ReconcileRequest,
    StartRequest,
    StartSequentialRequest,
    StopRequest,
    parse_body,
)
from coordinator.dashboard.routes import add_dashboard_routes
from coordinator.dashboard.series import FillSeries
from coordinator.errors import (
    BadRequest,
    CoordinatorError,
    Forbidden,
    NotFound,
    ShuttingDown,
    Unauthorized,
)
from coordinator.metrics import CONTENT_TYPE
from coordinator.metrics.http import record_request_metrics
from coordinator.reconcile.model import render_table
from coordinator.runtime import Coordinator
from coordinator.safety.scopes import GLOBAL_SCOPE, Scope, TradingState
from coordinator.service_health import UNHEALTHY, HealthCheck

log = logging.getLogger(__name__)

COORDINATOR = web.AppKey("coordinator", Coordinator)
HEALTH = web.AppKey("health", HealthCheck)
TOKEN = web.AppKey("token", ControlToken)
ADMIN_TOKEN = web.AppKey("admin_token", ControlToken)
AUTH_THROTTLE = web.AppKey("auth_throttle", AuthThrottle)

OPERATOR = "operator-token"
ADMIN = "admin-token"
LOOPBACK = "loopback"
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Endpoints that decide about credentials themselves (stopping is allowed without a token).
_OWN_AUTH = frozenset({"/kill-switch", "/reconcile"})


def make_app(
    coordinator: Coordinator,
    token: ControlToken,
    admin_token: ControlToken | None = None,
    bind_host: str | None = None,
) -> web.Application:
    """The control plane and the dashboard. `bind_host` (the address listened on) is one of
    the Host names it answers to, beside the loopback names and $BOT_COORDINATOR_ALLOWED_HOSTS
    (`coordinator.api.origin`)."""
    app = web.Application(
        middlewares=[
            security_headers,
            record_request_metrics(coordinator.metrics),
            json_errors,
            same_origin,  # before the token: a page elsewhere cannot spend the auth allowance
            method_rules,
            require_token,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[ALLOWED_HOSTS] = allowed_hosts(bind_host)
    app[COORDINATOR] = coordinator
    app[HEALTH] = HealthCheck(coordinator)
    app[TOKEN] = token
    if admin_token is not None:
        app[ADMIN_TOKEN] = admin_token
    app[AUTH_THROTTLE] = AuthThrottle()
    app.router.add_get("/status", get_status)
    app.router.add_get("/bots/{name}", get_bot)
    app.router.add_post("/bots/{name}/enable", post_enable_bot)
    app.router.add_get("/health", get_health)
    app.router.add_get("/alerts", get_alerts)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/audit", get_audit)
    app.router.add_post("/start", post_start)
    app.router.add_post("/stop", post_stop)
    app.router.add_post("/start-sequential", post_start_sequential)
    app.router.add_post("/paper/drill", post_paper_drill)
    app.router.add_get("/breakers", get_breakers)
    app.router.add_post("/breakers/reset", post_breaker_reset)
    app.router.add_get("/kill-switch", get_kill_switch)
    app.router.add_get("/reconcile", get_reconcile)
    app.router.add_post("/reconcile", post_reconcile)
    app.router.add_post("/kill-switch", post_kill_switch)
    app.router.add_get("/backups", get_backups)
    app.router.add_post("/backups", post_backups)
    # Imported here: the config routes use this module's app keys.
    from coordinator.api.config_routes import add_config_routes

    add_config_routes(app)  # GET /config, GET /config/diff, POST /config/approve
    from coordinator.api.incident_routes import add_incident_routes

    add_incident_routes(app)  # /incidents: the records, their Markdown, the snapshot
    # GET / and /ui/: the page; GET /bots/{name}/series: its chart
    add_dashboard_routes(app, FillSeries(coordinator.journal.store))
    from coordinator.api.openapi import add_openapi_route  # GET /openapi.json, every route

    add_openapi_route(app)
    return app


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The token on every mutating request, and the failed-authentication rate limit: a peer
    that presented a wrong token too often gets 429 until its window passes (`AuthThrottle`),
    except a stop from this machine, which is never refused. /kill-switch and /reconcile judge
    the credential themselves (`_credential`); a wrong token sent to them counts too."""
    if request.method not in _MUTATING:
        return await handler(request)
    peer = peer_address(request)
    retry_after = request.app[AUTH_THROTTLE].retry_after(peer)
    if retry_after is not None and not await _loopback_stop(request):
        return error_response(
            429,
            "too_many_requests",
            f"too many failed authentications from {peer}: try again in {retry_after}s",
            {"Retry-After": str(retry_after)},
        )
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if header and retry_after is None and _match(request, scheme, presented) is None:
        await _auth_failed(request, peer)
        if request.path not in _OWN_AUTH:
            return error_response(
                401, "unauthorized", "invalid token", {"WWW-Authenticate": _CHALLENGE}
            )
    if request.path in _OWN_AUTH:
        return await handler(request)
    token = request.app[TOKEN]
    challenge = {"WWW-Authenticate": _CHALLENGE}
    if not header:
        return error_response(
            401,
            "unauthorized",
            f"{request.method} {request.path} needs 'Authorization: Bearer <token>'; "
            f"the token is in {token.where()}",
            challenge,
        )
    if scheme.lower() != "bearer" or not token.matches(presented.strip()):
        return error_response(401, "unauthorized", "invalid token", challenge)
    return await handler(request)


_CHALLENGE = 'Bearer realm="bot-coordinator"'
UNAUTHENTICATED = "unauthenticated"


def peer_address(request: web.Request) -> str:
    """The socket's peer address (the transport's peername), never a header: X-Forwarded-For
    and Forwarded are written by the client, and no proxy of ours stands in front."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return "unknown"


def _match(request: web.Request, scheme: str, presented: str) -> str | None:
    """ADMIN or OPERATOR for a bearer token that is one of them; None otherwise."""
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return None
    admin = request.app.get(ADMIN_TOKEN)
    if admin is not None and admin.matches(presented):
        return ADMIN
    if request.app[TOKEN].matches(presented):
        return OPERATOR
    return None


async def _auth_failed(request: web.Request, peer: str) -> None:
    """Count a wrong token against its peer, and audit it when the throttle says so."""
    audit = request.app[AUTH_THROTTLE].record_failure(peer)
    if audit is not None:
        await _audit_failure(request, peer, audit)


async def _audit_failure(request: web.Request, peer: str, audit: FailureAudit) -> None:
    coordinator = request.app[COORDINATOR]
    throttle = request.app[AUTH_THROTTLE]
    try:
        await coordinator.journal.audit(
            actor=UNAUTHENTICATED,
            action="auth.failed",
            result=audit.result,
            at=coordinator.clock(),
            subject=f"{request.method} {request.path}",
            details={
                "peer": peer,
                "failures_in_window": audit.failures,
                "max_failures": throttle.max_failures,
                "window_seconds": throttle.window_seconds,
            },
        )
    except Exception as exc:  # the refusal stands whether or not its audit entry was written
        log.error("could not audit a failed authentication from %s: %r", peer, exc)


async def _loopback_stop(request: web.Request) -> bool:
    """A kill switch activation or reduce-only from this machine: never rate-limited."""
    if request.path != "/kill-switch" or not _from_loopback(request):
        return False
    try:
        body = await read_kill_switch_request(request)
    except CoordinatorError:
        return False  # a malformed lift; a stop is never refused by the reader
    return isinstance(body, StopSwitchRequest)


def fast_json(document: Any, status: int = 200) -> web.Response:
    """JSON with orjson: /status at 100 bots is ~76 KB, which the standard library takes ~1 ms
    to encode and orjson ~0.1 ms (docs/benchmarks.md). Anything orjson has no encoding for
    (a Decimal, a Path) is written as its str(), as `json.dumps(default=str)` would."""
    body = orjson.dumps(document, default=str, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, content_type="application/json")


_STATUS_QUERY = frozenset({"bot", "view"})


async def get_status(request: web.Request) -> web.Response:
    """Everything (`/status`), one bot (`?bot=NAME`) or the dashboard summary
    (`?view=summary`)."""
    unknown = sorted(set(request.query) - _STATUS_QUERY)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown query parameter (known: bot, view)")
    coordinator = request.app[COORDINATOR]
    view = request.query.get("view", "full")
    bot = request.query.get("bot")
    if view not in ("full", "summary"):
        raise BadRequest(f"view: must be 'full' or 'summary', got {view!r}")
    if view == "summary":
        if bot is not None:
            raise BadRequest("view: 'summary' covers every bot; leave out bot=")
        return fast_json(coordinator.status_summary())
    return json_body(coordinator.status_json(bot))


async def get_bot(request: web.Request) -> web.Response:
    """One bot's status document, as it appears in /status."""
    coordinator = request.app[COORDINATOR]
    runner = coordinator.supervisor.runner(request.match_info["name"])
    return json_body(coordinator.bot_status_json(runner))


def json_body(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


async def get_health(request: web.Request) -> web.Response:
    """200 healthy or degraded, 503 unhealthy: `curl -f` fails exactly when a person must act."""
    report = await request.app[HEALTH].report()
    return fast_json(report, status=503 if report["status"] == UNHEALTHY else 200)


async def get_alerts(request: web.Request) -> web.Response:
    """Firing (most severe first), pending and recently resolved alerts."""
    alerts = request.app[COORDINATOR].alerts
    if alerts is None:
        raise NotFound("alerting is not running in this coordinator")
    return fast_json(alerts.listing())


async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (prometheus-client)."""
    body = await request.app[COORDINATOR].metrics.render_cooperatively()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def get_audit(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "50")
    # isascii: str.isdigit() is true for "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:
        raise BadRequest(f"limit: must be a whole number from 1 to 1000, got {raw!r}")
    events = await request.app[COORDINATOR].journal.recent_audit(int(raw))
    return web.json_response({"events": events})


async def post_start(request: web.Request) -> web.Response:
    body = await parse_body(request, StartRequest)
    bot = await request.app[COORDINATOR].start_bot(
        body.bot, body.safe_mode, OPERATOR, body.accept_config_change, body.approved_by
    )
    return web.json_response({"started": body.bot, "bot": bot})


async def post_stop(request: web.Request) -> web.Response:
    body = await parse_body(request, StopRequest)
    bot = await request.app[COORDINATOR].stop_bot(body.bot, OPERATOR, body.reason)
    return web.json_response({"stopped": body.bot, "bot": bot})


async def post_start_sequential(request: web.Request) -> web.Response:
    body = await parse_body(request, StartSequentialRequest)
    result = await request.app[COORDINATOR].start_sequential(
        OPERATOR, body.accept_config_change, body.approved_by
    )
    ok = result["failed"] is None and not result["refused"]
    return web.json_response({"ok": ok, **result})


async def post_paper_drill(request: web.Request) -> web.Response:
    body = await parse_body(request, PaperDrillRequest)
    drill = body.model_dump(exclude={"bot"}, exclude_none=True)
    if not drill:
        raise BadRequest(
            "say what to drill: reject_next, fail_next, partial_fill_ratio, crash_next and/or "
            "market_trend_pct_per_tick"
        )
    result = await request.app[COORDINATOR].paper_drill(body.bot, drill, OPERATOR)
    return web.json_response(result)


def _credential(request: web.Request) -> str | None:
    """ADMIN or OPERATOR for a valid bearer token; None for none or a wrong one, and for any
    token from a peer the rate limit blocks (only its stops from loopback get this far, and
    they are taken as loopback's: a blocked peer's guesses are not checked)."""
    if request.app[AUTH_THROTTLE].retry_after(peer_address(request)) is not None:
        return None
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return _match(request, scheme, presented)


def _from_loopback(request: web.Request) -> bool:
    """The socket's peer is this machine (`peer_address`; a forwarding header counts for
    nothing)."""
    return is_loopback_address(peer_address(request))


async def get_kill_switch(request: web.Request) -> web.Response:
    """The kill switch, and beside it every scoped switch and the execution throttle."""
    coordinator = request.app[COORDINATOR]
    return web.json_response(
        {**coordinator.kill_switch.status(), **coordinator.trading_controls_status()}
    )


async def post_kill_switch(request: web.Request) -> web.Response:
    """Activate or reduce_only: never refused from this machine (no token needed; no body, no
    reason, any body at all still stops: coordinator/api/kill_switch_request.py). override
    (token) and force_override (admin token and an approver) are strict. `scope` narrows any of
    them to one exchange or one bot; without it, activate/override are the kill switch."""
    body = await read_kill_switch_request(request)
    coordinator = request.app[COORDINATOR]
    who = _credential(request)
    if isinstance(body, StopSwitchRequest):
        return web.json_response(await _stop(request, body, who))
    scope = None
    if body.scope is not None:
        scope = coordinator.scope_of(body.scope.exchange, body.scope.bot)
    return web.json_response(await _lift(request, body, scope, who))


async def _stop(
    request: web.Request, body: StopSwitchRequest, who: str | None
) -> dict[str, Any]:
    if who is None and not _from_loopback(request):
        raise Unauthorized(f"{body.action} from another machine needs a token")
    coordinator = request.app[COORDINATOR]
    actor = who or LOOPBACK
    notes = list(body.notes)
    scope: Scope | None = None
    if body.scope is not None:
        try:
            scope = coordinator.scope_of(body.scope.exchange, body.scope.bot)
        except NotFound as exc:  # stopping more than asked is the safe side of a typo
            notes.append(f"{exc.message}; applied to every bot instead")
    if body.action == "reduce_only":
        result = await coordinator.set_trading_state(
            scope or GLOBAL_SCOPE, TradingState.REDUCING, body.reason, actor
        )
    elif scope is not None:
        result = await coordinator.set_trading_state(
            scope, TradingState.HALTED, body.reason, actor
        )
    else:
        # The answer comes once the gate is closed and durable; the halt goes on after it.
        result = await coordinator.activate_kill_switch(body.reason, actor, wait_for_halt=False)
    return {**result, "notes": notes} if notes else result


async def _lift(
    request: web.Request, body: KillSwitchRequest, scope: Scope | None, who: str | None
) -> dict[str, Any]:
    coordinator = request.app[COORDINATOR]
    if scope is None and _lifts_global_reducing(coordinator):
        scope = GLOBAL_SCOPE
    if body.action == "override":
        if who is None:
            raise Unauthorized(
                f"override needs 'Authorization: Bearer <token>' (operator or admin); the operator "
                f"token is in {request.app[TOKEN].where()}"
            )
        if scope is not None:
            return await coordinator.lift_trading_switch(scope, body.reason, who)
        return await coordinator.override_kill_switch(body.reason, who)
    if body.approved_by is None:
        raise BadRequest("approved_by: required for force_override (who approved it)")
    if who is None:
        raise Unauthorized("force_override needs 'Authorization: Bearer <admin token>'")
    if who != ADMIN:
        admin = request.app.get(ADMIN_TOKEN)
        where = admin.where() if admin is not None else "the admin token"
        raise Forbidden(f"force_override needs the admin token ({where}), not the operator token")
    if scope is not None:
        return await coordinator.lift_trading_switch(scope, body.reason, who, body.approved_by)
    return await coordinator.force_override_kill_switch(body.reason, who, body.approved_by)


def _lifts_global_reducing(coordinator: Coordinator) -> bool:
    """An override without a scope lifts the kill switch; once that is lifted (or was never
    active), it lifts a global reduce-only, so both are lifted by the runbook's request."""
    return not coordinator.kill_switch.active and GLOBAL_SCOPE.key in coordinator.scopes.switches


async def post_enable_bot(request: web.Request) -> web.Response:
    """Re-enable a bot the execution throttle disabled (token; audited). It stays stopped."""
    body = await parse_body(request, EnableRequest)
    coordinator = request.app[COORDINATOR]
    who = _credential(request) or OPERATOR  # the middleware has checked the token
    result = await coordinator.enable_bot(
        request.match_info["name"], who, body.approved_by, body.reason
    )
    return web.json_response(result)


async def get_breakers(request: web.Request) -> web.Response:
    return web.json_response(request.app[COORDINATOR].safety.status())


async def post_breaker_reset(request: web.Request) -> web.Response:
    body = await parse_body(request, BreakerResetRequest)
    who = _credential(request) or OPERATOR  # the middleware has checked the token
    result = await request.app[COORDINATOR].reset_breaker(
        body.name, who, body.approved_by, body.reason
    )
    return web.json_response(result)


async def get_backups(request: web.Request) -> web.Response:
    """Every backup, newest first (time, size, files, verified, latest); `?verify=true` checks
    the hashes of those not checked yet (a result is kept per archive)."""
    raw = request.query.get("verify", "false")
    if raw not in ("true", "false"):
        raise BadRequest(f"verify: must be 'true' or 'false', got {raw!r}")
    service = request.app[COORDINATOR].backups
    if service is None:
        raise NotFound("backups are off: this coordinator was started without a backup dir")
    return web.json_response(await service.listing(verify=raw == "true"))


async def post_backups(request: web.Request) -> web.Response:
    """Take a backup now (config and database); audited. 500 backup_failed says why not."""
    await parse_body(request, EmptyRequest)
    coordinator = request.app[COORDINATOR]
    if coordinator.backups is None:
        raise NotFound("backups are off: this coordinator was started without a backup dir")
    if not coordinator.accepting:
        raise ShuttingDown("the coordinator is shutting down; no backup is taken")
    result = await coordinator.backups.backup_now("api", _credential(request) or OPERATOR)
    return web.json_response(result)


async def post_reconcile(request: web.Request) -> web.Response:
    """A report needs no token (it only reads); applying corrections does, and is audited.
    `?format=table` answers the report as text for a terminal."""
    body = await parse_body(request, ReconcileRequest)
    table = _wants_table(request)
    who = _credential(request)
    if body.apply and who is None:
        raise Unauthorized(
            f"apply needs 'Authorization: Bearer <token>'; the token is in "
            f"{request.app[TOKEN].where()}"
        )
    report = await request.app[COORDINATOR].reconcile(body.bot, body.apply, who or LOOPBACK)
    if table:
        return web.Response(text=render_table(report) + "\n", content_type="text/plain")
    return web.json_response(report)


async def get_reconcile(request: web.Request) -> web.Response:
    """The newest report of this process and the recent runs (any process) from the journal."""
    coordinator = request.app[COORDINATOR]
    last = coordinator.reconciler.last
    runs = await coordinator.reconciler.records.recent_runs(20)
    if _wants_table(request):
        text = render_table(last.as_dict()) if last else "no reconciliation in this process yet"
        return web.Response(text=text + "\n", content_type="text/plain")
    return web.json_response({"last": last.as_dict() if last else None, "runs": runs})


def _wants_table(request: web.Request) -> bool:
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "table"):
        raise BadRequest(f"format: must be 'json' or 'table', got {fmt!r}")
    return fmt == "table"
