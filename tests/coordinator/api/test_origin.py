"""The browser rules: only our Host names are served, and a page elsewhere changes nothing.

Each refusal is checked against the state it protects (the kill switch still inactive, the bot
still stopped, no failed authentication counted), not only against its status code."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from coordinator.api.origin import allowed_hosts, host_name
from coordinator.runtime import Coordinator

ACTIVATE = {"action": "activate", "reason": "a page elsewhere says so"}


def own_origin(client: TestClient) -> str:
    return f"http://127.0.0.1:{client.port}"


async def kill_switch_active(client: TestClient) -> bool:
    document: dict[str, Any] = await (await client.get("/kill-switch")).json()
    return bool(document["active"])


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "https://evil.example:8000",
        "null",  # a sandboxed frame, a file:// page, a redirect across origins
        "http://localhost:3000",  # another port on this machine is another origin
        "http://127.0.0.1:1",
    ],
)
async def test_a_kill_switch_activation_from_another_origin_is_refused_and_nothing_stops(
    client: TestClient, origin: str
) -> None:
    response = await client.post("/kill-switch", json=ACTIVATE, headers={"Origin": origin})

    assert response.status == 403
    error = (await response.json())["error"]
    assert error["code"] == "cross_origin"
    assert origin in error["message"]
    assert "POST /kill-switch" in error["message"]
    assert not await kill_switch_active(client)


async def test_a_post_the_browser_marks_cross_site_is_refused_even_without_an_origin(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await client.post(
        "/start", json={"bot": "ndax"}, headers={**auth, "Sec-Fetch-Site": "cross-site"}
    )

    assert response.status == 403
    assert "Sec-Fetch-Site: cross-site" in (await response.json())["error"]["message"]
    bot = await (await client.get("/bots/ndax")).json()
    assert bot["state"] == "stopped"


async def test_the_dashboards_own_origin_may_activate_without_a_token(client: TestClient) -> None:
    response = await client.post(
        "/kill-switch",
        json=ACTIVATE,
        headers={"Origin": own_origin(client), "Sec-Fetch-Site": "same-origin"},
    )

    assert response.status == 200, await response.text()
    assert await kill_switch_active(client)


async def test_a_client_that_sends_no_origin_is_judged_by_the_token_rules_alone(
    client: TestClient, auth: dict[str, str]
) -> None:
    refused = await client.post("/start", json={"bot": "ndax"})
    started = await client.post("/start", json={"bot": "ndax"}, headers=auth)

    assert refused.status == 401
    assert started.status == 200


async def test_wrong_tokens_from_another_origin_do_not_use_up_the_operators_allowance(
    client: TestClient, auth: dict[str, str]
) -> None:
    """A page elsewhere guessing tokens through the operator's browser is refused before the
    token is looked at: the operator (same peer, 127.0.0.1) is not rate-limited by it."""
    for _ in range(20):
        response = await client.post(
            "/start",
            json={"bot": "ndax"},
            headers={"Authorization": "Bearer guess-guess-guess-guess", "Origin": "http://x.test"},
        )
        assert response.status == 403

    mine = await client.post("/start", json={"bot": "ndax"}, headers=auth)
    assert mine.status == 200, await mine.text()


@pytest.mark.parametrize("host", ["evil.example:8000", "evil.example", "192.0.2.1:8000"])
async def test_a_request_for_another_host_name_is_refused_as_dns_rebinding_would_send_it(
    client: TestClient, host: str
) -> None:
    read = await client.get("/status", headers={"Host": host})
    stop = await client.post(
        "/kill-switch", json=ACTIVATE, headers={"Host": host, "Origin": f"http://{host}"}
    )

    for response in (read, stop):
        assert response.status == 421
        error = (await response.json())["error"]
        assert error["code"] == "host_not_allowed"
        assert host in error["message"]
        assert "BOT_COORDINATOR_ALLOWED_HOSTS" in error["message"]
    assert not await kill_switch_active(client)


async def test_no_answer_allows_another_origin_to_read_it(client: TestClient) -> None:
    preflight = await client.options(
        "/kill-switch",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    read = await client.get("/status", headers={"Origin": "http://evil.example"})

    for response in (preflight, read):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


async def test_every_answer_forbids_framing_and_sniffing(client: TestClient) -> None:
    for path in ("/status", "/nope", "/"):
        response = await client.get(path)
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_allowed_hosts_are_the_loopback_names_the_bound_address_and_the_environment() -> None:
    assert allowed_hosts() == {"localhost", "127.0.0.1", "::1"}
    assert "10.0.0.5" in allowed_hosts("10.0.0.5")
    assert allowed_hosts("0.0.0.0") == allowed_hosts()  # every interface names no host
    extra = allowed_hosts(environ={"BOT_COORDINATOR_ALLOWED_HOSTS": "Ops.Example, [fd00::1]"})
    assert {"ops.example", "fd00::1"} <= extra


@pytest.mark.parametrize(
    ("authority", "name"),
    [("localhost:8000", "localhost"), ("[::1]:8000", "::1"), ("::1", "::1"), ("A.B", "a.b")],
)
def test_host_name_strips_the_port_and_the_brackets(authority: str, name: str) -> None:
    assert host_name(authority) == name


async def test_the_coordinator_is_untouched_by_refused_requests(
    client: TestClient, coordinator: Coordinator
) -> None:
    before = len(await coordinator.journal.recent_audit(100))
    await client.post("/kill-switch", json=ACTIVATE, headers={"Origin": "http://evil.example"})
    await client.post("/stop", json={"bot": "ndax"}, headers={"Host": "evil.example"})

    assert not coordinator.kill_switch.active
    assert len(await coordinator.journal.recent_audit(100)) == before
