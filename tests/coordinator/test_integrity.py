"""`coordinator.integrity`: real journals, tampered by hand with sqlite3, then verified.

The journal is written through `SqliteJournal` the way the gateway writes it (each fill moves
the position and balances in the same update); the store is closed, and the file is edited
with plain sqlite3 off the event loop (`asyncio.to_thread`), as an operator's tool would.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bots.journal import FillRecord, JournalOrder, OrderStatus, OrderUpdate
from bots.ledger import Position, apply_changes, balance_changes, fee_in_quote
from bots.models import OrderType, Side
from coordinator.config.models import CoordinatorConfig
from coordinator.integrity import Inconsistency, IntegrityReport, NoDatabase, verify_database
from coordinator.runtime import DATABASE_FILE, Coordinator
from coordinator.store.audit_chain import entry_hash
from coordinator.store.journal import SqliteJournal
from coordinator.store.migrations import LATEST_VERSION
from coordinator.store.sqlite import SqliteStore
from tests.support_config import eventually

D = Decimal
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GRID = "grid-btc"  # BTC/AUD, fees in AUD
DCA = "dca-eth"  # ETH/USDT:USDT, its fee in ETH (the base asset)
AUDIT_ENTRIES = 5


# -- building a journal ---------------------------------------------------------------------------


@dataclass
class Book:
    """A bot's book moved fill by fill exactly as the gateway's `_apply` moves it."""

    base: str
    quote: str
    position: Position = field(default_factory=Position)
    balances: dict[str, Decimal] = field(default_factory=dict)

    def take(self, fills: Sequence[FillRecord]) -> dict[str, Decimal]:
        changed: dict[str, Decimal] = {}
        for f in fills:
            fee = fee_in_quote(f.fee, f.fee_currency, f.price, self.base, self.quote)
            self.position = self.position.apply_fill(f.side, f.amount, f.price, fee)
            deltas = balance_changes(
                f.side, f.amount, f.price, f.fee, f.fee_currency, self.base, self.quote
            )
            totals = apply_changes(self.balances, deltas)
            self.balances.update(totals)
            changed.update(totals)
        return changed


class Writer:
    def __init__(self, journal: SqliteJournal) -> None:
        self.journal = journal
        self.books: dict[str, Book] = {}
        self.clock = T0

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    async def bot(self, name: str, symbol: str, opening: dict[str, Decimal]) -> None:
        base, quote = symbol.split(":")[0].split("/")
        await self.journal.register_bot(name, "paper", symbol, "paper", T0)
        await self.journal.seed_balances(name, opening, "paper account opening balance", T0)
        self.books[name] = Book(base, quote, balances=dict(opening))

    async def order(self, cid: int, bot: str, side: Side, amount: str) -> JournalOrder:
        order = JournalOrder(
            client_order_id=cid,
            bot=bot,
            exchange="paper",
            symbol="BTC/AUD" if bot == GRID else "ETH/USDT:USDT",
            side=side,
            type=OrderType.LIMIT,
            amount=D(amount),
            price=D("100"),
            status=OrderStatus.PENDING_SUBMIT,
            created_at=self.tick(),
        )
        await self.journal.record_intent(order)
        return order

    async def move(
        self,
        order: JournalOrder,
        status: OrderStatus,
        trades: Sequence[tuple[str, str, str, str, str]] = (),  # id, amount, price, fee, ccy
        detail: str = "",
    ) -> JournalOrder:
        fills = [
            FillRecord(
                order.client_order_id,
                order.bot,
                trade_id,
                order.side,
                D(amount),
                D(price),
                D(fee),
                currency,
                self.clock,
            )
            for trade_id, amount, price, fee, currency in trades
        ]
        book = self.books[order.bot]
        changed = book.take(fills)
        updated = replace(
            order, status=status, filled=order.filled + sum((f.amount for f in fills), D(0))
        )
        await self.journal.record_update(
            OrderUpdate(
                updated,
                order.status,
                self.tick(),
                fills=fills,
                position=book.position if fills else None,
                balances=changed,
                detail=detail,
            )
        )
        return updated


async def build_journal(path: Path) -> dict[str, Book]:
    """`write_journal` in a SQLite file at `path`."""
    store = await SqliteStore.open(path)
    try:
        return await write_journal(store)
    finally:
        await store.close()


async def write_journal(store: SqliteStore) -> dict[str, Book]:
    """Two bots: 101 bought in two fills, 102 sold in one, 103 cancelled, 104 failed; the DCA
    bot's 201 filled with its fee in the base asset. Five audit entries. Returns the books."""
    w = Writer(SqliteJournal(store))
    await w.bot(GRID, "BTC/AUD", {"AUD": D("10000"), "BTC": D("1")})
    await w.bot(DCA, "ETH/USDT:USDT", {"USDT": D("5000")})
    buy = await w.order(101, GRID, Side.BUY, "0.5")
    buy = await w.move(buy, OrderStatus.OPEN, [("t-1", "0.2", "100", "0.02", "AUD")])
    await w.move(buy, OrderStatus.FILLED, [("t-2", "0.3", "99.5", "0.03", "AUD")])
    sell = await w.order(102, GRID, Side.SELL, "0.4")
    await w.move(sell, OrderStatus.FILLED, [("t-3", "0.4", "110", "0.044", "AUD")])
    rest = await w.move(await w.order(103, GRID, Side.BUY, "0.1"), OrderStatus.OPEN)
    await w.move(rest, OrderStatus.CANCELED, detail="stopped")
    await w.move(await w.order(104, GRID, Side.BUY, "0.1"), OrderStatus.FAILED)
    eth = await w.order(201, DCA, Side.BUY, "1")
    await w.move(eth, OrderStatus.FILLED, [("e-1", "1", "2000", "0.001", "ETH")])
    for n in range(AUDIT_ENTRIES):
        await w.journal.audit(
            actor="operator-token", action=f"action-{n}", result="ok", at=w.tick()
        )
    return w.books


