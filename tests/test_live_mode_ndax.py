"""A live bot, end to end, on a mocked ndax: the real coordinator and ccxt's real ndax code
against a stateful fake of ndax's order endpoints. A grid bot's limit orders rest, one fills,
the grid re-centres (cancelling the rest), and stopping the bot cancels what still rests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from coordinator.accounts import Accounts
from coordinator.config import load_config
from coordinator.runtime import Coordinator
from tests.support_config import eventually, write_fast_config
from tests.support_ndax import ENV, FakeNdax, live_ndax_grid, make_client, serving


@pytest.fixture
def fake() -> Iterator[FakeNdax]:
    ndax = FakeNdax()
    with serving(ndax):
        yield ndax


async def test_a_live_bot_places_fills_and_cancels_orders_on_ndax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeNdax
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", live_ndax_grid))
    )
    (tmp_path / "data").mkdir()
    coordinator = await Coordinator.open(config, tmp_path / "data", accounts=Accounts(make_client))
    try:
        runner = await coordinator.supervisor.start("ndax")
        book = runner.parts.book
        assert book.balances == {"BTC": Decimal("0.05"), "CAD": Decimal("10000")}
        await eventually(lambda: len(fake.resting()) == 2, what="the grid's two orders resting")
        buy = next(i for i in fake.resting() if fake.orders[i]["Side"] == "Buy")
        assert all(type(o["ClientOrderId"]) is int for o in fake.orders.values())

        fake.fill(buy)
        await eventually(lambda: book.fills_count == 1, what="the fill journaled")
        await eventually(
            lambda: len(fake.orders) == 4 and len(fake.resting()) == 2,
            what="the grid re-centred: one cancelled, two new",
        )
        assert book.position.base == Decimal("0.001")

        await coordinator.supervisor.stop("ndax", "test over")
        assert fake.resting() == []
        rows = await coordinator.store.fetch_all(
            "SELECT status, COUNT(*) n FROM orders GROUP BY status"
        )
        assert {row["status"]: row["n"] for row in rows} == {"filled": 1, "canceled": 3}
    finally:
        await coordinator.close(grace_seconds=0.5)
