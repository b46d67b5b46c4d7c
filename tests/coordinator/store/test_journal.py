"""The SQLite order journal: intents and updates round-trip, and nothing half-written survives."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bots.journal import (
    FillRecord,
    InvalidOrderTransition,
    JournalOrder,
    OrderStatus,
    OrderUpdate,
)
from bots.ledger import Position
from bots.models import OrderType, Side
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore, StoreError
from tests.support_postgres import OpenAnyStore

D = Decimal
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
BOT = "alpha"
OPENING = {"AUD": D("10000"), "BTC": D("1")}

OpenJournal = Callable[..., Awaitable[SqliteJournal]]


@pytest.fixture
async def open_journal(open_any_store: OpenAnyStore) -> OpenJournal:
    """A journal on a fresh store (SQLite, and PostgreSQL: every test here runs on both) with
    the given bots registered and their accounts opened."""

    async def factory(*bots: str) -> SqliteJournal:
        store = await open_any_store()
        journal = SqliteJournal(store)
        for name in bots or (BOT,):
            await journal.register_bot(name, "paper", "BTC/AUD", "paper", T0)
            await journal.seed_balances(name, OPENING, "paper account opening balance", T0)
        return journal

    return factory


def intent(cid: int, bot: str = BOT, **changes: Any) -> JournalOrder:
    order = JournalOrder(
        client_order_id=cid,
        bot=bot,
        exchange="paper",
        symbol="BTC/AUD",
        side=Side.BUY,
        type=OrderType.LIMIT,
        amount=D("0.5"),
        price=D("100.00"),
        status=OrderStatus.PENDING_SUBMIT,
        created_at=T0,
        tag="level-1",
    )
    return replace(order, **changes)


def fill(order: JournalOrder, trade_id: str, amount: str, price: str, fee: str) -> FillRecord:
    return FillRecord(
        order.client_order_id,
        order.bot,
        trade_id,
        order.side,
        D(amount),
        D(price),
        D(fee),
        "AUD",
        T0 + timedelta(seconds=1),
    )


async def order_row(journal: SqliteJournal, cid: int) -> dict[str, Any]:
    row = await journal.store.fetch_one("SELECT * FROM orders WHERE client_order_id = ?", (cid,))
    assert row is not None, f"no order row {cid}"
    return dict(row)


async def count(journal: SqliteJournal, table: str) -> int:
    row = await journal.store.fetch_one(f"SELECT COUNT(*) FROM {table}")
    assert row is not None
    return int(row[0])


async def test_intent_and_updates_round_trip_through_load_book(open_journal: OpenJournal) -> None:
    journal = await open_journal(BOT, "other")
    resting = intent(101)
    done = intent(102, type=OrderType.MARKET, price=None, side=Side.SELL, tag="")
    await journal.record_intent(resting)
    await journal.record_intent(done)
    await journal.record_intent(intent(900, bot="other"))  # another bot's order is not ours

    # 101: acknowledged and partly filled; it stays open.
    acked = replace(resting, status=OrderStatus.OPEN, filled=D("0.2"), exchange_order_id="x-1")
    first_fill = fill(resting, "t-1", "0.2", "100.00", "0.02")
    position = Position(D("0.2"), D("100.00"), D(0), D("0.02"))
    await journal.record_update(
        OrderUpdate(
            acked,
            OrderStatus.PENDING_SUBMIT,
            T0 + timedelta(seconds=1),
            fills=[first_fill],
            position=position,
            balances={"AUD": D("9979.98"), "BTC": D("1.2")},
            detail="acknowledged",
        )
    )
    # 102: sold in full.
    sold = replace(done, status=OrderStatus.FILLED, filled=D("0.5"), exchange_order_id="x-2")
    position = Position(D("-0.3"), D("101.00"), D("0.5"), D("0.07"))
    await journal.record_update(
        OrderUpdate(
            sold,
            OrderStatus.PENDING_SUBMIT,
            T0 + timedelta(seconds=2),
            fills=[fill(sold, "t-2", "0.5", "101.00", "0.05")],
            position=position,
            balances={"AUD": D("10030.43"), "BTC": D("0.7")},
        )
    )

    book = await journal.load_book(BOT)

    assert book.position == position
    assert book.balances == {"AUD": D("10030.43"), "BTC": D("0.7")}
    assert book.open_orders == [acked]
    assert book.trade_ids == {101: {"t-1"}}
    assert book.orders_count == 2
    assert book.fills_count == 2
    assert book.last_order_at == T0
    assert await journal.max_client_order_id() == 900
    assert await journal.count_orders_since(BOT, T0) == 2
    assert await journal.count_orders_since(BOT, T0 + timedelta(seconds=1)) == 0
    events = await journal.store.fetch_all(
        "SELECT from_status, to_status, detail FROM order_events"
        " WHERE client_order_id = 101 ORDER BY id"
    )
    assert [tuple(e) for e in events] == [
        (None, "pending_submit", "intent"),
        ("pending_submit", "open", "acknowledged"),
    ]


async def test_a_fresh_bot_loads_an_empty_book(open_journal: OpenJournal) -> None:
    journal = await open_journal()
    book = await journal.load_book("never-seen")
    assert book.position == Position()
    assert book.balances == {}
    assert book.open_orders == []
    assert (book.orders_count, book.fills_count, book.last_order_at) == (0, 0, None)


async def test_an_intent_must_be_pending_submit(open_journal: OpenJournal) -> None:
    journal = await open_journal()
    with pytest.raises(ValueError, match="pending_submit"):
        await journal.record_intent(intent(1, status=OrderStatus.OPEN))
    assert await count(journal, "orders") == 0


async def test_an_impossible_transition_raises_and_writes_nothing(
    open_journal: OpenJournal,
) -> None:
    journal = await open_journal()
    order = intent(7)
    await journal.record_intent(order)
    filled = replace(order, status=OrderStatus.FILLED, filled=order.amount)
    await journal.record_update(OrderUpdate(filled, OrderStatus.PENDING_SUBMIT, T0))
    row_before = await order_row(journal, 7)
    events_before = await count(journal, "order_events")
    jobs_before = journal.store.stats.jobs

    reopened = replace(filled, status=OrderStatus.OPEN)
    with pytest.raises(InvalidOrderTransition, match="filled -> open") as raised:
        await journal.record_update(
            OrderUpdate(
                reopened,
                OrderStatus.FILLED,
                T0 + timedelta(seconds=5),
                position=Position(D(1)),
                balances={"BTC": D(99)},
            )
        )

    assert (raised.value.current, raised.value.target) == (OrderStatus.FILLED, OrderStatus.OPEN)
    assert journal.store.stats.jobs == jobs_before
    assert await order_row(journal, 7) == row_before
    assert await count(journal, "order_events") == events_before
    book = await journal.load_book(BOT)
    assert book.position == Position()
    assert book.balances == OPENING


async def test_a_duplicate_fill_is_refused_and_nothing_of_its_update_commits(
    open_journal: OpenJournal,
) -> None:
    journal = await open_journal()
    order = intent(8)
    await journal.record_intent(order)
    partly = replace(order, status=OrderStatus.OPEN, filled=D("0.2"), exchange_order_id="x-8")
    position = Position(D("0.2"), D("100.00"), D(0), D("0.02"))
    balances = {"AUD": D("9979.98"), "BTC": D("1.2")}
    await journal.record_update(
        OrderUpdate(
            partly,
            OrderStatus.PENDING_SUBMIT,
            T0,
            fills=[fill(order, "t-1", "0.2", "100.00", "0.02")],
            position=position,
            balances=balances,
        )
    )
    row_before = await order_row(journal, 8)
    events_before = await count(journal, "order_events")

    # The same trade again (with a genuinely new one): the whole update must be refused.
    full = replace(partly, status=OrderStatus.FILLED, filled=D("0.5"))
    with pytest.raises(StoreError, match=r"UNIQUE|unique constraint"):
        await journal.record_update(
            OrderUpdate(
                full,
                OrderStatus.OPEN,
                T0 + timedelta(seconds=3),
                fills=[
                    fill(order, "t-2", "0.3", "100.00", "0.03"),
                    fill(order, "t-1", "0.2", "100.00", "0.02"),
                ],
                position=Position(D("0.7"), D("100.00"), D(0), D("0.07")),
                balances={"AUD": D("9929.95"), "BTC": D("1.7")},
            )
        )

    assert await order_row(journal, 8) == row_before
    assert await count(journal, "order_events") == events_before
    fills = await journal.store.fetch_all("SELECT trade_id FROM fills")
    assert [r["trade_id"] for r in fills] == ["t-1"]
    book = await journal.load_book(BOT)
    assert book.position == position
    assert book.balances == balances
    assert book.open_orders == [partly]
    assert book.fills_count == 1


async def test_the_same_trade_id_on_another_order_is_a_different_fill(
    open_journal: OpenJournal,
) -> None:
    journal = await open_journal()
    for cid in (1, 2):
        order = intent(cid)
        await journal.record_intent(order)
        await journal.record_update(
            OrderUpdate(
                replace(order, status=OrderStatus.FILLED, filled=order.amount),
                OrderStatus.PENDING_SUBMIT,
                T0,
                fills=[fill(order, "t-1", "0.5", "100.00", "0")],
            )
        )
    assert await count(journal, "fills") == 2


async def test_seed_balances_writes_adjustments_and_balances(open_journal: OpenJournal) -> None:
    journal = await open_journal()  # seeded with OPENING by the fixture
    await journal.seed_balances(BOT, {"ETH": D("2.5")}, "top-up", T0 + timedelta(hours=1))

    rows = await journal.store.fetch_all(
        "SELECT bot, asset, amount, reason FROM balance_adjustments ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (BOT, "AUD", "10000", "paper account opening balance"),
        (BOT, "BTC", "1", "paper account opening balance"),
        (BOT, "ETH", "2.5", "top-up"),
    ]
    book = await journal.load_book(BOT)
    assert book.balances == {"AUD": D("10000"), "BTC": D("1"), "ETH": D("2.5")}


async def test_audit_events_come_back_newest_first_with_their_details(
    open_journal: OpenJournal,
) -> None:
    journal = await open_journal()
    safety_before = journal.store.stats.safety_commits
    for i in range(3):
        await journal.audit(
            actor="operator",
            action=f"action-{i}",
            result="ok",
            at=T0 + timedelta(seconds=i),
            subject=BOT,
            reason=f"because {i}",
            details={"step": i, "amount": D("1.5")},
        )

    recent = await journal.recent_audit(2)

    assert [e["action"] for e in recent] == ["action-2", "action-1"]
    newest = recent[0]
    assert newest["actor"] == "operator"
    assert newest["subject"] == BOT
    assert newest["reason"] == "because 2"
    assert newest["result"] == "ok"
    assert newest["details"] == {"step": 2, "amount": "1.5"}
    assert datetime.fromisoformat(newest["at"]) == T0 + timedelta(seconds=2)
    # Audit entries take the safety lane by default.
    assert journal.store.stats.safety_commits == safety_before + 3


async def test_save_bot_state_persists_the_known_fields(open_journal: OpenJournal) -> None:
    journal = await open_journal()
    later = T0 + timedelta(minutes=5)
    await journal.save_bot_state(
        BOT,
        later,
        state="running",
        safe_mode=True,
        restarts=2,
        last_error="boom",
        last_tick_at=later,
        strategy_state={"centre": "100.5"},
    )
    row = await journal.load_bot_row(BOT)
    assert row is not None
    assert row["state"] == "running"
    assert row["safe_mode"] == 1
    assert row["restarts"] == 2
    assert row["last_error"] == "boom"
    assert datetime.fromisoformat(row["last_tick_at"]) == later
    assert json.loads(row["strategy_state"]) == {"centre": "100.5"}
    assert datetime.fromisoformat(row["updated_at"]) == later
    assert await journal.load_bot_row("nobody") is None


async def test_save_bot_state_rejects_unknown_fields_and_writes_nothing(
    open_journal: OpenJournal,
) -> None:
    journal = await open_journal()
    before = await journal.load_bot_row(BOT)
    jobs_before = journal.store.stats.jobs

    # Real columns that are config, not state, are refused as firmly as made-up ones.
    with pytest.raises(ValueError, match="exchange"):
        await journal.save_bot_state(BOT, T0, state="running", exchange="kraken")
    with pytest.raises(ValueError, match="updated_at"):
        await journal.save_bot_state(BOT, T0, updated_at="never")
    with pytest.raises(ValueError, match="no_such_column"):
        await journal.save_bot_state(BOT, T0, no_such_column=1)

    assert journal.store.stats.jobs == jobs_before
    assert await journal.load_bot_row(BOT) == before


async def test_register_bot_refreshes_config_but_keeps_state(open_journal: OpenJournal) -> None:
    journal = await open_journal()
    await journal.save_bot_state(BOT, T0, restarts=3, strategy_state={"k": 1})
    await journal.register_bot(BOT, "kraken", "ETH/AUD", "live", T0 + timedelta(days=1))
    row = await journal.load_bot_row(BOT)
    assert row is not None
    assert (row["exchange"], row["symbol"], row["mode"]) == ("kraken", "ETH/AUD", "live")
    assert row["restarts"] == 3
    assert json.loads(row["strategy_state"]) == {"k": 1}


async def test_an_order_for_an_unregistered_bot_is_refused(open_journal: OpenJournal) -> None:
    journal = await open_journal()
    with pytest.raises(StoreError, match=r"(?i)FOREIGN KEY"):
        await journal.record_intent(intent(5, bot="ghost"))
    assert await count(journal, "orders") == 0


async def test_an_update_from_a_stale_status_commits_nothing_of_itself(tmp_path: Path) -> None:
    """The guarded UPDATE matches no row, so the fills and balances that came with it must not
    commit either: the journal may never hold a fill for an order row it did not change."""
    store = await SqliteStore.open(tmp_path / "stale.db")
    try:
        journal = SqliteJournal(store)
        now = datetime.now(UTC)
        await journal.register_bot("alpha", "paper", "BTC/AUD", "paper", now)
        order = JournalOrder(
            7,
            "alpha",
            "paper",
            "BTC/AUD",
            Side.BUY,
            OrderType.MARKET,
            Decimal(1),
            None,
            OrderStatus.PENDING_SUBMIT,
            now,
        )
        await journal.record_intent(order)
        failed = replace(order, status=OrderStatus.FAILED, reason="not sent")
        await journal.record_update(OrderUpdate(failed, OrderStatus.PENDING_SUBMIT, now))

        filled = replace(order, status=OrderStatus.FILLED, filled=Decimal(1))
        fill = FillRecord(
            7, "alpha", "t1", Side.BUY, Decimal(1), Decimal(100), Decimal(0), "AUD", now
        )
        stale = OrderUpdate(
            filled,
            OrderStatus.PENDING_SUBMIT,
            now,
            fills=[fill],
            position=Position(Decimal(1), Decimal(100)),
            balances={"AUD": Decimal(-100)},
        )
        with pytest.raises(StoreError, match="expected 1 row"):
            await journal.record_update(stale)

        book = await journal.load_book("alpha")
        assert book.fills_count == 0
        assert book.balances == {}
        assert book.position == Position()
        row = await store.fetch_one("SELECT status FROM orders WHERE client_order_id = 7")
        assert row is not None
        assert row[0] == "failed"
    finally:
        await store.close()