def tamper(path: Path, *statements: str | tuple[str, Sequence[Any]]) -> None:
    """Edit the file as a hand with sqlite3 would (foreign keys off: sqlite3's default).
    Blocking: call it through asyncio.to_thread."""
    with closing(sqlite3.connect(path)) as db:
        for statement in statements:
            if isinstance(statement, str):
                db.execute(statement)
            else:
                db.execute(*statement)
        db.commit()


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


@pytest.fixture
async def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    await build_journal(path)
    return path


async def edit(path: Path, *statements: str | tuple[str, Sequence[Any]]) -> None:
    await asyncio.to_thread(tamper, path, *statements)


def rows(report: IntegrityReport, check: str, table: str | None = None) -> list[Inconsistency]:
    return [
        i
        for i in report.inconsistencies
        if i.check == check and (table is None or i.table == table)
    ]


def where(report: IntegrityReport, check: str, row: str) -> Inconsistency:
    matches = [i for i in report.inconsistencies if i.check == check and i.row == row]
    assert len(matches) == 1, report.render_text()
    return matches[0]


# -- clean ----------------------------------------------------------------------------------------


async def test_a_clean_journal_is_ok_and_says_how_much_it_checked(journal: Path) -> None:
    report = await verify_database(journal)

    assert report.ok, report.render_text()
    assert report.inconsistencies == []
    assert report.checked["orders"] == 5
    assert report.checked["fills"] == 4
    assert report.checked["audit"] == AUDIT_ENTRIES
    assert report.checked["books"] == 2
    assert report.checked["order_events"] == 12
    assert report.render_text().splitlines()[-1] == (
        f"clean: 5 orders, 4 fills, {AUDIT_ENTRIES} audit entries checked"
    )
    assert report.as_dict()["ok"] is True


async def test_a_journal_the_real_coordinator_wrote_is_clean_while_it_runs_and_after(
    config: CoordinatorConfig, data_dir: Path
) -> None:
    """The gateway keeps positions and balances equal to the replay (a DCA bot on a paper
    account), and verifying beside the running coordinator sees one consistent snapshot."""
    coordinator = await Coordinator.open(config, data_dir)
    try:
        runner = await coordinator.supervisor.start("ndax")
        await eventually(lambda: runner.parts.book.fills_count >= 3, what="three fills")
        while_running = await verify_database(data_dir / DATABASE_FILE)
        await coordinator.supervisor.stop("ndax", "test over")
    finally:
        await coordinator.close(grace_seconds=0.5)

    assert while_running.ok, while_running.render_text()
    after = await verify_database(data_dir / DATABASE_FILE)
    assert after.ok, after.render_text()
    assert after.checked["fills"] >= 3
    assert after.checked["audit"] >= 1


