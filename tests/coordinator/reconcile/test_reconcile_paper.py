"""Reconciliation against paper exchanges, through the real Coordinator: a seeded drift of each
kind is reported with its amounts, and applying corrects the journal with entries of its own."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bots.exchanges.paper import PaperExchange
from bots.journal import JournalOrder, OrderStatus
from bots.models import OrderIntent, OrderRequest, OrderType, Side
from coordinator.integrity import verify_database
from coordinator.reconcile.model import render_table
from coordinator.runtime import Coordinator
from coordinator.supervisor import BotRunner
from tests.support_config import eventually

BOT = "kraken"  # the grid bot on BTC/AUD; its ladder rests (the fast config's price is flat)
TRADER = "ndax"  # the DCA bot: a market buy every 200 ms


def paper(runner: BotRunner) -> PaperExchange:
    adapter = runner.parts.adapter
    assert isinstance(adapter, PaperExchange)
    return adapter


async def kinds(coordinator: Coordinator, bot: str, apply: bool = False) -> list[str]:
    report = await coordinator.reconcile(bot, apply, "test")
    (entry,) = report["bots"]
    return [d["kind"] for d in (entry["remaining"] if apply else entry["differences"])]


async def report_of(coordinator: Coordinator, bot: str, apply: bool = False) -> dict[str, Any]:
    report = await coordinator.reconcile(bot, apply, "test")
    (entry,) = report["bots"]
    assert entry["errors"] == [], entry["errors"]
    return dict(entry)


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


async def query(coordinator: Coordinator, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return await asyncio.to_thread(rows, coordinator.store.path, sql, params)


async def market(runner: BotRunner) -> None:
    """Give the bot's paper exchange a market, as a tick would."""
    await runner.gateway().sync(await runner.parts.feed.snapshot())


async def resting_buy(runner: BotRunner) -> int:
    """A limit buy far under the market: it rests on the paper exchange."""
    await market(runner)
    last = runner.parts.book.last_price
    assert last is not None
    price = (last * Decimal("0.97")).quantize(Decimal("0.01"))
    result = await runner.gateway().submit(
        OrderIntent("BTC/AUD", Side.BUY, OrderType.LIMIT, Decimal("0.001"), price)
    )
    assert result.outcome == "sent", result
    assert result.client_order_id is not None
    return result.client_order_id


async def traded(coordinator: Coordinator, fills: int = 3) -> BotRunner:
    runner = coordinator.supervisor.runner(TRADER)
    await coordinator.start_bot(TRADER, False, "test")
    await eventually(lambda: runner.parts.book.fills_count >= fills, what=f"{fills} fills")
    await coordinator.stop_bot(TRADER, "test", "enough fills for the test")
    return runner


async def test_a_journal_that_matches_its_paper_exchanges_reports_no_difference(
    coordinator: Coordinator,
) -> None:
    await traded(coordinator)
    report = await coordinator.reconcile(None, False, "test")

    assert report["clean"] is True
    assert report["summary"] == {"differences": 0, "corrections": 0, "remaining": 0, "errors": 0}
    assert {b["bot"] for b in report["bots"]} == {BOT, TRADER}
    assert "journal and exchange agree" in render_table(report)


async def test_a_fill_deleted_from_the_journal_is_reported_and_recorded_again_on_apply(
    coordinator: Coordinator,
) -> None:
    runner = await traded(coordinator)
    book_before = (runner.parts.book.position, dict(runner.parts.book.balances))
    (fill_id, order_id, trade_id, amount) = (
        await query(
            coordinator,
            "SELECT id, client_order_id, trade_id, amount FROM fills WHERE bot = ? ORDER BY id"
            " LIMIT 1 OFFSET 1",
            (TRADER,),
        )
    )[0]
    await coordinator.store.write([("DELETE FROM fills WHERE id = ?", (fill_id,))])

    entry = await report_of(coordinator, TRADER)
    (missing,) = entry["differences"]
    assert missing["kind"] == "missing_fill"
    assert missing["subject"] == f"trade {trade_id} of order {order_id}"
    assert Decimal(missing["difference"]) == Decimal(amount)
    assert missing["correctable"] is True

    applied = await report_of(coordinator, TRADER, apply=True)

    assert applied["remaining"] == []
    (correction,) = applied["corrections"]
    assert correction["kind"] == "missing_fill"
    assert correction["subject"] == f"order {order_id}"
    assert await query(
        coordinator,
        "SELECT amount FROM fills WHERE client_order_id = ? AND trade_id = ?",
        (order_id, trade_id),
    ) == [(amount,)]
    assert await query(coordinator, "SELECT kind, subject FROM reconciliation_corrections") == [
        ("missing_fill", f"order {order_id}")
    ]
    # Buys only: the average cost does not depend on the order the fills were recorded in.
    assert (runner.parts.book.position, runner.parts.book.balances) == book_before
    assert (await verify_database(coordinator.store.path)).ok


