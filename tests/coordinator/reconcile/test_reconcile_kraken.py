"""Reconciliation of a live kraken bot, through the real Coordinator, against a mocked kraken: a
seeded drift of each kind is reported with its subjects and amounts, applying corrects the
journal with entries of its own (and never sends or cancels an order), and a kraken that cannot
be read is an error in the report, with nothing corrected.

ccxt's real kraken code runs against `FakeKraken` (tests/support_kraken.py) served with
`account=True`: its balance is its funds plus its trades, and it answers TradesHistory (what
`fetch_my_trades` calls) and OpenPositions from its own state.

The bot's tick loop is not started (unless a test says so): state is made through its gateway,
as a tick would make it, so nothing moves between the reads of a reconciliation.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aioresponses import CallbackResult, aioresponses

from bots.ids import ClientOrderIds
from bots.journal import OrderStatus
from bots.models import OrderIntent, OrderRequest, OrderType, Side
from coordinator.accounts import Accounts
from coordinator.config import load_config
from coordinator.integrity import verify_database
from coordinator.lifecycle import BotState
from coordinator.reconcile.model import render_table
from coordinator.runtime import Coordinator
from coordinator.store.restored import BACKUP_CLOCK_SLACK, RESTORED_KEY, RestoredJournal
from coordinator.supervisor import BotRunner
from tests.bots.exchanges.ccxt_fixtures import (
    KRAKEN_CREDENTIALS,
    kraken_cl_ord_id,
    kraken_ok,
)
from tests.support_config import eventually, write_fast_config
from tests.support_kraken import FakeKraken, live_kraken, make_client, serving

BOT = "kraken"
SYMBOL = "BTC/AUD"
OPENING = {"AUD": Decimal("10000"), "BTC": Decimal("0.05")}  # FakeKraken's opening funds
AMOUNT = Decimal("0.001")
PRICE = Decimal("149400.0")  # a limit buy 0.4 % under kraken's last price: it rests
FEE = Decimal("0.24")  # FakeKraken's fee on every trade, in AUD
# kraken's private endpoints that place or cancel orders
WRITES = frozenset({"AddOrder", "AddOrderBatch", "EditOrder", "CancelOrder", "CancelAll"})
JOURNAL_TABLES = (
    "orders",
    "order_events",
    "fills",
    "positions",
    "balances",
    "balance_adjustments",
    "reconciliation_corrections",
)


@dataclass
class Live:
    kraken: FakeKraken
    m: aioresponses
    coordinator: Coordinator
    runner: BotRunner

    @property
    def path(self) -> Path:
        return self.coordinator.store.path


@pytest.fixture
def kraken() -> Iterator[tuple[FakeKraken, aioresponses]]:
    fake = FakeKraken()
    with serving(fake, account=True) as m:
        yield fake, m


@pytest.fixture
async def live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kraken: tuple[FakeKraken, aioresponses]
) -> AsyncIterator[Live]:
    """A coordinator with the live kraken bot, its opening balances read from kraken and a
    market price given to its gateway, as its first start would; its tick loop is not started."""
    monkeypatch.setenv("KRAKEN_API_KEY", KRAKEN_CREDENTIALS["apiKey"])
    monkeypatch.setenv("KRAKEN_API_SECRET", KRAKEN_CREDENTIALS["secret"])
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", live_kraken))
    )
    (tmp_path / "data").mkdir()
    coordinator = await Coordinator.open(config, tmp_path / "data", accounts=Accounts(make_client))
    try:
        runner = coordinator.supervisor.runner(BOT)
        assert runner.parts.prepare is not None
        await runner.parts.prepare()
        await runner.gateway().sync(await runner.parts.feed.snapshot())
        assert runner.parts.book.balances == OPENING
        yield Live(kraken[0], kraken[1], coordinator, runner)
    finally:
        await coordinator.close(grace_seconds=0.5)


# ----- helpers ----------------------------------------------------------------------------------


def _rows(path: Path, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


async def query(live: Live, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return await asyncio.to_thread(_rows, live.path, sql, params)


async def journal_snapshot(live: Live) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: await query(live, f"SELECT * FROM {table} ORDER BY rowid")
        for table in JOURNAL_TABLES
    }


async def entry(live: Live, apply: bool = False) -> dict[str, Any]:
    """The kraken bot's part of a reconciliation report."""
    report = await live.coordinator.reconcile(BOT, apply, "test")
    (bot,) = report["bots"]
    assert bot["bot"] == BOT
    return dict(bot)


