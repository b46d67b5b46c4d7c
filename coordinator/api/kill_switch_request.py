"""Reading a kill switch request: stopping is never refused, only lifting is strict.

An operator in a hurry may send no body, no reason, a form-encoded or plain-text body, a typo in
a field or the action, or a scope that names nothing. Each of those still stops: a request that
asks to activate, or does not say what it wants, activates; the reason is recorded as given or
as "(no reason given)", and whatever could not be used is said in the answer's `notes`. Only
`override` and `force_override`, which lift a switch, are parsed strictly (`KillSwitchRequest`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

from aiohttp import web
from pydantic import ValidationError

from coordinator.api.requests import KillSwitchRequest, ScopeRequest, describe_errors
from coordinator.errors import BadRequest
from coordinator.safety.kill_switch import NO_REASON

LIFTING = frozenset({"override", "force_override"})
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class StopSwitchRequest:
    """An activation (or a reduce-only) as it was understood, with what was not."""

    action: Literal["activate", "reduce_only"]
    reason: str
    scope: ScopeRequest | None = None
    notes: list[str] = field(default_factory=list)


async def read_kill_switch_request(request: web.Request) -> KillSwitchRequest | StopSwitchRequest:
    """A lift (strict: BadRequest names the field) or a stop (never refused)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return StopSwitchRequest("activate", NO_REASON, notes=["the body was too large to read"])
    data, notes = _decode(raw, request.content_type)
    action = data.get("action")
    if action in LIFTING:
        try:
            return KillSwitchRequest.model_validate(data)
        except ValidationError as exc:
            raise BadRequest(describe_errors(exc)) from exc
    return _stop(data, notes)


def _decode(raw: bytes, content_type: str) -> tuple[dict[str, Any], list[str]]:
    """The body as a dict of fields: JSON (whatever the Content-Type says: `curl -d` sends
    JSON as form-encoded), else form fields, else the text as the reason."""
    if not raw.strip():
        return {}, []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {}, ["the body is not UTF-8 text: ignored"]
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        return data, []
    if data is not None:
        return {}, [f"the body is JSON but not an object ({type(data).__name__}): ignored"]
    if content_type == "application/x-www-form-urlencoded" and "=" in text:
        fields = parse_qs(text, keep_blank_values=True)
        return {key: values[-1] for key, values in fields.items()}, []
    return {"reason": text}, []


def _stop(data: dict[str, Any], notes: list[str]) -> StopSwitchRequest:
    action = data.get("action")
    kind: Literal["activate", "reduce_only"] = (
        "reduce_only" if action == "reduce_only" else "activate"
    )
    if action is not None and action not in ("activate", "reduce_only"):
        notes.append(f"action {str(action)[:40]!r} is not one of activate, reduce_only, override, "
                     "force_override: activated")
    unknown = sorted(set(data) - {"action", "reason", "scope", "approved_by"})
    if unknown:
        notes.append(f"unknown field(s) ignored: {', '.join(str(k)[:40] for k in unknown[:10])}")
    reason = data.get("reason")
    text = reason.strip() if isinstance(reason, str) else "" if reason is None else str(reason)
    scope: ScopeRequest | None = None
    if data.get("scope") not in (None, {}):
        try:
            scope = ScopeRequest.model_validate(data["scope"])
        except ValidationError as exc:
            notes.append(f"scope: {describe_errors(exc)}; applied to every bot instead")
    return StopSwitchRequest(kind, text[:MAX_REASON] or NO_REASON, scope, notes)
