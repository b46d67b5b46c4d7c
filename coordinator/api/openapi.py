"""The control plane's OpenAPI 3.1 document, built from the app itself (`GET /openapi.json`).

The paths, methods and path parameters come from the aiohttp router; the request bodies are the
pydantic models the handlers parse (`model_json_schema()` is JSON Schema 2020-12, the dialect of
OpenAPI 3.1); the answers are the models of `coordinator/api/responses.py`. What the router
cannot say (which model a handler parses, its query parameters, who may call it, its examples)
is `OPERATIONS`, one entry per route: a route without one is published bare and fails
tests/coordinator/api/test_openapi.py, as does an entry without a route.

The document is built when the app starts (`on_startup`: the router is frozen by then, so the
routes added after `add_openapi_route` are in it too) and served as bytes from then on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from coordinator import __version__
from coordinator.api import responses as r
from coordinator.api.config_routes import ConfigApproveRequest, ConfigReloadRequest
from coordinator.api.incident_routes import (
    CloseIncidentRequest,
    IncidentNoteRequest,
    OpenIncidentRequest,
    SnapshotRequest,
)
from coordinator.api.requests import (
    BreakerResetRequest,
    EmptyRequest,
    EnableRequest,
    KillSwitchRequest,
    PaperDrillRequest,
    ReconcileRequest,
    StartRequest,
    StartSequentialRequest,
    StopRequest,
)

OPENAPI_PATH = "/openapi.json"
OPENAPI_DOCUMENT = web.AppKey("openapi_document", bytes)
REF = "#/components/schemas/{model}"

Auth = Literal["none", "operator", "loopback_or_token", "report_or_token"]

# Who may call: the security requirements of each kind (an empty requirement: no credentials).
_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "none": [],
    "operator": [{"operatorToken": []}],
    # POST /kill-switch: activate/reduce_only from this machine need nothing; override needs a
    # token, force_override the admin token (the description says which).
    "loopback_or_token": [{}, {"operatorToken": []}, {"adminToken": []}],
    # POST /reconcile: a report needs nothing, `apply` the operator token.
    "report_or_token": [{}, {"operatorToken": []}],
}


@dataclass(frozen=True)
class Query:
    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Operation:
    """What the router does not know about one route."""

    summary: str
    response: type[BaseModel] | None
    auth: Auth = "none"
    body: type[BaseModel] | None = None
    body_required: bool = False
    # A body schema other than the model's (the kill switch reads any body at all).
    body_schema: dict[str, Any] | None = None
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    query: tuple[Query, ...] = ()
    errors: tuple[int, ...] = ()
    text: bool = False  # answers text/plain (only, or beside JSON with ?format=table)
    # Other media types it answers (the dashboard's page, script and style).
    content_types: tuple[str, ...] = ()
    description: str = ""
    extra_responses: dict[str, Any] = field(default_factory=dict)


def _example(summary: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "value": value}


_BOT_QUERY = Query("bot", {"type": "string", "minLength": 1}, "one bot only")
_FORMAT_QUERY = Query(
    "format",
    {"type": "string", "enum": ["json", "table"], "default": "json"},
    "`table`: the report as text for a terminal",
)

# Each route's entry, keyed by (method, path) as the router has them.
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/status"): Operation(
        "Every bot, the safety state, the store (`?bot=` one bot, `?view=summary` the dashboard)",
        None,
        query=(
            _BOT_QUERY,
            Query(
                "view",
                {"type": "string", "enum": ["full", "summary"], "default": "full"},
                "`summary`: the dashboard's figures (no bot=)",
            ),
        ),
        errors=(400, 404),
    ),
    ("GET", "/bots/{name}"): Operation(
        "One bot's status, as it appears in /status", r.BotStatus, errors=(404,)
    ),
    ("GET", "/bots/{name}/series"): Operation(
        "The bot's position and PnL over time from the journal, downsampled (the chart)",
        r.SeriesResponse,
        query=(
            Query(
                "points",
                {"type": "integer", "minimum": 1, "maximum": 2000, "default": 300},
                "at most this many points, each the state after its interval's newest fill",
            ),
        ),
        errors=(400, 404),
    ),
    ("GET", "/"): Operation(
        "The dashboard (one page; its script and style are under /ui/)",
        None,
        content_types=("text/html",),
    ),
    ("GET", "/ui/"): Operation("The dashboard, as at /", None, content_types=("text/html",)),
    ("GET", "/ui/{file}"): Operation(
        "One of the dashboard's files (index.html, dashboard.js, dashboard.css)",
        None,
        content_types=("text/html", "text/javascript", "text/css"),
        errors=(404,),
    ),
    ("POST", "/bots/{name}/enable"): Operation(
        "Re-enable a bot the execution throttle disabled (audited; it stays stopped)",
        r.EnableResponse,
        auth="operator",
        body=EnableRequest,
        body_required=True,
        examples={"enable": _example("alice approves", {"approved_by": "alice"})},
        errors=(400, 401, 404, 409, 413),
    ),
    ("GET", "/health"): Operation(
        "200 healthy or degraded, 503 unhealthy: a person must act",
        r.HealthResponse,
        extra_responses={
            "503": {
                "description": "unhealthy: a person must act",
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": REF.format(model="HealthResponse")},
                                {"$ref": REF.format(model="ErrorResponse")},
                            ]
                        }
                    }
                },
            }
        },
    ),
    ("GET", "/alerts"): Operation(
        "Firing (most severe first), pending and recently resolved alerts",
        r.AlertsResponse,
        errors=(404,),
    ),
    ("GET", "/metrics"): Operation("Prometheus text exposition", None, text=True),
    ("GET", "/audit"): Operation(
        "Who did what, when, and the result (newest first)",
        r.AuditResponse,
        query=(
            Query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                "how many entries",
            ),
        ),
        errors=(400,),
    ),
    ("POST", "/start"): Operation(
        "Start one bot (safe mode: tighter limits)",
        r.StartResponse,
        auth="operator",
        body=StartRequest,
        body_required=True,
        examples={
            "safe_mode": _example(
                "start ndax in safe mode first", {"bot": "ndax", "safe_mode": True}
            ),
            "config_change": _example(
                "start on a config not approved yet",
                {"bot": "ndax", "accept_config_change": True, "approved_by": "alice"},
            ),
        },
        errors=(400, 401, 404, 409, 413, 503),
    ),
    ("POST", "/stop"): Operation(
        "Stop one bot (open orders cancelled, state saved)",
        r.StopResponse,
        auth="operator",
        body=StopRequest,
        body_required=True,
        examples={"stop": _example("stop ndax", {"bot": "ndax"})},
        errors=(400, 401, 404, 409, 413, 503),
    ),
    ("POST", "/start-sequential"): Operation(
        "Start every stopped bot whose config is approved, one after the other",
        r.StartSequentialResponse,
        auth="operator",
        body=StartSequentialRequest,
        examples={"all": _example("no body: every approved stopped bot", {})},
        errors=(400, 401, 409, 413, 503),
    ),
    ("POST", "/paper/drill"): Operation(
        "Make a paper bot's exchange misbehave, for drills",
        r.PaperDrillResponse,
        auth="operator",
        body=PaperDrillRequest,
        body_required=True,
        examples={
            "reject": _example("reject the next 3 orders", {"bot": "ndax", "reject_next": 3})
        },
        errors=(400, 401, 404, 409, 413),
    ),
    ("GET", "/breakers"): Operation(
        "The global circuit breaker and one per exchange", r.BreakersResponse
    ),
    ("POST", "/breakers/reset"): Operation(
        "Close one breaker (`global` or an exchange id); audited",
        r.BreakerStatus,
        auth="operator",
        body=BreakerResetRequest,
        body_required=True,
        examples={
            "global": _example(
                "reset the global breaker", {"name": "global", "approved_by": "alice"}
            )
        },
        errors=(400, 401, 404, 409, 413),
    ),
    ("GET", "/kill-switch"): Operation(
        "The kill switch, every scoped switch and the execution throttle",
        r.KillSwitchStatus,
    ),
    ("POST", "/kill-switch"): Operation(
        "Stop (activate, reduce_only) or lift (override, force_override) a kill switch or scope",
        None,
        auth="loopback_or_token",
        body=KillSwitchRequest,
        description=(
            "activate and reduce_only are never refused from this machine: no token, no body or "
            "any body at all still stops (what could not be used is in `notes`); from another "
            "machine they need a token. override needs the operator or admin token, "
            "force_override the admin token and `approved_by`; both are parsed strictly. "
            "503 not_durable: the switch is on and the bots are halted, but the journal could "
            "not record it (a full disk): a restart would not know."
        ),
        examples={
            "activate": _example(
                "stop everything", {"action": "activate", "reason": "Manual recovery"}
            ),
            "override": _example(
                "lift it after the cooldown", {"action": "override", "reason": "Recovery complete"}
            ),
            "force_override": _example(
                "lift it whatever the cooldown (admin token)",
                {
                    "action": "force_override",
                    "reason": "Circuit breaker reset",
                    "approved_by": "admin",
                },
            ),
            "scope": _example(
                "halt one exchange's bots",
                {
                    "action": "activate",
                    "reason": "kraken API errors",
                    "scope": {"exchange": "kraken"},
                },
            ),
            "reduce_only": _example(
                "let one bot only shrink its position",
                {"action": "reduce_only", "reason": "unwind", "scope": {"bot": "kraken"}},
            ),
        },
        errors=(400, 401, 403, 404, 409, 503),
    ),
    ("GET", "/reconcile"): Operation(
        "The newest reconciliation of this process and the recent runs",
        r.ReconcileRunsResponse,
        query=(_FORMAT_QUERY,),
        text=True,
        errors=(400,),
    ),
    ("POST", "/reconcile"): Operation(
        "Compare the journal with the exchanges; `apply` corrects it (token; audited)",
        r.ReconcileReport,
        auth="report_or_token",
        body=ReconcileRequest,
        query=(_FORMAT_QUERY,),
        text=True,
        examples={"one": _example("reconcile kraken", {"bot": "kraken"})},
        errors=(400, 401, 404, 409, 413, 503),
    ),
    ("GET", "/backups"): Operation(
        "Every backup, newest first; `?verify=true` checks the hashes not checked yet",
        r.BackupsResponse,
        query=(
            Query(
                "verify",
                {"type": "string", "enum": ["true", "false"], "default": "false"},
                "check the archives' hashes",
            ),
        ),
        errors=(400, 404),
    ),
    ("POST", "/backups"): Operation(
        "Take a backup now (config and database); audited",
        r.BackupCreated,
        auth="operator",
        body=EmptyRequest,
        errors=(400, 401, 404, 413, 500, 503),
    ),
    ("GET", "/config"): Operation(
        "The config files' hashes and, per bot, its effective and approved config",
        r.ConfigResponse,
        errors=(400,),
    ),
    ("GET", "/config/diff"): Operation(
        "Per bot, a unified diff from the approved config to the effective one",
        r.ConfigDiffResponse,
        query=(_BOT_QUERY,),
        errors=(400, 404),
    ),
    ("POST", "/config/approve"): Operation(
        "Approve the effective config of some bots (or every unapproved one); audited",
        r.ConfigApproveResponse,
        auth="operator",
        body=ConfigApproveRequest,
        body_required=True,
        examples={"all": _example("alice approves every unapproved bot", {"approved_by": "alice"})},
        errors=(400, 401, 404, 409, 413),
    ),
    ("POST", "/config/reload"): Operation(
        "Re-read config/ and apply what can change while bots run; audited with both hashes",
        r.ConfigReloadResponse,
        auth="operator",
        body=ConfigReloadRequest,
        examples={
            "preview": _example("show the diff and the plan, apply nothing", {"dry_run": True}),
            "apply": _example(
                "alice approves new limits for the running bots",
                {"approved_by": "alice", "reason": "tighter order size after the incident"},
            ),
        },
        errors=(400, 401, 409, 413, 422, 503),
        description=(
            "Limits, kill-switch triggers, breaker, health-check and alert settings and the "
            "endpoints' URLs apply now; retry, partial-fill and restart policies at each "
            "running bot's next start; bots.json, backups, notifications and dead man's "
            "switches at the coordinator's next start (listed, not applied). An invalid config "
            "is 422 with every problem in `error.errors`; the running config is kept. A change "
            "to a running bot's effective config needs `approved_by` (409 without)."
        ),
    ),
    ("POST", "/incidents/snapshot"): Operation(
        "Preserve evidence: one archive of logs, status, audit, verify-data, config, versions",
        r.IncidentSnapshotResponse,
        auth="operator",
        body=SnapshotRequest,
        examples={"evidence": _example("after a kill switch", {"reason": "ndax drawdown"})},
        errors=(400, 401, 409, 413, 503),
    ),
    ("GET", "/incidents"): Operation(
        "The incident records, newest first (`?status=open|closed`, `?limit=`)",
        r.IncidentsResponse,
        query=(
            Query("status", {"type": "string", "enum": ["open", "closed"]}, "only these"),
            Query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                  "at most this many"),
        ),
        errors=(400,),
    ),
    ("POST", "/incidents"): Operation(
        "Open an incident record (audited); its timeline is read from the audit log",
        r.IncidentRecord,
        auth="operator",
        body=OpenIncidentRequest,
        body_required=True,
        examples={"open": _example("ndax rejects orders", {
            "issue": "ndax rejects every order", "kind": "purchase_failure", "by": "alice"})},
        errors=(400, 401, 413),
    ),
    ("GET", "/incidents/{id}"): Operation(
        "One record: notes, actions taken, checklist, timeline and recovery times",
        r.IncidentRecord,
        errors=(404,),
    ),
    ("GET", "/incidents/{id}/markdown"): Operation(
        "One record as Markdown (runbook 004's recovery log)", None, text=True, errors=(404,)
    ),
    ("POST", "/incidents/{id}/notes"): Operation(
        "Add a note or an action taken, tick checklist items (audited)",
        r.IncidentRecord,
        auth="operator",
        body=IncidentNoteRequest,
        body_required=True,
        examples={"action": _example("what was done", {
            "text": "restored bots.json from the 09:00 backup", "action": True,
            "tick": ["backup_config"], "by": "alice"})},
        errors=(400, 401, 404, 409, 413),
    ),
    ("POST", "/incidents/{id}/close"): Operation(
        "Close a record: root cause, outcome, lessons; the timeline is frozen (audited)",
        r.ClosedIncidentRecord,
        auth="operator",
        body=CloseIncidentRequest,
        body_required=True,
        examples={"close": _example("recovered", {
            "root_cause": "an expired API key", "outcome": "success",
            "lessons_learned": "alert 7 days before a key expires", "by": "alice"})},
        errors=(400, 401, 404, 409, 413),
    ),
    ("GET", OPENAPI_PATH): Operation("This document", None),
}

# Answers with more than one shape: the JSON schema of their 200.
_STATUS_SCHEMA = {
    "anyOf": [
        {"$ref": REF.format(model="StatusResponse")},
        {"$ref": REF.format(model="StatusSummaryResponse")},
    ]
}
_KILL_SWITCH_ANSWER = {
    "anyOf": [
        {"$ref": REF.format(model="KillSwitchStatus")},
        {"$ref": REF.format(model="ScopedSwitchAnswer")},
    ]
}
_SPECIAL_200: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/status"): _STATUS_SCHEMA,
    ("POST", "/kill-switch"): _KILL_SWITCH_ANSWER,
    ("GET", OPENAPI_PATH): {"type": "object", "required": ["openapi", "paths"]},
}

_ERROR_DESCRIPTIONS = {
    400: "a bad request: the message names the field and the reason",
    401: "no token, or a wrong one",
    403: "the wrong token for this action (force_override needs the admin token)",
    404: "no such bot, scope or service",
    409: "refused in this state (a cooldown, a bot already running, unresolved orders, ...)",
    413: "request body too large (64 KiB at most)",
    422: "the config files are invalid: `error.errors` lists every problem",
    429: "too many requests",
    500: "our fault: the message carries a reference to the log",
    503: "shutting down, an exchange we need did not answer, or (not_durable) the action took "
    "effect but the journal could not record it",
}

_EXTRA_MODELS: tuple[type[BaseModel], ...] = (
    r.ErrorResponse,
    r.StatusResponse,
    r.StatusSummaryResponse,
    r.BotStatus,
    r.KillSwitchStatus,
    r.ScopedSwitchAnswer,
    r.HealthResponse,
)

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def route_keys(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, path) of the app's router; the HEAD that aiohttp adds beside a GET is
    left out (it answers what the GET answers, without the body)."""
    keys = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    return {(m, p) for m, p in keys if m != "HEAD" or ("GET", p) not in keys}


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app's routes, as they are now."""
    keys = sorted(route_keys(app), key=lambda key: (key[1], key[0]))
    schemas = _component_schemas(OPERATIONS[key] for key in keys if key in OPERATIONS)
    paths: dict[str, dict[str, Any]] = {}
    for method, path in keys:
        operation = OPERATIONS.get((method, path))
        entry = (
            _operation(method, path, operation)
            if operation is not None
            else {"summary": "undocumented", "responses": {"default": _error_ref()}}
        )
        item = paths.setdefault(path, {})
        params = [_path_param(name) for name in _PARAM.findall(path)]
        if params:
            item["parameters"] = params
        item[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bot-coordinator control plane",
            "version": __version__,
            "description": (
                "Reads are open to the local machine; every mutating request needs "
                "`Authorization: Bearer <token>` (the kill switch's stop and a reconcile report "
                'excepted). Every failure is `{"error": {"code", "message"}}`.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "any failure",
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}
                    },
                }
            },
            "securitySchemes": {
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the operator token (data dir or env)",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the admin token: force_override",
                },
            },
        },
    }


