"""The config gate over HTTP: GET /config, GET /config/diff, POST /config/approve, and the
gate's answers on /start and /start-sequential."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken
from coordinator.config import load_config
from coordinator.config.models import CoordinatorConfig
from coordinator.runtime import Coordinator
from tests.support_config import write_fast_config


def change_ndax(documents: dict[str, Any]) -> None:
    bots = documents["bots.json"]["bots"]
    assert bots[0]["name"] == "ndax"
    bots[0]["strategy"]["params"]["quote_amount"] = 30


@pytest.fixture
async def changed_client(
    config: CoordinatorConfig, data_dir: Path, token: ControlToken, tmp_path: Path
) -> AsyncIterator[TestClient]:
    """A coordinator restarted with ndax's config changed since its first start approved it."""
    first = await Coordinator.open(config, data_dir)
    await first.close(grace_seconds=0.5)
    changed = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "changed", change_ndax))
    )
    second = await Coordinator.open(changed, data_dir)
    try:
        async with TestClient(TestServer(make_app(second, token))) as client:
            yield client
    finally:
        await second.close(grace_seconds=0.5)


async def error_of(response: ClientResponse, status: int) -> dict[str, str]:
    """The one error shape: {"error": {"code", "message"}} with the expected status."""
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return dict(body["error"])


async def json_of(client: TestClient, path: str, **params: str) -> Any:
    response = await client.get(path, params=params)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_get_config_shows_the_files_the_code_and_every_bot_approved(
    client: TestClient, config: CoordinatorConfig
) -> None:
    found = await json_of(client, "/config")

    assert found["dir"] == str(config.source_dir)
    assert found["changed_since_start"] == []
    assert set(found["files"]) >= {"bots.json", "bot-limits.json"}
    assert all(not f["changed"] and f["sha256_now"] == f["sha256_at_start"]
               for f in found["files"].values())  # fmt: skip
    assert found["code_version"].startswith(found["code_version"].split("+")[0] + "+")
    assert set(found["bots"]) == {"ndax", "kraken"}
    assert all(b["approved"] for b in found["bots"].values())
    assert {b["approved_by"] for b in found["bots"].values()} == {"(first start)"}


async def test_status_carries_the_config_section_and_each_bot_its_config_entry(
    client: TestClient,
) -> None:
    status = await json_of(client, "/status")
    one = await json_of(client, "/bots/ndax")

    assert status["config"]["unapproved_bots"] == []
    # The rest (when, which code version) is in GET /config: /status stays small.
    assert set(one["config"]) == {
        "sha256", "approved_sha256", "approved", "approved_by", "refusals",
    }  # fmt: skip
    assert "code_version" in status["config"]
    assert one["config"] == next(b for b in status["bots"] if b["name"] == "ndax")["config"]


async def test_the_diff_is_empty_for_an_approved_config(client: TestClient) -> None:
    found = await json_of(client, "/config/diff")

    diffs = {bot: entry["diff"] for bot, entry in found["bots"].items()}
    assert diffs == {"ndax": "", "kraken": ""}


async def test_the_diff_of_a_changed_bot_shows_the_changed_line(
    changed_client: TestClient,
) -> None:
    found = await json_of(changed_client, "/config/diff", bot="ndax")

    [(bot, entry)] = found["bots"].items()
    assert bot == "ndax"
    assert entry["approved"] is False
    assert '-        "quote_amount": "25"' in entry["diff"]
    assert '+        "quote_amount": "30"' in entry["diff"]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/config/diff?bot=nope", 404, "no bot named 'nope'"),
        ("/config/diff?bots=ndax", 400, "bots: unknown query parameter"),
        ("/config?x=1", 400, "x: unknown query parameter"),
    ],
)
async def test_a_bad_config_query_says_what_is_wrong(
    client: TestClient, path: str, status: int, message: str
) -> None:
    error = await error_of(await client.get(path), status)

    assert message in error["message"]


