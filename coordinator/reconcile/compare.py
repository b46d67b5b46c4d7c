"""Journal against exchange: every difference, with the amounts. Pure: no I/O here.

The exchange is read before the journal, so a fill the gateway records between the two reads is
in the journal and not yet missing; a journal fill is called unknown to the exchange only if it
was executed before the exchange was read and inside the span of trades the venue returned
(venues page their trade history).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from bots.ids import issued_at
from bots.journal import JournalOrder, OrderStatus
from bots.ledger import apply_changes, balance_changes
from bots.models import (
    PLACEABLE,
    AccountTrade,
    Balance,
    ExchangeOrderStatus,
    MarginPosition,
    OrderSnapshot,
)
from coordinator.reconcile.model import Difference, Kind
from coordinator.store.reconciliation import JournalView
from coordinator.store.restored import RestoredJournal

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class BotContext:
    bot: str
    exchange: str
    symbol: str
    base: str
    quote: str
    account: str  # "paper account of grid-btc", "kraken key $KRAKEN_KEY"
    account_bots: tuple[str, ...]  # every bot on that account, this one included
    history_since: datetime | None  # trades before this are unknown to the venue
    running: bool = False  # a bot on the account trades: a fill can land between the reads
    # The journal's restore, if it came from a backup: the orders placed in between are ours.
    restored: RestoredJournal | None = None
    # The bots on the account that trade this bot's symbol, this one included: an order lost
    # from the journal is this bot's only when no other bot could have placed it.
    symbol_bots: tuple[str, ...] = ()

    @property
    def shared_account(self) -> bool:
        return len(self.account_bots) > 1


@dataclass(slots=True)
class ExchangeView:
    """What the exchange says about one bot's symbol and account."""

    fetched_at: datetime
    trades_since: datetime
    open_orders: list[OrderSnapshot]
    trades: list[AccountTrade]
    balances: dict[str, Balance]
    positions: list[MarginPosition]
    # The exchange's word on journal orders that are not in its open list: a snapshot, or
    # None when it does not know the order. Orders it could not be asked about are left out.
    lookups: dict[int, OrderSnapshot | None] = field(default_factory=dict)
    # The same for orders lost from a restored journal that show only as trades.
    lost_lookups: dict[int, OrderSnapshot | None] = field(default_factory=dict)
    # Exchange order id -> our client order id, for those orders (kraken's trades lack it).
    lost_owners: dict[str, int] = field(default_factory=dict)


def compare(
    ctx: BotContext,
    journal: JournalView,
    exchange: ExchangeView,
    account_balances: Mapping[str, Decimal],
    tolerance: Callable[[Decimal], Decimal],
    sending: frozenset[int] = frozenset(),
) -> list[Difference]:
    """Every difference between one bot's journal and its exchange. `account_balances` is the
    journal's balances of every bot on the account (the exchange reports the account's)."""
    owners = _owners(journal, exchange)
    open_ids, differences = _open_orders(ctx, journal, exchange, owners, sending)
    differences += _orders_gone(ctx, journal, exchange, open_ids, sending)
    trade_diffs, exchange_keys = _trades(ctx, journal, exchange, owners)
    differences += trade_diffs
    differences += _fills_unknown(ctx, journal, exchange, exchange_keys)
    missing = [
        d
        for d in differences
        if d.kind is Kind.MISSING_FILL or (d.kind is Kind.ORDER_LOST_FROM_JOURNAL and d.correctable)
    ]
    differences += _balances(ctx, journal, exchange, account_balances, missing, tolerance)
    differences += _positions(ctx, journal, exchange, tolerance)
    return differences


def _owners(journal: JournalView, exchange: ExchangeView) -> dict[str, int]:
    """Exchange order id -> our client order id, from the journal and from lookups."""
    owners = journal.order_by_exchange_id()
    for cid, snapshot in exchange.lookups.items():
        if snapshot is not None and snapshot.exchange_order_id:
            owners[snapshot.exchange_order_id] = cid
    return owners


def _owner(
    cid: int | None, exchange_order_id: str, journal: JournalView, owners: Mapping[str, int]
) -> int | None:
    if cid and cid in journal.orders:
        return cid
    return owners.get(exchange_order_id)


