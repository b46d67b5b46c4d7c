"""A live bot, end to end, on a mocked kraken: the real coordinator, gateway, journal, safety
layer and ccxt adapter, and ccxt's real kraken code; only kraken's HTTP endpoints are fakes.

The fake keeps its orders like kraken does: a grid bot's limit orders rest, the price moves
through one and it fills, the grid re-centres (cancelling the rest), and stopping the bot
cancels whatever still rests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from aioresponses import aioresponses

from coordinator.accounts import Accounts
from coordinator.config import load_config
from coordinator.runtime import Coordinator
from tests.bots.exchanges.ccxt_fixtures import KRAKEN_CREDENTIALS, KRAKEN_PRIVATE, requests_to
from tests.support_config import eventually, write_fast_config
from tests.support_kraken import FakeKraken, live_kraken, make_client, serving


@pytest.fixture
def fake() -> Iterator[tuple[FakeKraken, aioresponses]]:
    kraken = FakeKraken()
    with serving(kraken) as m:
        yield kraken, m


async def test_a_live_bot_places_fills_and_cancels_orders_on_kraken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: tuple[FakeKraken, aioresponses]
) -> None:
    kraken, m = fake
    monkeypatch.setenv("KRAKEN_API_KEY", KRAKEN_CREDENTIALS["apiKey"])
    monkeypatch.setenv("KRAKEN_API_SECRET", KRAKEN_CREDENTIALS["secret"])
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", live_kraken))
    )
    (tmp_path / "data").mkdir()
    coordinator = await Coordinator.open(config, tmp_path / "data", accounts=Accounts(make_client))
    try:
        runner = await coordinator.supervisor.start("kraken")
        book = runner.parts.book
        assert book.balances == {"BTC": Decimal("0.05"), "AUD": Decimal("10000")}
        await eventually(lambda: len(kraken.resting()) == 6, what="the grid's six orders resting")
        sent = [
            FakeKraken.form(r.kwargs) for r in requests_to(m, "POST", KRAKEN_PRIVATE + "AddOrder")
        ]
        assert {f["ordertype"] for f in sent} == {"limit"}
        assert all(f["cl_ord_id"].startswith("x") and len(f["cl_ord_id"]) <= 18 for f in sent)

        lowest_buy = min(
            (t for t in kraken.resting() if kraken.orders[t]["descr"]["type"] == "buy"),
            key=lambda t: Decimal(kraken.orders[t]["descr"]["price"]),
        )
        kraken.fill(lowest_buy)
        await eventually(lambda: book.fills_count == 1, what="the fill journaled")
        await eventually(
            lambda: len(kraken.orders) == 12 and len(kraken.resting()) == 6,
            what="the grid re-centred on the fill: five cancelled, six new",
        )
        assert kraken.orders[lowest_buy]["status"] == "closed"
        assert book.position.base == Decimal("0.001")

        kraken_health = coordinator.status()["exchanges"]["kraken"]
        assert kraken_health["state"] == "up"  # probed through the account's client
        assert kraken_health["latency_ms"] is not None
        await coordinator.supervisor.stop("kraken", "test over")
        assert kraken.resting() == []  # every resting order cancelled on kraken
        assert book.live_orders == {}
        rows = await coordinator.store.fetch_all(
            "SELECT status, COUNT(*) n FROM orders GROUP BY status"
        )
        counts = {row["status"]: row["n"] for row in rows}
        assert counts["filled"] == 1
        assert counts["canceled"] >= 11  # five cancelled at the re-centre, six at the stop
        assert set(counts) == {"filled", "canceled"}
    finally:
        await coordinator.close(grace_seconds=0.5)
