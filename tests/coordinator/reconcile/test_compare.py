"""The comparison on its own: amounts, tolerances, shared accounts, and the races it must not
call differences (orders being sent, fills outside what the venue returned)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bots.journal import FillRecord, JournalOrder, OrderStatus
from bots.ledger import Position
from bots.models import (
    AccountTrade,
    Balance,
    ExchangeOrderStatus,
    MarginPosition,
    OrderSnapshot,
    OrderType,
    Side,
    Trade,
)
from coordinator.config.models import ReconciliationSettings
from coordinator.reconcile.compare import BotContext, ExchangeView, compare
from coordinator.reconcile.model import Kind
from coordinator.store.reconciliation import JournalView
from coordinator.store.restored import RestoredJournal

T0 = datetime(2026, 11, 23, 12, tzinfo=UTC)
SETTINGS = ReconciliationSettings()
CTX = BotContext("grid", "kraken", "BTC/AUD", "BTC", "AUD", "kraken key $K", ("grid",), None)


def order(cid: int, status: OrderStatus = OrderStatus.OPEN, filled: str = "0") -> JournalOrder:
    return JournalOrder(
        cid,
        "grid",
        "kraken",
        "BTC/AUD",
        Side.BUY,
        OrderType.LIMIT,
        Decimal("1"),
        Decimal("100"),
        status,
        T0,
        filled=Decimal(filled),
        exchange_order_id=f"X{cid}",
    )


def snapshot(cid: int, status: ExchangeOrderStatus = ExchangeOrderStatus.OPEN) -> OrderSnapshot:
    return OrderSnapshot(
        cid,
        f"X{cid}",
        "BTC/AUD",
        Side.BUY,
        OrderType.LIMIT,
        Decimal(1),
        Decimal(100),
        status,
        Decimal(0),
    )


def trade(
    cid: int | None, trade_id: str, at: datetime, order_id: str | None = None
) -> AccountTrade:
    return AccountTrade(
        order_id or f"X{cid}",
        cid,
        "BTC/AUD",
        Side.BUY,
        Trade(trade_id, Decimal("0.5"), Decimal(100), Decimal("0.1"), "AUD", at),
    )


def fill(cid: int, trade_id: str, at: datetime) -> FillRecord:
    return FillRecord(
        cid, "grid", trade_id, Side.BUY, Decimal("0.5"), Decimal(100), Decimal("0.1"), "AUD", at
    )


def journal(
    orders: list[JournalOrder] = (),  # type: ignore[assignment]
    fills: list[FillRecord] = (),  # type: ignore[assignment]
    balances: dict[str, str] | None = None,
) -> JournalView:
    """A consistent journal: its stored balances are what its adjustments and fills add up to."""
    held = {k: Decimal(v) for k, v in (balances or {"AUD": "1000", "BTC": "0"}).items()}
    return JournalView(
        {o.client_order_id: o for o in orders},
        {(f.client_order_id, f.trade_id): f for f in fills},
        held,
        Position(),
        dict(held),
    )


def exchange(
    open_orders: list[OrderSnapshot] = (),  # type: ignore[assignment]
    trades: list[AccountTrade] = (),  # type: ignore[assignment]
    balances: dict[str, str] | None = None,
    lookups: dict[int, OrderSnapshot | None] | None = None,
    positions: list[MarginPosition] = (),  # type: ignore[assignment]
) -> ExchangeView:
    held = balances or {"AUD": "1000", "BTC": "0"}
    return ExchangeView(
        T0 + timedelta(hours=1),
        T0 - timedelta(hours=24),
        list(open_orders),
        list(trades),
        {a: Balance(a, Decimal(v), Decimal(0)) for a, v in held.items()},
        list(positions),
        dict(lookups or {}),
    )


def found(
    j: JournalView, e: ExchangeView, ctx: BotContext = CTX, **kw: object
) -> list[tuple[str, str]]:
    balances = kw.pop("account_balances", j.balances)
    return [
        (d.kind.value, d.subject)
        for d in compare(ctx, j, e, balances, SETTINGS.tolerance, **kw)  # type: ignore[arg-type]
    ]


def test_a_balance_within_the_tolerance_is_not_drift() -> None:
    assert found(journal(), exchange(balances={"AUD": "1000.00000001", "BTC": "0"})) == []
    assert found(journal(), exchange(balances={"AUD": "1000.2", "BTC": "0"})) == [
        ("balance_drift", "balance AUD")
    ]


def test_an_asset_the_exchange_does_not_list_counts_as_zero() -> None:
    (d,) = compare(
        CTX, journal(), exchange(balances={"BTC": "0"}), {"AUD": Decimal(1000)}, SETTINGS.tolerance
    )
    assert (d.kind, d.journal, d.exchange, d.difference) == (
        Kind.BALANCE_DRIFT,
        "1000",
        "0",
        Decimal(-1000),
    )


def test_a_missing_fill_explains_the_balance_it_moved() -> None:
    t = trade(1, "T1", T0)
    differences = compare(
        CTX,
        journal([order(1)]),
        exchange([snapshot(1)], [t], balances={"AUD": "949.9", "BTC": "0.5"}),
        {"AUD": Decimal(1000), "BTC": Decimal(0)},
        SETTINGS.tolerance,
    )
    kinds = {d.subject: d for d in differences}
    assert kinds["trade T1 of order 1"].kind is Kind.MISSING_FILL
    assert kinds["balance AUD"].detail == "recording the missing fills accounts for all of it"
    assert kinds["balance BTC"].difference == Decimal("0.5")


def test_an_order_being_sent_is_not_a_difference() -> None:
    pending = order(1, OrderStatus.PENDING_SUBMIT)
    j = journal([pending])
    e = exchange([snapshot(1)])
    assert found(j, e) == [("order_not_acknowledged", "order 1")]
    assert found(j, e, sending=frozenset({1})) == []


def test_a_live_order_the_exchange_could_not_be_asked_about_is_not_called_gone() -> None:
    j = journal([order(1)])
    assert found(j, exchange()) == []  # no lookup answer: the reconciler reported an error
    assert found(j, exchange(lookups={1: None})) == [("order_unknown_to_exchange", "order 1")]
    assert found(j, exchange(lookups={1: snapshot(1, ExchangeOrderStatus.CLOSED)})) == [
        ("order_closed_on_exchange", "order 1")
    ]


def test_a_fill_is_unknown_to_the_exchange_only_inside_the_span_it_returned() -> None:
    """Venues page their trade history: a journal fill older than the oldest trade returned
    may simply be on another page."""
    fills = [fill(1, "T0", T0 - timedelta(hours=2)), fill(1, "T9", T0 + timedelta(minutes=5))]
    trades = [trade(1, "T1", T0 - timedelta(hours=1)), trade(1, "T2", T0 + timedelta(minutes=10))]
    j = journal(
        [order(1, OrderStatus.FILLED, "1")],
        [
            *fills,
            fill(1, "T1", trades[0].trade.timestamp),
            fill(1, "T2", trades[1].trade.timestamp),
        ],
    )

    assert found(j, exchange(trades=trades)) == [
        ("fill_unknown_to_exchange", "trade T9 of order 1")
    ]


def test_a_paper_exchange_is_not_asked_about_fills_from_before_it_existed() -> None:
    paper = BotContext("grid", "kraken", "BTC/AUD", "BTC", "AUD", "paper", ("grid",), T0)
    j = journal([order(1, OrderStatus.FILLED, "0.5")], [fill(1, "T1", T0 - timedelta(minutes=1))])
    assert found(j, exchange(), ctx=paper) == []
    assert found(j, exchange(), ctx=CTX) == [("fill_unknown_to_exchange", "trade T1 of order 1")]


def test_a_trade_found_through_a_lookup_belongs_to_the_order_the_journal_called_failed() -> None:
    failed = JournalOrder(
        7,
        "grid",
        "kraken",
        "BTC/AUD",
        Side.BUY,
        OrderType.LIMIT,
        Decimal(1),
        Decimal(100),
        OrderStatus.FAILED,
        T0,
    )
    t = trade(None, "T1", T0, order_id="X7")
    closed = snapshot(7, ExchangeOrderStatus.CANCELED)

    assert found(journal([failed]), exchange(trades=[t])) == [("unknown_trade", "trade T1")]
    differences = compare(
        CTX,
        journal([failed]),
        exchange(trades=[t], lookups={7: closed}, balances={"AUD": "949.9", "BTC": "0.5"}),
        {"AUD": Decimal(1000), "BTC": Decimal(0)},
        SETTINGS.tolerance,
    )
    assert [(d.kind.value, d.subject) for d in differences[:2]] == [
        ("order_closed_on_exchange", "order 7"),
        ("missing_fill", "trade T1 of order 7"),
    ]
    assert {d.detail for d in differences[2:]} == {
        "recording the missing fills accounts for all of it"
    }


def test_a_shared_account_is_compared_with_every_bot_on_it_and_not_auto_corrected() -> None:
    shared = BotContext("a", "kraken", "BTC/AUD", "BTC", "AUD", "kraken key $K", ("a", "b"), None)
    (d,) = compare(
        shared,
        journal(),
        exchange(balances={"AUD": "1500", "BTC": "0"}),
        {"AUD": Decimal(1000), "BTC": Decimal(0)},
        SETTINGS.tolerance,
    )
    assert (d.kind, d.correctable) == (Kind.BALANCE_DRIFT, False)
    assert "shared by a, b" in d.detail


def test_a_margin_position_that_differs_is_reported_for_an_operator() -> None:
    e = exchange(positions=[MarginPosition("BTC/AUD", "short", Decimal(2), None)])
    (d,) = compare(CTX, journal(), e, journal().balances, SETTINGS.tolerance)
    assert (d.kind, d.difference, d.correctable) == (Kind.POSITION_DRIFT, Decimal(-2), False)


def test_a_balance_the_fills_no_longer_add_up_to_is_a_book_mismatch_never_adjusted() -> None:
    """A fill row lost from before the window: the stored balance still matches the exchange,
    but the journal's own fills do not add up to it. An adjustment would hide the lost fill."""
    consistent = journal([order(1, OrderStatus.FILLED, "0.5")], [fill(1, "T1", T0)])
    lost = JournalView(
        consistent.orders,
        {},
        consistent.balances,
        consistent.position,
        {"AUD": Decimal("1050.1"), "BTC": Decimal("-0.5")},  # without the lost buy
    )
    differences = compare(
        CTX,
        lost,
        exchange(balances={k: str(v) for k, v in consistent.balances.items()}),
        consistent.balances,
        SETTINGS.tolerance,
    )
    assert {(d.kind, d.subject, d.correctable) for d in differences} == {
        (Kind.BOOK_MISMATCH, "balance AUD", False),
        (Kind.BOOK_MISMATCH, "balance BTC", False),
    }


