"""GET /metrics and GET /alerts over real HTTP against a real Coordinator with paper bots: a
drill that fails orders shows in the counters, raises the failure-rate alert, reaches a local
webhook sink, and resolves once the window has moved past the failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken
from coordinator.config import load_config
from coordinator.metrics import registry as metrics_registry
from coordinator.runtime import Coordinator
from tests.support_config import eventually, write_fast_config

WEBHOOK_ENV = "TEST_ALERT_WEBHOOK_URL"


class ShiftedClock:
    """Real time plus an offset the test can push forward (to age a window)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def fast_alerts(documents: dict[str, Any]) -> None:
    alerts = documents["alerts.json"]
    alerts["evaluation_interval_seconds"] = 0.1
    alerts["rules"]["order_failure_rate"].update(
        min_orders=2, for_seconds=0, resolve_after_seconds=0
    )
    alerts["notifications"].update(
        webhook={"url_env": WEBHOOK_ENV, "initial_backoff_seconds": 0.05},
        group_wait_seconds=0,
    )


@pytest.fixture
async def sink() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


@pytest.fixture
async def drilled(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sink: tuple[str, list[dict[str, Any]]],
) -> AsyncIterator[tuple[TestClient, Coordinator, ShiftedClock]]:
    monkeypatch.setenv(WEBHOOK_ENV, sink[0])
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", fast_alerts))
    )
    (tmp_path / "data").mkdir()
    clock = ShiftedClock()
    coordinator = await Coordinator.open(config, tmp_path / "data", clock=clock)
    token = ControlToken("t" * 32, "env")
    try:
        async with TestClient(TestServer(make_app(coordinator, token))) as client:
            yield client, coordinator, clock
    finally:
        await coordinator.close(grace_seconds=0.5)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


