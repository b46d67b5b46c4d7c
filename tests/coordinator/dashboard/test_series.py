"""The chart's series: from the journal's fills, downsampled, reading only new fills after the
first request, and agreeing with the bot's own figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken, load_or_create_token
from coordinator.dashboard.series import FillSeries
from coordinator.runtime import Coordinator
from coordinator.store.sqlite import SqliteStore
from tests.support_config import eventually
from tests.support_postgres import OpenAnyStore

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(open_any_store: OpenAnyStore) -> SqliteStore:
    """A journal with bot b and one order, on SQLite and on PostgreSQL (each test runs on
    both)."""
    opened = await open_any_store()
    at = T0.isoformat()
    await opened.write(
        [
            (
                "INSERT INTO bots (name, exchange, symbol, mode, updated_at)"
                " VALUES ('b', 'paper', 'BTC/CAD', 'paper', ?)",
                (at,),
            ),
            (
                "INSERT INTO orders (client_order_id, bot, exchange, symbol, side, type, amount,"
                " status, created_at, updated_at) VALUES (1, 'b', 'paper', 'BTC/CAD', 'buy',"
                " 'market', '1', 'filled', ?, ?)",
                (at, at),
            ),
        ]
    )
    return opened


_trade = 0


async def add_fills(
    store: SqliteStore, fills: list[tuple[datetime, str, str, str, str, str]]
) -> None:
    """(executed_at, side, amount, price, fee, fee_currency) each."""
    global _trade
    statements = []
    for at, side, amount, price, fee, currency in fills:
        _trade += 1
        statements.append(
            (
                "INSERT INTO fills (client_order_id, bot, trade_id, side, amount, price, fee,"
                " fee_currency, executed_at, recorded_at) VALUES (1, 'b', ?, ?, ?, ?, ?, ?, ?, ?)",
                (f"t{_trade}", side, amount, price, fee, currency, at.isoformat(), at.isoformat()),
            )
        )
    await store.write(statements)


async def test_the_last_point_is_the_cash_the_fills_moved_plus_the_position_at_the_last_price(
    store: SqliteStore,
) -> None:
    await add_fills(
        store,
        [
            (T0, "buy", "1", "100", "0.1", "CAD"),
            (T0 + timedelta(minutes=3), "buy", "1", "110", "0", "CAD"),
            (T0 + timedelta(minutes=7), "sell", "1", "120", "0.12", "CAD"),
        ],
    )

    series = await FillSeries(store).series("b", "BTC", "CAD", points=300)

    assert series["fills"] == 3
    assert [p["position"] for p in series["points"]] == [1, 2, 1]
    last = series["points"][-1]
    # cash: -100 - 0.1 - 110 + 120 - 0.12 = -90.22; one BTC at 120 -> 29.78
    assert last["pnl"] == pytest.approx(29.78)
    assert last["price"] == 120
    assert last["t"] == (T0 + timedelta(minutes=7)).isoformat()


async def test_a_fee_in_the_base_asset_reduces_the_position(store: SqliteStore) -> None:
    await add_fills(store, [(T0, "buy", "1", "100", "0.001", "BTC")])

    series = await FillSeries(store).series("b", "BTC", "CAD")

    assert series["points"][-1]["position"] == pytest.approx(0.999)
    assert series["points"][-1]["pnl"] == pytest.approx(-100 + 0.999 * 100)


async def test_many_fills_are_downsampled_to_at_most_the_points_asked_for_keeping_the_end_state(
    store: SqliteStore,
) -> None:
    fills = [
        (T0 + timedelta(minutes=i), "buy" if i % 3 else "sell", "0.01", str(100 + i % 7), "0",
         "CAD")
        for i in range(1000)
    ]
    await add_fills(store, fills)
    full = await FillSeries(store).series("b", "BTC", "CAD", points=2000)

    small = await FillSeries(store).series("b", "BTC", "CAD", points=40)

    assert len(full["points"]) == 1000  # one per one-minute slot
    assert len(small["points"]) <= 40
    times = [p["t"] for p in small["points"]]
    assert times == sorted(times)
    assert small["points"][-1] == full["points"][-1]
    assert small["points"][-1]["fills"] == 1000


async def test_after_the_first_request_only_new_fills_are_read_even_one_recorded_late(
    store: SqliteStore,
) -> None:
    series = FillSeries(store)
    await add_fills(store, [(T0, "buy", "1", "100", "0", "CAD")])
    await series.series("b", "BTC", "CAD")

    # A fill recorded now but executed in the first minute (reconciliation adopting a trade).
    await add_fills(
        store,
        [(T0 + timedelta(minutes=5), "buy", "2", "100", "0", "CAD"),
         (T0 + timedelta(seconds=30), "sell", "0.5", "100", "0", "CAD")],
    )
    again = await series.series("b", "BTC", "CAD")

    assert [p["position"] for p in again["points"]] == [0.5, 2.5]
    assert again["fills"] == 3


async def test_a_bot_without_fills_has_only_its_live_point_and_the_points_must_be_in_range(
    store: SqliteStore,
) -> None:
    series = FillSeries(store)
    assert (await series.series("b", "BTC", "CAD"))["points"] == []
    with pytest.raises(ValueError, match="points: must be from 1 to 2000"):
        await series.series("b", "BTC", "CAD", points=0)


# -- over HTTP, against a running bot --------------------------------------------------------------


@pytest.fixture
def token(data_dir: Path) -> ControlToken:
    return load_or_create_token(data_dir, environ={})


async def test_the_endpoint_agrees_with_the_bots_status_and_names_a_bad_points_value(
    coordinator: Coordinator, token: ControlToken
) -> None:
    runner = coordinator.supervisor.runner("ndax")
    await coordinator.supervisor.start("ndax")
    await eventually(lambda: runner.parts.book.fills_count >= 3, what="three fills", within=10)
    await coordinator.supervisor.stop("ndax", "test")

    async with TestClient(TestServer(make_app(coordinator, token))) as client:
        answer = await (await client.get("/bots/ndax/series?points=10")).json()
        status = await (await client.get("/bots/ndax")).json()
        bad = await client.get("/bots/ndax/series?points=5000")
        bad_error = (await bad.json())["error"]["message"]
        unknown = await client.get("/bots/nobody/series")

    journal_end, live = answer["points"][-2], answer["points"][-1]
    assert answer["fills"] == status["fills"] == journal_end["fills"]
    assert journal_end["position"] == pytest.approx(status["position"]["base"])
    assert live["position"] == status["position"]["base"]
    assert live["pnl"] == status["pnl"]["total"]
    assert answer["currency"] == "CAD"
    assert bad.status == 400
    assert "points: must be a whole number from 1 to 2000" in bad_error
    assert unknown.status == 404