def add_openapi_route(app: web.Application) -> None:
    """Serve the document at `GET /openapi.json` (no auth), built once the app starts."""

    async def build(app: web.Application) -> None:
        app[OPENAPI_DOCUMENT] = orjson.dumps(build_document(app))

    app.on_startup.append(build)
    app.router.add_get(OPENAPI_PATH, get_openapi)


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_DOCUMENT], content_type="application/json")


def _component_schemas(operations: Iterable[Operation]) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "serialization") for m in _EXTRA_MODELS
    ]
    for operation in operations:
        if operation.body is not None:
            models.append((operation.body, "validation"))
        if operation.response is not None:
            models.append((operation.response, "serialization"))
    unique = list(dict.fromkeys(models))
    _, defs = models_json_schema(unique, ref_template=REF)
    result: dict[str, Any] = defs.get("$defs", {})
    return result


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _error_ref() -> dict[str, Any]:
    return {"$ref": "#/components/responses/Error"}


def _path_param(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
        "security": _SECURITY[op.auth],
    }
    if op.description:
        entry["description"] = op.description
    if op.query:
        entry["parameters"] = [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "schema": q.schema,
                "description": q.description,
            }
            for q in op.query
        ]
    if op.body is not None:
        entry["requestBody"] = _request_body(method, path, op)
    entry["responses"] = _responses(method, path, op)
    return entry


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^a-zA-Z0-9]+", "_", path.replace(".json", "")).strip("_")
    return f"{method.lower()}_{words or 'root'}"


