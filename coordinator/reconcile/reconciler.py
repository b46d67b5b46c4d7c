"""Reconciliation runs: read each bot's exchange, then its journal, compare, and (with apply)
correct the journal. One run at a time; each is a `reconciliation_runs` row with its report.

Reading never sends or cancels anything, so a report is safe at any time, kill switch or not.
On a running bot a fill can land between the two reads; the comparison is built to lean towards
"not a difference" in that race (see `compare`), and applying goes through the gateway's lock.
For an exact picture, stop the bot (or activate the kill switch) first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal

from bots.errors import ExchangeError, OrderNotFound
from bots.exchanges.base import ExchangeAdapter, ReconcilableExchange, VenueIdLookup
from bots.journal import OrderStatus
from bots.models import OrderSnapshot
from coordinator.config.models import BotConfig, ReconciliationSettings
from coordinator.errors import UnknownBot
from coordinator.lifecycle import BotState
from coordinator.reconcile.compare import BotContext, ExchangeView, compare, lost_from_journal
from coordinator.reconcile.corrections import BotTarget, Corrector
from coordinator.reconcile.model import BotReconciliation, Difference, ReconciliationReport
from coordinator.store.reconciliation import JournalView, ReconciliationStore
from coordinator.store.restored import RestoredJournal
from coordinator.store.sqlite import SqliteStore
from coordinator.supervisor import BotRunner
from coordinator.wiring import trades_on_exchange

log = logging.getLogger(__name__)

# Orders the journal calls failed that are looked up when the exchange shows a trade or an open
# order it cannot place: the newest this many.
MAX_FAILED_LOOKUPS = 20
# Orders of trades the journal cannot place that are looked up in one run, after a restore.
MAX_LOST_LOOKUPS = 200
_ACTIVE = frozenset({BotState.STARTING, BotState.RUNNING})


async def _next_tick(runner: BotRunner) -> None:
    """Wait for the bot's next completed tick (its sync journals what the venue shows), at most
    two tick intervals and a half second."""
    ticks = runner.stats.ticks
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2 * runner.parts.config.tick_interval_seconds + 0.5
    # A short, bounded wait on a counter the bot owns; no event to wait on.
    while runner.stats.ticks == ticks and runner.state in _ACTIVE and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def account_of(bot: BotConfig) -> str:
    if trades_on_exchange(bot):
        return f"{bot.exchange} key ${bot.credentials.api_key_env}"
    return f"paper account of {bot.name}"


class Reconciler:
    def __init__(
        self,
        runners: Mapping[str, BotRunner],
        store: SqliteStore,
        settings: ReconciliationSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self.runners = runners
        self.records = ReconciliationStore(store)
        self.settings = settings
        self._clock = clock
        self._lock = asyncio.Lock()
        self.last: ReconciliationReport | None = None

    async def run(
        self, bot: str | None, apply: bool, actor: str, trigger: str
    ) -> ReconciliationReport:
        if bot is not None and bot not in self.runners:
            raise UnknownBot(bot, list(self.runners))
        names = [bot] if bot is not None else list(self.runners)
        async with self._lock:
            run_id, first_correction = await self.records.next_ids()
            started = self._clock()
            await self.records.begin_run(run_id, started, actor, trigger, apply, names)
            corrector = (
                Corrector(self.records, run_id, first_correction, self._clock, self._tolerance)
                if apply
                else None
            )
            restored = await self.records.restored()
            results = [await self._bot(self.runners[name], corrector, restored) for name in names]
            report = ReconciliationReport(
                run_id, started, self._clock(), actor, trigger, apply, results
            )
            await self.records.finish_run(
                run_id,
                report.finished_at,
                report.differences,
                report.corrections,
                report.as_dict(),
            )
        self.last = report
        _log_report(report)
        return report

    def _tolerance(self, amount: Decimal) -> Decimal:
        return self.settings.tolerance(amount)

    async def _bot(
        self, runner: BotRunner, corrector: Corrector | None, restored: RestoredJournal | None
    ) -> BotReconciliation:
        ctx = self._context(runner, restored)
        result = BotReconciliation(
            ctx.bot, ctx.exchange, ctx.account, running=runner.state in _ACTIVE
        )
        since = self._clock() - timedelta(hours=self.settings.trade_lookback_hours)
        found = await self._compare(runner, ctx, since, result.errors)
        if found is not None and found[0] and runner.state in _ACTIVE:
            found = await self._confirmed(runner, ctx, since, result.errors, found)
        if found is None:
            return result
        result.differences, exchange = found
        compared = exchange.trades_since
        result.trades_compared_since = (
            max(compared, ctx.history_since) if ctx.history_since else compared
        )
        if corrector is None:
            return result
        if any(d.correctable for d in result.differences):
            target = BotTarget(ctx, runner.gateway(), runner.parts.book)
            corrections, errors = await corrector.apply(target, result.differences, exchange)
            result.corrections, result.errors = corrections, result.errors + errors
            again = await self._compare(runner, ctx, since, result.errors)
            result.remaining = again[0] if again is not None else result.differences
        else:
            result.remaining = list(result.differences)
        return result

    async def _confirmed(
        self,
        runner: BotRunner,
        ctx: BotContext,
        since: datetime,
        errors: list[str],
        first: tuple[list[Difference], ExchangeView],
    ) -> tuple[list[Difference], ExchangeView] | None:
        """A running bot's differences, confirmed by a second look after its next tick: a fill
        the venue shows and the bot's own sync has not journaled yet is the bot's race, not a
        difference (on a loaded machine that window is wider). Only what both looks find is
        reported, with the second look's exchange view."""
        await _next_tick(runner)
        again = await self._compare(runner, ctx, since, errors)
        if again is None:
            return None
        seen = {(d.kind, d.subject) for d in first[0]}
        return [d for d in again[0] if (d.kind, d.subject) in seen], again[1]

    async def _compare(
        self, runner: BotRunner, ctx: BotContext, since: datetime, errors: list[str]
    ) -> tuple[list[Difference], ExchangeView] | None:
        adapter = runner.parts.adapter
        try:
            exchange = await _read_exchange(runner, since, self._clock)
        except ExchangeError as exc:
            errors.append(f"could not read {adapter.name}: {exc}")
            log.error("%s: reconciliation could not read %s: %s", ctx.bot, adapter.name, exc)
            return None
        journal = await self.records.journal_view(
            ctx.bot,
            since,
            ctx.base,
            ctx.quote,
            client_order_ids=[o.client_order_id for o in exchange.open_orders if o.client_order_id]
            + [t.client_order_id for t in exchange.trades if t.client_order_id],
            exchange_order_ids=[o.exchange_order_id for o in exchange.open_orders]
            + [t.exchange_order_id for t in exchange.trades],
        )
        sending = runner.gateway().sending()
        await _look_up(runner, journal, exchange, sending, errors)
        await _look_up_lost(runner, ctx, journal, exchange, errors)
        differences = compare(
            ctx, journal, exchange, self._account_balances(ctx), self._tolerance, sending
        )
        return differences, exchange

    def _context(self, runner: BotRunner, restored: RestoredJournal | None) -> BotContext:
        config = runner.parts.config
        account = account_of(config)
        sharing = tuple(
            name for name, r in self.runners.items() if account_of(r.parts.config) == account
        )
        adapter = runner.parts.adapter
        history = adapter.history_since if isinstance(adapter, ReconcilableExchange) else None
        running = any(self.runners[name].state in _ACTIVE for name in sharing)
        symbol_bots = tuple(
            name for name in sharing if self.runners[name].parts.config.symbol == config.symbol
        )
        return BotContext(
            config.name,
            config.exchange,
            config.symbol,
            config.base_asset,
            config.quote_asset,
            account,
            sharing,
            history,
            running,
            restored,
            symbol_bots,
        )

    def _account_balances(self, ctx: BotContext) -> dict[str, Decimal]:
        total: dict[str, Decimal] = {}
        for name in ctx.account_bots:
            for asset, amount in self.runners[name].parts.book.balances.items():
                total[asset] = total.get(asset, Decimal(0)) + amount
        return total


