"""The control plane over real HTTP, against a real Coordinator (store, paper bots, audit)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken
from coordinator.runtime import Coordinator

BOT_KEYS = {
    "name",
    "exchange",
    "symbol",
    "mode",
    "state",
    "orders",
    "fills",
    "position",
    "pnl",
    "last_tick",
    "restarts",
    "error",
}

# Each mutating endpoint with a body that would change something if it were let through.
MUTATIONS = [
    pytest.param("/start", {"bot": "ndax"}, id="start"),
    pytest.param("/stop", {"bot": "kraken"}, id="stop"),
    pytest.param("/start-sequential", None, id="start-sequential"),
]


async def error_of(response: ClientResponse, status: int) -> dict[str, str]:
    """The error of a failed response, checking the one error shape every failure has."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert all(isinstance(v, str) and v for v in body["error"].values()), body
    return dict(body["error"])


async def states(client: TestClient) -> dict[str, str]:
    response = await client.get("/status")
    assert response.status == 200
    return {bot["name"]: bot["state"] for bot in (await response.json())["bots"]}


async def start_and_wait_running(client: TestClient, auth: dict[str, str], name: str) -> None:
    assert (await client.post("/start", json={"bot": name}, headers=auth)).status == 200
    for _ in range(200):
        if (await states(client))[name] == "running":
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"{name} did not reach running")


async def audit(client: TestClient, limit: int = 50) -> list[dict[str, Any]]:
    response = await client.get("/audit", params={"limit": str(limit)})
    assert response.status == 200
    events: list[dict[str, Any]] = (await response.json())["events"]
    return events


# -- reads ----------------------------------------------------------------------------------------


async def test_status_reports_every_bot_and_the_safety_state(client: TestClient) -> None:
    response = await client.get("/status")

    assert response.status == 200
    body = await response.json()
    assert body["kill_switch_active"] is False
    assert "circuit_breaker" in body
    assert [bot["name"] for bot in body["bots"]] == ["ndax", "kraken"]
    for bot in body["bots"]:
        assert set(bot) >= BOT_KEYS, BOT_KEYS - set(bot)
        assert bot["state"] == "stopped"
        assert bot["mode"] == "paper"
        assert bot["orders"] == 0
        assert bot["fills"] == 0
        assert bot["restarts"] == 0
        assert bot["error"] is None
        assert bot["last_tick"] is None
        assert set(bot["position"]) >= {"base", "avg_entry_price"}
        assert set(bot["pnl"]) >= {"realized", "unrealized", "total"}
    ndax, kraken = body["bots"]
    assert (ndax["exchange"], ndax["symbol"]) == ("ndax", "BTC/CAD")
    assert (kraken["exchange"], kraken["symbol"]) == ("kraken", "BTC/AUD")


async def test_status_for_one_bot_holds_that_bot_only(client: TestClient) -> None:
    everything = await (await client.get("/status")).json()

    one = await client.get("/status", params={"bot": "kraken"})
    alone = await client.get("/bots/kraken")

    assert one.status == 200
    body = await one.json()
    assert set(body) == set(everything)
    assert body["bots"] == [everything["bots"][1]]
    assert alone.status == 200
    assert await alone.json() == everything["bots"][1]


@pytest.mark.parametrize("path", ["/status?bot=binance", "/bots/binance"])
async def test_status_of_an_unknown_bot_is_a_404_naming_the_known_ones(
    client: TestClient, path: str
) -> None:
    error = await error_of(await client.get(path), 404)
    assert error["code"] == "unknown_bot"
    assert "ndax, kraken" in error["message"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?bots=ndax", "bots: unknown query parameter"),
        ("?view=compact", "view: must be 'full' or 'summary', got 'compact'"),
        ("?view=summary&bot=ndax", "view: 'summary' covers every bot"),
    ],
)
async def test_a_bad_status_query_is_a_400_naming_the_parameter(
    client: TestClient, query: str, named: str
) -> None:
    error = await error_of(await client.get("/status" + query), 400)
    assert named in error["message"]