async def applied(live: Live) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Apply; the whole report, the bot's entry, and the endpoints kraken was asked that place
    or cancel an order while it ran."""
    calls = len(live.kraken.calls)
    report = await live.coordinator.reconcile(BOT, True, "test")
    (bot,) = report["bots"]
    writes = [c.endpoint for c in live.kraken.calls[calls:] if c.endpoint in WRITES]
    return report, dict(bot), writes


def order_shown(text: str) -> tuple[str, Decimal]:
    """An order as a report shows it ("open: buy 0.001 @ 149400.0, filled 0.0"): what it is,
    and how much is filled."""
    what, filled = text.rsplit(", filled ", 1)
    return what, Decimal(filled)


def kinds(differences: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["kind"], d["subject"]) for d in differences]


def only(differences: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in differences if d["kind"] == kind]
    return found


async def resting_buy(live: Live, price: Decimal = PRICE) -> tuple[int, str]:
    """A limit buy through the bot's gateway that rests on kraken: its client order id and
    kraken's txid."""
    result = await live.runner.gateway().submit(
        OrderIntent(SYMBOL, Side.BUY, OrderType.LIMIT, AMOUNT, price)
    )
    assert result.outcome == "sent", result
    assert result.client_order_id is not None
    return result.client_order_id, txid_of(live.kraken, result.client_order_id)


def txid_of(kraken: FakeKraken, client_order_id: int) -> str:
    (txid,) = [
        t for t, o in kraken.orders.items() if o["cl_ord_id"] == kraken_cl_ord_id(client_order_id)
    ]
    return txid


def after_buy(amount: Decimal = AMOUNT, price: Decimal = PRICE) -> dict[str, Decimal]:
    return {"AUD": OPENING["AUD"] - amount * price - FEE, "BTC": OPENING["BTC"] + amount}


def on_kraken(kraken: FakeKraken) -> dict[str, Decimal]:
    codes = {"ZAUD": "AUD", "XXBT": "BTC"}
    return {codes[code]: total for code, (total, _) in kraken.balances().items()}


async def stored_book(live: Live) -> tuple[Decimal, dict[str, Decimal]]:
    """The stored position (none before a first fill) and balances."""
    position = await query(live, "SELECT base FROM positions WHERE bot = ?", BOT)
    balances = await query(live, "SELECT asset, total FROM balances WHERE bot = ?", BOT)
    base = Decimal(position[0][0]) if position else Decimal(0)
    return base, {asset: Decimal(total) for asset, total in balances}


async def correction_row(live: Live, correction_id: int) -> tuple[Any, ...]:
    (row,) = await query(
        live,
        "SELECT id, bot, kind, subject, action, at FROM reconciliation_corrections WHERE id = ?",
        correction_id,
    )
    return row


async def events_of(live: Live, client_order_id: int) -> list[tuple[Any, ...]]:
    return await query(
        live,
        "SELECT from_status, to_status, detail FROM order_events WHERE client_order_id = ?"
        " ORDER BY id",
        client_order_id,
    )


async def integrity_ok(live: Live) -> None:
    report = await verify_database(live.path)
    assert report.ok, report.as_dict()["inconsistencies"]


# ----- 1. missing fill --------------------------------------------------------------------------


async def test_a_fill_deleted_from_the_journal_is_reported_with_its_trade_and_recorded_again(
    live: Live,
) -> None:
    client_order_id, txid = await resting_buy(live)
    trade_id = live.kraken.fill_now(txid)
    await live.runner.gateway().refresh_live_orders("test: the fill")
    assert live.runner.parts.book.position.base == AMOUNT
    await live.coordinator.store.write([("DELETE FROM fills WHERE trade_id = ?", (trade_id,))])

    bot = await entry(live)
    assert bot["errors"] == []
    (missing,) = bot["differences"]
    assert missing["kind"] == "missing_fill"
    assert missing["subject"] == f"trade {trade_id} of order {client_order_id}"
    assert Decimal(missing["difference"]) == AMOUNT
    assert missing["journal"] == "-"
    assert missing["exchange"].startswith(f"buy {AMOUNT} @ {PRICE}, fee {FEE} AUD")
    assert missing["correctable"] is True

    report, bot, writes = await applied(live)
    assert writes == []
    assert bot["errors"] == []
    assert bot["remaining"] == []
    (correction,) = bot["corrections"]
    assert correction["kind"] == "missing_fill"
    assert correction["subject"] == f"order {client_order_id}"
    assert correction["action"] == f"1 missing fill(s) recorded (0.001 filled; trade {trade_id})"
    row = await correction_row(live, correction["id"])
    assert row[:4] == (correction["id"], BOT, "missing_fill", f"order {client_order_id}")
    (fill,) = await query(
        live,
        "SELECT client_order_id, amount, price, recorded_at FROM fills WHERE trade_id = ?",
        trade_id,
    )
    assert fill[:3] == (client_order_id, str(AMOUNT), str(PRICE))
    assert fill[3] == row[5]  # recorded in the correction's commit
    (order,) = await query(
        live, "SELECT status, filled FROM orders WHERE client_order_id = ?", client_order_id
    )
    assert order == ("filled", str(AMOUNT))
    *_, last = await events_of(live, client_order_id)  # the order's history names it
    assert last == (
        "filled",
        "filled",
        f"reconciliation correction #{correction['id']}: {correction['action']}",
    )

    book = live.runner.parts.book
    assert book.position.base == AMOUNT
    assert book.balances == after_buy() == on_kraken(live.kraken)
    assert await stored_book(live) == (AMOUNT, after_buy())
    assert (await entry(live))["differences"] == []
    assert f"trade {trade_id} of order {client_order_id}" in render_table(report)
    await integrity_ok(live)