async def metrics(client: TestClient) -> dict[Any, float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return samples(await response.text())


async def firing(client: TestClient) -> list[dict[str, Any]]:
    response = await client.get("/alerts")
    assert response.status == 200
    firing: list[dict[str, Any]] = (await response.json())["firing"]
    return firing


async def test_metrics_parse_and_show_the_bots_breakers_and_kill_switch(
    client: TestClient,
) -> None:
    found = await metrics(client)

    assert value(found, "bot_coordinator_kill_switch_active") == 0
    assert value(found, "bot_coordinator_bot_state", bot="ndax", state="stopped") == 1
    assert value(found, "bot_coordinator_bot_state", bot="ndax", state="running") == 0
    assert value(found, "bot_coordinator_breaker_state", breaker="global", state="closed") == 1
    assert value(found, "bot_coordinator_bot_balance", bot="ndax", asset="CAD") is not None
    assert value(found, "bot_coordinator_bot_pnl", bot="kraken", currency="AUD", kind="total") == 0


async def test_the_scrape_reads_the_figures_on_the_loop_and_writes_the_text_off_it(
    coordinator: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    written_in: list[str] = []
    real = metrics_registry.generate_latest

    def spy(source: Any) -> bytes:
        written_in.append(threading.current_thread().name)
        return real(source)

    monkeypatch.setattr(metrics_registry, "generate_latest", spy)
    off_loop = await coordinator.metrics.render_cooperatively()
    on_loop = coordinator.metrics.render()

    def steady(text: bytes) -> dict[Any, float]:  # the start-up's writes may still commit
        return {k: v for k, v in samples(text.decode()).items() if "store_commit" not in k[0]}

    assert steady(off_loop) == steady(on_loop)
    assert written_in[0] != threading.current_thread().name  # a worker thread
    assert written_in[1] == threading.current_thread().name


async def test_request_durations_are_labelled_by_route_template_never_by_raw_path(
    client: TestClient,
) -> None:
    for path in ("/status", "/no-such-page", "/no-such-page/12345"):
        await client.get(path)

    found = await metrics(client)
    routes = {
        dict(labels)["route"]
        for (name, labels) in found
        if name == "bot_coordinator_http_request_duration_seconds_count"
    }

    assert routes == {"/status", "unmatched"}
    assert value(
        found, "bot_coordinator_http_request_duration_seconds_count",
        route="unmatched", method="GET", status="404",
    ) == 2


async def test_a_drill_that_fails_orders_fires_the_alert_notifies_and_resolves(
    drilled: tuple[TestClient, Coordinator, ShiftedClock],
    sink: tuple[str, list[dict[str, Any]]],
) -> None:
    client, coordinator, clock = drilled
    _, received = sink
    headers = {"Authorization": "Bearer " + "t" * 32}
    assert (await client.post("/start", json={"bot": "ndax"}, headers=headers)).status == 200
    drill = {"bot": "ndax", "reject_next": 3}
    assert (await client.post("/paper/drill", json=drill, headers=headers)).status == 200

    for _ in range(300):
        alerts = await firing(client)
        if any(a["name"] == "order_failure_rate_high" for a in alerts):
            break
        await asyncio.sleep(0.02)
    high = next(a for a in alerts if a["name"] == "order_failure_rate_high")
    assert high["labels"] == {"bot": "ndax", "exchange": "ndax"}
    assert high["severity"] == "critical"
    assert high["value"] > 5
    assert high["threshold"] == 5
    assert high["runbook"].startswith("001")

    rejected = {"bot": "ndax", "exchange": "ndax"}
    for _ in range(300):
        found = await metrics(client)
        if value(found, "bot_coordinator_orders_total", **rejected, status="rejected") == 3:
            break
        await asyncio.sleep(0.02)
    assert value(found, "bot_coordinator_order_submits_total", **rejected, outcome="rejected") == 3
    assert value(
        found, "bot_coordinator_order_failures_total", **rejected, reason="drill",
        **{"class": "permanent"},
    ) == 3
    assert value(found, "bot_coordinator_orders_total", **rejected, status="rejected") == 3
    assert value(
        found, "bot_coordinator_alerts_firing", alertname="order_failure_rate_high",
        severity="critical",
    ) == 1

    await eventually(
        lambda: any("order_failure_rate_high" in str(m) for m in received),
        what="the webhook sink to hear of the alert",
    )
    message = next(m for m in received if "order_failure_rate_high" in str(m))
    assert "text" in message
    assert message["attachments"]

    clock.offset = timedelta(minutes=16)  # the failures fall out of the 15-minute window
    for _ in range(300):
        if not any(a["name"] == "order_failure_rate_high" for a in await firing(client)):
            break
        await asyncio.sleep(0.02)
    listing = await (await client.get("/alerts")).json()
    assert "order_failure_rate_high" in [a["name"] for a in listing["resolved"]]
    subject = "order_failure_rate_high bot=ndax,exchange=ndax"
    for _ in range(300):
        audit = await coordinator.journal.recent_audit(100)
        actions = {(e["action"], e["subject"]) for e in audit}
        if ("alert.resolved", subject) in actions:
            break
        await asyncio.sleep(0.02)
    assert ("alert.firing", subject) in actions
    assert ("alert.resolved", subject) in actions
    await eventually(
        lambda: any("resolved" in str(m).lower() for m in received),
        what="the webhook sink to hear it resolved",
    )


async def test_a_hanging_webhook_holds_up_neither_the_kill_switch_nor_the_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hung = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        hung.set()
        await asyncio.sleep(3600)
        return web.Response(text="never")

    app = web.Application()
    app.router.add_post("/hook", hang)
    sink = web.AppRunner(app, shutdown_timeout=0.1)  # its handler never ends by itself
    await sink.setup()
    await web.TCPSite(sink, "127.0.0.1", 0).start()
    monkeypatch.setenv(WEBHOOK_ENV, f"http://127.0.0.1:{sink.addresses[0][1]}/hook")

    def no_grouping(documents: dict[str, Any]) -> None:
        fast_alerts(documents)
        documents["alerts.json"]["notifications"]["webhook"]["timeout_seconds"] = 30

    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", no_grouping))
    )
    (tmp_path / "data").mkdir()
    coordinator = await Coordinator.open(config, tmp_path / "data")
    token = ControlToken("t" * 32, "env")
    try:
        async with TestClient(TestServer(make_app(coordinator, token))) as c:
            first = await c.post("/kill-switch", json={"action": "activate", "reason": "drill"})
            assert first.status == 200
            await asyncio.wait_for(hung.wait(), timeout=10)  # the alert is stuck in delivery

            runner = coordinator.supervisor.runner("ndax")
            again = await c.post("/kill-switch", json={"action": "activate", "reason": "again"})
            assert again.status == 200
            assert (await again.json())["already_active"] is True
            assert runner.state.value == "stopped"
    finally:
        # A hang guard, not a speed assertion: shutdown must end, whatever the webhook does.
        await asyncio.wait_for(coordinator.close(grace_seconds=0.5), timeout=15)
        await sink.cleanup()