def test_balance_drift_on_a_running_bot_is_reported_but_not_corrected() -> None:
    """Between the exchange read and the journal read a fill may land: an adjustment made from
    that would be wrong. It is corrected only once the bot is stopped."""
    running = BotContext(
        "grid", "kraken", "BTC/AUD", "BTC", "AUD", "kraken key $K", ("grid",), None, running=True
    )
    (d,) = compare(
        running,
        journal(),
        exchange(balances={"AUD": "900", "BTC": "0"}),
        journal().balances,
        SETTINGS.tolerance,
    )
    assert (d.kind, d.correctable) == (Kind.BALANCE_DRIFT, False)
    assert "running" in d.detail


# -- orders lost from a restored journal ----------------------------------------------------------

RESTORED = RestoredJournal("config-x.tar.gz", T0, T0 + timedelta(minutes=40))


def issued(at: datetime) -> int:
    """One of our client order ids, issued at `at`."""
    return int(at.timestamp() * 1000) << 20


def restored_ctx(symbol_bots: tuple[str, ...] = ("grid",)) -> BotContext:
    return replace(CTX, restored=RESTORED, symbol_bots=symbol_bots)


def test_a_trade_of_an_order_sent_between_the_backup_and_the_restore_is_a_lost_order() -> None:
    cid = issued(T0 + timedelta(minutes=10))
    lost_trade = trade(cid, "T-1", T0 + timedelta(minutes=11))
    e = exchange(trades=[lost_trade], balances={"AUD": "949.9", "BTC": "0.5"})
    e.lost_lookups[cid] = snapshot(cid, ExchangeOrderStatus.CLOSED)

    differences = compare(restored_ctx(), journal(), e, journal().balances, SETTINGS.tolerance)

    assert [(d.kind, d.subject, d.correctable) for d in differences] == [
        (Kind.ORDER_LOST_FROM_JOURNAL, f"trade T-1 of order {cid}", True),
        (Kind.BALANCE_DRIFT, "balance AUD", True),
        (Kind.BALANCE_DRIFT, "balance BTC", True),
    ]
    assert "config-x.tar.gz" in differences[0].detail
    assert differences[1].detail == "recording the missing fills accounts for all of it"