async def test_a_changed_bot_is_refused_with_409_until_approved_then_starts(
    changed_client: TestClient, auth: dict[str, str]
) -> None:
    refused = await error_of(
        await changed_client.post("/start", json={"bot": "ndax"}, headers=auth), 409
    )
    assert refused["code"] == "config_not_approved"
    assert "bot-coordinator config approve --approved-by WHO" in refused["message"]

    answer = await changed_client.post(
        "/config/approve", json={"approved_by": "ops lead", "reason": "new amount"}, headers=auth
    )

    assert answer.status == 200, await answer.text()
    body = await answer.json()
    [approval] = body["approved"]
    diff = (await json_of(changed_client, "/config/diff", bot="ndax"))["bots"]["ndax"]
    assert approval["bot"] == "ndax"
    assert approval["config_sha256"] == diff["sha256"] == diff["approved_sha256"]
    assert approval["previous_sha256"] not in (None, diff["sha256"])
    assert diff["diff"] == ""
    started = await changed_client.post("/start", json={"bot": "ndax"}, headers=auth)
    assert started.status == 200, await started.text()
    bot = (await started.json())["bot"]
    assert bot["config"]["refusals"] == 1
    assert bot["config"]["approved_by"] == "ops lead"


async def test_approving_needs_the_token(changed_client: TestClient) -> None:
    error = await error_of(
        await changed_client.post("/config/approve", json={"approved_by": "ops"}), 401
    )

    assert "Authorization: Bearer" in error["message"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "approved_by: required"),
        ({"approved_by": " "}, 400, "approved_by:"),
        ({"approved_by": "ops", "bots": []}, 400, "bots:"),
        ({"approved_by": "ops", "colour": "red"}, 400, "colour: unknown field"),
        ({"approved_by": "ops", "expected_sha256": {"ndax": "abc"}}, 400, "expected_sha256.ndax"),
        ({"approved_by": "ops", "bots": ["nope"]}, 404, "no bot named 'nope'"),
        ({"approved_by": "ops", "expected_sha256": {"ndax": "0" * 64}}, 409, "look at the diff"),
    ],
)
async def test_a_bad_approval_is_refused_naming_the_field_and_approves_nothing(
    changed_client: TestClient,
    auth: dict[str, str],
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    error = await error_of(await changed_client.post("/config/approve", json=body, headers=auth),
                           status)  # fmt: skip

    assert message in error["message"]
    assert (await json_of(changed_client, "/config"))["unapproved_bots"] == ["ndax"]


async def test_start_accepting_the_change_needs_an_approver(
    changed_client: TestClient, auth: dict[str, str]
) -> None:
    body = {"bot": "ndax", "accept_config_change": True}
    error = await error_of(await changed_client.post("/start", json=body, headers=auth), 400)

    assert "approved_by: required with accept_config_change" in error["message"]


async def test_start_accepting_the_change_with_an_approver_starts_it(
    changed_client: TestClient, auth: dict[str, str]
) -> None:
    body = {"bot": "ndax", "accept_config_change": True, "approved_by": "ops lead"}
    answer = await changed_client.post("/start", json=body, headers=auth)

    assert answer.status == 200, await answer.text()
    assert (await answer.json())["bot"]["config"]["approved_by"] == "ops lead"


async def test_start_sequential_is_not_ok_when_a_bot_is_refused(
    changed_client: TestClient, auth: dict[str, str]
) -> None:
    answer = await changed_client.post("/start-sequential", headers=auth)

    assert answer.status == 200
    body = await answer.json()
    assert body["ok"] is False
    assert list(body["refused"]) == ["ndax"]
    assert body["started"] == ["kraken"]


async def test_start_sequential_accepting_the_changes_starts_every_bot(
    changed_client: TestClient, auth: dict[str, str]
) -> None:
    body = {"accept_config_change": True, "approved_by": "ops lead"}
    answer = await changed_client.post("/start-sequential", json=body, headers=auth)

    assert answer.status == 200
    result = await answer.json()
    assert result["ok"] is True
    assert result["started"] == ["ndax", "kraken"]


async def test_start_sequential_accepting_without_an_approver_is_a_400(
    changed_client: TestClient, auth: dict[str, str]
) -> None:
    body = {"accept_config_change": True}
    error = await error_of(
        await changed_client.post("/start-sequential", json=body, headers=auth), 400
    )

    assert "approved_by" in error["message"]