def _open_orders(
    ctx: BotContext,
    journal: JournalView,
    exchange: ExchangeView,
    owners: Mapping[str, int],
    sending: frozenset[int],
) -> tuple[set[int], list[Difference]]:
    open_ids: set[int] = set()
    differences: list[Difference] = []
    for snap in exchange.open_orders:
        cid = _owner(snap.client_order_id, snap.exchange_order_id, journal, owners)
        order = journal.orders.get(cid) if cid else None
        if (cid is None or order is None) and lost_from_journal(ctx, snap.client_order_id):
            differences.append(_lost_order(ctx, snap.client_order_id, snap, None))
            continue
        if cid is None or order is None:
            differences.append(
                Difference(
                    ctx.bot,
                    Kind.UNKNOWN_OPEN_ORDER,
                    f"exchange order {snap.exchange_order_id}",
                    "-",
                    _show_snapshot(snap),
                    detail="not placed by this coordinator (no client order id of ours): "
                    "cancel it on the exchange or leave it; no bot manages it",
                    correctable=False,
                )
            )
            continue
        open_ids.add(cid)
        if order.status is OrderStatus.PENDING_SUBMIT and cid not in sending:
            kind = Kind.ORDER_NOT_ACKNOWLEDGED
            detail = "the exchange took it but the journal never saw the acknowledgement"
        elif order.is_terminal:
            kind = Kind.ORDER_OPEN_ON_EXCHANGE
            detail = f"the journal ended it ({order.reason or order.status.value}) but it rests"
        else:
            continue
        differences.append(
            Difference(
                ctx.bot,
                kind,
                f"order {cid}",
                _show_order(order),
                _show_snapshot(snap),
                snap.filled - order.filled,
                detail,
                client_order_id=cid,
                snapshot=snap,
            )
        )
    return open_ids, differences


def _orders_gone(
    ctx: BotContext,
    journal: JournalView,
    exchange: ExchangeView,
    open_ids: set[int],
    sending: frozenset[int],
) -> list[Difference]:
    """Orders the journal holds live that the exchange no longer has open, and orders it
    called failed that the exchange did take."""
    differences: list[Difference] = []
    for cid, order in journal.orders.items():
        if cid in open_ids or cid in sending or cid not in exchange.lookups:
            continue
        snap = exchange.lookups[cid]
        if not order.is_terminal and snap is None:
            differences.append(
                Difference(
                    ctx.bot,
                    Kind.ORDER_UNKNOWN_TO_EXCHANGE,
                    f"order {cid}",
                    _show_order(order),
                    "no such order",
                    detail="journaled live, unknown to the exchange: it will be marked "
                    + ("failed" if order.status is OrderStatus.PENDING_SUBMIT else "canceled"),
                    client_order_id=cid,
                )
            )
        elif (
            snap is not None
            and snap.status is not ExchangeOrderStatus.OPEN
            and (not order.is_terminal or order.status is OrderStatus.FAILED)
        ):
            differences.append(
                Difference(
                    ctx.bot,
                    Kind.ORDER_CLOSED_ON_EXCHANGE,
                    f"order {cid}",
                    _show_order(order),
                    _show_snapshot(snap),
                    snap.filled - order.filled,
                    "the exchange finished it; the journal still holds it live"
                    if not order.is_terminal
                    else "the journal says it was never placed; the exchange has it",
                    client_order_id=cid,
                    snapshot=snap,
                )
            )
    return differences


def _trades(
    ctx: BotContext,
    journal: JournalView,
    exchange: ExchangeView,
    owners: Mapping[str, int],
) -> tuple[list[Difference], set[tuple[int, str]]]:
    differences: list[Difference] = []
    keys: set[tuple[int, str]] = set()
    for account_trade in exchange.trades:
        trade = account_trade.trade
        cid = _owner(
            account_trade.client_order_id, account_trade.exchange_order_id, journal, owners
        )
        lost = account_trade.client_order_id or exchange.lost_owners.get(
            account_trade.exchange_order_id
        )
        if cid is None and lost is not None and lost_from_journal(ctx, lost):
            snapshot = exchange.lost_lookups.get(lost) or next(
                (o for o in exchange.open_orders if o.client_order_id == lost), None
            )
            differences.append(_lost_order(ctx, lost, snapshot, account_trade))
            continue
        if cid is None:
            differences.append(
                Difference(
                    ctx.bot,
                    Kind.UNKNOWN_TRADE,
                    f"trade {trade.trade_id}",
                    "-",
                    _show_trade(account_trade),
                    detail=f"of exchange order {account_trade.exchange_order_id}, not placed "
                    "by this coordinator; it moves the account's balances",
                    correctable=False,
                )
            )
            continue
        keys.add((cid, trade.trade_id))
        if (cid, trade.trade_id) in journal.fills:
            continue
        differences.append(
            Difference(
                ctx.bot,
                Kind.MISSING_FILL,
                f"trade {trade.trade_id} of order {cid}",
                "-",
                _show_trade(account_trade),
                trade.amount,
                "the exchange executed it; the journal has no fill for it",
                client_order_id=cid,
                trade=account_trade,
            )
        )
    return differences, keys