# -- books, orders, fills -------------------------------------------------------------------------


async def test_a_fill_deleted_by_hand_names_its_order_the_position_and_the_balances(
    journal: Path,
) -> None:
    await edit(journal, "DELETE FROM fills WHERE trade_id = 't-1'")

    report = await verify_database(journal)

    assert not report.ok
    order = where(report, "orders", "client_order_id 101")
    assert (order.expected, order.found) == ("filled 0.3 (the sum of its 1 fill)", "filled 0.5")
    positions = rows(report, "books", "positions")
    assert {i.row for i in positions} == {f"bot {GRID}"}
    base = next(i for i in positions if "position base " in i.detail)
    assert (D(base.expected), D(base.found)) == (D("-0.1"), D("0.1"))
    assert any("fees_paid" in i.detail for i in positions)
    balances = {i.row: i for i in rows(report, "books", "balances")}
    assert set(balances) == {f"bot {GRID} asset AUD", f"bot {GRID} asset BTC"}
    assert D(balances[f"bot {GRID} asset BTC"].expected) == D("0.9")
    assert D(balances[f"bot {GRID} asset BTC"].found) == D("1.1")
    assert rows(report, "audit") == []
    assert rows(report, "fills") == []
    text = report.render_text()
    assert "client_order_id 101" in text
    assert f"bot {GRID}" in text
    assert text.splitlines()[-1].startswith(f"{len(report.inconsistencies)} inconsistencies")


async def test_a_status_moved_by_hand_through_an_impossible_transition_is_named(
    journal: Path,
) -> None:
    await edit(
        journal,
        "UPDATE orders SET status = 'open' WHERE client_order_id = 102",
        "INSERT INTO order_events (client_order_id, at, from_status, to_status, detail)"
        " VALUES (102, 'later', 'filled', 'open', 'by hand')",
    )

    report = await verify_database(journal)

    found = where(report, "order_events", "client_order_id 102")
    assert found.expected == "a move ORDER_TRANSITIONS allows"
    assert found.found == "filled -> open"
    assert "impossible transition" in found.detail


async def test_a_status_changed_without_its_event_is_named(journal: Path) -> None:
    await edit(journal, "UPDATE orders SET status = 'open' WHERE client_order_id = 104")

    report = await verify_database(journal)

    found = where(report, "order_events", "client_order_id 104")
    assert (found.table, found.expected, found.found) == (
        "orders",
        "status failed (its last event)",
        "status open",
    )


async def test_an_unknown_status_and_a_fill_beyond_the_amount_are_named(journal: Path) -> None:
    await edit(
        journal,
        "UPDATE orders SET status = 'lost' WHERE client_order_id = 104",
        "UPDATE orders SET filled = '0.6' WHERE client_order_id = 101",
    )

    report = await verify_database(journal)

    unknown = [i for i in rows(report, "orders") if i.row == "client_order_id 104"]
    assert [i.found for i in unknown] == ["lost"]
    over = [i for i in rows(report, "orders") if i.row == "client_order_id 101"]
    assert {i.expected for i in over} == {
        "0 <= filled <= amount (amount > 0)",
        "filled 0.5 (the sum of its 2 fills)",
    }


async def test_an_order_with_no_events_is_named(journal: Path) -> None:
    await edit(journal, "DELETE FROM order_events WHERE client_order_id = 103")

    report = await verify_database(journal)

    found = where(report, "order_events", "client_order_id 103")
    assert found.found == "no events"


