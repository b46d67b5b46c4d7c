"""Applying a reconciliation: the journal is corrected to match the exchange, entry by entry.

Nothing is overwritten in silence. Each correction is a `reconciliation_corrections` row in the
same commit as the change it makes, and the changed rows name it:
- an order the journal still holds live is brought up to date by the bot's own gateway (the
  path every fill takes), its events saying "reconciliation correction #id";
- an order the journal finished (failed, cancelled) that the exchange has open or filled gets
  the exchange's status and its missing fills, in one commit with the position and balances
  replayed from every fill the journal then holds;
- a balance the exchange still reports differently becomes a `balance_adjustments` entry.

Book changes happen under the gateway's book lock, so a fill the gateway applies meanwhile
waits: the book and the journal never disagree. Nothing here sends or cancels an order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from bots.book import BotBook
from bots.errors import ExchangeError
from bots.gateway import STATUS_FROM_EXCHANGE, OrderGateway
from bots.ids import issued_at
from bots.journal import FillRecord, JournalOrder, OrderStatus
from bots.ledger import LedgerFill, Position
from bots.models import AccountTrade, OrderSnapshot
from coordinator.reconcile.compare import BotContext, ExchangeView
from coordinator.reconcile.model import Correction, Difference, Kind
from coordinator.store.reconciliation import (
    BookWrite,
    CorrectionRow,
    ReconciliationStore,
)

log = logging.getLogger(__name__)

_ORDER_KINDS = frozenset(
    {
        Kind.MISSING_FILL,
        Kind.ORDER_OPEN_ON_EXCHANGE,
        Kind.ORDER_NOT_ACKNOWLEDGED,
        Kind.ORDER_CLOSED_ON_EXCHANGE,
        Kind.ORDER_UNKNOWN_TO_EXCHANGE,
        Kind.ORDER_LOST_FROM_JOURNAL,
    }
)


@dataclass(frozen=True, slots=True)
class BotTarget:
    ctx: BotContext
    gateway: OrderGateway
    book: BotBook


class Corrector:
    """Writes one run's corrections; ids are allocated here, in order."""

    def __init__(
        self,
        store: ReconciliationStore,
        run_id: int,
        first_id: int,
        clock: Callable[[], datetime],
        tolerance: Callable[[Decimal], Decimal],
    ) -> None:
        self.store = store
        self.run_id = run_id
        self._next_id = first_id
        self._clock = clock
        self._tolerance = tolerance

    async def apply(
        self, target: BotTarget, differences: Sequence[Difference], exchange: ExchangeView
    ) -> tuple[list[Correction], list[str]]:
        corrections: list[Correction] = []
        errors: list[str] = []
        by_order: dict[int, list[Difference]] = {}
        for d in differences:
            if d.correctable and d.kind in _ORDER_KINDS and d.client_order_id is not None:
                by_order.setdefault(d.client_order_id, []).append(d)
        adopt = {
            cid: diffs
            for cid, diffs in by_order.items()
            if all(d.kind is Kind.ORDER_LOST_FROM_JOURNAL for d in diffs)
        }
        by_order = {cid: diffs for cid, diffs in by_order.items() if cid not in adopt}
        lost = _lost_rows(target, by_order)
        for cid, diffs in by_order.items():
            if cid in target.book.live_orders and cid not in lost:
                correction = await self._through_gateway(target, cid, diffs, errors)
                if correction is not None:
                    corrections.append(correction)
        async with target.gateway.book_lock:
            in_journal = {
                c: d for c, d in by_order.items() if c not in target.book.live_orders or c in lost
            }
            for cid, diffs in adopt.items():
                corrections.append(await self._adopt(target, cid, diffs))
            if in_journal:
                corrections += await self._in_journal(target, in_journal)
            corrections += await self._balances(target, differences, exchange)
        return corrections, errors

    # -- orders ------------------------------------------------------------------------------

    async def _through_gateway(
        self, target: BotTarget, cid: int, diffs: list[Difference], errors: list[str]
    ) -> Correction | None:
        """A live order: the gateway asks the exchange and records what it says."""
        row = self._row(
            target.ctx.bot,
            diffs[0].kind,
            f"order {cid}",
            diffs[0].journal,
            diffs[0].exchange,
            "brought up to date from the exchange by the bot's order gateway",
        )
        # Recorded first, so the order event the gateway writes never names a correction that
        # is not there (a crash in between leaves a correction that changed nothing, and says
        # what it was about to do).
        await self.store.record(row)
        try:
            changed = await target.gateway.refresh_order(cid, row.tag)
        except ExchangeError as exc:
            errors.append(f"order {cid}: could not ask {target.gateway.adapter.name}: {exc}")
            return None
        if not changed:
            return None  # resolved (or being sent) meanwhile
        after = target.book.live_orders.get(cid)
        return replace(
            _correction(row),
            action=f"{row.action}; now {after.status.value if after else 'finished'}",
        )

    async def _in_journal(
        self, target: BotTarget, finished: dict[int, list[Difference]]
    ) -> list[Correction]:
        """Orders the gateway does not hold live (or whose fill rows the journal lost while the
        gateway's book still has them): corrected in the journal directly, one commit each."""
        ctx = target.ctx
        view = await self.store.journal_view(
            ctx.bot, self._clock(), ctx.base, ctx.quote, client_order_ids=finished
        )
        corrections = []
        for cid, diffs in finished.items():
            before = view.orders.get(cid)
            if before is None:
                continue
            have = {t for (c, t) in view.fills if c == cid}
            snapshot = next((d.snapshot for d in diffs if d.snapshot is not None), None)
            trades = _trades_of(before, snapshot, [d.trade for d in diffs if d.trade])
            fills = [
                _fill(before, account_trade)
                for account_trade in trades
                if account_trade.trade.trade_id not in have
            ]
            after = _corrected(before, snapshot, view.fills, fills, trades)
            if after == before and not fills:
                continue
            action = _describe(before, after, fills)
            book: BookWrite | None = None
            if fills:
                # The position and balances move with the fills, in the same commit: replayed
                # from every fill the journal will then hold, as --verify-data checks them.
                position, balances = await self.store.replay(
                    ctx.bot,
                    ctx.base,
                    ctx.quote,
                    [LedgerFill(f.side, f.amount, f.price, f.fee, f.fee_currency) for f in fills],
                )
                stale = sorted(set(target.book.balances) - set(balances))
                book = BookWrite(ctx.symbol, position, balances, stale)
                if (position, balances) != (target.book.position, target.book.balances):
                    action += f"; book recomputed from the fills: {_show_book(position, balances)}"
            row = self._row(
                ctx.bot, diffs[0].kind, f"order {cid}", diffs[0].journal, diffs[0].exchange, action
            )
            await self.store.correct_order(row, before, after, fills, book)
            if book is not None:
                target.book.position = book.position
                target.book.balances = dict(book.balances)
            if not after.is_terminal:
                target.book.live_orders[cid] = after
                target.book.trade_ids[cid] = have | {f.trade_id for f in fills}
            target.book.fills_count += len(fills)
            corrections.append(_correction(row))
            log.warning("%s: %s: order %d: %s", ctx.bot, row.tag, cid, row.action)
        return corrections

    async def _adopt(self, target: BotTarget, cid: int, diffs: list[Difference]) -> Correction:
        """An order placed between the backup and the restore: put back in the journal as the
        exchange shows it, with every trade of it the exchange showed, and the book replayed
        with them, in one commit. Under the book lock (the caller holds it)."""
        ctx = target.ctx
        snapshot = next(d.snapshot for d in diffs if d.snapshot is not None)
        issued = issued_at(cid) or self._clock()
        intent = JournalOrder(
            cid, ctx.bot, ctx.exchange, snapshot.symbol, snapshot.side, snapshot.type,
            snapshot.amount, snapshot.price, OrderStatus.PENDING_SUBMIT, issued,
            tag="adopted",
        )  # fmt: skip
        trades = _trades_of(intent, snapshot, [d.trade for d in diffs if d.trade])
        fills = [_fill(intent, t) for t in trades]
        after = _corrected(intent, snapshot, {}, fills, trades)
        after = replace(after, reason=snapshot.reason or None)
        action = f"adopted from the exchange: {_describe(intent, after, fills)}"
        book: BookWrite | None = None
        if fills:
            position, balances = await self.store.replay(
                ctx.bot,
                ctx.base,
                ctx.quote,
                [LedgerFill(f.side, f.amount, f.price, f.fee, f.fee_currency) for f in fills],
            )
            stale = sorted(set(target.book.balances) - set(balances))
            book = BookWrite(ctx.symbol, position, balances, stale)
            action += f"; book recomputed from the fills: {_show_book(position, balances)}"
        first = diffs[0]
        row = self._row(ctx.bot, first.kind, f"order {cid}", "-", first.exchange, action)
        await self.store.adopt_order(row, after, fills, book)
        if book is not None:
            target.book.position = book.position
            target.book.balances = dict(book.balances)
        if not after.is_terminal:
            target.book.live_orders[cid] = after
            target.book.trade_ids[cid] = {f.trade_id for f in fills}
        target.book.fills_count += len(fills)
        log.warning("%s: %s: order %d: %s", ctx.bot, row.tag, cid, row.action)
        return _correction(row)

    # -- the book and balances -----------------------------------------------------------------

    async def _balances(
        self, target: BotTarget, differences: Sequence[Difference], exchange: ExchangeView
    ) -> list[Correction]:
        corrections = []
        for d in differences:
            if d.kind is not Kind.BALANCE_DRIFT or not d.correctable or d.asset is None:
                continue
            held = exchange.balances.get(d.asset)
            on_exchange = held.total if held is not None else Decimal(0)
            in_journal = target.book.balances.get(d.asset, Decimal(0))
            change = on_exchange - in_journal
            if abs(change) <= self._tolerance(on_exchange):
                continue  # the fills recorded above explained it
            row = self._row(
                target.ctx.bot,
                Kind.BALANCE_DRIFT,
                d.subject,
                str(in_journal),
                str(on_exchange),
                f"adjustment of {change:+} {d.asset} to the exchange's balance",
            )
            await self.store.adjust_balance(row, target.ctx.bot, d.asset, change, on_exchange)
            target.book.balances[d.asset] = on_exchange
            corrections.append(_correction(row))
            log.warning("%s: %s: %s", target.ctx.bot, row.tag, row.action)
        return corrections

    def _row(
        self, bot: str, kind: str, subject: str, journal: str, exchange: str, action: str
    ) -> CorrectionRow:
        row = CorrectionRow(
            self._next_id,
            self.run_id,
            self._clock(),
            bot,
            str(kind),
            subject,
            journal,
            exchange,
            action,
        )
        self._next_id += 1
        return row


