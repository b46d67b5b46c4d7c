"""The /incidents routes on a real server: records opened, noted, closed, exported."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from coordinator.runtime import Coordinator


async def open_one(client: TestClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post("/incidents", json={"issue": "ndax rejects", **body},
                                 headers=auth)  # fmt: skip
    assert response.status == 200, await response.text()
    record: dict[str, Any] = await response.json()
    return record


async def test_a_record_is_opened_noted_closed_and_exported(
    client: TestClient, auth: dict[str, str]
) -> None:
    record = await open_one(client, auth, kind="purchase_failure", bots=["kraken"], by="alice")
    assert record["opened_by"] == "alice (operator-token)"
    assert record["objective_seconds"] == 300

    noted = await client.post(f"/incidents/{record['id']}/notes", headers=auth, json={
        "text": "topped up the account", "action": True, "tick": ["document"], "by": "bob"})
    assert noted.status == 200
    assert (await noted.json())["actions_taken"] == ["topped up the account"]

    closed = await client.post(f"/incidents/{record['id']}/close", headers=auth, json={
        "root_cause": "insufficient funds", "outcome": "success", "by": "alice"})
    body = await closed.json()
    assert closed.status == 200
    assert body["status"] == "closed"
    assert "document" not in body["unticked"]
    assert "train_team" in body["unticked"]

    markdown = await client.get(f"/incidents/{record['id']}/markdown")
    assert markdown.content_type == "text/plain"
    text = await markdown.text()
    assert "- **Root cause:** insufficient funds" in text
    assert "## Timeline" in text

    listed = await (await client.get("/incidents?status=closed")).json()
    assert [r["id"] for r in listed["incidents"]] == [record["id"]]


async def test_a_kill_switch_activation_names_the_record_it_opened(
    client: TestClient, coordinator: Coordinator
) -> None:
    response = await client.post("/kill-switch", json={"reason": "ndax drawdown"})
    answer = await response.json()

    record = await (await client.get(f"/incidents/{answer['incident']}")).json()
    assert record["source"] == "kill_switch.activate"
    assert record["bots"] == list(coordinator.supervisor.runners)


async def test_the_records_need_the_token_to_change(client: TestClient) -> None:
    for path in ("/incidents", "/incidents/1/notes", "/incidents/1/close"):
        response = await client.post(path, json={})
        assert response.status == 401, path
    assert (await client.get("/incidents")).status == 200


async def test_bad_input_names_the_field(client: TestClient, auth: dict[str, str]) -> None:
    record = await open_one(client, auth)
    cases = [
        ("/incidents", {"issue": ""}, "issue"),
        ("/incidents", {"issue": "x", "kind": "meltdown"}, "kind"),
        ("/incidents", {"issue": "x", "bots": ["nosuch"]}, "bots: 'nosuch' is not a bot"),
        ("/incidents", {"issue": "x", "detected_at": "2026-12-01T09:00:00"}, "detected_at"),
        ("/incidents", {"issue": "x", "detected_at": "2999-01-01T00:00:00Z"}, "in the future"),
        ("/incidents", {"issue": "x", "colour": "red"}, "colour"),
        (f"/incidents/{record['id']}/notes", {"tick": ["nap"]}, "'nap' is not on the checklist"),
        (f"/incidents/{record['id']}/notes", {}, "text"),
        (f"/incidents/{record['id']}/close", {"root_cause": "x", "outcome": "meh"}, "outcome"),
        (f"/incidents/{record['id']}/close", {"outcome": "success"}, "root_cause"),
    ]
    for path, body, expected in cases:
        response = await client.post(path, json=body, headers=auth)
        message = (await response.json())["error"]["message"]
        assert response.status == 400, (path, body, message)
        assert expected in message, (path, body, message)


async def test_unknown_and_malformed_ids_are_not_found(
    client: TestClient, auth: dict[str, str]
) -> None:
    for path in ("/incidents/999", "/incidents/abc", "/incidents/%C2%B2", "/incidents/9" * 1):
        assert (await client.get(path)).status == 404, path
    response = await client.post("/incidents/999/notes", json={"text": "x"}, headers=auth)
    assert response.status == 404


async def test_a_closed_record_refuses_changes(client: TestClient, auth: dict[str, str]) -> None:
    record = await open_one(client, auth)
    close = {"root_cause": "r", "outcome": "failure"}
    assert (await client.post(f"/incidents/{record['id']}/close", json=close,
                              headers=auth)).status == 200  # fmt: skip

    again = await client.post(f"/incidents/{record['id']}/notes", json={"text": "late"},
                              headers=auth)  # fmt: skip
    assert again.status == 409
    assert "closed" in (await again.json())["error"]["message"]


async def test_the_list_query_is_checked(client: TestClient) -> None:
    for query, field in (("status=gone", "status"), ("limit=0", "limit"), ("limit=x", "limit"),
                         ("sort=id", "sort")):  # fmt: skip
        response = await client.get(f"/incidents?{query}")
        assert response.status == 400, query
        assert (await response.json())["error"]["message"].startswith(field)