async def test_a_fill_deleted_from_the_journal_of_a_live_order_is_recorded_again(
    live: Live,
) -> None:
    """The order still rests, part filled: the fill is recorded again, and the book (position
    and balances) keeps the fill kraken executed."""
    client_order_id, txid = await resting_buy(live)
    part = Decimal("0.0004")
    trade_id = live.kraken.fill_now(txid, amount=str(part))
    await live.runner.gateway().refresh_live_orders("test: a part fill")
    assert live.runner.parts.book.live_orders[client_order_id].filled == part
    await live.coordinator.store.write([("DELETE FROM fills WHERE trade_id = ?", (trade_id,))])

    bot = await entry(live)
    assert kinds(bot["differences"]) == [
        ("missing_fill", f"trade {trade_id} of order {client_order_id}")
    ]
    assert Decimal(bot["differences"][0]["difference"]) == part

    _, bot, writes = await applied(live)
    assert writes == []
    assert bot["remaining"] == [], kinds(bot["remaining"])
    (correction,) = bot["corrections"]  # nothing else: the book was right all along
    assert (correction["kind"], correction["subject"]) == (
        "missing_fill",
        f"order {client_order_id}",
    )
    assert correction["action"] == f"1 missing fill(s) recorded ({part} filled; trade {trade_id})"
    at = (await correction_row(live, correction["id"]))[5]
    assert await query(
        live, "SELECT amount, recorded_at FROM fills WHERE trade_id = ?", trade_id
    ) == [(str(part), at)]
    *_, last = await events_of(live, client_order_id)
    assert last == (
        "open",
        "open",
        f"reconciliation correction #{correction['id']}: {correction['action']}",
    )
    book = live.runner.parts.book
    assert book.live_orders[client_order_id].filled == part  # still live, still the gateway's
    assert book.position.base == part
    assert book.balances == after_buy(part) == on_kraken(live.kraken)
    assert await stored_book(live) == (part, after_buy(part))
    assert (await entry(live))["differences"] == []
    await integrity_ok(live)

    # The rest of it fills: the gateway records that trade only, once.
    rest = live.kraken.fill_now(txid)
    await live.runner.gateway().refresh_live_orders("test: the rest fills")
    assert client_order_id not in book.live_orders
    assert [r[0] for r in await query(live, "SELECT trade_id FROM fills ORDER BY id")] == [
        trade_id,
        rest,
    ]
    assert book.position.base == AMOUNT
    assert book.balances == on_kraken(live.kraken)
    assert (await entry(live))["differences"] == []


# ----- 2. unknown open order --------------------------------------------------------------------


async def test_an_order_placed_by_hand_on_kraken_is_reported_and_left_to_an_operator(
    live: Live,
) -> None:
    txid = live.kraken.place_by_hand("buy", "0.002", "140000.0")

    bot = await entry(live)
    assert bot["errors"] == []
    (unknown,) = bot["differences"]
    assert unknown["kind"] == "unknown_open_order"
    assert unknown["subject"] == f"exchange order {txid}"
    assert unknown["journal"] == "-"
    assert order_shown(unknown["exchange"]) == ("open: buy 0.002 @ 140000.0", Decimal(0))
    assert unknown["correctable"] is False

    before = await journal_snapshot(live)
    book_before = (live.runner.parts.book.position, dict(live.runner.parts.book.balances))
    report, bot, writes = await applied(live)
    assert writes == []  # not cancelled: not ours to touch
    assert live.kraken.orders[txid]["status"] == "open"
    assert bot["corrections"] == []
    assert kinds(bot["remaining"]) == [("unknown_open_order", f"exchange order {txid}")]
    assert report["clean"] is False
    after = await journal_snapshot(live)
    assert after == before
    assert (live.runner.parts.book.position, live.runner.parts.book.balances) == book_before
    table = render_table(report)
    assert f"exchange order {txid}" in table
    assert "operator" in table