def lost_from_journal(ctx: BotContext, client_order_id: int | None) -> bool:
    """Is this an id of ours issued while the restored journal was not being kept?"""
    if ctx.restored is None or not client_order_id:
        return False
    issued = issued_at(client_order_id)
    return issued is not None and ctx.restored.covers(issued)


def _lost_order(
    ctx: BotContext,
    client_order_id: int,
    snapshot: OrderSnapshot | None,
    account_trade: AccountTrade | None,
) -> Difference:
    """An order (or one trade of it) placed between the backup and the restore."""
    assert ctx.restored is not None
    others = [bot for bot in ctx.symbol_bots if bot != ctx.bot]
    why = f"placed by this coordinator while the journal was not kept ({ctx.restored.describe()})"
    if others:
        detail = (
            f"{why}; but {', '.join(others)} also trade {ctx.symbol} on this account and the "
            "venue does not say which bot placed it: not adopted"
        )
    elif snapshot is None:
        detail = (
            f"{why}; the exchange could not be asked about the order (or no longer shows it), "
            "so it is not adopted: reconcile again, or record it by hand"
        )
    else:
        detail = f"{why}: adopted into the journal as the exchange shows it, with its fills"
    if account_trade is not None:
        subject = f"trade {account_trade.trade.trade_id} of order {client_order_id}"
        shown, amount = _show_trade(account_trade), account_trade.trade.amount
    else:
        subject, amount = f"order {client_order_id}", None
        shown = _show_snapshot(snapshot) if snapshot is not None else "-"
    return Difference(
        ctx.bot,
        Kind.ORDER_LOST_FROM_JOURNAL,
        subject,
        "-",
        shown,
        amount,
        detail,
        correctable=not others and snapshot is not None,
        client_order_id=client_order_id,
        trade=account_trade,
        snapshot=snapshot,
    )


def _fills_unknown(
    ctx: BotContext,
    journal: JournalView,
    exchange: ExchangeView,
    exchange_keys: set[tuple[int, str]],
) -> list[Difference]:
    start = exchange.trades_since
    if ctx.history_since is not None:
        start = max(start, ctx.history_since)
    end = exchange.fetched_at
    if exchange.trades:
        start = max(start, min(t.trade.timestamp for t in exchange.trades))
        end = min(end, max(t.trade.timestamp for t in exchange.trades))
    return [
        Difference(
            ctx.bot,
            Kind.FILL_UNKNOWN_TO_EXCHANGE,
            f"trade {fill.trade_id} of order {fill.client_order_id}",
            f"{fill.side.value} {fill.amount} @ {fill.price} at {fill.executed_at.isoformat()}",
            "no such trade",
            -fill.amount,
            "the journal has a fill the exchange's trade history does not show: check the "
            "venue's history before changing anything",
            correctable=False,
            client_order_id=fill.client_order_id,
        )
        for key, fill in sorted(journal.fills.items())
        if key not in exchange_keys and start <= fill.executed_at <= end
    ]


