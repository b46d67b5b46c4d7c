"""Request bodies: strict models, and one parser that names the field and the reason."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from coordinator.errors import BadRequest

MAX_BODY_BYTES = 64 * 1024

Model = TypeVar("Model", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StartRequest(_Body):
    bot: str = Field(min_length=1, max_length=64)
    safe_mode: StrictBool = False
    # The config gate: start although the effective config is not the approved one, recording
    # `approved_by` as its approver (both needed; coordinator/config_approval.py).
    accept_config_change: StrictBool = False
    approved_by: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"\S")


class StartSequentialRequest(_Body):
    """An empty body starts every stopped bot whose config is approved."""

    accept_config_change: StrictBool = False
    approved_by: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"\S")


class StopRequest(_Body):
    bot: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="stopped by operator", min_length=1, max_length=500)


class EmptyRequest(_Body):
    pass


class ScopeRequest(_Body):
    """What a kill switch request covers: one exchange's bots or one bot (neither: all)."""

    exchange: str | None = Field(default=None, min_length=1, max_length=32)
    bot: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one(self) -> ScopeRequest:
        if self.exchange is not None and self.bot is not None:
            raise ValueError("name an exchange or a bot, not both")
        if self.exchange is None and self.bot is None:
            raise ValueError("name an exchange or a bot (leave scope out for everything)")
        return self


class KillSwitchRequest(_Body):
    action: Literal["activate", "reduce_only", "override", "force_override"]
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")
    approved_by: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"\S")
    scope: ScopeRequest | None = None


class EnableRequest(_Body):
    """Re-enable a bot the execution throttle disabled (a person's decision, audited)."""

    approved_by: str = Field(min_length=1, max_length=100, pattern=r"\S")
    reason: str = Field(default="re-enabled by operator", min_length=1, max_length=500)


class BreakerResetRequest(_Body):
    name: str = Field(min_length=1, max_length=64)
    approved_by: str = Field(min_length=1, max_length=100, pattern=r"\S")
    reason: str = Field(default="reset by operator", min_length=1, max_length=500)


class PaperDrillRequest(_Body):
    """Tell a paper bot's exchange to misbehave, for drills: reject or fail the next orders, or
    fill only part of each order from now on."""

    bot: str = Field(min_length=1, max_length=64)
    reject_next: int | None = Field(default=None, ge=0, le=1000)
    fail_next: int | None = Field(default=None, ge=0, le=1000)
    partial_fill_ratio: Decimal | None = Field(default=None, gt=0, le=1)
    # The next ticks crash, as a bug in the bot would (a crash loop, runbook 004 Scenario 1).
    crash_next: int | None = Field(default=None, ge=0, le=1000)
    # The offline feed's price moves this many percent per tick (a one-way market; 0 ends it).
    market_trend_pct_per_tick: Decimal | None = Field(default=None, ge=-10, le=10)


class ReconcileRequest(_Body):
    """Compare the journal with the exchanges; `apply` corrects the journal (needs the token)."""

    bot: str | None = Field(default=None, min_length=1, max_length=64)
    apply: StrictBool = False


async def parse_body(request: web.Request, model: type[Model]) -> Model:
    raw = await request.read()
    data: Any = {}
    if raw.strip():
        try:
            data = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise BadRequest("the request body is not UTF-8 text") from exc
        except json.JSONDecodeError as exc:
            raise BadRequest(
                f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from exc
        except RecursionError as exc:
            raise BadRequest("the request body is nested too deeply") from exc
        except ValueError as exc:  # an integer longer than int() accepts (4300 digits)
            raise BadRequest(f"the request body is not usable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe_errors(exc)) from exc


def describe_errors(exc: ValidationError) -> str:
    """Every problem of a request body, each naming its field and the reason."""
    return "; ".join(_describe(error) for error in exc.errors())


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    if error["type"] == "missing":
        return f"{field}: required"
    return f"{field}: {error['msg']}"