async def test_a_fill_whose_order_does_not_exist_is_named_with_the_foreign_keys_off(
    journal: Path,
) -> None:
    await edit(
        journal,
        "PRAGMA foreign_keys=OFF",
        "INSERT INTO fills (client_order_id, bot, trade_id, side, amount, price, fee,"
        " fee_currency, executed_at, recorded_at)"
        " VALUES (999, 'grid-btc', 't-9', 'buy', '0.1', '100', '0', 'AUD', 'x', 'x')",
    )
    fill_id = (await asyncio.to_thread(query, journal, "SELECT MAX(id) FROM fills"))[0][0]

    report = await verify_database(journal)

    found = where(report, "fills", f"id {fill_id}")
    assert found.expected == "an order with client_order_id 999"
    assert "foreign keys were off" in found.detail
    keys = where(report, "foreign_keys", f"rowid {fill_id}")
    assert (keys.table, keys.expected) == ("fills", "orders.client_order_id = 999")
    # The fill moved no book, but the replay counts it: the books name the bot too.
    assert {i.row for i in rows(report, "books", "positions")} == {f"bot {GRID}"}


async def test_a_fill_on_another_bots_or_sides_order_with_a_bad_price_is_named(
    journal: Path,
) -> None:
    await edit(
        journal,
        "UPDATE fills SET bot = 'dca-eth', side = 'sell', price = '0' WHERE trade_id = 't-2'",
    )

    report = await verify_database(journal)

    found = {i.expected for i in rows(report, "fills")}
    assert found == {f"bot {GRID}", "side buy", "price > 0"}
    assert all("client_order_id 101" in i.detail for i in rows(report, "fills"))


# -- reconciliation corrections -------------------------------------------------------------------


def _correct(path: Path, correction_bot: str, cited: int) -> None:
    tamper(
        path,
        "INSERT INTO reconciliation_runs (id, started_at, finished_at, actor, trigger, applied,"
        " bots, differences, corrections, report)"
        " VALUES (1, 't', 't', 'operator-token', 'on demand', 1, '[\"grid-btc\"]', 1, 1, '{}')",
        (
            "INSERT INTO reconciliation_corrections (id, run_id, at, bot, kind, subject,"
            " journal, exchange, action) VALUES (1, 1, 't', ?, 'order_status',"
            " 'client_order_id 104', 'failed', 'open', 'journal set to open')",
            (correction_bot,),
        ),
        (
            "INSERT INTO order_events (client_order_id, at, from_status, to_status, detail)"
            " VALUES (104, 't', 'failed', 'open', ?)",
            (f"reconciliation correction #{cited}: the exchange has it open",),
        ),
        "UPDATE orders SET status = 'open' WHERE client_order_id = 104",
    )


async def test_a_reconciliation_correction_may_move_an_order_between_any_statuses(
    journal: Path,
) -> None:
    await asyncio.to_thread(_correct, journal, GRID, 1)

    report = await verify_database(journal)

    assert report.ok, report.render_text()


@pytest.mark.parametrize(
    ("correction_bot", "cited", "found"),
    [(GRID, 7, "no such correction"), (DCA, 1, f"one of bot {DCA}")],
    ids=["missing-correction", "another-bots-correction"],
)
async def test_an_impossible_move_citing_a_correction_that_is_not_the_bots_is_named(
    journal: Path, correction_bot: str, cited: int, found: str
) -> None:
    await asyncio.to_thread(_correct, journal, correction_bot, cited)

    report = await verify_database(journal)

    named = where(report, "order_events", "client_order_id 104")
    assert named.found == found
    assert f"#{cited}" in named.detail


# -- the audit chain ------------------------------------------------------------------------------


def audit_problems(report: IntegrityReport) -> list[tuple[str, str, str]]:
    return [(i.table, i.row, i.detail.split(":")[0]) for i in rows(report, "audit")]


async def test_an_edited_audit_entry_is_named_with_its_id(journal: Path) -> None:
    await edit(journal, "UPDATE audit_events SET result = 'refused' WHERE id = 3")

    report = await verify_database(journal)

    assert audit_problems(report) == [("audit_events", "id 3", "edited")]
    assert rows(report, "books") == rows(report, "orders") == []


async def test_an_inserted_audit_entry_is_named_with_its_id_and_the_chain_carries_on(
    journal: Path,
) -> None:
    """A row written without the chain (no hash); the coordinator's next entry links past it."""
    await edit(
        journal,
        "INSERT INTO audit_events (at, actor, action, result) VALUES ('t', 'intruder', 'x', 'ok')",
    )
    store = await SqliteStore.open(journal)
    try:
        await SqliteJournal(store).audit(actor="operator-token", action="after", result="ok", at=T0)
    finally:
        await store.close()

    report = await verify_database(journal)

    assert audit_problems(report) == [("audit_events", f"id {AUDIT_ENTRIES + 1}", "inserted")]