def _balances(
    ctx: BotContext,
    journal: JournalView,
    exchange: ExchangeView,
    account_balances: Mapping[str, Decimal],
    missing: list[Difference],
    tolerance: Callable[[Decimal], Decimal],
) -> list[Difference]:
    """Each asset the journal tracks, against the exchange's total. For an account of one bot,
    also what the balance will be once the missing fills are recorded: only what those do not
    explain is adjusted."""
    after: dict[str, Decimal] | None = None
    if not ctx.shared_account:
        # A balance is a sum: the replayed balances plus what the missing fills move.
        after = dict(journal.replayed_balances)
        for d in missing:
            if d.trade is not None:
                t = d.trade.trade
                changes = balance_changes(
                    d.trade.side, t.amount, t.price, t.fee, t.fee_currency, ctx.base, ctx.quote
                )
                after.update(apply_changes(after, changes))
    differences = []
    for asset in sorted(set(account_balances) | {ctx.base, ctx.quote}):
        held = exchange.balances.get(asset)
        on_exchange = held.total if held is not None else ZERO
        in_journal = account_balances.get(asset, ZERO)
        limit = tolerance(on_exchange)
        raw = on_exchange - in_journal
        unexplained = raw if after is None else on_exchange - after.get(asset, ZERO)
        if abs(raw) <= limit and abs(unexplained) <= limit:
            continue
        if abs(raw) <= limit and after is not None:
            # On a running bot a fill committed between the journal's two reads looks the
            # same; only a stopped bot's journal can be judged this way.
            if not ctx.running:
                differences.append(_book_mismatch(ctx, asset, in_journal, after.get(asset, ZERO)))
            continue
        if ctx.running and not ctx.shared_account:
            detail = (
                "a bot on the account is running, so a fill can land between the two reads: "
                "stop it (or activate the kill switch) and reconcile again to correct this"
            )
        elif ctx.shared_account:
            detail = (
                f"the account is shared by {', '.join(ctx.account_bots)}: compared with their "
                "journals together; decide which bot's book it belongs to"
            )
        elif abs(unexplained) <= limit:
            detail = "recording the missing fills accounts for all of it"
        elif unexplained != raw:
            detail = (
                f"the missing fills account for {raw - unexplained}; {unexplained} remains "
                "and will be an adjustment entry"
            )
        else:
            detail = "will be an adjustment entry"
        differences.append(
            Difference(
                ctx.bot,
                Kind.BALANCE_DRIFT,
                f"balance {asset}",
                str(in_journal),
                str(on_exchange),
                raw,
                detail,
                correctable=not ctx.shared_account and not ctx.running,
                asset=asset,
            )
        )
    return differences


def _book_mismatch(ctx: BotContext, asset: str, stored: Decimal, replayed: Decimal) -> Difference:
    return Difference(
        ctx.bot,
        Kind.BOOK_MISMATCH,
        f"balance {asset}",
        f"{stored} stored; its fills and adjustments add up to {replayed}",
        str(stored),
        replayed - stored,
        "the stored balance agrees with the exchange but the journal's fills do not add up to "
        "it: a fill row is missing whose trade is older than the window compared (bot-coordinator "
        "--verify-data names the order; a longer reconciliation.trade_lookback_hours finds the "
        "trade). Not adjusted: an adjustment would hide the lost fill",
        correctable=False,
        asset=asset,
    )


def _positions(
    ctx: BotContext,
    journal: JournalView,
    exchange: ExchangeView,
    tolerance: Callable[[Decimal], Decimal],
) -> list[Difference]:
    held = [p for p in exchange.positions if p.symbol == ctx.symbol]
    if not held:
        return []
    on_exchange = sum((p.amount if p.side == "long" else -p.amount for p in held), ZERO)
    in_journal = journal.position.base
    if abs(on_exchange - in_journal) <= tolerance(on_exchange):
        return []
    return [
        Difference(
            ctx.bot,
            Kind.POSITION_DRIFT,
            f"position {ctx.symbol}",
            str(in_journal),
            str(on_exchange),
            on_exchange - in_journal,
            "the venue's margin position differs from the bot's: a position is the sum of "
            "fills, so find the fills (or the other party) before anything is changed",
            correctable=False,
        )
    ]


def _show_order(order: JournalOrder) -> str:
    price = f" @ {order.price}" if order.price is not None else ""
    return f"{order.status.value}: {order.side.value} {order.amount}{price}, filled {order.filled}"


def _show_snapshot(snap: OrderSnapshot) -> str:
    price = f" @ {snap.price}" if snap.price is not None else ""
    if snap.type not in PLACEABLE:  # a trigger order someone placed: say what it is
        trigger = f", trigger {snap.trigger_price}" if snap.trigger_price is not None else ""
        kind = f" {snap.type.value}" + (
            f" ({snap.venue_type})" if snap.venue_type and snap.venue_type != snap.type else ""
        )
        price = f"{kind}{price}{trigger}"
    return f"{snap.status.value}: {snap.side.value} {snap.amount}{price}, filled {snap.filled}"


def _show_trade(account_trade: AccountTrade) -> str:
    t = account_trade.trade
    return (
        f"{account_trade.side.value} {t.amount} @ {t.price}, fee {t.fee} {t.fee_currency}, "
        f"at {t.timestamp.isoformat()}"
    )