def test_an_id_issued_outside_the_gap_or_with_no_restore_is_someone_elses() -> None:
    before = issued(T0 - timedelta(minutes=5))  # before the backup (and its slack)
    after = issued(T0 + timedelta(hours=2))  # after the restore: the journal would have it
    inside = issued(T0 + timedelta(minutes=1))
    e = exchange(open_orders=[snapshot(before), snapshot(after)])

    assert found(journal(), e, restored_ctx()) == [
        ("unknown_open_order", f"exchange order X{before}"),
        ("unknown_open_order", f"exchange order X{after}"),
    ]
    assert found(journal(), exchange(open_orders=[snapshot(inside)]), CTX) == [
        ("unknown_open_order", f"exchange order X{inside}")
    ]


def test_a_lost_order_another_bot_could_have_placed_is_shown_but_not_adopted() -> None:
    cid = issued(T0 + timedelta(minutes=3))
    e = exchange(open_orders=[snapshot(cid)])

    (shared,) = compare(
        restored_ctx(("grid", "grid-2")), journal(), e, journal().balances, SETTINGS.tolerance
    )
    assert (shared.kind, shared.correctable) == (Kind.ORDER_LOST_FROM_JOURNAL, False)
    assert "grid-2 also trade BTC/AUD" in shared.detail


def test_a_lost_order_the_exchange_could_not_be_asked_about_is_not_adopted() -> None:
    cid = issued(T0 + timedelta(minutes=3))
    e = exchange(trades=[trade(cid, "T-9", T0 + timedelta(minutes=4))])  # no lookup answered

    lost = compare(restored_ctx(), journal(), e, journal().balances, SETTINGS.tolerance)[0]
    assert (lost.kind, lost.correctable) == (Kind.ORDER_LOST_FROM_JOURNAL, False)
    assert "could not be asked" in lost.detail


def test_an_unreadable_restore_mark_adopts_nothing() -> None:
    assert RestoredJournal.from_json({"backup": "b", "restored_at": "2026-12-07T10:00:00"}) is None
    assert RestoredJournal.from_json({"backup_created_at": "x", "restored_at": "y"}) is None
    assert RestoredJournal.from_json([1, 2]) is None
    naive = {"backup_created_at": "2026-12-07T09:00:00", "restored_at": "2026-12-07T10:00:00"}
    assert RestoredJournal.from_json(naive) is None
    assert RestoredJournal.from_json(RESTORED.to_json()) == RESTORED