# ----- 3. unknown trade -------------------------------------------------------------------------


async def test_a_trade_of_an_order_placed_by_hand_is_reported_and_not_recorded_as_a_fill(
    live: Live,
) -> None:
    txid = live.kraken.place_by_hand("buy", "0.002", "149000.0")
    trade_id = live.kraken.fill_now(txid)
    moved = {"AUD": -Decimal("0.002") * Decimal("149000.0") - FEE, "BTC": Decimal("0.002")}

    bot = await entry(live)
    assert bot["errors"] == []
    assert kinds(bot["differences"]) == [
        ("unknown_trade", f"trade {trade_id}"),
        ("balance_drift", "balance AUD"),
        ("balance_drift", "balance BTC"),
    ]
    unknown = only(bot["differences"], "unknown_trade")
    assert unknown["correctable"] is False
    assert txid in unknown["detail"]
    assert unknown["exchange"].startswith("buy 0.002 @ 149000.0, fee 0.24 AUD")
    for d in bot["differences"][1:]:  # the trade moved the account's money
        assert Decimal(d["difference"]) == moved[d["subject"].removeprefix("balance ")]

    orders_before = await query(live, "SELECT * FROM orders")
    report, bot, writes = await applied(live)
    assert writes == []
    assert kinds(bot["remaining"]) == [("unknown_trade", f"trade {trade_id}")]
    assert await query(live, "SELECT * FROM fills") == []  # not one of the bot's fills
    assert await query(live, "SELECT * FROM orders") == orders_before
    assert live.runner.parts.book.position.base == 0
    # The money it moved is an adjustment entry for each asset, naming its correction.
    adjustments = await query(
        live,
        "SELECT asset, amount, reason FROM balance_adjustments WHERE reason LIKE ?",
        "reconciliation correction #%",
    )
    assert [(a, Decimal(x)) for a, x, _ in adjustments] == sorted(moved.items())
    corrections = {c["subject"]: c["id"] for c in bot["corrections"]}
    for asset, _, reason in adjustments:
        assert reason.startswith(f"reconciliation correction #{corrections[f'balance {asset}']}: ")
    assert live.runner.parts.book.balances == on_kraken(live.kraken)
    assert f"trade {trade_id}" in render_table(report)
    again = await entry(live)
    assert kinds(again["differences"]) == [("unknown_trade", f"trade {trade_id}")]


# ----- 4. order closed on the exchange ----------------------------------------------------------


@pytest.mark.parametrize("on_kraken_meanwhile", ["filled", "canceled"])
async def test_an_order_kraken_finished_while_its_bot_was_stopped_is_brought_up_to_date(
    live: Live, on_kraken_meanwhile: str
) -> None:
    client_order_id, txid = await resting_buy(live)
    trade_id = ""
    if on_kraken_meanwhile == "filled":
        trade_id = live.kraken.fill_now(txid)
    else:  # cancelled on kraken's website
        live.kraken.orders[txid]["status"] = "canceled"
    filled = AMOUNT if trade_id else Decimal(0)

    bot = await entry(live)
    assert bot["errors"] == []
    closed = only(bot["differences"], "order_closed_on_exchange")
    assert closed["subject"] == f"order {client_order_id}"
    assert order_shown(closed["journal"]) == (f"open: buy {AMOUNT} @ {PRICE}", Decimal(0))
    shown = "closed" if trade_id else "canceled"
    assert order_shown(closed["exchange"]) == (f"{shown}: buy {AMOUNT} @ {PRICE}", filled)
    assert Decimal(closed["difference"]) == filled
    assert closed["correctable"] is True
    if trade_id:
        assert kinds(bot["differences"]) == [
            ("order_closed_on_exchange", f"order {client_order_id}"),
            ("missing_fill", f"trade {trade_id} of order {client_order_id}"),
            ("balance_drift", "balance AUD"),
            ("balance_drift", "balance BTC"),
        ]
        for d in bot["differences"][2:]:
            assert d["detail"] == "recording the missing fills accounts for all of it"
    else:
        assert len(bot["differences"]) == 1

    report, bot, writes = await applied(live)
    assert writes == []
    assert bot["errors"] == []
    assert bot["remaining"] == [], kinds(bot["remaining"])
    (correction,) = bot["corrections"]
    assert correction["kind"] == "order_closed_on_exchange"
    assert correction["subject"] == f"order {client_order_id}"
    assert correction["action"].endswith("by the bot's order gateway; now finished")
    status = "filled" if trade_id else "canceled"
    (order,) = await query(
        live, "SELECT status, filled FROM orders WHERE client_order_id = ?", client_order_id
    )
    assert (order[0], Decimal(order[1])) == (status, filled)
    *_, last = await events_of(live, client_order_id)
    assert last == ("open", status, f"reconciliation correction #{correction['id']}")
    await correction_row(live, correction["id"])  # the event names a real correction
    book = live.runner.parts.book
    assert client_order_id not in book.live_orders
    expected = after_buy() if trade_id else OPENING
    assert book.position.base == filled
    assert book.balances == expected == on_kraken(live.kraken)
    assert await stored_book(live) == (filled, expected)
    if trade_id:
        assert await query(live, "SELECT amount FROM fills WHERE trade_id = ?", trade_id) == [
            (str(AMOUNT),)
        ]
    assert (await entry(live))["differences"] == []
    assert f"order {client_order_id}" in render_table(report)
    await integrity_ok(live)