async def test_money_moved_outside_the_bot_is_balance_drift_and_apply_adds_an_adjustment(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner(BOT)
    before = runner.parts.book.balances["AUD"]
    paper(runner).move_funds("AUD", Decimal("-250"))

    entry = await report_of(coordinator, BOT)
    (drift,) = entry["differences"]
    assert (drift["kind"], drift["subject"]) == ("balance_drift", "balance AUD")
    assert (Decimal(drift["journal"]), Decimal(drift["exchange"])) == (before, before - 250)
    assert Decimal(drift["difference"]) == Decimal(-250)

    applied = await report_of(coordinator, BOT, apply=True)

    assert applied["remaining"] == []
    (correction,) = applied["corrections"]
    assert runner.parts.book.balances["AUD"] == before - 250
    (adjustment,) = await query(
        coordinator,
        "SELECT asset, amount, reason FROM balance_adjustments WHERE bot = ? AND reason LIKE"
        " 'reconciliation%'",
        (BOT,),
    )
    assert adjustment[:2] == ("AUD", "-250")
    assert adjustment[2].startswith(f"reconciliation correction #{correction['id']}: ")
    assert await kinds(coordinator, BOT) == []
    assert (await verify_database(coordinator.store.path)).ok


async def test_an_order_someone_else_placed_is_reported_and_left_to_an_operator(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner(BOT)
    await market(runner)
    exchange = paper(runner)
    last = runner.parts.book.last_price
    assert last is not None
    placed = await exchange.create_order(
        OrderRequest(42, "BTC/AUD", Side.BUY, OrderType.LIMIT, Decimal("0.001"), last / 2)
    )

    entry = await report_of(coordinator, BOT)
    (unknown,) = entry["differences"]
    assert unknown["kind"] == "unknown_open_order"
    assert unknown["subject"] == f"exchange order {placed.exchange_order_id}"
    assert unknown["correctable"] is False

    applied = await report_of(coordinator, BOT, apply=True)

    assert applied["corrections"] == []
    assert [d["kind"] for d in applied["remaining"]] == ["unknown_open_order"]
    assert await query(coordinator, "SELECT COUNT(*) FROM orders WHERE client_order_id = 42") == [
        (0,)
    ]
    assert 42 not in runner.parts.book.live_orders


async def test_an_order_the_exchange_cancelled_behind_the_journals_back_is_closed_on_apply(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner(BOT)
    cid = await resting_buy(runner)
    await paper(runner).cancel_order(cid, "BTC/AUD")  # on the venue's web page, say

    entry = await report_of(coordinator, BOT)
    (closed,) = entry["differences"]
    assert (closed["kind"], closed["subject"]) == ("order_closed_on_exchange", f"order {cid}")
    assert closed["journal"].startswith("open")
    assert closed["exchange"].startswith("canceled")

    applied = await report_of(coordinator, BOT, apply=True)

    assert applied["remaining"] == []
    (correction,) = applied["corrections"]
    assert cid not in runner.parts.book.live_orders
    assert await query(
        coordinator,
        "SELECT to_status, detail FROM order_events WHERE client_order_id = ? ORDER BY id DESC"
        " LIMIT 1",
        (cid,),
    ) == [("canceled", f"reconciliation correction #{correction['id']}")]
    assert (await verify_database(coordinator.store.path)).ok


async def test_a_pending_order_the_exchange_never_received_is_failed_on_apply(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner(BOT)
    cid = await journal_pending(coordinator, runner)

    entry = await report_of(coordinator, BOT)
    assert [(d["kind"], d["subject"]) for d in entry["differences"]] == [
        ("order_unknown_to_exchange", f"order {cid}")
    ]

    applied = await report_of(coordinator, BOT, apply=True)

    assert applied["remaining"] == []
    assert await query(
        coordinator, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)
    ) == [("failed",)]
    assert cid not in runner.parts.book.live_orders


async def test_a_pending_order_the_exchange_did_take_is_acknowledged_on_apply(
    coordinator: Coordinator,
) -> None:
    """The process died between the send and the acknowledgement: the exchange has it."""
    runner = coordinator.supervisor.runner(BOT)
    cid = await journal_pending(coordinator, runner)
    order = runner.parts.book.live_orders[cid]
    assert order.price is not None
    await paper(runner).create_order(
        OrderRequest(cid, order.symbol, order.side, order.type, order.amount, order.price)
    )

    entry = await report_of(coordinator, BOT)
    assert [(d["kind"], d["subject"]) for d in entry["differences"]] == [
        ("order_not_acknowledged", f"order {cid}")
    ]

    applied = await report_of(coordinator, BOT, apply=True)

    assert applied["remaining"] == []
    assert runner.parts.book.live_orders[cid].status is OrderStatus.OPEN
    assert await query(
        coordinator,
        "SELECT status, exchange_order_id FROM orders WHERE client_order_id = ?",
        (cid,),
    ) == [("open", runner.parts.book.live_orders[cid].exchange_order_id)]


async def test_an_order_the_journal_called_failed_but_the_exchange_holds_is_adopted(
    coordinator: Coordinator,
) -> None:
    """A send that timed out, was looked up in vain and marked failed, then showed up."""
    runner = coordinator.supervisor.runner(BOT)
    await market(runner)
    exchange = paper(runner)
    exchange.fail_next(1)
    last = runner.parts.book.last_price
    assert last is not None
    price = (last * Decimal("0.97")).quantize(Decimal("0.01"))
    result = await runner.gateway().submit(
        OrderIntent("BTC/AUD", Side.BUY, OrderType.LIMIT, Decimal("0.001"), price)
    )
    cid = result.client_order_id
    assert cid is not None
    assert await query(
        coordinator, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)
    ) == [("failed",)]
    await exchange.create_order(
        OrderRequest(cid, "BTC/AUD", Side.BUY, OrderType.LIMIT, Decimal("0.001"), price)
    )

    entry = await report_of(coordinator, BOT)
    (found,) = entry["differences"]
    assert (found["kind"], found["subject"]) == ("order_open_on_exchange", f"order {cid}")

    applied = await report_of(coordinator, BOT, apply=True)

    assert applied["remaining"] == []
    (correction,) = applied["corrections"]
    assert "failed -> open" in correction["action"]
    assert runner.parts.book.live_orders[cid].status is OrderStatus.OPEN
    (event,) = await query(
        coordinator,
        "SELECT from_status, to_status, detail FROM order_events WHERE client_order_id = ?"
        " ORDER BY id DESC LIMIT 1",
        (cid,),
    )
    assert event[:2] == ("failed", "open")
    assert event[2].startswith(f"reconciliation correction #{correction['id']}: ")
    # failed -> open is not a move the order path may make; a correction may, and says so.
    assert (await verify_database(coordinator.store.path)).ok
    # The bot manages it from now on: stopping it cancels the adopted order too.
    assert await runner.gateway().cancel(cid, "test")
    assert (await exchange.fetch_order(cid, "BTC/AUD")).status.value == "canceled"


async def test_a_fill_the_exchange_does_not_show_is_reported_never_deleted(
    coordinator: Coordinator,
) -> None:
    runner = await traded(coordinator, fills=1)
    (order_id, executed_at) = (
        await query(
            coordinator,
            "SELECT client_order_id, executed_at FROM fills WHERE bot = ? LIMIT 1",
            (TRADER,),
        )
    )[0]
    await coordinator.store.write(
        [
            (
                "INSERT INTO fills (client_order_id, bot, trade_id, side, amount, price, fee,"
                " fee_currency, executed_at, recorded_at) VALUES (?, ?, 'phantom-1', 'buy',"
                " '0.001', '100', '0', 'CAD', ?, ?)",
                (order_id, TRADER, executed_at, executed_at),
            )
        ]
    )

    entry = await report_of(coordinator, TRADER)
    phantom = [d for d in entry["differences"] if d["kind"] == "fill_unknown_to_exchange"]
    assert [d["subject"] for d in phantom] == [f"trade phantom-1 of order {order_id}"]
    assert phantom[0]["correctable"] is False

    await report_of(coordinator, TRADER, apply=True)

    assert await query(coordinator, "SELECT COUNT(*) FROM fills WHERE trade_id = 'phantom-1'") == [
        (1,)
    ]
    assert runner.parts.book.fills_count >= 1


async def test_applying_while_the_kill_switch_is_active_corrects_the_journal_and_sends_nothing(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner(BOT)
    cid = await resting_buy(runner)
    await coordinator.activate_kill_switch("drill", "test")
    await paper(runner).create_order(
        OrderRequest(7, "BTC/AUD", Side.SELL, OrderType.LIMIT, Decimal("0.001"), Decimal("1e6"))
    )
    paper(runner).move_funds("BTC", Decimal("1"))
    orders_before = await query(coordinator, "SELECT COUNT(*) FROM orders")

    applied = await report_of(coordinator, BOT, apply=True)

    assert [c["kind"] for c in applied["corrections"]] == ["balance_drift"]
    assert await query(coordinator, "SELECT COUNT(*) FROM orders") == orders_before
    # The kill switch cancelled the bot's order; the foreign one is left for an operator.
    assert cid not in runner.parts.book.live_orders
    assert [d["kind"] for d in applied["remaining"]] == ["unknown_open_order"]


async def test_a_report_on_a_running_bot_finds_no_difference_in_its_own_trading(
    coordinator: Coordinator,
) -> None:
    runner = coordinator.supervisor.runner(TRADER)
    await coordinator.start_bot(TRADER, False, "test")
    await eventually(lambda: runner.parts.book.fills_count >= 2, what="fills")
    for _ in range(5):
        assert await kinds(coordinator, TRADER) == []
        await asyncio.sleep(0.1)
    assert runner.parts.book.fills_count >= 3


async def test_every_run_is_recorded_and_audited_with_its_summary(
    coordinator: Coordinator,
) -> None:
    paper(coordinator.supervisor.runner(BOT)).move_funds("AUD", Decimal(10))
    first = await coordinator.reconcile(BOT, False, "alice")
    second = await coordinator.reconcile(BOT, True, "bob")

    runs = await coordinator.reconciler.records.recent_runs(5)
    assert [(r["id"], r["actor"], r["applied"], r["differences"], r["corrections"]) for r in runs][
        :2
    ] == [(second["run_id"], "bob", True, 1, 1), (first["run_id"], "alice", False, 1, 0)]
    audit = [e for e in await coordinator.journal.recent_audit(10) if "reconcile" in e["action"]]
    assert [(e["action"], e["actor"], e["details"]["run_id"]) for e in audit] == [
        ("reconcile.apply", "bob", second["run_id"]),
        ("reconcile.report", "alice", first["run_id"]),
    ]
    status = coordinator.status()["reconciliation"]
    assert status["last"]["run_id"] == second["run_id"]
    assert status["last"]["clean"] is True


@pytest.mark.parametrize("bot", [None, BOT])
async def test_the_table_names_each_difference_and_how_it_is_fixed(
    coordinator: Coordinator, bot: str | None
) -> None:
    paper(coordinator.supervisor.runner(BOT)).move_funds("AUD", Decimal(10))

    table = render_table(await coordinator.reconcile(bot, False, "test"))

    assert "balance_drift" in table
    assert "balance AUD" in table
    assert "auto" in table
    assert "--apply" in table


async def journal_pending(coordinator: Coordinator, runner: BotRunner) -> int:
    """An intent journaled and in the book, never sent: what a crash before the send leaves."""
    await market(runner)
    last = runner.parts.book.last_price
    assert last is not None
    order = JournalOrder(
        client_order_id=runner.ids.next(),
        bot=BOT,
        exchange="kraken",
        symbol="BTC/AUD",
        side=Side.BUY,
        type=OrderType.LIMIT,
        amount=Decimal("0.001"),
        price=(last * Decimal("0.97")).quantize(Decimal("0.01")),
        status=OrderStatus.PENDING_SUBMIT,
        created_at=coordinator.clock(),
    )
    await coordinator.journal.record_intent(order)
    runner.parts.book.live_orders[order.client_order_id] = order
    runner.parts.book.trade_ids[order.client_order_id] = set()
    return order.client_order_id
