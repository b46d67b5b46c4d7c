"""GET /health over real HTTP against a real Coordinator: 200 while healthy or degraded, 503
when a person must act (a failing store, a kill switch, an exchange down)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aioresponses import aioresponses

from coordinator.accounts import Accounts
from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken
from coordinator.config import CoordinatorConfig, load_config
from coordinator.runtime import Coordinator
from coordinator.store.sqlite import StoreError
from tests.bots.exchanges.ccxt_fixtures import (
    KRAKEN_ASSETS,
    KRAKEN_CREDENTIALS,
    KRAKEN_PAIRS,
    kraken_balance,
    kraken_ok,
)
from tests.support_config import write_fast_config
from tests.support_kraken import TICKER, make_client

KRAKEN = "https://api.kraken.com"


async def health(client: TestClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/health")
    return response.status, await response.json()


async def test_a_fresh_coordinator_is_healthy_with_measured_store_latency(
    client: TestClient,
) -> None:
    status, body = await health(client)

    assert status == 200
    assert body["status"] == "healthy"
    assert set(body) == {"status", "services", "checked_at"}
    services = body["services"]
    assert {"database", "exchanges", "bots", "backups", "kill_switch"} <= set(services)
    database = services["database"]
    assert database["status"] == "healthy"
    assert isinstance(database["latency_ms"], float)
    assert database["latency_ms"] > 0  # a real round trip, not a constant
    assert set(services["bots"]) == {"ndax", "kraken"}
    assert services["bots"]["ndax"] == {
        "status": "healthy", "state": "stopped", "mode": "paper", "heartbeat_age_s": None,
        "stale": False, "unresolved_orders": 0, "error": None,
    }
    assert services["kill_switch"]["active"] is False


async def test_a_running_bot_reports_its_heartbeat_age(
    client: TestClient, auth: dict[str, str]
) -> None:
    assert (await client.post("/start", json={"bot": "ndax"}, headers=auth)).status == 200
    for _ in range(200):
        _, body = await health(client)
        if body["services"]["bots"]["ndax"]["heartbeat_age_s"] is not None:
            break
        await asyncio.sleep(0.02)

    ndax = body["services"]["bots"]["ndax"]
    assert ndax["state"] in ("starting", "running")
    assert 0 <= ndax["heartbeat_age_s"] < 5
    assert body["status"] == "healthy"


async def test_an_active_kill_switch_makes_it_unhealthy(client: TestClient) -> None:
    answer = await client.post("/kill-switch", json={"action": "activate", "reason": "drill"})
    assert answer.status == 200

    status, body = await health(client)

    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["services"]["kill_switch"]["status"] == "unhealthy"
    assert body["services"]["kill_switch"]["reason"] == "drill"


async def test_a_store_that_cannot_answer_makes_it_unhealthy(
    config: CoordinatorConfig, data_dir: Path, token: ControlToken
) -> None:
    coordinator = await Coordinator.open(config, data_dir)
    try:
        async with TestClient(TestServer(make_app(coordinator, token))) as client:
            await coordinator.store.close()  # the database is gone from under it

            status, body = await health(client)

        assert status == 503
        database = body["services"]["database"]
        assert database["status"] == "unhealthy"
        assert database["latency_ms"] is None
        assert "closed" in database["error"]
    finally:
        with contextlib.suppress(StoreError):  # its own last audit cannot be written either
            await coordinator.close(grace_seconds=0.5)


# -- a live exchange, mocked at the HTTP layer ------------------------------------------------


def live_kraken(documents: dict[str, Any]) -> None:
    bots = documents["bots.json"]["bots"]
    kraken = next(b for b in bots if b["name"] == "kraken")
    kraken.update(mode="live", market_data="exchange")
    documents["bots.json"]["bots"] = [kraken]
    documents["bot-limits.json"]["bots"] = {}


class SystemStatus:
    """kraken's SystemStatus: answers, answers 500, or the test's choice."""

    def __init__(self) -> None:
        self.failing = False


@pytest.fixture
def kraken_status() -> Iterator[tuple[SystemStatus, aioresponses]]:
    status = SystemStatus()
    with aioresponses(passthrough=["http://127.0.0.1"]) as m:
        m.get(KRAKEN + "/0/public/Assets", payload=KRAKEN_ASSETS, repeat=True)
        m.get(KRAKEN + "/0/public/AssetPairs", payload=KRAKEN_PAIRS, repeat=True)
        m.get(KRAKEN + "/0/public/Ticker?pair=XBTAUD", payload=kraken_ok(TICKER), repeat=True)
        m.post(
            KRAKEN + "/0/private/BalanceEx",
            payload=kraken_balance(ZAUD=("10000", "0"), XXBT=("0.05", "0")),
            repeat=True,
        )

        def answer(url: Any, **kwargs: Any) -> Any:
            from aioresponses import CallbackResult

            if status.failing:
                return CallbackResult(status=500, body="Internal Server Error")
            return CallbackResult(payload=kraken_ok({"status": "online", "timestamp": "t"}))

        m.get(KRAKEN + "/0/public/SystemStatus", callback=answer, repeat=True)
        yield status, m


async def test_a_failing_exchange_degrades_then_makes_it_unhealthy(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kraken_status: tuple[SystemStatus, aioresponses],
) -> None:
    status, _ = kraken_status
    monkeypatch.setenv("KRAKEN_API_KEY", KRAKEN_CREDENTIALS["apiKey"])
    monkeypatch.setenv("KRAKEN_API_SECRET", KRAKEN_CREDENTIALS["secret"])
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", live_kraken))
    )
    (tmp_path / "data").mkdir()
    coordinator = await Coordinator.open(config, tmp_path / "data", accounts=Accounts(make_client))
    token = ControlToken("t" * 32, "env")
    try:
        assert coordinator.health is not None
        async with TestClient(TestServer(make_app(coordinator, token))) as client:
            await coordinator.health.check("kraken")
            code, body = await health(client)
            assert code == 200
            kraken = body["services"]["exchanges"]["kraken"]
            assert kraken["status"] == "healthy"
            assert kraken["endpoint"] == "primary"
            assert kraken["latency_ms"] > 0  # the last probe's, measured

            status.failing = True
            await coordinator.health.check("kraken")
            code, body = await health(client)
            assert code == 200
            assert body["status"] == "degraded"
            assert body["services"]["exchanges"]["kraken"]["status"] == "degraded"
            assert body["services"]["exchanges"]["kraken"]["latency_ms"] is None

            for _ in range(config.endpoints.health_check_config.failure_threshold):
                await coordinator.health.check("kraken")
            code, body = await health(client)
            assert code == 503
            kraken = body["services"]["exchanges"]["kraken"]
            assert kraken["status"] == "unhealthy"
            assert kraken["last_error"]
    finally:
        await coordinator.close(grace_seconds=0.5)