async def test_the_summary_counts_bots_by_state_with_a_few_figures_each(
    client: TestClient, auth: dict[str, str]
) -> None:
    await start_and_wait_running(client, auth, "ndax")

    body = await (await client.get("/status", params={"view": "summary"})).json()

    assert body["kill_switch_active"] is False
    assert body["circuit_breaker_tripped"] is False
    assert body["bot_states"] == {"running": 1, "stopped": 1}
    assert [b["name"] for b in body["bots"]] == ["ndax", "kraken"]
    assert set(body["bots"][0]) == {
        "name", "exchange", "symbol", "mode", "state", "safe_mode", "orders", "fills",
        "open_orders", "last_tick", "error", "last_refusal", "trading",
    }  # fmt: skip


async def test_status_shows_a_change_made_in_place_after_it_was_last_read(
    client: TestClient, coordinator: Coordinator
) -> None:
    before = (await (await client.get("/bots/ndax")).json())
    book = coordinator.supervisor.runner("ndax").parts.book

    book.errors["timeout"] = book.errors.get("timeout", 0) + 1  # counters change in place
    book.refusals["max_open_orders"] = 2
    book.balances["CAD"] += 1
    after = await (await client.get("/bots/ndax")).json()

    assert after["order_errors"] == {**before["order_errors"], "timeout": 1}
    assert after["refusals"] == {"max_open_orders": 2}
    assert after["balances"]["CAD"] == before["balances"]["CAD"] + 1
    assert (await (await client.get("/bots/ndax")).json()) == after  # and nothing else moved


async def test_health_answers_without_a_token(client: TestClient) -> None:
    response = await client.get("/health")

    assert response.status == 200
    assert (await response.json())["status"] == "healthy"


