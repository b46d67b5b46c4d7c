"""The config gate's endpoints: what each bot runs, the diff to what was approved, approving.

- `GET /config`: the config section of /status (the directory, the code version, each config
  file's sha256 at start and now, the files changed since start) and, per bot, the sha256 of
  its effective config, the approved one and who approved it when.
- `GET /config/diff[?bot=NAME]`: per bot, a unified diff from the approved config (JSON,
  indented, keys sorted) to the effective one; empty when they are the same.
- `POST /config/approve {"approved_by", "bots"?, "reason"?, "expected_sha256"?}` (token):
  approve the effective config of `bots` (left out: every bot whose config is not approved);
  each approval is audited with both hashes. `expected_sha256` (bot -> the sha256 the approver
  reviewed) refuses, 409, a bot whose effective config is another one, so what is approved is
  what was shown (the CLI sends it).
- `POST /config/reload {"approved_by"?, "reason"?, "dry_run"?}` (token): re-read `config/` and
  apply what can change while running (`coordinator/config_reload.py`); 422 with every problem
  for an invalid config (the running one is kept), 409 when a running bot's effective config
  changes and no approver is named. `dry_run`: the diff and the plan, nothing applied.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.app import COORDINATOR, OPERATOR, fast_json
from coordinator.api.requests import parse_body
from coordinator.config_approval import MAX_APPROVER_LENGTH
from coordinator.errors import BadRequest

SHA256_PATTERN = r"^[0-9a-f]{64}$"


class ConfigApproveRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    approved_by: str = Field(min_length=1, max_length=MAX_APPROVER_LENGTH, pattern=r"\S")
    bots: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, min_length=1, max_length=10_000
    )
    reason: str = Field(default="approved by operator", min_length=1, max_length=500)
    expected_sha256: dict[str, Annotated[str, Field(pattern=SHA256_PATTERN)]] | None = None


class ConfigReloadRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    approved_by: str | None = Field(
        default=None, min_length=1, max_length=MAX_APPROVER_LENGTH, pattern=r"\S"
    )
    reason: str | None = Field(default=None, min_length=1, max_length=500)
    dry_run: bool = False


def add_config_routes(app: web.Application) -> None:
    app.router.add_get("/config", get_config)
    app.router.add_get("/config/diff", get_config_diff)
    app.router.add_post("/config/approve", post_config_approve)
    app.router.add_post("/config/reload", post_config_reload)


async def get_config(request: web.Request) -> web.Response:
    _no_query(request, frozenset())
    gate = request.app[COORDINATOR].config_gate
    bots = {bot: gate.bot_entry(bot) for bot in gate.fingerprints}
    reloads = request.app[COORDINATOR].reloader.status()
    return fast_json({**gate.status(), "reload": reloads, "bots": bots})


async def get_config_diff(request: web.Request) -> web.Response:
    _no_query(request, frozenset({"bot"}))
    gate = request.app[COORDINATOR].config_gate
    return fast_json(gate.diff_document(request.query.get("bot")))


async def post_config_approve(request: web.Request) -> web.Response:
    body = await parse_body(request, ConfigApproveRequest)
    gate = request.app[COORDINATOR].config_gate
    result = await gate.approve(
        body.bots, body.approved_by, body.reason, OPERATOR, expected=body.expected_sha256
    )
    return fast_json(result)


async def post_config_reload(request: web.Request) -> web.Response:
    body = await parse_body(request, ConfigReloadRequest)
    reloader = request.app[COORDINATOR].reloader
    result = await reloader.reload(
        OPERATOR, "POST /config/reload", body.approved_by, body.reason, body.dry_run
    )
    return fast_json(result)


def _no_query(request: web.Request, known: frozenset[str]) -> None:
    unknown = sorted(set(request.query) - known)
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise BadRequest(f"{unknown[0]}: unknown query parameter (known: {listed})")
