"""Self-trade prevention and the stale data guard as a real Coordinator wires them: two paper
bots naming one paper account share one simulated venue account, /status names each bot's
account and siblings, and refusals reach /metrics by code."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bots.exchanges.paper import PaperExchange
from bots.models import MarketSnapshot, OrderIntent, OrderType, Side
from coordinator.config import load_config
from coordinator.config.models import CoordinatorConfig
from coordinator.metrics.collector import CoordinatorCollector
from coordinator.runtime import Coordinator
from tests.support_config import write_fast_config

D = Decimal
SYMBOL = "BTC/AUD"


def share_kraken_account(documents: dict[str, Any]) -> None:
    """A second grid bot, kraken-b, on the kraken bot's paper account "desk"."""
    bots = documents["bots.json"]["bots"]
    kraken = next(bot for bot in bots if bot["name"] == "kraken")
    twin = copy.deepcopy(kraken)
    twin["name"] = "kraken-b"
    bots.append(twin)
    for bot in (kraken, twin):
        bot["paper"]["account"] = "desk"


@pytest.fixture
def config(tmp_path: Path) -> CoordinatorConfig:
    """The fast config with kraken-b (the `coordinator` fixture opens a Coordinator on it)."""
    return load_config(write_fast_config(tmp_path / "config", share_kraken_account))


def samples(coordinator: Coordinator, name: str) -> dict[tuple[str, ...], float]:
    collected = CoordinatorCollector(coordinator).collect()
    family = next(m for m in collected if m.name == f"bot_coordinator_{name}")
    return {tuple(s.labels.values()): s.value for s in family.samples}


async def test_bots_naming_one_paper_account_share_one_venue_account(
    coordinator: Coordinator,
) -> None:
    venues = {
        name: coordinator.supervisor.runner(name).parts.adapter
        for name in ("kraken", "kraken-b", "ndax")
    }
    kraken, twin, ndax = venues["kraken"], venues["kraken-b"], venues["ndax"]

    assert isinstance(kraken, PaperExchange)
    assert isinstance(twin, PaperExchange)
    assert isinstance(ndax, PaperExchange)
    assert kraken.account is not None
    assert twin.account is not None
    assert kraken.account.account is twin.account.account
    assert ndax.account is None  # names no account: one of its own


async def test_status_names_each_bots_account_and_its_self_trade_siblings(
    coordinator: Coordinator,
) -> None:
    def account(name: str) -> Any:
        return coordinator.bot_status(coordinator.supervisor.runner(name))["account"]

    assert account("kraken") == {
        "name": "paper account 'desk' on kraken",
        "self_trade_siblings": ["kraken-b"],
    }
    assert account("kraken-b")["self_trade_siblings"] == ["kraken"]
    assert account("ndax") == {"name": "paper account of ndax", "self_trade_siblings": []}


async def test_a_cross_of_a_siblings_resting_order_is_refused_and_counted_in_metrics(
    coordinator: Coordinator,
) -> None:
    market = MarketSnapshot(SYMBOL, D(150000), D(149990), D(150010), datetime.now(UTC))
    kraken = coordinator.supervisor.runner("kraken").gateway()
    twin = coordinator.supervisor.runner("kraken-b").gateway()
    for gateway in (kraken, twin):
        await gateway.sync(market)

    resting = await twin.submit(
        OrderIntent(SYMBOL, Side.SELL, OrderType.LIMIT, D("0.001"), D(151000))
    )
    crossing = await kraken.submit(
        OrderIntent(SYMBOL, Side.BUY, OrderType.LIMIT, D("0.001"), D(151500))
    )

    assert resting.outcome == "sent"
    assert (crossing.outcome, crossing.code) == ("refused", "self_trade")
    assert "would cross kraken-b's resting sell" in crossing.reason
    assert samples(coordinator, "risk_refusals")[("kraken", "self_trade")] == 1
    ages = samples(coordinator, "bot_market_data_age_seconds")
    assert set(ages) == {("kraken",), ("kraken-b",)}  # ndax has had no price yet
    status = coordinator.bot_status(coordinator.supervisor.runner("kraken"))
    assert status["refusals"] == {"self_trade": 1}
    assert status["last_price_at"] is not None