async def test_a_running_bot_shows_ticks_orders_and_fills_in_status(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await client.post("/start", json={"bot": "ndax"}, headers=auth)
    assert response.status == 200

    async def ndax() -> dict[str, Any]:
        bots = (await (await client.get("/status")).json())["bots"]
        return next(bot for bot in bots if bot["name"] == "ndax")

    for _ in range(200):
        bot = await ndax()
        if bot["fills"] >= 1 and bot["state"] == "running":
            break
        await asyncio.sleep(0.02)
    assert bot["state"] == "running"
    assert bot["orders"] >= 1
    assert bot["fills"] >= 1
    assert bot["last_tick"] is not None
    assert bot["position"]["base"] > 0


# -- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), MUTATIONS)
async def test_a_mutation_without_a_token_is_refused_and_changes_nothing(
    client: TestClient,
    auth: dict[str, str],
    token: ControlToken,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    await start_and_wait_running(client, auth, "kraken")
    before = await states(client)
    events_before = await audit(client)

    error = await error_of(await client.post(path, json=body), 401)

    assert error["code"] == "unauthorized"
    assert "Authorization: Bearer" in error["message"]
    assert str(token.path) in error["message"]
    assert await states(client) == before
    assert before["ndax"] == "stopped"
    assert await audit(client) == events_before


async def test_every_post_route_needs_the_token(
    client: TestClient, coordinator: Coordinator, token: ControlToken
) -> None:
    app = make_app(coordinator, token)
    posts = sorted(
        route.resource.canonical
        for route in app.router.routes()
        if route.method == "POST" and route.resource is not None
    )
    assert {"/start", "/stop", "/start-sequential"} <= set(posts)
    # The one exception, on purpose: activating the kill switch needs no token from this
    # machine (stopping is always allowed); its override actions check tokens themselves
    # (tests/coordinator/api/test_kill_switch_api.py).
    posts.remove("/kill-switch")
    # And a reconciliation report only reads; applying one needs the token
    # (tests/coordinator/api/test_reconcile_api.py).
    posts.remove("/reconcile")

    for template in posts:
        # A route of one bot: a bot that exists; of one incident record: a number.
        path = template.replace("{name}", "ndax").replace("{id}", "1")
        error = await error_of(await client.post(path, json={"bot": "ndax"}), 401)
        assert error["code"] == "unauthorized", template
    assert set((await states(client)).values()) == {"stopped"}


@pytest.mark.parametrize(("path", "body"), MUTATIONS)
@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bearer not-the-token", id="wrong"),
        pytest.param("Bearer ", id="empty"),
        pytest.param("Basic {token}", id="wrong-scheme"),
        pytest.param("Bearer {token}x", id="token-plus-one"),
    ],
)
async def test_a_mutation_with_a_wrong_token_is_refused_and_changes_nothing(
    client: TestClient,
    auth: dict[str, str],
    token: ControlToken,
    path: str,
    body: dict[str, Any] | None,
    header: str,
) -> None:
    await start_and_wait_running(client, auth, "kraken")
    before = await states(client)
    events_before = await audit(client)

    response = await client.post(
        path, json=body, headers={"Authorization": header.format(token=token.value)}
    )

    error = await error_of(response, 401)
    assert error["code"] == "unauthorized"
    assert token.value not in error["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await states(client) == before
    # The only new entry is the failed authentication itself (tests/coordinator/api/
    # test_auth_rate_limit.py).
    after = await audit(client)
    assert [e for e in after if e["action"] != "auth.failed"] == events_before
    assert [e["actor"] for e in after if e["action"] == "auth.failed"] == ["unauthenticated"]


# -- request bodies -------------------------------------------------------------------------------


async def test_malformed_json_is_a_400_naming_line_and_column(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await client.post("/start", data=b'{\n  "bot": "ndax",\n}', headers=auth)

    error = await error_of(response, 400)
    assert error["code"] == "bad_request"
    assert "malformed JSON at line 3 column 1" in error["message"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'["ndax"]', "must be a JSON object, not list", id="array"),
        pytest.param(b'"ndax"', "must be a JSON object, not str", id="string"),
        pytest.param(b'{"bot": "ndax", "colour": "red"}', "colour: unknown field", id="unknown"),
        pytest.param(b'{"bot": "ndax", "safe_mode": "yes"}', "safe_mode:", id="safe-mode-str"),
        pytest.param(b'{"bot": "ndax", "safe_mode": 1}', "safe_mode:", id="safe-mode-int"),
        pytest.param(b'{"safe_mode": true}', "bot: required", id="missing-bot"),
        pytest.param(b"{}", "bot: required", id="empty-object"),
        pytest.param(b'{"bot": ""}', "bot:", id="empty-bot"),
        pytest.param(b'{"bot": 7}', "bot:", id="bot-not-a-string"),
        pytest.param(b'{"bot": "\xff"}', "not UTF-8", id="not-utf8"),
        pytest.param(b"[" * 5000 + b"]" * 5000, "nested too deeply", id="deeply-nested"),
        pytest.param(b'{"bot": 1' + b"0" * 5000 + b"}", "not usable JSON", id="huge-integer"),
    ],
)
async def test_a_bad_start_body_is_a_400_naming_the_problem(
    client: TestClient, auth: dict[str, str], body: bytes, expected: str
) -> None:
    response = await client.post("/start", data=body, headers=auth)

    error = await error_of(response, 400)
    assert error["code"] == "bad_request"
    assert expected in error["message"]
    assert (await states(client))["ndax"] == "stopped"


