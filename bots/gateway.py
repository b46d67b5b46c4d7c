"""The order gateway: the one path by which an order leaves the process.

For each intent: the gates are asked (read-only mode, later the kill switch and risk limits);
the intent is journaled with a fresh client order id and committed; the gates are asked once more
with no await between that check and the send, so a gate that closes while the journal write is
in flight still stops the order; then the order is sent. The acknowledgement and every fill,
with the position and balances they move, are committed as one journal update before the
in-memory book changes.

Every refusal and failure is counted on the bot's book under a reason code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

from bots.book import BotBook
from bots.errors import (
    ExchangeError,
    OrderNotFound,
    OrderRejected,
    RequestRefused,
    TransientExchangeError,
)
from bots.exchanges.base import ExchangeAdapter
from bots.ids import ClientOrderIds
from bots.journal import (
    TERMINAL_STATUSES,
    FillRecord,
    JournalOrder,
    OrderJournal,
    OrderStatus,
    OrderUpdate,
)
from bots.ledger import apply_changes, balance_changes, fee_in_quote
from bots.models import (
    ExchangeOrderStatus,
    MarketSnapshot,
    OrderIntent,
    OrderRequest,
    OrderSnapshot,
)
from bots.retry import RetryPolicy
from bots.strategies.base import FillView

log = logging.getLogger(__name__)

STATUS_FROM_EXCHANGE = {
    ExchangeOrderStatus.OPEN: OrderStatus.OPEN,
    ExchangeOrderStatus.CLOSED: OrderStatus.FILLED,
    ExchangeOrderStatus.CANCELED: OrderStatus.CANCELED,
    ExchangeOrderStatus.REJECTED: OrderStatus.REJECTED,
}


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str  # machine-readable, e.g. "read_only", "kill_switch", "max_order_notional"
    reason: str  # for the operator


class OrderGate(Protocol):
    """A pre-trade check. Must be synchronous and fast: it runs right before every send."""

    def check(self, intent: OrderIntent, book: BotBook) -> Refusal | None: ...


SendFailure = Literal["transient", "permanent", "cancelled"]


class SendGuard(Protocol):
    """Watches the sends themselves (circuit breakers): may refuse one right before it goes,
    and hears how each went. Only transient failures should count against an exchange."""

    def before_send(self, exchange: str) -> Refusal | None: ...

    def after_send(self, exchange: str, failure: SendFailure | None) -> None: ...


FailureClass = Literal["transient", "permanent"]


class OrderObserver(Protocol):
    """Hears what happens to orders, for metrics and alerts. Must be synchronous and cheap: it
    is called on the order path. Labels it gets are bounded (bot, exchange, codes), never ids."""

    def send_failed(self, identity: BotIdentity, reason: str, failure: FailureClass) -> None:
        """One attempt to send an order failed (each retry is an attempt)."""

    def submit_ended(
        self, identity: BotIdentity, outcome: str, ack_seconds: float | None
    ) -> None:
        """An order that went to the exchange ended its submit: `outcome` is sent, rejected,
        failed or unresolved; `ack_seconds` is first send to acknowledgement, for sent."""

    def order_finished(self, identity: BotIdentity, status: OrderStatus) -> None:
        """An order reached a terminal status in the journal."""

    def filled(self, identity: BotIdentity, amount: Decimal, price: Decimal) -> None:
        """A fill was committed."""


@dataclass(frozen=True, slots=True)
class SubmitResult:
    outcome: Literal["sent", "refused", "rejected", "failed", "unresolved"]
    client_order_id: int | None = None
    code: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PartialFillPolicy:
    """An order filled to at least `acceptable_ratio` is complete: its remainder is cancelled.
    Below that, the remainder is cancelled once the order is `timeout` old. Orders with no
    fill at all are left alone (a grid's resting orders must rest)."""

    acceptable_ratio: Decimal
    timeout: timedelta


@dataclass(frozen=True, slots=True)
class BotIdentity:
    bot: str
    exchange: str
    symbol: str
    base_asset: str
    quote_asset: str


class ReadOnlyGate:
    """Read-only mode: every order is refused, nothing is sent."""

    def check(self, intent: OrderIntent, book: BotBook) -> Refusal | None:
        return Refusal("read_only", "the bot is in read-only mode: no order is sent")


class OrderGateway:
    def __init__(
        self,
        identity: BotIdentity,
        adapter: ExchangeAdapter,
        journal: OrderJournal,
        ids: ClientOrderIds,
        book: BotBook,
        gates: Sequence[OrderGate] = (),
        clock: Callable[[], datetime] | None = None,
        send_guard: SendGuard | None = None,
        partial_fills: PartialFillPolicy | None = None,
        retry: RetryPolicy | None = None,
        observer: OrderObserver | None = None,
        on_execution: Callable[[JournalOrder], None] | None = None,
    ) -> None:
        self.identity = identity
        self.adapter = adapter
        self.journal = journal
        self.ids = ids
        self.book = book
        self.gates = list(gates)
        # Read-only sends nothing that writes: not an order, not a cancel.
        self.read_only = any(isinstance(gate, ReadOnlyGate) for gate in self.gates)
        self.send_guard = send_guard
        self.partial_fills = partial_fills
        self.retry = retry  # None: a transient failure is looked up once, never resent
        self.observer = observer
        # Told of each order's first fill (an execution), once committed: the repeated-
        # execution throttle counts them. Synchronous, like the gates.
        self.on_execution = on_execution
        self._clock = clock or (lambda: datetime.now(UTC))
        self._apply_lock = asyncio.Lock()
        # Orders being sent right now: refreshes leave them alone and cancels wait for the send,
        # so an order is never judged "unknown to the exchange" while its create is in flight.
        self._in_flight: dict[int, asyncio.Event] = {}

    # -- submitting ------------------------------------------------------------------------------

    async def submit(self, intent: OrderIntent) -> SubmitResult:
        if intent.symbol != self.identity.symbol:
            return self._refused(
                Refusal("wrong_symbol", f"bot trades {self.identity.symbol}, not {intent.symbol}")
            )
        refusal = self._first_refusal(intent)
        if refusal is not None:
            return self._refused(refusal)

        order = JournalOrder(
            client_order_id=self.ids.next(),
            bot=self.identity.bot,
            exchange=self.identity.exchange,
            symbol=intent.symbol,
            side=intent.side,
            type=intent.type,
            amount=intent.amount,
            price=intent.price,
            status=OrderStatus.PENDING_SUBMIT,
            created_at=self._clock(),
            tag=intent.tag,
        )
        coid = order.client_order_id
        await self._journal_intent(order)
        sent = asyncio.Event()
        self._in_flight[coid] = sent
        began = time.perf_counter()
        try:
            result = await self._send(intent, order)
        finally:
            sent.set()
            self._in_flight.pop(coid, None)
        if self.observer is not None and result.outcome != "refused":
            ack = time.perf_counter() - began if result.outcome == "sent" else None
            self.observer.submit_ended(self.identity, result.outcome, ack)
        # Orders in a row that ended badly (not attempts: one order's retries count once).
        if result.outcome == "sent":
            self.book.consecutive_failures = 0
        elif result.outcome in ("rejected", "failed", "unresolved"):
            self.book.consecutive_failures += 1
        return result

    async def _journal_intent(self, order: JournalOrder) -> None:
        """Commit the intent, and only then count it as live.

        The write is shielded: if our caller is cancelled while it is queued, it still completes,
        and a committed intent still enters the book (pending), where a cancel or a refresh finds
        and resolves it. A write that failed leaves nothing behind."""
        write = asyncio.ensure_future(self.journal.record_intent(order))

        def enter_book(done: asyncio.Future[None]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            self.book.live_orders[order.client_order_id] = order
            self.book.trade_ids[order.client_order_id] = set()
            self.book.orders_count += 1
            self.book.last_order_at = order.created_at
            self.book.recent_orders.append(order.created_at)

        write.add_done_callback(enter_book)
        await asyncio.shield(write)

    async def _send(self, intent: OrderIntent, order: JournalOrder) -> SubmitResult:
        """Send, and after a transient failure look the order up before any resend: an order
        the exchange did take is adopted, never sent twice."""
        coid = order.client_order_id
        request = OrderRequest(
            coid, order.symbol, order.side, order.type, order.amount, order.price
        )
        attempt = 0
        while True:
            attempt += 1
            # A gate may have closed while the intent was being committed (or while we backed
            # off): ask again, and send in the same step, with no await in between.
            refusal = self._recheck(intent, coid)
            if refusal is None and self.send_guard is not None:
                refusal = self.send_guard.before_send(self.identity.exchange)
            if refusal is not None:
                await self._finish_unsent(order, OrderStatus.FAILED, f"not sent: {refusal.reason}")
                return self._refused(refusal, coid)
            try:
                snapshot = await self.adapter.create_order(request)
            except OrderRejected as exc:
                self._after_send("permanent")
                self._count_error(exc.code)
                self._observe_failure(exc.code, "permanent")
                await self._finish_unsent(order, OrderStatus.REJECTED, exc.reason)
                log.warning(
                    "%s: order %d rejected by %s: %s",
                    self.identity.bot,
                    coid,
                    self.adapter.name,
                    exc.reason,
                )
                return SubmitResult("rejected", coid, exc.code, exc.reason)
            except TransientExchangeError as exc:
                self._after_send("transient")
                self._count_error("transient")
                self._observe_failure(
                    "refused" if isinstance(exc, RequestRefused) else "unavailable", "transient"
                )
                outcome = await self._after_transient_failure(order, exc, attempt)
                if outcome is not None:
                    return outcome
                continue  # the exchange does not have it: send again, under the same id
            except ExchangeError as exc:
                self._after_send("permanent")
                self._count_error("exchange_error")
                self._observe_failure("exchange_error", "permanent")
                log.error("%s: order %d failed: %s", self.identity.bot, coid, exc)
                return await self._resolve_after_send_error(order, exc, attempt)
            except BaseException:
                self._after_send("cancelled")  # no evidence either way: free a probe slot only
                raise
            self._after_send(None)
            await self._apply(coid, snapshot, "acknowledged")
            return SubmitResult("sent", coid)

    async def _after_transient_failure(
        self, order: JournalOrder, error: TransientExchangeError, attempt: int
    ) -> SubmitResult | None:
        """None: send it again (the venue refused the request and does not have the order).
        Otherwise the order's outcome.

        Only a `RequestRefused` (rate limit, maintenance) may lead to a resend. After a timeout
        or a 5xx the order may exist and may still appear: it is looked up over the whole
        backoff schedule and adopted if it shows up, never sent a second time."""
        retry = self.retry
        if retry is None:
            return await self._resolve_after_send_error(order, error, attempt)
        if isinstance(error, RequestRefused):
            if attempt > retry.max_retries:
                return await self._resolve_after_send_error(order, error, attempt)
            await retry.sleep(retry.delay(attempt))
            try:
                found = await self._look_up(order)
            except ExchangeError as lookup_error:
                return self._unresolved(order, error, lookup_error)
            if found is None:
                log.warning(
                    "%s: %s refused order %d (%s); sending it again (attempt %d of %d)",
                    self.identity.bot,
                    self.adapter.name,
                    order.client_order_id,
                    error,
                    attempt + 1,
                    retry.max_retries + 1,
                )
                return None
            return await self._adopt(order, found, error)
        for lookup in range(1, retry.max_retries + 2):
            await retry.sleep(retry.delay(lookup))
            try:
                found = await self._look_up(order)
            except ExchangeError as lookup_error:
                log.warning(
                    "%s: looking up order %d failed: %s",
                    self.identity.bot,
                    order.client_order_id,
                    lookup_error,
                )
                continue
            if found is not None:
                return await self._adopt(order, found, error)
        return await self._resolve_after_send_error(
            order, error, attempt, lookups=retry.max_retries + 2
        )

    async def _look_up(self, order: JournalOrder) -> OrderSnapshot | None:
        try:
            return await self.adapter.fetch_order(order.client_order_id, order.symbol)
        except OrderNotFound:
            return None

    async def _adopt(
        self, order: JournalOrder, snapshot: OrderSnapshot, error: ExchangeError
    ) -> SubmitResult:
        await self._apply(order.client_order_id, snapshot, f"found after send error: {error}")
        return SubmitResult("sent", order.client_order_id)

    def _after_send(self, failure: SendFailure | None) -> None:
        if self.send_guard is not None:
            self.send_guard.after_send(self.identity.exchange, failure)

    def _first_refusal(self, intent: OrderIntent) -> Refusal | None:
        for gate in self.gates:
            refusal = gate.check(intent, self.book)
            if refusal is not None:
                return refusal
        return None

    def _recheck(self, intent: OrderIntent, client_order_id: int) -> Refusal | None:
        """The gates again, judging the order against everything but itself: it is in the book
        already (its intent is committed), and a limit such as "one open order" must not count
        the very order it is deciding about. Synchronous, so no one else sees the book without
        it."""
        own = self.book.live_orders.pop(client_order_id, None)
        counted = own is not None and own.created_at in self.book.recent_orders
        if counted:
            self.book.uncounted_orders += 1  # nor in the orders-per-minute counts
        try:
            return self._first_refusal(intent)
        finally:
            if own is not None:
                self.book.live_orders[client_order_id] = own
            if counted:
                self.book.uncounted_orders -= 1

    def _refused(self, refusal: Refusal, client_order_id: int | None = None) -> SubmitResult:
        self.book.refusals[refusal.code] = self.book.refusals.get(refusal.code, 0) + 1
        self.book.last_refusal = f"{refusal.code}: {refusal.reason}"
        log.info("%s: order refused (%s): %s", self.identity.bot, refusal.code, refusal.reason)
        return SubmitResult("refused", client_order_id, refusal.code, refusal.reason)

    def _count_error(self, code: str) -> None:
        self.book.errors[code] = self.book.errors.get(code, 0) + 1

    def _observe_failure(self, reason: str, failure: FailureClass) -> None:
        if self.observer is not None:
            self.observer.send_failed(self.identity, reason, failure)

    def _observe_end(self, status: OrderStatus, fills: Sequence[FillRecord] = ()) -> None:
        observer = self.observer
        if observer is None:
            return
        for fill in fills:
            observer.filled(self.identity, fill.amount, fill.price)
        if status in TERMINAL_STATUSES:
            observer.order_finished(self.identity, status)

    async def _resolve_after_send_error(
        self, order: JournalOrder, error: ExchangeError, attempts: int = 1, lookups: int = 1
    ) -> SubmitResult:
        """The last word on a send that failed: look it up; absent, it failed."""
        try:
            snapshot = await self.adapter.fetch_order(order.client_order_id, order.symbol)
        except OrderNotFound:
            gave_up = self.retry is not None and (attempts > 1 or lookups > 1)
            if not gave_up:
                await self._finish_unsent(order, OrderStatus.FAILED, f"not placed: {error}")
                return SubmitResult("failed", order.client_order_id, "send_failed", str(error))
            reason = (
                f"not placed: {attempts} send(s), and {self.adapter.name} did not show it in "
                f"{lookups} lookup(s) (last error: {error}); needs an operator"
            )
            await self._finish_unsent(order, OrderStatus.FAILED, reason)
            self._count_error("retries_exhausted")
            log.critical("%s: order %d %s", self.identity.bot, order.client_order_id, reason)
            return SubmitResult("failed", order.client_order_id, "retries_exhausted", reason)
        except ExchangeError as lookup_error:
            return self._unresolved(order, error, lookup_error)
        await self._apply(order.client_order_id, snapshot, f"found after send error: {error}")
        return SubmitResult("sent", order.client_order_id)

    def _unresolved(
        self, order: JournalOrder, error: ExchangeError, lookup_error: ExchangeError
    ) -> SubmitResult:
        log.error(
            "%s: order %d outcome unknown after %r; lookup failed too (%s); "
            "it stays pending and is looked up again on the next sync",
            self.identity.bot,
            order.client_order_id,
            error,
            lookup_error,
        )
        return SubmitResult("unresolved", order.client_order_id, "unknown", str(error))

    async def _finish_unsent(self, order: JournalOrder, status: OrderStatus, reason: str) -> None:
        await self._unsplittable(self._finish_unsent_now(order, status, reason))

    async def _finish_unsent_now(
        self, order: JournalOrder, status: OrderStatus, reason: str
    ) -> None:
        async with self._apply_lock:
            current = self.book.live_orders.get(order.client_order_id)
            if current is None:
                return
            now = self._clock()
            final = replace(current, status=status, reason=reason)
            await self.journal.record_update(OrderUpdate(final, current.status, now, detail=reason))
            self._forget(order.client_order_id)
            self._observe_end(status)

    async def _unknown_to_exchange(self, order: JournalOrder, when: str = "") -> None:
        """The exchange has no such order: never placed if it was pending, else gone."""
        self._count_error("order_not_found")
        status = (
            OrderStatus.FAILED
            if order.status is OrderStatus.PENDING_SUBMIT
            else OrderStatus.CANCELED
        )
        log.warning(
            "%s: %s has no order %d; journal marks it %s",
            self.identity.bot,
            self.adapter.name,
            order.client_order_id,
            status.value,
        )
        reason = "the exchange does not know this order" + (f" ({when})" if when else "")
        await self._finish_unsent(order, status, reason)

    # -- keeping up with the exchange ------------------------------------------------------------

    async def sync(self, market: MarketSnapshot) -> None:
        """Give the adapter the market, then bring every live order up to date.

        The price is stamped with when it reached us (our clock, now), not with
        `market.timestamp`: the risk gate measures its age against the same clock, and a venue's
        stamp from a skewed clock would make every order stale (or a stale one look fresh). Both
        feeds stamp a snapshot when it is received, so the two differ only by this call's lag."""
        self.book.last_price_at = self._clock()
        self.book.last_price = market.last
        await self.adapter.on_market(market)
        await self.refresh_live_orders("found in a sync")
        await self.enforce_partial_fill_policy()

    async def enforce_partial_fill_policy(self) -> None:
        policy = self.partial_fills
        if policy is None:
            return
        now = self._clock()
        for order in list(self.book.live_orders.values()):
            if order.status is not OrderStatus.OPEN or not 0 < order.filled < order.amount:
                continue
            ratio = order.filled / order.amount
            if ratio >= policy.acceptable_ratio:
                outcome = "completed"
                reason = (
                    f"complete at {ratio:.1%} filled (acceptable from "
                    f"{policy.acceptable_ratio:.0%}): remainder cancelled"
                )
            elif now - order.created_at >= policy.timeout:
                outcome = "timed_out"
                minutes = int(policy.timeout.total_seconds() // 60)
                reason = f"only {ratio:.1%} filled after {minutes} min: remainder cancelled"
            else:
                continue
            if await self.cancel(order.client_order_id, reason):
                outcomes = self.book.partial_fill_outcomes
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                log.info("%s: order %d %s", self.identity.bot, order.client_order_id, reason)

    @property
    def book_lock(self) -> asyncio.Lock:
        """Held while a journal update and the book change together. Reconciliation holds it to
        correct both without racing a fill being applied."""
        return self._apply_lock

    def sending(self) -> frozenset[int]:
        """Client order ids whose create is in flight right now."""
        return frozenset(self._in_flight)

    async def refresh_order(self, client_order_id: int, detail: str) -> bool:
        """Bring one live order up to date with the exchange (its status and any fills);
        False when it is not live here or is being sent. Raises ExchangeError when the
        exchange cannot be asked."""
        order = self.book.live_orders.get(client_order_id)
        if order is None or client_order_id in self._in_flight:
            return False
        try:
            snapshot = await self.adapter.fetch_order(client_order_id, order.symbol)
        except OrderNotFound:
            await self._unknown_to_exchange(order, detail)
            return True
        await self._apply(client_order_id, snapshot, detail)
        return True

    async def refresh_live_orders(self, detail: str) -> list[int]:
        """Ask the exchange about every order the journal holds live; returns the ids still
        unresolved (the exchange could not be asked)."""
        unresolved: list[int] = []
        for client_order_id in list(self.book.live_orders):
            order = self.book.live_orders.get(client_order_id)
            if order is None or client_order_id in self._in_flight:
                continue
            try:
                snapshot = await self.adapter.fetch_order(client_order_id, order.symbol)
            except OrderNotFound:
                await self._unknown_to_exchange(order, detail)
                continue
            except ExchangeError as exc:
                unresolved.append(client_order_id)
                log.warning(
                    "%s: could not refresh order %d: %s", self.identity.bot, client_order_id, exc
                )
                continue
            await self._apply(client_order_id, snapshot, detail)
        return unresolved

    async def cancel(self, client_order_id: int, reason: str = "cancelled by strategy") -> bool:
        if self.read_only:
            self._refused(
                Refusal("read_only", f"read-only: order {client_order_id} is left as it is"),
                client_order_id,
            )
            return False
        sending = self._in_flight.get(client_order_id)
        if sending is not None:
            await sending.wait()  # cancel what the send produced, not a guess
        order = self.book.live_orders.get(client_order_id)
        if order is None:
            return False
        try:
            snapshot = await self.adapter.cancel_order(client_order_id, order.symbol)
        except OrderNotFound:
            await self._unknown_to_exchange(order)
            return True
        await self._apply(client_order_id, snapshot, reason, row_reason=reason)
        return True

    async def cancel_all(self, reason: str) -> list[str]:
        """Cancel every live order; returns the errors (empty when all are cancelled)."""
        errors: list[str] = []
        for client_order_id in list(self.book.live_orders):
            try:
                await self.cancel(client_order_id, reason)
            except ExchangeError as exc:
                errors.append(f"order {client_order_id}: {exc}")
                log.error(
                    "%s: could not cancel order %d: %s", self.identity.bot, client_order_id, exc
                )
            except Exception as exc:  # the journal: one order's failure must not stop the rest
                errors.append(f"order {client_order_id}: {type(exc).__name__}: {exc}")
                log.error(
                    "%s: cancelling order %d failed: %r",
                    self.identity.bot,
                    client_order_id,
                    exc,
                    exc_info=exc,
                )
        return errors

    # -- applying what the exchange says ---------------------------------------------------------

    async def _unsplittable(self, step: Coroutine[Any, Any, None]) -> None:
        """Run a journal write and the book change that follows it as one step a cancelled
        caller cannot split. A queued write commits whether or not its caller still waits (the
        kill switch cancels a tick mid-write); if the book did not follow, the bot would hold
        an order the journal has finished, and its next cancel would fail against the journal.
        """
        task = asyncio.ensure_future(step)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._log_orphaned_failure)
            raise

    def _log_orphaned_failure(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "%s: a journal update whose caller was cancelled failed: %r",
                self.identity.bot,
                task.exception(),
            )

    async def _apply(
        self,
        client_order_id: int,
        snapshot: OrderSnapshot,
        detail: str,
        row_reason: str | None = None,
    ) -> None:
        order = self.book.live_orders.get(client_order_id)
        if order is None or not self._moves(order, snapshot):
            # Nothing to write: most refreshes of a resting order find it as it was, and a
            # task and a lock per order per tick were most of a resting grid bot's tick.
            return
        await self._unsplittable(
            self._apply_now(client_order_id, snapshot, detail, row_reason)
        )

    def _moves(self, order: JournalOrder, snapshot: OrderSnapshot) -> bool:
        """Does the exchange's view change the order: its status, its fill or a new trade?"""
        if STATUS_FROM_EXCHANGE[snapshot.status] is not order.status:
            return True
        if snapshot.filled != order.filled:
            return True
        seen = self.book.trade_ids.get(order.client_order_id, ())
        return any(t.trade_id not in seen for t in snapshot.trades)

    async def _apply_now(
        self,
        client_order_id: int,
        snapshot: OrderSnapshot,
        detail: str,
        row_reason: str | None,
    ) -> None:
        async with self._apply_lock:
            order = self.book.live_orders.get(client_order_id)
            if order is None:
                return  # already terminal
            seen = self.book.trade_ids.setdefault(client_order_id, set())
            new_trades = [t for t in snapshot.trades if t.trade_id not in seen]
            status = STATUS_FROM_EXCHANGE[snapshot.status]
            if status is order.status and not new_trades and snapshot.filled == order.filled:
                return
            now = self._clock()
            position = self.book.position
            balances = dict(self.book.balances)
            changed: dict[str, Decimal] = {}
            fills: list[FillRecord] = []
            for trade in new_trades:
                fee_in_quote = self._fee_in_quote(trade.fee, trade.fee_currency, trade.price)
                position = position.apply_fill(order.side, trade.amount, trade.price, fee_in_quote)
                deltas = balance_changes(
                    order.side,
                    trade.amount,
                    trade.price,
                    trade.fee,
                    trade.fee_currency,
                    self.identity.base_asset,
                    self.identity.quote_asset,
                )
                new_totals = apply_changes(balances, deltas)
                balances.update(new_totals)
                changed.update(new_totals)
                fills.append(
                    FillRecord(
                        client_order_id,
                        order.bot,
                        trade.trade_id,
                        order.side,
                        trade.amount,
                        trade.price,
                        trade.fee,
                        trade.fee_currency,
                        trade.timestamp,
                    )
                )
            updated = replace(
                order,
                status=status,
                filled=snapshot.filled,
                exchange_order_id=snapshot.exchange_order_id or order.exchange_order_id,
                reason=row_reason or snapshot.reason or order.reason,
            )
            await self.journal.record_update(
                OrderUpdate(
                    updated,
                    order.status,
                    now,
                    fills=fills,
                    position=position if fills else None,
                    balances=changed,
                    detail=detail,
                )
            )
            # Committed: now the book may change.
            self.book.position = position
            self.book.balances = balances
            self.book.fills_count += len(fills)
            seen.update(t.trade_id for t in new_trades)
            self.book.unseen_fills.extend(
                FillView(client_order_id, order.side, f.amount, f.price, order.tag) for f in fills
            )
            if updated.is_terminal:
                self._forget(client_order_id)
            else:
                self.book.live_orders[client_order_id] = updated
            self._observe_end(updated.status, fills)
            if fills and not order.filled and self.on_execution is not None:
                self.on_execution(updated)
        for fill in fills:
            log.info(
                "%s: fill %s %s %s @ %s (order %d)",
                order.bot,
                order.side.value,
                fill.amount,
                order.symbol,
                fill.price,
                client_order_id,
            )

    def _fee_in_quote(self, fee: Decimal, currency: str, price: Decimal) -> Decimal:
        return fee_in_quote(
            fee, currency, price, self.identity.base_asset, self.identity.quote_asset
        )

    def _forget(self, client_order_id: int) -> None:
        self.book.live_orders.pop(client_order_id, None)
        self.book.trade_ids.pop(client_order_id, None)