# ----- 5. order open on the exchange ------------------------------------------------------------


def lose_add_order_answers(kraken: FakeKraken) -> set[str]:
    """From now on kraken takes every AddOrder but its answer is lost (a timeout), and the
    orders it took stay out of OpenOrders and ClosedOrders (kraken lagging) while their txids
    are in the set returned; empty the set to let them show."""
    hidden: set[str] = set()
    lists = {"OpenOrders": kraken.open_orders, "ClosedOrders": kraken.closed_orders}

    def add_order(url: Any, **kwargs: Any) -> CallbackResult:
        hidden.add(kraken.place(kraken.form(kwargs)))
        raise TimeoutError("kraken took the order; its answer never came")

    def lagging(endpoint: str) -> Callable[..., CallbackResult]:
        key = "open" if endpoint == "OpenOrders" else "closed"

        def answer(url: Any, **kwargs: Any) -> CallbackResult:
            result = lists[endpoint](url, **kwargs)
            listed = result.payload["result"][key]  # type: ignore[index]
            for txid in hidden:
                listed.pop(txid, None)
            return result

        return answer

    setattr(kraken, "add_order", add_order)  # noqa: B010 (served by name, per instance)
    setattr(kraken, "open_orders", lagging("OpenOrders"))  # noqa: B010
    setattr(kraken, "closed_orders", lagging("ClosedOrders"))  # noqa: B010
    return hidden


async def test_an_order_the_journal_failed_but_kraken_took_is_adopted_and_managed_again(
    live: Live,
) -> None:
    hidden = lose_add_order_answers(live.kraken)
    result = await live.runner.gateway().submit(
        OrderIntent(SYMBOL, Side.BUY, OrderType.LIMIT, AMOUNT, PRICE)
    )
    assert (result.outcome, result.code) == ("failed", "retries_exhausted"), result
    client_order_id = result.client_order_id
    assert client_order_id is not None
    assert client_order_id not in live.runner.parts.book.live_orders
    ((txid,),) = (hidden,)
    hidden.clear()  # kraken shows it now: it rests
    assert live.kraken.resting() == [txid]

    bot = await entry(live)
    assert bot["errors"] == []
    (found,) = bot["differences"]
    assert found["kind"] == "order_open_on_exchange"
    assert found["subject"] == f"order {client_order_id}"
    assert order_shown(found["journal"]) == (f"failed: buy {AMOUNT} @ {PRICE}", Decimal(0))
    assert order_shown(found["exchange"]) == (f"open: buy {AMOUNT} @ {PRICE}", Decimal(0))
    assert "needs an operator" in found["detail"]
    assert found["correctable"] is True

    report, bot, writes = await applied(live)
    assert writes == []
    assert bot["errors"] == []
    assert bot["remaining"] == [], kinds(bot["remaining"])
    (correction,) = bot["corrections"]
    assert correction["kind"] == "order_open_on_exchange"
    assert correction["action"] == f"status failed -> open; exchange order id {txid}"
    (order,) = await query(
        live,
        "SELECT status, exchange_order_id FROM orders WHERE client_order_id = ?",
        client_order_id,
    )
    assert order == ("open", txid)
    *_, last = await events_of(live, client_order_id)
    assert last == (
        "failed",
        "open",
        f"reconciliation correction #{correction['id']}: {correction['action']}",
    )
    adopted = live.runner.parts.book.live_orders[client_order_id]
    assert (adopted.status, adopted.exchange_order_id) == (OrderStatus.OPEN, txid)
    assert (await entry(live))["differences"] == []
    await integrity_ok(live)  # failed -> open is allowed: its event names the correction

    # The bot's gateway manages it again: its fill is the bot's.
    live.kraken.fill_now(txid)
    await live.runner.gateway().refresh_live_orders("test: the adopted order fills")
    assert client_order_id not in live.runner.parts.book.live_orders
    assert live.runner.parts.book.position.base == AMOUNT
    assert live.runner.parts.book.balances == after_buy() == on_kraken(live.kraken)
    assert (await entry(live))["differences"] == []
    assert f"order {client_order_id}" in render_table(report)


