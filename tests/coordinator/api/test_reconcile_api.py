"""POST /reconcile and GET /reconcile: a report needs no token, applying does and is audited."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bots.exchanges.paper import PaperExchange
from coordinator.runtime import Coordinator


def drift(coordinator: Coordinator, amount: str = "-100") -> None:
    adapter = coordinator.supervisor.runner("kraken").parts.adapter
    assert isinstance(adapter, PaperExchange)
    adapter.move_funds("AUD", Decimal(amount))


async def error_of(client: TestClient, body: Any, status: int, **kw: Any) -> str:
    response = await client.post("/reconcile", json=body, **kw)
    assert response.status == status, await response.text()
    error = (await response.json())["error"]
    return f"{error['code']}: {error['message']}"


async def test_a_report_needs_no_token_and_shows_the_drift(
    client: TestClient, coordinator: Coordinator
) -> None:
    drift(coordinator)

    response = await client.post("/reconcile", json={})

    assert response.status == 200
    report = await response.json()
    assert report["applied"] is False
    kraken = next(b for b in report["bots"] if b["bot"] == "kraken")
    assert [(d["kind"], d["subject"], d["difference"]) for d in kraken["differences"]] == [
        ("balance_drift", "balance AUD", "-100")
    ]
    assert report["summary"]["remaining"] == 1


async def test_applying_needs_the_token(client: TestClient, coordinator: Coordinator) -> None:
    drift(coordinator)

    message = await error_of(client, {"apply": True}, 401)

    assert message.startswith("unauthorized: apply needs 'Authorization: Bearer <token>'")
    assert await error_of(client, {"apply": True}, 401, headers={"Authorization": "Bearer wrong"})
    assert coordinator.reconciler.last is None, "nothing ran"


async def test_applying_with_the_token_corrects_the_journal_and_is_audited(
    client: TestClient, coordinator: Coordinator, auth: dict[str, str]
) -> None:
    drift(coordinator)

    response = await client.post("/reconcile", json={"bot": "kraken", "apply": True}, headers=auth)

    assert response.status == 200
    report = await response.json()
    assert report["clean"] is True
    assert [c["kind"] for c in report["bots"][0]["corrections"]] == ["balance_drift"]
    (event,) = [
        e for e in await coordinator.journal.recent_audit(5) if e["action"] == "reconcile.apply"
    ]
    assert (event["actor"], event["subject"], event["result"]) == (
        "operator-token",
        "kraken",
        "ok",
    )
    assert event["details"]["corrections"] == 1


async def test_the_table_format_answers_text_for_a_terminal(
    client: TestClient, coordinator: Coordinator
) -> None:
    drift(coordinator)

    response = await client.post("/reconcile?format=table", json={"bot": "kraken"})

    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    assert "balance_drift" in text
    assert "balance AUD" in text


@pytest.mark.parametrize(
    ("body", "query", "status", "expected"),
    [
        pytest.param({"bot": "nope"}, "", 404, "unknown_bot", id="unknown-bot"),
        pytest.param(
            {"apply": "yes"}, "", 400, "apply: Input should be a valid boolean", id="apply"
        ),
        pytest.param({"bots": "kraken"}, "", 400, "bots: unknown field", id="unknown-field"),
        pytest.param({"bot": ""}, "", 400, "bot: String should have at least 1", id="empty-bot"),
        pytest.param({}, "?format=xml", 400, "format: must be 'json' or 'table'", id="format"),
    ],
)
async def test_a_bad_request_names_the_field_and_the_reason(
    client: TestClient, body: dict[str, Any], query: str, status: int, expected: str
) -> None:
    response = await client.post(f"/reconcile{query}", json=body)

    assert response.status == status
    error = (await response.json())["error"]
    assert expected in f"{error['code']}: {error['message']}"


async def test_get_shows_the_last_report_and_the_recent_runs(
    client: TestClient, coordinator: Coordinator
) -> None:
    empty = await (await client.get("/reconcile")).json()
    assert empty == {"last": None, "runs": []}
    drift(coordinator)
    await client.post("/reconcile", json={"bot": "kraken"})

    answer = await (await client.get("/reconcile")).json()

    assert answer["last"]["bots"][0]["differences"][0]["kind"] == "balance_drift"
    assert [(r["actor"], r["applied"], r["differences"]) for r in answer["runs"]] == [
        ("loopback", False, 1)
    ]
    status = await (await client.get("/status")).json()
    assert status["reconciliation"]["last"]["run_id"] == answer["runs"][0]["id"]