def _lost_rows(target: BotTarget, by_order: dict[int, list[Difference]]) -> set[int]:
    """Live orders with a missing fill the gateway's book says it recorded: the journal lost
    the row (deleted by hand, say). Asking the exchange again would find nothing new, so the
    fill is written back to the journal directly."""
    lost = set()
    for cid, diffs in by_order.items():
        seen = target.book.trade_ids.get(cid, set())
        if any(d.trade is not None and d.trade.trade.trade_id in seen for d in diffs):
            lost.add(cid)
    return lost


def _trades_of(
    order: JournalOrder, snapshot: OrderSnapshot | None, account_trades: list[AccountTrade]
) -> list[AccountTrade]:
    """The order's trades the exchange showed, from its snapshot and its trade history."""
    found = {t.trade.trade_id: t for t in account_trades}
    if snapshot is not None:
        for trade in snapshot.trades:
            found.setdefault(
                trade.trade_id,
                AccountTrade(
                    snapshot.exchange_order_id,
                    order.client_order_id,
                    order.symbol,
                    order.side,
                    trade,
                ),
            )
    return sorted(found.values(), key=lambda t: (t.trade.timestamp, t.trade.trade_id))


def _fill(order: JournalOrder, account_trade: AccountTrade) -> FillRecord:
    t = account_trade.trade
    return FillRecord(
        order.client_order_id,
        order.bot,
        t.trade_id,
        order.side,
        t.amount,
        t.price,
        t.fee,
        t.fee_currency,
        t.timestamp,
    )


