"""Operator actions beyond start and stop: paper drills, and the audit of refused actions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient


async def audit_events(client: TestClient) -> list[dict[str, Any]]:
    response = await client.get("/audit?limit=50")
    assert response.status == 200
    events: list[dict[str, Any]] = (await response.json())["events"]
    return events


async def test_a_paper_drill_makes_the_next_orders_rejected_and_counted(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await client.post(
        "/paper/drill", json={"bot": "ndax", "reject_next": 2}, headers=auth
    )
    assert response.status == 200, await response.text()
    assert (await response.json()) == {"bot": "ndax", "drill": {"reject_next": "2"}}

    await client.post("/start", json={"bot": "ndax"}, headers=auth)

    async def ndax() -> dict[str, Any]:
        bots = (await (await client.get("/status")).json())["bots"]
        return next(b for b in bots if b["name"] == "ndax")

    seen: dict[str, Any] = {}

    async def two_rejections_then_a_fill() -> bool:
        seen.update(await ndax())
        return seen["order_errors"].get("drill", 0) == 2 and seen["fills"] >= 1

    await eventually_async(two_rejections_then_a_fill, "two drill rejections, then a fill")
    assert seen["orders"] >= 3  # the rejected orders are journaled too
    drill = [e for e in await audit_events(client) if e["action"] == "paper.drill"]
    assert drill[0]["subject"] == "ndax"
    assert drill[0]["result"] == "ok"
    assert drill[0]["actor"] == "operator-token"


async def test_a_paper_drill_needs_the_token_and_something_to_drill(
    client: TestClient, auth: dict[str, str]
) -> None:
    unauthorised = await client.post("/paper/drill", json={"bot": "ndax", "reject_next": 1})
    assert unauthorised.status == 401
    empty = await client.post("/paper/drill", json={"bot": "ndax"}, headers=auth)
    assert empty.status == 400
    assert "reject_next" in (await empty.json())["error"]["message"]
    bad_ratio = await client.post(
        "/paper/drill", json={"bot": "ndax", "partial_fill_ratio": 1.5}, headers=auth
    )
    assert bad_ratio.status == 400
    assert "partial_fill_ratio" in (await bad_ratio.json())["error"]["message"]
    unknown = await client.post(
        "/paper/drill", json={"bot": "binance", "fail_next": 1}, headers=auth
    )
    assert unknown.status == 404


async def test_a_refused_action_is_audited_with_the_reason(
    client: TestClient, auth: dict[str, str]
) -> None:
    unknown = await client.post("/start", json={"bot": "binance"}, headers=auth)
    assert unknown.status == 404
    stop_stopped = await client.post("/stop", json={"bot": "ndax"}, headers=auth)
    assert stop_stopped.status == 409

    events = await audit_events(client)
    by_action = {(e["action"], e["subject"]): e for e in events}
    assert by_action[("bot.start", "binance")]["result"].startswith("refused: no bot named")
    assert by_action[("bot.stop", "ndax")]["result"].startswith("refused: bot 'ndax' is stopped")


async def eventually_async(
    check: Callable[[], Awaitable[bool]], what: str, within: float = 5.0
) -> None:
    """Poll an async predicate until it holds; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)
