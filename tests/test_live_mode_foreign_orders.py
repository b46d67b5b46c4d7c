"""Orders a person placed by hand beside a live bot, and a venue that fails after placing an
order: the real coordinator and ccxt's real ndax code against a stateful fake of ndax.

The bot trades; the kill switch cancels every order of ours and none of theirs (a cancel the
venue refuses because the order filled first is resolved by looking it up); reconciliation
lists the foreign orders with their type and trigger price; an errorcode 102 on a send is
resolved by lookup, never by a second order. kraken (a trailing stop and a take-profit placed
on its website) and ndax (a StopLimit), each mocked at the HTTP layer."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from coordinator.accounts import Accounts
from coordinator.config import load_config
from coordinator.runtime import Coordinator
from tests.bots.exchanges.ccxt_fixtures import KRAKEN_CREDENTIALS, ndax_order
from tests.support_config import eventually, write_fast_config
from tests.support_kraken import FakeKraken, live_kraken, serving
from tests.support_kraken import make_client as kraken_make_client
from tests.support_ndax import ENV, FakeNdax, live_ndax_grid, make_client
from tests.test_live_mode_ndax import fake

__all__ = ["fake"]  # the fixture, used by name

STOP_LIMIT = 5_555


def hand_placed_stop_limit() -> dict[str, object]:
    order = ndax_order(STOP_LIMIT, side="Sell", order_type="StopLimit", price=120000.0)
    order.update(Price=120000.0, StopPrice=121000.0)
    return order


async def test_the_kill_switch_cancels_ours_and_leaves_a_hand_placed_stop_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeNdax
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    fake.hand_place(hand_placed_stop_limit())
    fake.server_error_after_placing = 1  # the first order: placed, then "Server Error"
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", live_ndax_grid))
    )
    (tmp_path / "data").mkdir()
    coordinator = await Coordinator.open(config, tmp_path / "data", accounts=Accounts(make_client))
    try:
        runner = await coordinator.supervisor.start("ndax")
        book = runner.parts.book
        await eventually(
            lambda: len(book.live_orders) == 2
            and all(o.exchange_order_id for o in book.live_orders.values()),
            what="the grid's two orders acknowledged",
        )
        assert sorted(fake.sent) == sorted(set(fake.sent))  # no client order id sent twice
        assert len(fake.sent) == 2
        ours = [i for i in fake.resting() if i != STOP_LIMIT]
        known = [int(o.exchange_order_id or 0) for o in book.live_orders.values()]
        assert sorted(ours) == sorted(known)

        report = await coordinator.reconcile("ndax", apply=False, actor="test")
        [foreign] = [
            d for b in report["bots"] for d in b["differences"]
            if d["kind"] == "unknown_open_order"
        ]
        assert str(STOP_LIMIT) in foreign["subject"]
        assert "stop-loss-limit (StopLimit)" in foreign["exchange"]
        assert "@ 120000" in foreign["exchange"]
        assert "trigger 121000" in foreign["exchange"]

        fake.fill_before_cancel.add(ours[0])  # it fills just as the kill switch cancels it
        await coordinator.activate_kill_switch("drill: hand-placed orders", "test")

        assert fake.resting() == [STOP_LIMIT]  # theirs rests, untouched
        assert STOP_LIMIT not in fake.cancel_requests
        assert sorted(fake.cancel_requests) == sorted(ours)
        assert book.live_orders == {}
        rows = await coordinator.store.fetch_all(
            "SELECT status, COUNT(*) n FROM orders GROUP BY status"
        )
        assert {row["status"]: row["n"] for row in rows} == {"filled": 1, "canceled": 1}
        assert book.fills_count == 1
        assert book.position.base in (Decimal("0.001"), Decimal("-0.001"))
    finally:
        await coordinator.close(grace_seconds=0.5)


# ----- kraken: a hand-placed trailing stop and take-profit --------------------------------


def live_kraken_grid(documents: dict[str, Any]) -> None:
    live_kraken(documents)
    kraken = documents["bots.json"]["bots"][0]
    kraken["strategy"] = {
        "name": "grid", "params": {"levels": 1, "spacing_pct": 0.4, "order_amount": 0.001},
    }


async def test_kraken_the_kill_switch_cancels_ours_and_leaves_hand_placed_trigger_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KRAKEN_API_KEY", KRAKEN_CREDENTIALS["apiKey"])
    monkeypatch.setenv("KRAKEN_API_SECRET", KRAKEN_CREDENTIALS["secret"])
    kraken = FakeKraken()
    trailing = kraken.place_trigger_by_hand("trailing-stop", "sell", "0.01000000", "+5.0000%")
    take = kraken.place_trigger_by_hand("take-profit", "sell", "0.01000000", "160000.0")
    theirs = {trailing, take}
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", live_kraken_grid))
    )
    (tmp_path / "data").mkdir()
    with serving(kraken, account=True):
        coordinator = await Coordinator.open(
            config, tmp_path / "data", accounts=Accounts(kraken_make_client)
        )
        try:
            runner = await coordinator.supervisor.start("kraken")
            book = runner.parts.book
            await eventually(
                lambda: len(book.live_orders) == 2
                and all(o.exchange_order_id for o in book.live_orders.values()),
                what="the grid's two orders acknowledged",
            )
            ours = sorted(set(kraken.resting()) - theirs)
            assert len(ours) == 2

            report = await coordinator.reconcile("kraken", apply=False, actor="test")
            foreign = {
                d["subject"]: d["exchange"] for b in report["bots"] for d in b["differences"]
                if d["kind"] == "unknown_open_order"
            }
            assert foreign == {
                f"exchange order {trailing}": "open: sell 0.01 trailing-stop, filled 0.0",
                f"exchange order {take}": "open: sell 0.01 take-profit, trigger 160000.0, "
                "filled 0.0",
            }

            kraken.fill_before_cancel.add(ours[0])  # it fills as the kill switch cancels it
            await coordinator.activate_kill_switch("drill: hand-placed orders", "test")

            assert sorted(kraken.resting()) == sorted(theirs)
            cancelled = [c.form["txid"] for c in kraken.calls if c.endpoint == "CancelOrder"]
            assert sorted(cancelled) == ours  # one refused (filled first), none of theirs
            assert book.live_orders == {}
            rows = await coordinator.store.fetch_all(
                "SELECT status, COUNT(*) n FROM orders GROUP BY status"
            )
            assert {row["status"]: row["n"] for row in rows} == {"filled": 1, "canceled": 1}
        finally:
            await coordinator.close(grace_seconds=0.5)