def _corrected(
    before: JournalOrder,
    snapshot: OrderSnapshot | None,
    fills: dict[tuple[int, str], FillRecord],
    new: list[FillRecord],
    trades: list[AccountTrade],
) -> JournalOrder:
    cid = before.client_order_id
    filled = sum((f.amount for (c, _), f in fills.items() if c == cid), Decimal(0))
    filled += sum((f.amount for f in new), Decimal(0))
    if snapshot is not None:
        status = STATUS_FROM_EXCHANGE[snapshot.status]
        exchange_order_id: str | None = snapshot.exchange_order_id
    else:
        # Not open on the exchange (or it would have a snapshot), and it traded: finished.
        status = before.status
        if before.status is OrderStatus.FAILED and filled > 0:
            status = OrderStatus.FILLED if filled >= before.amount else OrderStatus.CANCELED
        exchange_order_id = trades[0].exchange_order_id if trades else None
    return replace(
        before,
        status=status,
        filled=filled,
        exchange_order_id=exchange_order_id or before.exchange_order_id,
    )


def _describe(before: JournalOrder, after: JournalOrder, fills: list[FillRecord]) -> str:
    parts = []
    if after.status is not before.status:
        parts.append(f"status {before.status.value} -> {after.status.value}")
    if fills:
        amount = sum((f.amount for f in fills), Decimal(0))
        trades = ", ".join(f.trade_id for f in fills)
        parts.append(f"{len(fills)} missing fill(s) recorded ({amount} filled; trade {trades})")
    if after.exchange_order_id != before.exchange_order_id:
        parts.append(f"exchange order id {after.exchange_order_id}")
    return "; ".join(parts) or "no change"


def _show_book(position: Position, balances: dict[str, Decimal]) -> str:
    shown = ", ".join(f"{asset} {amount}" for asset, amount in sorted(balances.items()))
    return (
        f"position {position.base} @ {position.avg_entry_price} (realized "
        f"{position.realized_pnl}, fees {position.fees_paid}); balances {shown}"
    )


def _correction(row: CorrectionRow) -> Correction:
    return Correction(row.id, row.bot, row.kind, row.subject, row.journal, row.exchange, row.action)