async def test_an_inserted_entry_with_a_forged_hash_is_named_by_the_head(journal: Path) -> None:
    """Whoever knows the chain can forge a linking entry; the head was not moved, so it shows."""
    (last_hash,) = (
        await asyncio.to_thread(query, journal, "SELECT last_hash FROM audit_chain_head")
    )[0]
    fields = (AUDIT_ENTRIES + 1, "t", "intruder", "forged", None, None, "ok", "{}")
    await edit(
        journal,
        (
            "INSERT INTO audit_events (id, at, actor, action, subject, reason, result, details,"
            " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*fields, last_hash, entry_hash(last_hash, fields)),
        ),
    )

    report = await verify_database(journal)

    assert audit_problems(report) == [("audit_events", f"id {AUDIT_ENTRIES + 1}", "inserted")]


async def test_a_deleted_audit_entry_is_named_with_its_id(journal: Path) -> None:
    await edit(journal, "DELETE FROM audit_events WHERE id = 3")

    report = await verify_database(journal)

    assert audit_problems(report) == [("audit_events", "id 3", "deleted")]
    assert "between id 2 and id 4" in rows(report, "audit")[0].detail


async def test_a_deleted_first_audit_entry_is_named(journal: Path) -> None:
    await edit(journal, "DELETE FROM audit_events WHERE id = 1")

    report = await verify_database(journal)

    assert audit_problems(report) == [("audit_events", "id 1", "deleted")]


async def test_audit_entries_cut_off_the_end_are_named_by_the_head(journal: Path) -> None:
    await edit(journal, f"DELETE FROM audit_events WHERE id >= {AUDIT_ENTRIES - 1}")

    report = await verify_database(journal)

    assert audit_problems(report) == [
        ("audit_events", f"ids {AUDIT_ENTRIES - 1}-{AUDIT_ENTRIES}", "deleted")
    ]
    assert "cut off the end" in rows(report, "audit")[0].detail


async def test_an_edited_deleted_and_inserted_entry_in_one_log_are_each_named(
    journal: Path,
) -> None:
    await edit(
        journal,
        "UPDATE audit_events SET actor = 'someone else' WHERE id = 2",
        "DELETE FROM audit_events WHERE id = 4",
        "INSERT INTO audit_events (at, actor, action, result) VALUES ('t', 'intruder', 'x', 'ok')",
    )

    report = await verify_database(journal)

    assert audit_problems(report) == [
        ("audit_events", "id 2", "edited"),
        ("audit_events", "id 4", "deleted"),
        ("audit_events", f"id {AUDIT_ENTRIES + 1}", "inserted"),
    ]


# -- the file -------------------------------------------------------------------------------------


async def test_an_index_that_does_not_match_its_table_fails_sqlites_integrity_check(
    journal: Path,
) -> None:
    await edit(
        journal,
        "PRAGMA writable_schema=ON",
        "UPDATE sqlite_master SET sql = 'CREATE INDEX fills_by_bot ON fills (trade_id)'"
        " WHERE name = 'fills_by_bot'",
    )

    report = await verify_database(journal)

    found = rows(report, "sqlite")
    assert found, report.render_text()
    assert all(i.expected == "ok" for i in found)
    assert any("fills_by_bot" in i.found for i in found)


def _zero_page_of(path: Path, index: str) -> None:
    with closing(sqlite3.connect(path)) as db:
        (root,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (index,)
        ).fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
    with path.open("r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\0" * size)


async def test_a_corrupt_page_is_reported_and_the_other_checks_still_run(journal: Path) -> None:
    await asyncio.to_thread(_zero_page_of, journal, "orders_by_bot_status")

    report = await verify_database(journal)

    assert not report.ok
    assert rows(report, "sqlite"), report.render_text()
    assert "audit" in report.checked