# ----- 6. balance drift -------------------------------------------------------------------------


@pytest.mark.parametrize(("asset", "moved"), [("AUD", "500"), ("BTC", "-0.01")])
async def test_money_moved_on_kraken_outside_the_bot_is_balance_drift_and_an_adjustment(
    live: Live, asset: str, moved: str
) -> None:
    live.kraken.deposit(asset, moved)  # a deposit, or a withdrawal
    now = OPENING[asset] + Decimal(moved)

    bot = await entry(live)
    assert bot["errors"] == []
    (drift,) = bot["differences"]
    assert drift["kind"] == "balance_drift"
    assert drift["subject"] == f"balance {asset}"
    assert Decimal(drift["journal"]) == OPENING[asset]
    assert Decimal(drift["exchange"]) == now
    assert Decimal(drift["difference"]) == Decimal(moved)
    assert drift["detail"] == "will be an adjustment entry"
    assert drift["correctable"] is True

    report, bot, writes = await applied(live)
    assert writes == []
    assert bot["remaining"] == []
    (correction,) = bot["corrections"]
    assert (correction["kind"], correction["subject"]) == ("balance_drift", f"balance {asset}")
    change = Decimal(moved)
    amount, rest = correction["action"].removeprefix("adjustment of ").split(" ", 1)
    assert (Decimal(amount), rest) == (change, f"{asset} to the exchange's balance")
    *_, adjustment = await query(
        live, "SELECT asset, amount, reason FROM balance_adjustments WHERE bot = ? ORDER BY id", BOT
    )
    assert (adjustment[0], Decimal(adjustment[1])) == (asset, change)
    assert adjustment[2] == f"reconciliation correction #{correction['id']}: {correction['action']}"
    expected = {**OPENING, asset: now}
    assert live.runner.parts.book.balances == expected == on_kraken(live.kraken)
    assert (await stored_book(live))[1] == expected
    assert (await entry(live))["differences"] == []
    assert f"balance {asset}" in render_table(report)
    await integrity_ok(live)  # balances are still adjustments plus fills


# ----- 7. kraken cannot be read -----------------------------------------------------------------


def http_500(url: Any, **kwargs: Any) -> CallbackResult:
    return CallbackResult(status=500, body="Internal Server Error", content_type="text/plain")


def timeout(url: Any, **kwargs: Any) -> CallbackResult:
    raise TimeoutError("no answer from kraken")


def not_json(url: Any, **kwargs: Any) -> CallbackResult:
    return CallbackResult(body="<html><body>down for maintenance</body></html>")


FAILURES = {"http 500": http_500, "timeout": timeout, "not json": not_json}
# What a reconciliation reads from kraken, and FakeKraken's method answering it.
READS = {
    "OpenOrders": "open_orders",
    "TradesHistory": "trades_history",
    "OpenPositions": "open_positions",
    "BalanceEx": "balance_ex",
}


def broken(kraken: FakeKraken, endpoint: str, answer: Callable[..., CallbackResult]) -> None:
    setattr(kraken, READS[endpoint], answer)


def mended(kraken: FakeKraken, endpoint: str) -> None:
    delattr(kraken, READS[endpoint])


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("endpoint", list(READS))
async def test_a_kraken_that_cannot_be_read_is_an_error_in_the_report_and_nothing_is_corrected(
    live: Live, endpoint: str, failure: str
) -> None:
    client_order_id, _ = await resting_buy(live)
    live.kraken.deposit("AUD", "500")  # a correctable difference, were kraken readable
    before = await journal_snapshot(live)
    broken(live.kraken, endpoint, FAILURES[failure])

    report, bot, writes = await applied(live)
    assert writes == []
    (error,) = bot["errors"]
    assert error.startswith("could not read kraken: "), error
    assert bot["differences"] == bot["corrections"] == bot["remaining"] == []
    assert report["summary"] == {"differences": 0, "corrections": 0, "remaining": 0, "errors": 1}
    assert report["clean"] is False
    assert f"ERROR {error}" in render_table(report)
    assert await journal_snapshot(live) == before
    assert live.runner.parts.book.balances == OPENING
    assert client_order_id in live.runner.parts.book.live_orders
    (run,) = await query(live, "SELECT differences, corrections FROM reconciliation_runs")
    assert run == (0, 0)

    # The coordinator carries on: once kraken answers, the next run corrects the journal.
    assert live.coordinator.status()["reconciliation"]["last"]["run_id"] == report["run_id"]
    mended(live.kraken, endpoint)
    _, bot, _ = await applied(live)
    assert bot["errors"] == []
    assert kinds(bot["corrections"]) == [("balance_drift", "balance AUD")]
    assert bot["remaining"] == []