async def _read_exchange(
    runner: BotRunner, since: datetime, clock: Callable[[], datetime]
) -> ExchangeView:
    adapter = runner.parts.adapter
    symbol = runner.parts.config.symbol
    fetched_at = clock()
    open_orders = await adapter.fetch_open_orders(symbol)
    if isinstance(adapter, ReconcilableExchange):
        trades = await adapter.fetch_my_trades(symbol, since)
        positions = await adapter.fetch_positions()
        if trades and not getattr(adapter, "trades_complete", True):
            since = trades[0].trade.timestamp  # the venue's history was read this far back
    else:
        trades, positions = [], []
    balances = await adapter.fetch_balance()
    return ExchangeView(fetched_at, since, open_orders, trades, balances, positions)


async def _look_up(
    runner: BotRunner,
    journal: JournalView,
    exchange: ExchangeView,
    sending: frozenset[int],
    errors: list[str],
) -> None:
    """Ask the exchange about the journal's live orders it does not list as open, and (when it
    shows a trade or an order it cannot place) about the orders the journal called failed."""
    adapter = runner.parts.adapter
    owners = journal.order_by_exchange_id()
    listed = {o.client_order_id for o in exchange.open_orders} | {
        owners[o.exchange_order_id] for o in exchange.open_orders if o.exchange_order_id in owners
    }
    wanted = [
        cid
        for cid, order in journal.orders.items()
        if not order.is_terminal and cid not in listed and cid not in sending
    ]
    unplaced = any(
        (t.client_order_id or 0) not in journal.orders and t.exchange_order_id not in owners
        for t in exchange.trades
    ) or any(
        o.client_order_id not in journal.orders and o.exchange_order_id not in owners
        for o in exchange.open_orders
    )
    if unplaced:
        failed = sorted(
            (
                o
                for o in journal.orders.values()
                if o.status is OrderStatus.FAILED and not o.exchange_order_id
            ),
            key=lambda o: o.created_at,
            reverse=True,
        )
        wanted += [o.client_order_id for o in failed[:MAX_FAILED_LOOKUPS]]
    for cid in wanted:
        snapshot: OrderSnapshot | None
        try:
            snapshot = await adapter.fetch_order(cid, journal.orders[cid].symbol)
        except OrderNotFound:
            snapshot = None
        except ExchangeError as exc:
            errors.append(f"order {cid}: could not ask {adapter.name}: {exc}")
            continue
        exchange.lookups[cid] = snapshot


