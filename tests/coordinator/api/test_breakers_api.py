"""Circuit breakers over HTTP: what /status and /breakers show, and the audited reset."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from coordinator.runtime import Coordinator
from tests.support_config import eventually

BREAKER_FIELDS = {
    "name",
    "state",
    "failures_in_window",
    "calls_in_window",
    "failure_rate",
    "opened_at",
    "open_since",
    "next_probe_at",
    "reason",
    "latched",
    "probes_in_flight",
    "trips",
}


def open_kraken(coordinator: Coordinator) -> None:
    threshold = coordinator.config.recovery.circuit_breaker.failure_threshold
    for _ in range(threshold):
        coordinator.safety.board.after_send("kraken", "transient")


async def test_status_shows_every_breaker_with_its_state_window_and_next_probe(
    client: TestClient, coordinator: Coordinator
) -> None:
    open_kraken(coordinator)

    body: dict[str, Any] = await (await client.get("/status")).json()

    breakers = body["circuit_breaker"]
    assert set(breakers) == {"global", "exchanges"}
    assert set(breakers["exchanges"]) == {"ndax", "kraken"}
    kraken = breakers["exchanges"]["kraken"]
    assert set(kraken) >= BREAKER_FIELDS
    assert kraken["state"] == "open"
    assert kraken["next_probe_at"] is not None
    assert breakers["exchanges"]["ndax"]["state"] == "closed"
    assert (await (await client.get("/breakers")).json()) == breakers


async def test_a_reset_closes_the_breaker_and_is_audited_with_the_approver(
    client: TestClient, coordinator: Coordinator, auth: dict[str, str]
) -> None:
    open_kraken(coordinator)

    response = await client.post(
        "/breakers/reset",
        json={"name": "kraken", "approved_by": "ops lead", "reason": "exchange is back"},
        headers=auth,
    )

    assert response.status == 200, await response.text()
    assert (await response.json())["state"] == "closed"
    events = {e["action"]: e for e in await coordinator.journal.recent_audit(5)}
    reset = events["breaker.reset"]
    assert (reset["subject"], reset["result"], reset["actor"]) == ("kraken", "ok", "operator-token")
    assert reset["details"]["approved_by"] == "ops lead"
    assert reset["reason"] == "exchange is back"
    # The breaker's own moves are safety decisions and are audited too.
    assert events["breaker.open"]["actor"] == "circuit-breaker"
    assert events["breaker.closed"]["subject"] == "kraken"
    stored = await coordinator.journal.load_safety_state()
    assert stored["breaker:kraken"]["state"] == "closed"  # on disk before the answer


async def test_a_reset_needs_the_token_an_approver_and_a_known_breaker(
    client: TestClient, auth: dict[str, str]
) -> None:
    no_token = await client.post("/breakers/reset", json={"name": "kraken", "approved_by": "x"})
    no_approver = await client.post("/breakers/reset", json={"name": "kraken"}, headers=auth)
    unknown = await client.post(
        "/breakers/reset", json={"name": "binance", "approved_by": "x"}, headers=auth
    )

    assert no_token.status == 401
    assert no_approver.status == 400
    assert "approved_by" in (await no_approver.json())["error"]["message"]
    assert unknown.status == 404
    assert "global, kraken, ndax" in (await unknown.json())["error"]["message"]


async def test_an_open_breaker_refuses_the_bots_orders_before_they_are_journaled(
    coordinator: Coordinator,
) -> None:
    open_kraken(coordinator)
    runner = await coordinator.supervisor.start("kraken")
    book = runner.parts.book

    await eventually(lambda: book.refusals.get("breaker_open", 0) >= 1, what="a breaker refusal")
    assert book.orders_count == 0
    assert "circuit breaker is open" in (book.last_refusal or "")