async def test_a_balance_answer_of_the_wrong_shape_is_an_error_and_nothing_is_corrected(
    live: Live,
) -> None:
    before = await journal_snapshot(live)
    broken(live.kraken, "BalanceEx", lambda url, **kw: CallbackResult(payload=kraken_ok([])))

    _, bot, writes = await applied(live)
    assert writes == []
    assert bot["corrections"] == []
    assert await journal_snapshot(live) == before
    assert live.runner.parts.book.balances == OPENING
    (error,) = bot["errors"]
    assert error.startswith("could not read kraken: "), error


async def test_a_running_bot_keeps_trading_while_a_reconciliation_cannot_read_kraken(
    live: Live,
) -> None:
    coordinator, kraken, runner = live.coordinator, live.kraken, live.runner
    await coordinator.supervisor.start(BOT)
    await eventually(lambda: len(kraken.resting()) == 6, what="the grid's six orders resting")
    broken(kraken, "TradesHistory", timeout)

    report = await coordinator.reconcile(BOT, True, "test")
    (bot,) = report["bots"]
    assert bot["running"] is True
    (error,) = bot["errors"]
    assert error.startswith("could not read kraken: ")
    assert bot["corrections"] == []

    assert runner.state is BotState.RUNNING
    lowest_buy = min(
        (t for t in kraken.resting() if kraken.orders[t]["descr"]["type"] == "buy"),
        key=lambda t: Decimal(kraken.orders[t]["descr"]["price"]),
    )
    kraken.fill_now(lowest_buy)
    await eventually(lambda: runner.parts.book.fills_count == 1, what="the fill journaled")
    await eventually(
        lambda: (
            len(kraken.orders) == 12
            and len(kraken.resting()) == 6
            and len(runner.parts.book.live_orders) == 6
            and all(o.status is OrderStatus.OPEN for o in runner.parts.book.live_orders.values())
        ),
        what="the grid re-centred on the fill",
    )
    mended(kraken, "TradesHistory")
    bot = await entry(live)
    assert (bot["errors"], bot["differences"]) == ([], [])
    assert runner.parts.book.balances == on_kraken(kraken)


# ----- kraken's trade history comes in pages ----------------------------------------------------


async def test_a_missing_fill_older_than_the_newest_page_of_trades_is_still_found(
    live: Live,
) -> None:
    amount, part, parts = Decimal("0.006"), Decimal("0.0001"), 60
    result = await live.runner.gateway().submit(
        OrderIntent(SYMBOL, Side.BUY, OrderType.LIMIT, amount, PRICE)
    )
    assert result.client_order_id is not None
    client_order_id = result.client_order_id
    txid = txid_of(live.kraken, client_order_id)
    trades = [live.kraken.fill_now(txid, amount=str(part)) for _ in range(parts)]
    start = time.time() - 120
    for n, trade_id in enumerate(trades):  # a second apart, the first the oldest
        live.kraken.trades[trade_id]["time"] = start + n
    first = trades[0]
    await live.runner.gateway().refresh_live_orders("test: sixty part fills")
    assert live.runner.parts.book.fills_count == parts
    assert live.kraken.orders[txid]["status"] == "closed"
    await live.coordinator.store.write([("DELETE FROM fills WHERE trade_id = ?", (first,))])

    bot = await entry(live)
    assert bot["errors"] == []
    assert kinds(bot["differences"]) == [
        ("missing_fill", f"trade {first} of order {client_order_id}")
    ]


# ----- 9. orders lost from a restored journal ---------------------------------------------------


async def mark_restored(live: Live, backup_taken: datetime) -> None:
    """The journal as a restore leaves it: marked with its backup's time and the restore's."""
    mark = RestoredJournal("config-test.tar.gz", backup_taken, datetime.now(UTC))
    await live.coordinator.store.write(
        [
            (
                "INSERT INTO safety_state (key, value, updated_at) VALUES (?, ?, ?)",
                (RESTORED_KEY, json.dumps(mark.to_json()), mark.to_json()["restored_at"]),
            )
        ]
    )