async def _look_up_lost(
    runner: BotRunner,
    ctx: BotContext,
    journal: JournalView,
    exchange: ExchangeView,
    errors: list[str],
) -> None:
    """After a restore: ask the exchange about the orders of the trades the journal cannot
    place (their amount, type and status are not in a trade, and kraken's trades do not even
    say their client order id), to find those lost from the journal."""
    if ctx.restored is None:
        return
    adapter = runner.parts.adapter
    unplaced = _unplaced_orders(ctx, journal, exchange)
    asked = list(unplaced.items())[:MAX_LOST_LOOKUPS]
    if len(unplaced) > len(asked):
        errors.append(
            f"{len(unplaced)} orders of trades the journal cannot place; only the first "
            f"{MAX_LOST_LOOKUPS} were looked up (reconcile again for the rest)"
        )
    for exchange_order_id, cid in asked:
        try:
            snapshot = await _ask(adapter, exchange_order_id, cid, ctx.symbol)
        except ExchangeError as exc:
            errors.append(f"order {exchange_order_id}: could not ask {adapter.name}: {exc}")
            continue
        found = cid if cid is not None else snapshot.client_order_id if snapshot else None
        if found and lost_from_journal(ctx, found):
            exchange.lost_lookups[found] = snapshot
            exchange.lost_owners[exchange_order_id] = found


def _unplaced_orders(
    ctx: BotContext, journal: JournalView, exchange: ExchangeView
) -> dict[str, int | None]:
    """Exchange order id -> client order id (None: the trade does not say) of the trades whose
    order is neither in the journal nor open, and may be one lost from it."""
    owners = journal.order_by_exchange_id()
    listed = {o.exchange_order_id for o in exchange.open_orders}
    unplaced: dict[str, int | None] = {}
    for t in exchange.trades:
        cid = t.client_order_id
        if cid in journal.orders or t.exchange_order_id in owners or t.exchange_order_id in listed:
            continue
        if cid is None or lost_from_journal(ctx, cid):
            unplaced.setdefault(t.exchange_order_id, cid)
    return unplaced


async def _ask(
    adapter: ExchangeAdapter, exchange_order_id: str, cid: int | None, symbol: str
) -> OrderSnapshot | None:
    """The order, by our id when the trade said it, else by the venue's; None: not found (or
    the adapter cannot ask by the venue's id)."""
    try:
        if cid is not None:
            found: OrderSnapshot = await adapter.fetch_order(cid, symbol)
            return found
        if isinstance(adapter, VenueIdLookup):
            return await adapter.fetch_order_by_exchange_id(exchange_order_id, symbol)
    except OrderNotFound:
        return None
    return None


def _log_report(report: ReconciliationReport) -> None:
    if report.clean and not report.differences:
        log.info("reconciliation #%d: journal and exchanges agree", report.run_id)
        return
    level = logging.WARNING if report.clean else logging.ERROR
    log.log(
        level,
        "reconciliation #%d (%s): %d difference(s), %d correction(s), %d remaining, %d error(s)",
        report.run_id,
        "applied" if report.applied else "report only",
        report.differences,
        report.corrections,
        report.remaining,
        report.errors,
    )
    for bot in report.bots:
        for d in bot.remaining if report.applied else bot.differences:
            log.log(
                level,
                "%s: %s %s: journal %s, exchange %s",
                d.bot,
                d.kind.value,
                d.subject,
                d.journal,
                d.exchange,
            )