async def test_a_value_of_the_wrong_type_stops_only_its_own_check(journal: Path) -> None:
    await edit(journal, "UPDATE order_events SET client_order_id = 'abc' WHERE id = 1")

    report = await verify_database(journal)

    stopped = where(report, "order_events", "-")
    assert stopped.detail == "check not run"
    assert "abc" in stopped.found
    assert {"books", "orders", "fills", "audit"} <= report.checked.keys()
    assert rows(report, "foreign_keys", "order_events")


async def test_a_file_that_is_not_a_database_is_an_inconsistency(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.db"
    await asyncio.to_thread(path.write_bytes, b"this is not SQLite" * 100)

    report = await verify_database(path)

    assert [(i.check, i.expected) for i in report.inconsistencies] == [
        ("sqlite", "an SQLite database")
    ]


async def test_an_older_schema_asks_for_a_migration_and_runs_the_checks_it_can(
    journal: Path,
) -> None:
    # Back to version 2, before the audit chain (version 3) the audit check needs.
    await edit(journal, "DELETE FROM schema_migrations WHERE version >= 3")

    report = await verify_database(journal)

    assert LATEST_VERSION > 2
    found = where(report, "schema", "version 2")
    assert "start the coordinator once" in found.detail
    assert "audit" in found.detail
    assert len(report.inconsistencies) == 1
    assert "audit" not in report.checked
    assert report.checked["orders"] == 5


async def test_a_missing_database_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "coordinator.db"

    with pytest.raises(NoDatabase, match="does not exist"):
        await verify_database(path)

    assert not path.parent.exists()


async def test_verifying_never_modifies_the_file(journal: Path) -> None:
    await edit(journal, "DELETE FROM fills WHERE trade_id = 't-1'")
    before = await asyncio.to_thread(journal.read_bytes)
    mtime = (await asyncio.to_thread(journal.stat)).st_mtime_ns

    report = await verify_database(journal)

    assert not report.ok
    assert await asyncio.to_thread(journal.read_bytes) == before
    assert (await asyncio.to_thread(journal.stat)).st_mtime_ns == mtime


async def test_verifying_works_while_the_store_is_open_and_writing(tmp_path: Path) -> None:
    """The coordinator's store holds the database (WAL) and keeps committing orders and audit
    entries; every check reads one snapshot, so none sees half of another write."""
    journal = tmp_path / "busy.db"
    books = await build_journal(journal)
    store = await SqliteStore.open(journal)
    try:
        w = Writer(SqliteJournal(store))
        w.books = books
        w.clock = T0 + timedelta(hours=1)
        stop = asyncio.Event()

        async def keep_writing() -> int:
            cid = 1000
            while not stop.is_set():
                cid += 1
                order = await w.order(cid, GRID, Side.BUY, "0.01")
                await w.move(order, OrderStatus.FILLED, [(f"w-{cid}", "0.01", "100", "0", "AUD")])
                await w.journal.audit(actor="test", action="write", result="ok", at=w.tick())
            return cid - 1000

        writer = asyncio.create_task(keep_writing())
        reports: list[IntegrityReport] = []
        for _ in range(3):
            reports.append(await verify_database(journal))
        stop.set()
        written = await writer
    finally:
        await store.close()

    assert written > 0
    for report in reports:
        assert report.ok, report.render_text()
    final = await verify_database(journal)
    assert final.ok, final.render_text()
    assert final.checked["orders"] == 5 + written


async def test_the_report_renders_aligned_columns_and_serialises_to_json(journal: Path) -> None:
    await edit(
        journal,
        "DELETE FROM fills WHERE trade_id = 't-1'",
        "UPDATE audit_events SET result = 'x' WHERE id = 2",
    )

    report = await verify_database(journal)

    lines = report.render_text().splitlines()
    header = lines[1]
    assert header.split() == ["CHECK", "TABLE", "ROW", "EXPECTED", "FOUND", "DETAIL"]
    table_at = header.index("TABLE")
    for line in lines[2:-1]:
        assert line[table_at - 2 : table_at] == "  ", line
        assert line[table_at] != " ", line
    as_json = json.loads(json.dumps(report.as_dict()))
    assert as_json["ok"] is False
    assert len(as_json["inconsistencies"]) == len(report.inconsistencies)
    assert as_json["inconsistencies"][0].keys() == {
        "check",
        "table",
        "row",
        "expected",
        "found",
        "detail",
    }
