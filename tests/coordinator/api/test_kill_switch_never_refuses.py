"""The kill switch never refuses to stop: any request to activate, or that does not say what it
wants, activates from this machine, with the reason as given or "(no reason given)"; only
lifting is strict."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from coordinator.api.kill_switch_request import NO_REASON
from coordinator.api.requests import MAX_BODY_BYTES
from coordinator.runtime import Coordinator

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TEXT = {"Content-Type": "text/plain"}

CASES: list[tuple[str, Any, dict[str, str], str, str | None]] = [
    # (what, body, headers, the reason recorded, a note the answer carries)
    ("no body", None, {}, NO_REASON, None),
    ("an empty object", b"{}", {}, NO_REASON, None),
    ("activate without a reason", b'{"action": "activate"}', {}, NO_REASON, None),
    ("a blank reason", b'{"action": "activate", "reason": "  "}', {}, NO_REASON, None),
    ("a reason without an action", b'{"reason": "fat finger"}', {}, "fat finger", None),
    ("a form-encoded body", b"action=activate&reason=from+a+form", FORM, "from a form", None),
    ("a text body", b"everything is on fire", TEXT, "everything is on fire", None),
    ("curl -d with JSON", b'{"action": "activate", "reason": "curl"}', FORM, "curl", None),
    ("an unknown field", b'{"action": "activate", "reason": "r", "colour": "red"}', {}, "r",
     "unknown field(s) ignored: colour"),
    ("an unknown action", b'{"action": "halt", "reason": "r"}', {}, "r", "action 'halt'"),
    ("malformed JSON", b'{"action": "activate", "reason": ', {}, '{"action": "activate", '
     '"reason":', None),
    ("a JSON array", b"[1, 2]", {}, NO_REASON, "not an object (list)"),
    ("a reason that is a number", b'{"reason": 42}', {}, "42", None),
    ("bytes that are not UTF-8", b"\xff\xfe\x00stop", {}, NO_REASON, "not UTF-8"),
    ("a body too large", b"x" * (MAX_BODY_BYTES + 1), TEXT, NO_REASON, "too large"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "body", "headers", "reason", "note"), CASES, ids=[case[0] for case in CASES]
)
async def test_any_request_to_stop_stops_everything_and_records_the_reason(
    client: TestClient,
    coordinator: Coordinator,
    what: str,
    body: bytes | None,
    headers: dict[str, str],
    reason: str,
    note: str | None,
) -> None:
    response = await client.post("/kill-switch", data=body, headers=headers)

    answer = await response.json()
    assert response.status == 200, answer
    assert coordinator.kill_switch.active
    assert answer["reason"] == reason
    assert answer["by"] == "loopback"
    if note is None:
        assert "notes" not in answer
    else:
        assert any(note in line for line in answer["notes"]), answer["notes"]
    [entry] = [e for e in await coordinator.journal.recent_audit(10)
               if e["action"] == "kill_switch.activate"]
    assert (entry["result"], entry["reason"]) == ("ok", reason)


async def test_a_reduce_only_without_a_reason_is_taken_too(
    client: TestClient, coordinator: Coordinator
) -> None:
    response = await client.post("/kill-switch", json={"action": "reduce_only"})

    answer = await response.json()
    assert response.status == 200, answer
    assert answer["switch"]["state"] == "reducing"
    assert answer["switch"]["reason"] == NO_REASON


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "override"}, "reason: required"),
        ({"action": "override", "reason": "ok", "colour": 1}, "colour: unknown field"),
        ({"action": "force_override", "reason": "ok", "approved_by": " "}, "approved_by:"),
    ],
)
async def test_lifting_stays_strict(
    client: TestClient, auth: dict[str, str], body: dict[str, Any], message: str
) -> None:
    await client.post("/kill-switch")

    response = await client.post("/kill-switch", json=body, headers=auth)

    assert response.status == 400
    assert (await response.json())["error"]["message"].startswith(message)
