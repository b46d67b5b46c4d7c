"""Endpoint failover on a live kraken account: the primary stops answering, the account moves to
the backup after the configured number of failed probes and keeps trading there, then returns
to the primary as soon as it answers. ccxt's real kraken code runs; only the hosts are fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses

from coordinator.accounts import Accounts
from coordinator.config import load_config
from coordinator.runtime import Coordinator
from tests.bots.exchanges.ccxt_fixtures import (
    KRAKEN_ASSETS,
    KRAKEN_CREDENTIALS,
    KRAKEN_PAIRS,
    kraken_balance,
    kraken_ok,
    requests_to,
)
from tests.support_config import eventually, write_fast_config
from tests.support_kraken import PRIVATE_ENDPOINTS, TICKER, FakeKraken, _logged, make_client

PRIMARY = "https://api.kraken.com"
BACKUP = "https://kraken-backup.example.com"
STATUS_OK = kraken_ok({"status": "online", "timestamp": "2026-11-23T12:00:00Z"})


class Primary:
    """kraken's primary host, which the test can take down and bring back."""

    up = True

    def status(self, url: Any, **kwargs: Any) -> CallbackResult:
        if not self.up:
            raise aiohttp.ClientConnectionError("primary is down")
        return CallbackResult(payload=STATUS_OK)


@pytest.fixture
def hosts() -> Iterator[tuple[FakeKraken, Primary, aioresponses]]:
    kraken, primary = FakeKraken(), Primary()
    with aioresponses() as m:
        for host in (PRIMARY, BACKUP):
            m.get(host + "/0/public/Assets", payload=KRAKEN_ASSETS, repeat=True)
            m.get(host + "/0/public/AssetPairs", payload=KRAKEN_PAIRS, repeat=True)
            m.get(host + "/0/public/Ticker?pair=XBTAUD", payload=kraken_ok(TICKER), repeat=True)
            m.post(
                host + "/0/private/BalanceEx",
                payload=kraken_balance(ZAUD=("10000", "0"), XXBT=("0.05", "0")),
                repeat=True,
            )
            for endpoint in PRIVATE_ENDPOINTS:  # one order book behind both hosts
                m.post(
                    host + f"/0/private/{endpoint}", callback=_logged(kraken, endpoint), repeat=True
                )
        m.get(PRIMARY + "/0/public/SystemStatus", callback=primary.status, repeat=True)
        m.get(BACKUP + "/0/public/SystemStatus", payload=STATUS_OK, repeat=True)
        yield kraken, primary, m


def live_dca_with_backup(documents: dict[str, Any]) -> None:
    bots = documents["bots.json"]["bots"]
    kraken = next(b for b in bots if b["name"] == "kraken")
    kraken.update(
        mode="live",
        market_data="exchange",
        tick_interval_seconds=0.05,
        strategy={"name": "dca", "params": {"quote_amount": 50, "interval_seconds": 0.1}},
    )
    documents["bots.json"]["bots"] = [kraken]
    documents["bot-limits.json"]["bots"] = {}
    documents["api-endpoints.json"]["exchanges"]["kraken"] = {"primary": PRIMARY, "backup": BACKUP}


def add_orders_to(m: aioresponses, host: str) -> int:
    return len(requests_to(m, "POST", host + "/0/private/AddOrder"))


async def test_a_dead_primary_fails_over_to_the_backup_and_back(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hosts: tuple[FakeKraken, Primary, aioresponses],
) -> None:
    _, primary, m = hosts
    monkeypatch.setenv("KRAKEN_API_KEY", KRAKEN_CREDENTIALS["apiKey"])
    monkeypatch.setenv("KRAKEN_API_SECRET", KRAKEN_CREDENTIALS["secret"])
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", live_dca_with_backup))
    )
    (tmp_path / "data").mkdir()
    coordinator = await Coordinator.open(config, tmp_path / "data", accounts=Accounts(make_client))
    try:
        assert coordinator.health is not None
        failover = coordinator.health.failovers["kraken"]
        runner = await coordinator.supervisor.start("kraken")
        await eventually(lambda: runner.parts.book.fills_count >= 1, what="a fill via the primary")
        assert add_orders_to(m, BACKUP) == 0

        primary.up = False
        threshold = config.endpoints.health_check_config.failure_threshold
        for probe in range(threshold):
            assert failover.active == "primary", probe
            await coordinator.health.check("kraken")

        assert failover.active == "backup"
        assert coordinator.status()["exchanges"]["kraken"]["endpoint"]["url"] == BACKUP
        await eventually(lambda: add_orders_to(m, BACKUP) >= 1, what="orders sent to the backup")

        await failover.check_primary()  # still down: stays on the backup
        assert failover.active == "backup"
        primary.up = True
        await failover.check_primary()
        assert failover.active == "primary"
        sent_to_backup = add_orders_to(m, BACKUP)
        await eventually(
            lambda: add_orders_to(m, PRIMARY) > 1 and add_orders_to(m, BACKUP) == sent_to_backup,
            what="orders back on the primary",
        )
        actions = [e["action"] for e in await coordinator.journal.recent_audit(50)]
        assert "endpoint.backup" in actions
        assert "endpoint.primary" in actions
    finally:
        await coordinator.close(grace_seconds=0.5)