def _request_body(method: str, path: str, op: Operation) -> dict[str, Any]:
    assert op.body is not None
    schema: dict[str, Any] = _ref(op.body)
    if (method, path) == ("POST", "/kill-switch"):
        # Lifting is strict (the model); stopping takes any body at all, even none.
        schema = {"anyOf": [schema, {"type": "object"}]}
    media: dict[str, Any] = {"schema": schema}
    if op.examples:
        media["examples"] = op.examples
    return {"required": op.body_required, "content": {"application/json": media}}


def _responses(method: str, path: str, op: Operation) -> dict[str, Any]:
    schema = _SPECIAL_200.get((method, path)) or (_ref(op.response) if op.response else None)
    content: dict[str, Any] = {}
    if schema is not None:
        content["application/json"] = {"schema": schema}
    if op.text:
        content["text/plain"] = {"schema": {"type": "string"}}
    for media_type in op.content_types:
        content[media_type] = {"schema": {"type": "string"}}
    ok: dict[str, Any] = {"description": "OK"}
    if content:
        ok["content"] = content
    answers: dict[str, Any] = {"200": ok}
    for status in op.errors:
        answers[str(status)] = {
            "description": _ERROR_DESCRIPTIONS[status],
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}
            },
        }
    answers.update(op.extra_responses)
    answers["default"] = _error_ref()
    return answers
