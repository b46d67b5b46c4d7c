"""The kill switch over HTTP: the runbook's drill, the cooldown, the tokens, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken
from coordinator.config.models import CoordinatorConfig
from coordinator.runtime import Coordinator
from tests.support_config import FakeClock, eventually


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def coordinator(
    config: CoordinatorConfig, data_dir: Path, clock: FakeClock
) -> AsyncIterator[Coordinator]:
    opened = await Coordinator.open(config, data_dir, clock=clock)
    try:
        yield opened
    finally:
        await opened.close(grace_seconds=0.5)


async def status(client: TestClient) -> dict[str, Any]:
    response = await client.get("/status")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def counts_on_disk(coordinator: Coordinator) -> tuple[int, int]:
    orders = await coordinator.store.fetch_one("SELECT COUNT(*) FROM orders")
    fills = await coordinator.store.fetch_one("SELECT COUNT(*) FROM fills")
    assert orders is not None
    assert fills is not None
    return int(orders[0]), int(fills[0])


async def activate(client: TestClient, headers: dict[str, str] | None = None) -> Any:
    return await client.post(
        "/kill-switch", json={"action": "activate", "reason": "drill"}, headers=headers or {}
    )


async def test_activating_without_a_token_from_this_machine_stops_every_bot_and_all_trading(
    client: TestClient, coordinator: Coordinator, auth: dict[str, str]
) -> None:
    await client.post("/start-sequential", headers=auth)
    ndax, kraken = (coordinator.supervisor.runner(name).parts.book for name in ("ndax", "kraken"))
    # ndax buys every 200 ms; kraken's grid rests (the fast config holds its price still).
    await eventually(
        lambda: ndax.fills_count > 0 and len(kraken.live_orders) > 0,
        what="ndax filling and kraken's ladder resting",
    )

    response = await activate(client)  # no token: stopping is always allowed from loopback

    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["active"] is True
    assert body["by"] == "loopback"
    assert body["trigger"] == "manual"
    after = await counts_on_disk(coordinator)
    await eventually(
        lambda: all(r.state.value == "stopped" for r in coordinator.supervisor.runners.values()),
        what="every bot stopped",
    )
    await asyncio.sleep(0.3)  # several tick intervals: nothing may trade any more
    assert await counts_on_disk(coordinator) == after
    snapshot = await status(client)
    assert snapshot["kill_switch_active"] is True
    assert snapshot["kill_switch"]["reason"] == "drill"
    assert all(bot["open_orders"] == 0 for bot in snapshot["bots"])
    assert (
        await coordinator.store.fetch_all(
            "SELECT client_order_id FROM orders WHERE status IN ('pending_submit', 'open')"
        )
        == []
    )


async def test_no_bot_may_start_while_the_switch_is_active(
    client: TestClient, auth: dict[str, str]
) -> None:
    await activate(client)

    start = await client.post("/start", json={"bot": "ndax"}, headers=auth)
    sequence = await client.post("/start-sequential", headers=auth)

    for response in (start, sequence):
        assert response.status == 409
        assert "kill switch is active" in (await response.json())["error"]["message"]


async def test_activating_an_active_switch_is_idempotent_and_audited(
    client: TestClient, coordinator: Coordinator
) -> None:
    first = await (await activate(client)).json()
    second = await (await activate(client)).json()

    assert first["already_active"] is False
    assert second["already_active"] is True
    assert second["at"] == first["at"]
    assert second["activations_in_window"] == 1
    events = await coordinator.journal.recent_audit(10)
    assert [e["action"] for e in events].count("kill_switch.activate") == 2


async def test_an_activation_commits_its_state_and_its_audit_entry_in_one_safety_write(
    client: TestClient, coordinator: Coordinator
) -> None:
    before = coordinator.store.stats.safety_commits

    body = await (await activate(client)).json()

    assert body["audited"] is True
    # The switch with its audit entry in one write; then, once it is durable, the incident
    # record the activation opened (coordinator/incidents), in a write of its own.
    assert coordinator.store.stats.safety_commits == before + 2
    events = await coordinator.journal.recent_audit(10)
    (entry,) = [e for e in events if e["action"] == "kill_switch.activate"]
    assert entry["result"] == "ok"
    (opened,) = [e for e in events if e["action"] == "incident.open"]
    assert opened["id"] > entry["id"]
    timing = body["last_activation_timing"]
    assert 0 <= timing["gate_closed_ms"] <= timing["durable_ms"]


async def test_override_inside_the_cooldown_is_refused_with_the_time_left(
    client: TestClient, auth: dict[str, str], clock: FakeClock
) -> None:
    await activate(client)
    clock.advance(minutes=5)  # the shipped cooldown is 15 minutes

    response = await client.post(
        "/kill-switch", json={"action": "override", "reason": "fixed"}, headers=auth
    )

    assert response.status == 409
    message = (await response.json())["error"]["message"]
    assert "cooldown for 10m00s more" in message
    assert (await status(client))["kill_switch_active"] is True


async def test_override_after_the_cooldown_lifts_the_switch_and_starts_no_bot(
    client: TestClient, auth: dict[str, str], clock: FakeClock
) -> None:
    await activate(client)
    clock.advance(minutes=15, seconds=1)

    response = await client.post(
        "/kill-switch", json={"action": "override", "reason": "fixed"}, headers=auth
    )

    assert response.status == 200, await response.text()
    snapshot = await status(client)
    assert snapshot["kill_switch_active"] is False
    assert snapshot["kill_switch"]["last_lifted"]["kind"] == "override"
    assert {bot["state"] for bot in snapshot["bots"]} == {"stopped"}  # gradual recovery
    start = await client.post("/start", json={"bot": "ndax", "safe_mode": True}, headers=auth)
    assert start.status == 200


@pytest.mark.parametrize(
    ("headers", "body", "status_code", "code"),
    [
        pytest.param("admin", {"reason": "r"}, 400, "bad_request", id="no-approved_by"),
        pytest.param(
            "auth", {"reason": "r", "approved_by": "cto"}, 403, "forbidden", id="operator-token"
        ),
        pytest.param(
            None, {"reason": "r", "approved_by": "cto"}, 401, "unauthorized", id="no-token"
        ),
        pytest.param("admin", {"approved_by": "cto"}, 400, "bad_request", id="no-reason"),
    ],
)
async def test_force_override_is_refused_without_the_admin_token_and_an_approver(
    client: TestClient,
    request: pytest.FixtureRequest,
    headers: str | None,
    body: dict[str, str],
    status_code: int,
    code: str,
) -> None:
    await activate(client)
    sent = request.getfixturevalue(headers) if headers else {}

    response = await client.post(
        "/kill-switch", json={"action": "force_override", **body}, headers=sent
    )

    assert response.status == status_code, await response.text()
    assert (await response.json())["error"]["code"] == code
    assert (await status(client))["kill_switch_active"] is True


async def test_force_override_with_the_admin_token_and_an_approver_lifts_it_in_the_cooldown(
    client: TestClient, admin: dict[str, str], coordinator: Coordinator
) -> None:
    await activate(client)

    response = await client.post(
        "/kill-switch",
        json={"action": "force_override", "reason": "false alarm", "approved_by": "risk officer"},
        headers=admin,
    )

    assert response.status == 200, await response.text()
    lifted = (await response.json())["last_lifted"]
    assert lifted["approved_by"] == "risk officer"
    assert lifted["by"] == "admin-token"
    event = (await coordinator.journal.recent_audit(1))[0]
    assert event["action"] == "kill_switch.force_override"
    assert event["details"]["approved_by"] == "risk officer"


async def test_override_needs_a_token_and_a_reason(
    client: TestClient, auth: dict[str, str]
) -> None:
    await activate(client)
    no_token = await client.post("/kill-switch", json={"action": "override", "reason": "x"})
    no_reason = await client.post("/kill-switch", json={"action": "override"}, headers=auth)
    blank = await client.post(
        "/kill-switch", json={"action": "override", "reason": "  "}, headers=auth
    )
    extra = await client.post(
        "/kill-switch", json={"action": "override", "reason": "x", "colour": 1}, headers=auth
    )

    assert no_token.status == 401
    assert no_reason.status == 400
    assert (await no_reason.json())["error"]["message"] == "reason: required"
    assert blank.status == 400
    assert extra.status == 400
    assert (await extra.json())["error"]["message"] == "colour: unknown field"


async def test_the_switch_is_still_active_after_the_process_dies_and_restarts(
    config: CoordinatorConfig,
    data_dir: Path,
    clock: FakeClock,
    token: ControlToken,
    auth: dict[str, str],
) -> None:
    first = await Coordinator.open(config, data_dir, clock=clock)
    async with TestClient(TestServer(make_app(first, token))) as client:
        await activate(client)
    # No clean shutdown: the process "dies" with only what is on disk.
    await first.store.close()

    second = await Coordinator.open(config, data_dir, clock=clock)
    try:
        async with TestClient(TestServer(make_app(second, token))) as client:
            assert (await status(client))["kill_switch_active"] is True
            start = await client.post("/start", json={"bot": "ndax"}, headers=auth)
            assert start.status == 409
    finally:
        await second.close(grace_seconds=0.5)


async def test_the_answer_comes_once_the_gate_is_closed_and_the_halt_is_reported_when_done(
    client: TestClient,
    coordinator: Coordinator,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reply does not wait for the halt: with the venue slow to cancel, the switch is
    active and durable when the answer comes, and GET /kill-switch shows the halt under way,
    then when it completed."""
    runner = coordinator.supervisor.runner("kraken")
    assert (await client.post("/start", json={"bot": "kraken"}, headers=auth)).status == 200
    await eventually(lambda: len(runner.parts.book.live_orders) >= 2, what="the grid resting")
    adapter = runner.parts.adapter
    release = asyncio.Event()
    real_cancel = adapter.cancel_order

    async def slow_cancel(client_order_id: int, symbol: str) -> Any:
        await release.wait()  # the venue takes its time
        return await real_cancel(client_order_id, symbol)

    adapter.cancel_order = slow_cancel  # type: ignore[method-assign]
    # An answer that waited for the halt would now wait until the venue is released.
    monkeypatch.setattr("coordinator.runtime.HALT_WAIT_SECONDS", 3600.0)

    answer = await asyncio.wait_for(activate(client), timeout=30)  # a hang guard

    assert answer.status == 200
    body = await answer.json()
    assert body["active"] is True
    assert body["halt"]["in_progress"] is True
    assert body["halt_completed_at"] is None
    stored = await coordinator.journal.load_safety_state()
    assert stored["kill_switch"]["active"] is True  # durable before the answer
    during = await (await client.get("/kill-switch")).json()
    assert during["halt"]["orders_open"] >= 2
    assert during["halt"]["bots_not_stopped"] >= 1

    release.set()
    for _ in range(300):
        after = await (await client.get("/kill-switch")).json()
        if after["halt"]["completed_at"] is not None:
            break
        await asyncio.sleep(0.01)
    assert after["halt"]["in_progress"] is False
    assert after["halt_completed_at"] == after["halt"]["completed_at"]
    assert (after["halt"]["orders_open"], after["halt"]["bots_not_stopped"]) == (0, 0)