async def test_an_unknown_field_on_stop_is_a_400(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post("/stop", json={"bot": "ndax", "force": True}, headers=auth)

    error = await error_of(response, 400)
    assert "force: unknown field" in error["message"]


async def test_start_sequential_takes_no_fields(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post("/start-sequential", json={"bots": ["ndax"]}, headers=auth)

    error = await error_of(response, 400)
    assert "bots: unknown field" in error["message"]
    assert set((await states(client)).values()) == {"stopped"}


async def test_a_body_over_the_size_limit_is_a_413(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await client.post("/start", data=b'{"bot": "' + b"x" * 70_000 + b'"}', headers=auth)

    error = await error_of(response, 413)
    assert error["code"] == "request_too_large"


# -- control outcomes -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/start", "/stop"])
async def test_an_unknown_bot_is_a_404(client: TestClient, auth: dict[str, str], path: str) -> None:
    response = await client.post(path, json={"bot": "binance"}, headers=auth)

    error = await error_of(response, 404)
    assert error["code"] == "unknown_bot"
    assert "'binance'" in error["message"]
    assert "ndax, kraken" in error["message"]


async def test_start_then_stop_over_http(client: TestClient, auth: dict[str, str]) -> None:
    started = await client.post("/start", json={"bot": "kraken"}, headers=auth)
    assert started.status == 200
    body = await started.json()
    assert body["started"] == "kraken"
    assert body["bot"]["state"] == "starting"
    assert body["bot"]["safe_mode"] is False

    stopped = await client.post("/stop", json={"bot": "kraken", "reason": "test"}, headers=auth)

    assert stopped.status == 200
    body = await stopped.json()
    assert body["stopped"] == "kraken"
    assert body["bot"]["state"] == "stopped"
    assert body["bot"]["open_orders"] == 0
    assert body["bot"]["cancel_errors"] == []


async def test_start_with_safe_mode_over_http(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post("/start", json={"bot": "ndax", "safe_mode": True}, headers=auth)

    assert response.status == 200
    assert (await response.json())["bot"]["safe_mode"] is True


async def test_starting_a_started_bot_is_a_409(client: TestClient, auth: dict[str, str]) -> None:
    assert (await client.post("/start", json={"bot": "ndax"}, headers=auth)).status == 200

    error = await error_of(await client.post("/start", json={"bot": "ndax"}, headers=auth), 409)

    assert error["code"] == "wrong_state"


async def test_stopping_a_stopped_bot_is_a_409(client: TestClient, auth: dict[str, str]) -> None:
    error = await error_of(await client.post("/stop", json={"bot": "ndax"}, headers=auth), 409)

    assert error["code"] == "wrong_state"
    assert "stopped" in error["message"]


async def test_start_sequential_starts_both_bots(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post("/start-sequential", headers=auth)

    assert response.status == 200
    body = await response.json()
    assert body["ok"] is True
    assert body["started"] == ["ndax", "kraken"]
    assert body["failed"] is None
    assert set((await states(client)).values()) <= {"starting", "running"}


# -- the router's own errors ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/status/extra", "/ui/nope.js"])
async def test_an_unknown_route_is_a_404_in_json(client: TestClient, path: str) -> None:
    error = await error_of(await client.get(path), 404)

    assert error["code"] == "not_found"
    assert path in error["message"]


async def test_an_unknown_route_with_a_token_is_a_404_in_json(
    client: TestClient, auth: dict[str, str]
) -> None:
    error = await error_of(await client.post("/nope", headers=auth), 404)

    assert error["code"] == "not_found"


@pytest.mark.parametrize(("method", "path"), [("GET", "/start"), ("GET", "/stop")])
async def test_a_wrong_method_is_a_405_in_json(client: TestClient, method: str, path: str) -> None:
    response = await client.request(method, path)

    error = await error_of(response, 405)
    assert error["code"] == "method_not_allowed"
    assert "POST" in error["message"]
    assert "POST" in response.headers["Allow"]


async def test_an_exception_in_a_handler_is_a_500_with_a_ref_and_no_traceback(
    client: TestClient,
    coordinator: Coordinator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_status(bot: str | None = None) -> bytes:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(coordinator, "status_json", broken_status)

    with caplog.at_level(logging.ERROR, logger="coordinator.api.errors"):
        response = await client.get("/status")

    text = await response.text()
    error = await error_of(response, 500)
    assert error["code"] == "internal_error"
    assert "ref " in error["message"]
    for leak in ("Traceback", "RuntimeError", "secret internals", 'File "'):
        assert leak not in text
    ref = error["message"].split("ref ", 1)[1].split(")", 1)[0]
    logged = [r for r in caplog.records if ref in r.getMessage()]
    assert logged, "the ref is in the log, with the exception"
    assert logged[0].exc_info is not None


# -- audit ----------------------------------------------------------------------------------------


async def test_audit_lists_the_control_actions_just_made(
    client: TestClient, auth: dict[str, str]
) -> None:
    assert (await client.post("/start", json={"bot": "ndax"}, headers=auth)).status == 200
    assert (await client.post("/start", json={"bot": "ndax"}, headers=auth)).status == 409
    stop = {"bot": "ndax", "reason": "end of test"}
    assert (await client.post("/stop", json=stop, headers=auth)).status == 200

    events = await audit(client, limit=3)

    assert [(e["action"], e["subject"], e["actor"]) for e in events] == [
        ("bot.stop", "ndax", "operator-token"),
        ("bot.start", "ndax", "operator-token"),
        ("bot.start", "ndax", "operator-token"),
    ]
    assert events[0]["result"] == "ok"
    assert events[0]["details"]["reason"] == "end of test"
    assert events[1]["result"].startswith("refused: ")
    assert events[2]["result"] == "ok"
    assert events[2]["details"] == {"safe_mode": False}
    assert [e["action"] for e in await audit(client)][-1] == "coordinator.start"


async def test_audit_records_a_start_sequential(client: TestClient, auth: dict[str, str]) -> None:
    assert (await client.post("/start-sequential", headers=auth)).status == 200

    (event,) = await audit(client, limit=1)

    assert event["action"] == "bots.start_sequential"
    assert event["result"] == "ok"
    assert event["details"]["outcome"]["started"] == ["ndax", "kraken"]


@pytest.mark.parametrize("limit", ["0", "abc", "-1", "1001", "1.5", "", "\u00b2"])
async def test_a_bad_audit_limit_is_a_400(client: TestClient, limit: str) -> None:
    error = await error_of(await client.get("/audit", params={"limit": limit}), 400)

    assert error["code"] == "bad_request"
    assert "limit" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/status", "GET,HEAD"),
        ("DELETE", "/kill-switch", "GET,HEAD,POST"),
        ("PATCH", "/bots/ndax", "GET,HEAD"),
        ("PUT", "/bots/ndax/enable", "POST"),
    ],
)
async def test_a_method_a_route_does_not_have_is_405_with_allow_before_any_token_is_asked(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)  # no token: 405 all the same, never 401

    error = await error_of(response, 405)
    assert error["code"] == "method_not_allowed"
    assert response.headers["Allow"].replace(" ", "") == allow


async def test_an_unknown_route_is_404_without_a_token_too(client: TestClient) -> None:
    error = await error_of(await client.put("/nope"), 404)

    assert error["code"] == "not_found"


@pytest.mark.parametrize(
    ("path", "allow"), [("/status", "GET,HEAD,OPTIONS"), ("/kill-switch", "GET,HEAD,OPTIONS,POST")]
)
async def test_options_answers_204_with_the_routes_methods_and_no_cors(
    client: TestClient, path: str, allow: str
) -> None:
    response = await client.options(path, headers={"Origin": "https://example.com"})

    assert response.status == 204
    assert response.headers["Allow"].replace(" ", "") == allow
    assert "Access-Control-Allow-Origin" not in response.headers
    assert await response.read() == b""


async def test_head_is_a_get_without_its_body(client: TestClient) -> None:
    got = await client.get("/status")
    head = await client.head("/status")

    assert head.status == got.status == 200
    assert head.headers["Content-Type"] == got.headers["Content-Type"]
    assert await head.read() == b""
