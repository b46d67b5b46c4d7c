"""The control plane's answers, as pydantic models, for the OpenAPI document only.

The handlers answer plain dicts built by the Coordinator; these models describe the stable top
level of each answer so `coordinator/api/openapi.py` can publish a schema for it. They are
deliberately permissive: a key listed here is one every answer carries (required, typed only as
far as it is certain), anything else is allowed (`extra="allow"`), because a schema that the
real answers violate is worse than none (issue 14: the live server is fuzzed against it).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorItem(BaseModel):
    """One problem of several: the config file, the JSON path in it, and why."""

    model_config = ConfigDict(extra="forbid")

    file: str
    path: str
    reason: str


class ErrorDetail(BaseModel):
    """`code` is stable (for programs), `message` says what went wrong (for people)."""

    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    errors: list[ErrorItem] | None = Field(
        default=None, description="every problem, when there are several (an invalid config)"
    )


class ErrorResponse(BaseModel):
    """Every failure, whatever the status: `{"error": {"code", "message"}}`."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class BotStatus(_Answer):
    """One bot, as in `/status` `bots[]` and `GET /bots/{name}`."""

    name: str
    exchange: str
    symbol: str
    mode: str
    state: str
    orders: Any
    fills: Any
    position: Any
    pnl: Any
    last_tick: Any
    restarts: Any
    error: Any


class StatusResponse(_Answer):
    kill_switch_active: bool
    kill_switch: dict[str, Any]
    circuit_breaker: Any
    bots: list[BotStatus]


class BotSummary(_Answer):
    name: str
    state: str


class StatusSummaryResponse(_Answer):
    """`/status?view=summary`: the dashboard's figures."""

    kill_switch_active: bool
    circuit_breaker_tripped: bool
    accepting_actions: bool
    bot_states: dict[str, int]
    bots: list[BotSummary]


class HealthResponse(_Answer):
    """`status` is healthy, degraded (both 200) or unhealthy (503)."""

    status: str
    services: dict[str, Any]
    checked_at: Any


class AlertsResponse(_Answer):
    firing: list[Any]
    pending: list[Any]
    resolved: list[Any]


class AuditEvent(_Answer):
    id: int
    at: str
    actor: str
    action: str
    result: Any


class SeriesPoint(_Answer):
    t: str
    position: float
    pnl: float
    price: float | None
    fills: int


class SeriesResponse(_Answer):
    """GET /bots/{name}/series: the chart's points, oldest first, the bot's book now last."""

    bot: str
    currency: str
    base: str
    fills: int
    slot_seconds: int
    pnl: str
    points: list[SeriesPoint]


class AuditResponse(_Answer):
    events: list[AuditEvent]


class StartResponse(_Answer):
    started: str
    bot: dict[str, Any]


class StopResponse(_Answer):
    stopped: str
    bot: dict[str, Any]


class StartSequentialResponse(_Answer):
    """`ok` is true when nothing failed and nothing was refused."""

    ok: bool
    started: list[str]
    refused: Any
    failed: Any


class PaperDrillResponse(_Answer):
    bot: str
    drill: dict[str, Any]


class EnableResponse(_Answer):
    bot: str
    enabled: dict[str, Any]
    state: str


class BreakerStatus(_Answer):
    name: str
    state: str


class BreakersResponse(_Answer):
    # `global` is a Python keyword: the field has an alias, the schema names the key.
    global_: BreakerStatus = Field(alias="global")
    exchanges: dict[str, BreakerStatus]


class KillSwitchStatus(_Answer):
    """The kill switch itself: `GET /kill-switch` (with `trading_controls` beside it) and the
    answer to activating or lifting it."""

    active: bool
    reason: Any
    by: Any
    at: Any


class ScopedSwitchAnswer(_Answer):
    """The answer to a request with a `scope`, or to lifting a global reduce-only."""

    trading_controls: dict[str, Any]


class ReconcileReport(_Answer):
    run_id: Any
    applied: bool
    clean: bool
    summary: dict[str, Any]
    bots: list[Any]


class ReconcileRunsResponse(_Answer):
    """The newest report of this process (null before the first) and the recent runs."""

    last: ReconcileReport | None
    runs: list[Any]


class BackupsResponse(_Answer):
    backups: list[dict[str, Any]]
    latest: Any


class BackupCreated(_Answer):
    name: str
    created_at: str
    size: int
    files: Any


class ConfigResponse(_Answer):
    code_version: str
    bots: dict[str, Any]


class ConfigDiffResponse(_Answer):
    bots: dict[str, Any]


class ConfigApproveResponse(_Answer):
    approved: list[Any]
    unchanged: list[Any]


class ConfigReloadResponse(_Answer):
    result: str = Field(description="applied, unchanged or dry_run")
    sha256_before: str
    sha256_after: str
    changes: list[Any]
    not_applied: list[Any]
    bots: dict[str, Any]


class IncidentSnapshotResponse(_Answer):
    path: str
    members: int
    coordinator_running: bool
    notes: list[str]


class IncidentSummary(_Answer):
    id: int
    kind: str
    issue: str
    drill: bool
    status: str = Field(description="open or closed")
    detected_at: str
    opened_at: str
    opened_by: str


class IncidentsResponse(_Answer):
    incidents: list[IncidentSummary]


class IncidentRecord(_Answer):
    """Runbook 004's recovery log with the timeline measured from the audit log."""

    id: int
    kind: str
    issue: str
    drill: bool
    status: str
    detected_at: str
    bots: list[str]
    root_cause: str | None
    outcome: str | None
    lessons_learned: str | None
    objective_seconds: int
    notes: list[dict[str, Any]]
    actions_taken: list[str]
    checklist_items: list[dict[str, Any]]
    measurement: dict[str, Any] = Field(
        description="milestones, respond_seconds, recover_seconds, objective_met (null until "
        "every bot is back); frozen when closed"
    )


class ClosedIncidentRecord(IncidentRecord):
    unticked: list[str] = Field(description="the checklist items nobody ticked")