async def sent_unjournaled(live: Live, price: Decimal = PRICE) -> tuple[int, str]:
    """A limit buy kraken took that the journal does not have: what a coordinator sent after
    the backup its journal was later restored from. Its client order id and txid."""
    cid = ClientOrderIds().next()
    await live.runner.parts.adapter.create_order(
        OrderRequest(cid, SYMBOL, Side.BUY, OrderType.LIMIT, AMOUNT, price)
    )
    return cid, txid_of(live.kraken, cid)


async def test_orders_sent_after_the_backup_are_adopted_from_kraken_into_the_restored_journal(
    live: Live,
) -> None:
    backup_taken = datetime.now(UTC)
    resting, _ = await sent_unjournaled(live)
    filled, txid = await sent_unjournaled(live)
    trade_id = live.kraken.fill_now(txid)
    await mark_restored(live, backup_taken)

    bot = await entry(live)
    assert bot["errors"] == []
    assert kinds(bot["differences"]) == [
        ("order_lost_from_journal", f"order {resting}"),
        ("order_lost_from_journal", f"trade {trade_id} of order {filled}"),
        ("balance_drift", "balance AUD"),
        ("balance_drift", "balance BTC"),
    ]
    lost = bot["differences"][0]
    assert lost["correctable"] is True
    assert "config-test.tar.gz" in lost["detail"]
    for d in bot["differences"][2:]:
        assert d["detail"] == "recording the missing fills accounts for all of it"

    report, bot, writes = await applied(live)
    assert writes == []  # adopting sends and cancels nothing
    assert bot["errors"] == []
    assert bot["remaining"] == [], kinds(bot["remaining"])
    assert [(c["kind"], c["subject"]) for c in bot["corrections"]] == [
        ("order_lost_from_journal", f"order {resting}"),
        ("order_lost_from_journal", f"order {filled}"),
    ]
    rows = await query(
        live,
        "SELECT client_order_id, status, filled, exchange_order_id FROM orders ORDER BY 1",
    )
    assert [(r[0], r[1], Decimal(r[2]), r[3]) for r in rows] == [
        (resting, "open", Decimal(0), txid_of(live.kraken, resting)),
        (filled, "filled", AMOUNT, txid),
    ]
    correction = bot["corrections"][1]["id"]
    assert await events_of(live, filled) == [
        (None, "pending_submit", f"intent (lost from the journal; put back by reconciliation "
                                 f"correction #{correction})"),
        ("pending_submit", "filled", f"reconciliation correction #{correction}: "
                                     + bot["corrections"][1]["action"]),
    ]  # fmt: skip
    assert await query(live, "SELECT amount FROM fills WHERE trade_id = ?", trade_id) == [
        (str(AMOUNT),)
    ]
    book = live.runner.parts.book
    assert set(book.live_orders) == {resting}  # the bot manages its resting order again
    assert book.position.base == AMOUNT
    assert book.balances == after_buy() == on_kraken(live.kraken)
    assert await stored_book(live) == (AMOUNT, after_buy())
    assert f"order {filled}" in render_table(report)
    assert (await entry(live))["differences"] == []
    await integrity_ok(live)


async def test_without_a_restore_orders_unknown_to_the_journal_are_never_adopted(
    live: Live,
) -> None:
    resting, _ = await sent_unjournaled(live)
    _, txid = await sent_unjournaled(live)
    trade_id = live.kraken.fill_now(txid)

    _, bot, writes = await applied(live)
    assert writes == []
    assert kinds(bot["remaining"]) == [
        ("unknown_open_order", f"exchange order {txid_of(live.kraken, resting)}"),
        ("unknown_trade", f"trade {trade_id}"),
    ]
    assert await query(live, "SELECT * FROM orders") == []
    assert live.runner.parts.book.position.base == 0


async def test_an_order_sent_before_the_backup_was_taken_is_not_adopted_after_a_restore(
    live: Live,
) -> None:
    filled, txid = await sent_unjournaled(live)
    trade_id = live.kraken.fill_now(txid)
    await mark_restored(live, datetime.now(UTC) + BACKUP_CLOCK_SLACK + timedelta(seconds=5))

    _, bot, _ = await applied(live)
    assert ("unknown_trade", f"trade {trade_id}") in kinds(bot["remaining"])
    assert await query(live, "SELECT * FROM orders WHERE client_order_id = ?", filled) == []
