"""Failed authentication is rate-limited per peer (429 with Retry-After) and audited without
flooding the store; a stop from this machine is never limited."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from coordinator.api.app import AUTH_THROTTLE
from coordinator.api.auth import (
    FAILURE_WINDOW_SECONDS,
    MAX_FAILURES,
    AuthThrottle,
    FailureAudit,
)

WRONG = {"Authorization": "Bearer not-the-token-at-all"}
STOP_BODY = {"bot": "kraken", "reason": "x"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(client: TestClient) -> FakeClock:
    fake = FakeClock()
    client.app[AUTH_THROTTLE].clock = fake
    return fake


async def audit_failures(client: TestClient) -> list[dict[str, Any]]:
    response = await client.get("/audit", params={"limit": "200"})
    events: list[dict[str, Any]] = (await response.json())["events"]
    return [e for e in events if e["action"] == "auth.failed"]


async def fail(client: TestClient, times: int, path: str = "/stop") -> None:
    for _ in range(times):
        response = await client.post(path, json=STOP_BODY, headers=WRONG)
        assert response.status == 401, await response.text()


@pytest.mark.usefixtures("clock")
async def test_after_five_wrong_tokens_even_the_right_one_gets_429_with_retry_after(
    client: TestClient, auth: dict[str, str]
) -> None:
    await fail(client, MAX_FAILURES)

    response = await client.post("/start", json={"bot": "kraken"}, headers=auth)

    assert response.status == 429
    assert response.headers["Retry-After"] == str(int(FAILURE_WINDOW_SECONDS))
    error = (await response.json())["error"]
    assert error["code"] == "too_many_requests"
    assert "127.0.0.1" in error["message"]
    bots = (await (await client.get("/status")).json())["bots"]
    assert {b["name"]: b["state"] for b in bots}["kraken"] != "running"


async def test_the_block_lasts_until_the_window_passes(
    client: TestClient, auth: dict[str, str], clock: FakeClock
) -> None:
    await fail(client, MAX_FAILURES)
    clock.now += FAILURE_WINDOW_SECONDS - 10.5

    response = await client.post("/stop", json=STOP_BODY, headers=auth)
    assert response.status == 429
    assert response.headers["Retry-After"] == "11"

    clock.now += 10.5
    response = await client.post("/start", json={"bot": "kraken"}, headers=auth)
    assert response.status == 200, await response.text()


@pytest.mark.usefixtures("clock")
async def test_a_right_token_resets_nothing(client: TestClient, auth: dict[str, str]) -> None:
    await fail(client, MAX_FAILURES - 1)
    assert (await client.post("/start", json={"bot": "kraken"}, headers=auth)).status == 200

    await fail(client, 1)

    assert (await client.post("/stop", json=STOP_BODY, headers=auth)).status == 429


@pytest.mark.usefixtures("clock")
async def test_a_missing_header_is_not_counted_as_a_guess(
    client: TestClient, auth: dict[str, str]
) -> None:
    for _ in range(MAX_FAILURES + 2):
        assert (await client.post("/stop", json=STOP_BODY)).status == 401

    assert (await client.post("/start", json={"bot": "kraken"}, headers=auth)).status == 200
    assert await audit_failures(client) == []


@pytest.mark.usefixtures("clock")
async def test_failures_are_audited_once_per_window_and_once_at_the_block(
    client: TestClient, auth: dict[str, str]
) -> None:
    await fail(client, MAX_FAILURES)
    for _ in range(3):
        assert (await client.post("/stop", json=STOP_BODY, headers=WRONG)).status == 429

    entries = await audit_failures(client)

    assert [e["result"] for e in entries] == ["rate_limited", "refused"]  # newest first
    for entry in entries:
        assert entry["actor"] == "unauthenticated"
        assert entry["subject"] == "POST /stop"
        assert entry["details"]["peer"] == "127.0.0.1"
    assert [e["details"]["failures_in_window"] for e in entries] == [MAX_FAILURES, 1]


@pytest.mark.usefixtures("clock")
async def test_a_wrong_token_sent_to_the_kill_switch_counts_too(
    client: TestClient, auth: dict[str, str]
) -> None:
    for _ in range(MAX_FAILURES):
        response = await client.post(
            "/kill-switch", json={"action": "override", "reason": "guess"}, headers=WRONG
        )
        assert response.status == 401

    lift = await client.post(
        "/kill-switch", json={"action": "override", "reason": "right"}, headers=auth
    )

    assert lift.status == 429
    assert "Retry-After" in lift.headers


@pytest.mark.usefixtures("clock")
@pytest.mark.parametrize("headers", [{}, WRONG], ids=["no-token", "wrong-token"])
async def test_a_blocked_loopback_peer_can_still_stop_everything(
    client: TestClient, headers: dict[str, str]
) -> None:
    await fail(client, MAX_FAILURES)

    for action in ("reduce_only", "activate"):
        response = await client.post(
            "/kill-switch", json={"action": action, "reason": "stop now"}, headers=headers
        )
        assert response.status == 200, await response.text()

    status = await (await client.get("/kill-switch")).json()
    assert status["active"] is True
    assert status["by"] == "loopback"


@pytest.mark.usefixtures("clock")
async def test_a_blocked_peers_valid_token_is_not_checked_even_when_it_stops(
    client: TestClient, auth: dict[str, str]
) -> None:
    """The stop goes through as loopback's: answering differently for the right token would
    tell a blocked guesser that it guessed right."""
    await fail(client, MAX_FAILURES)

    response = await client.post(
        "/kill-switch", json={"action": "activate", "reason": "stop"}, headers=auth
    )

    assert response.status == 200
    assert (await (await client.get("/kill-switch")).json())["by"] == "loopback"


# -- the throttle on its own --------------------------------------------------------------------


def test_one_peers_failures_never_block_another() -> None:
    clock = FakeClock()
    throttle = AuthThrottle(clock=clock)
    for _ in range(MAX_FAILURES):
        throttle.record_failure("192.0.2.7")

    assert throttle.retry_after("192.0.2.7") == int(FAILURE_WINDOW_SECONDS)
    assert throttle.retry_after("192.0.2.8") is None
    assert throttle.record_failure("192.0.2.8") == FailureAudit("refused", 1)


def test_audit_entries_are_capped_across_peers_per_window() -> None:
    clock = FakeClock()
    throttle = AuthThrottle(clock=clock, max_audits=3)

    audits = [throttle.record_failure(f"192.0.2.{n}") for n in range(1, 7)]

    assert audits == [
        FailureAudit("refused", 1),
        FailureAudit("refused", 1),
        FailureAudit("refused", 1),
        FailureAudit("audit_capped", 1),
        None,
        None,
    ]
    clock.now += FAILURE_WINDOW_SECONDS
    assert throttle.record_failure("192.0.2.50") == FailureAudit("refused", 1)


def test_the_peers_remembered_are_bounded() -> None:
    clock = FakeClock()
    throttle = AuthThrottle(clock=clock, max_peers=3, max_failures=2)
    for peer in ("a", "a", "b", "c", "d"):
        throttle.record_failure(peer)

    assert throttle.retry_after("a") is None  # the oldest window made room for "d"
    assert len(throttle._peers) == 3
