"""The bot's tick loop: timing, skipped ticks, state persistence, decision order, stopping.

The gateway, journal (a `SqliteStore` in tmp_path) and exchange (`PaperExchange`) are real; the
strategy is a scripted one, since the loop around it is what is under test. Timing assertions
have wide margins: they tell "ticks on an interval" from "never" and from "as fast as it can".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bots.book import BotBook
from bots.bot import Bot
from bots.errors import TransientExchangeError
from bots.exchanges.paper import PaperExchange
from bots.feeds.simulated import SimulatedFeed
from bots.gateway import BotIdentity, OrderGateway
from bots.ids import ClientOrderIds
from bots.models import CancelIntent, MarketSnapshot, OrderIntent, OrderRequest, OrderType, Side
from bots.models import OrderSnapshot as ExchangeOrder
from bots.strategies.base import Decision, TickContext
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore

D = Decimal
BOT = "alpha"
SYMBOL = "BTC/AUD"
OPENING = {"AUD": D("10000"), "BTC": D("1")}

Decide = Callable[[int, TickContext], list[Decision]]


class ScriptedStrategy:
    """Returns what `decide(tick_number, ctx)` says and reports `states[tick_number - 1]`."""

    name = "scripted"

    def __init__(
        self, decide: Decide | None = None, states: list[dict[str, Any]] | None = None
    ) -> None:
        self.decide = decide
        self.states = states or [{}]
        self.contexts: list[TickContext] = []

    def on_tick(self, ctx: TickContext) -> list[Decision]:
        self.contexts.append(ctx)
        return self.decide(len(self.contexts), ctx) if self.decide else []

    def state(self) -> dict[str, Any]:
        index = min(len(self.contexts), len(self.states)) - 1
        return dict(self.states[max(index, 0)])

    def restore(self, state: dict[str, Any]) -> None:
        raise AssertionError("the bot loop never restores state")


class FlakyFeed:
    """A steady simulated market whose `snapshot()` calls numbered in `failing` time out."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.symbol = SYMBOL
        self.inner = SimulatedFeed(SYMBOL, D("100"), volatility_per_hour=0.0, spread_bps=20.0)
        self.failing = failing
        self.calls = 0

    async def snapshot(self) -> MarketSnapshot:
        self.calls += 1
        if self.calls in self.failing:
            raise TransientExchangeError(f"market data timed out (call {self.calls})")
        return await self.inner.snapshot()

    async def close(self) -> None:
        await self.inner.close()


class LoggedPaperExchange(PaperExchange):
    """The paper exchange, keeping the order in which orders were created and cancelled."""

    def __init__(self, balances: dict[str, Decimal]) -> None:
        super().__init__("paper", SYMBOL, balances, fee_rate=D("0.001"), slippage_bps=D(0))
        self.log: list[tuple[str, int]] = []

    async def create_order(self, request: OrderRequest) -> ExchangeOrder:
        self.log.append(("create", request.client_order_id))
        return await super().create_order(request)

    async def cancel_order(self, client_order_id: int, symbol: str) -> ExchangeOrder:
        self.log.append(("cancel", client_order_id))
        return await super().cancel_order(client_order_id, symbol)


class Harness:
    """A bot on real parts, with what it did recorded."""

    def __init__(
        self,
        strategy: ScriptedStrategy,
        feed: FlakyFeed,
        exchange: LoggedPaperExchange,
        journal: SqliteJournal,
        gateway: OrderGateway,
        interval: float,
    ) -> None:
        self.strategy = strategy
        self.feed = feed
        self.exchange = exchange
        self.journal = journal
        self.saved: list[dict[str, Any]] = []
        self.tick_times: list[float] = []
        self.stop = asyncio.Event()
        self.stop_when: Callable[[], bool] | None = None
        self.bot = Bot(
            BOT, strategy, feed, gateway, interval, self.save_state, on_tick=self.on_tick
        )

    async def save_state(self, state: dict[str, Any]) -> None:
        self.saved.append(state)
        await self.journal.save_bot_state(BOT, datetime.now(UTC), strategy_state=state)

    async def on_tick(self) -> None:
        self.tick_times.append(asyncio.get_running_loop().time())
        if self.stop_when is not None and self.stop_when():
            self.stop.set()

    async def run_until(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        """Run the bot until `condition` holds (checked after each tick)."""
        self.stop_when = condition
        await asyncio.wait_for(self.bot.run(self.stop), timeout=within)


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[MakeHarness]:
    stores: list[SqliteStore] = []

    async def make(
        strategy: ScriptedStrategy | None = None,
        *,
        feed: FlakyFeed | None = None,
        interval: float = 0.05,
    ) -> Harness:
        store = await SqliteStore.open(tmp_path / f"bot-{len(stores)}.db")
        stores.append(store)
        journal = SqliteJournal(store)
        now = datetime.now(UTC)
        await journal.register_bot(BOT, "paper", SYMBOL, "paper", now)
        await journal.seed_balances(BOT, OPENING, "paper account opening balance", now)
        book = BotBook.from_snapshot(await journal.load_book(BOT))
        exchange = LoggedPaperExchange(book.balances)
        gateway = OrderGateway(
            BotIdentity(BOT, "paper", SYMBOL, "BTC", "AUD"),
            exchange,
            journal,
            ClientOrderIds(await journal.max_client_order_id()),
            book,
        )
        return Harness(
            strategy or ScriptedStrategy(),
            feed or FlakyFeed(),
            exchange,
            journal,
            gateway,
            interval,
        )

    yield make
    for store in stores:
        await store.close()


def limit(side: Side, amount: str, price: str) -> OrderIntent:
    return OrderIntent(SYMBOL, side, OrderType.LIMIT, D(amount), D(price))


# ----- timing --------------------------------------------------------------------------------


async def test_the_first_tick_is_immediate(make_harness: MakeHarness) -> None:
    harness = await make_harness(interval=30.0)
    stop = asyncio.Event()
    started = asyncio.get_running_loop().time()
    task = asyncio.create_task(harness.bot.run(stop))
    try:
        await asyncio.wait_for(harness.bot.stats.healthy.wait(), timeout=5)
        assert harness.tick_times[0] - started < 5  # long before the 30 s interval
        assert harness.bot.stats.ticks == 1
        assert harness.bot.stats.last_market is not None
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_later_ticks_follow_the_interval(make_harness: MakeHarness) -> None:
    harness = await make_harness(interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(harness.bot.run(stop))
    await asyncio.sleep(0.3)  # room for about 7 ticks
    stop.set()
    await asyncio.wait_for(task, timeout=5)

    ticks = harness.bot.stats.ticks
    assert 3 <= ticks <= 12, f"{ticks} ticks in 0.3 s at a 0.05 s interval"
    span = harness.tick_times[-1] - harness.tick_times[0]
    assert span >= (ticks - 1) * 0.05 * 0.5, "ticks ran back to back instead of on the interval"


async def test_bots_tick_at_phases_of_their_own_within_the_interval(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(interval=2.0)
    bot = harness.bot
    phases = {}
    for name in ("ndax", "kraken", "grid-0001", "grid-0002", "dca-0003"):
        bot.name = name
        phases[name] = bot.phase_seconds
        assert phases[name] == bot.phase_seconds  # from the name: the same every time
    assert all(0 <= phase < 2.0 for phase in phases.values())
    assert len(set(phases.values())) == len(phases)  # spread, not all in one burst


async def test_the_loop_ends_promptly_when_stop_is_set(make_harness: MakeHarness) -> None:
    harness = await make_harness(interval=30.0)
    stop = asyncio.Event()
    task = asyncio.create_task(harness.bot.run(stop))
    await asyncio.wait_for(harness.bot.stats.healthy.wait(), timeout=5)

    loop = asyncio.get_running_loop()
    stop_at = loop.time()
    stop.set()
    await asyncio.wait_for(task, timeout=5)

    assert loop.time() - stop_at < 5  # not the 30 s interval
    assert harness.bot.stats.ticks == 1


async def test_a_bot_stopped_before_it_starts_never_ticks(make_harness: MakeHarness) -> None:
    harness = await make_harness()
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(harness.bot.run(stop), timeout=5)
    assert harness.feed.calls == 0
    assert harness.bot.stats.ticks == 0


# ----- failures ----------------------------------------------------------------------------


async def test_a_feed_outage_skips_the_tick_and_is_counted(make_harness: MakeHarness) -> None:
    harness = await make_harness(feed=FlakyFeed(failing=frozenset({2})))
    stats = harness.bot.stats

    await harness.bot.tick()
    await harness.bot.tick()  # the feed times out

    assert (stats.ticks, stats.skipped_ticks) == (1, 1)
    assert stats.last_skip_reason == "market data timed out (call 2)"
    assert len(harness.strategy.contexts) == 1  # the strategy was not asked without data

    await harness.bot.tick()

    assert (stats.ticks, stats.skipped_ticks) == (2, 1)
    assert stats.last_skip_reason is None
    assert len(harness.strategy.contexts) == 2


async def test_the_loop_goes_on_through_a_feed_outage(make_harness: MakeHarness) -> None:
    feed = FlakyFeed(failing=frozenset({1, 2, 3}))
    harness = await make_harness(feed=feed, interval=0.01)

    await harness.run_until(lambda: harness.bot.stats.ticks >= 2)

    stats = harness.bot.stats
    assert stats.skipped_ticks == 3
    assert stats.ticks == 2
    assert stats.healthy.is_set()
    assert feed.calls == 5


async def test_any_other_error_ends_the_run(make_harness: MakeHarness) -> None:
    def broken(tick: int, ctx: TickContext) -> list[Decision]:
        raise RuntimeError("strategy bug")

    harness = await make_harness(ScriptedStrategy(broken), interval=0.01)
    with pytest.raises(RuntimeError, match="strategy bug"):
        await asyncio.wait_for(harness.bot.run(asyncio.Event()), timeout=5)
    assert harness.bot.stats.ticks == 0


# ----- state and decisions -------------------------------------------------------------------


async def test_strategy_state_is_saved_only_when_it_changed(make_harness: MakeHarness) -> None:
    states: list[dict[str, Any]] = [
        {"centre": "100"},
        {"centre": "100"},
        {"centre": "101"},
        {"centre": "101"},
        {"centre": "101"},
        {"centre": "100"},
    ]
    harness = await make_harness(ScriptedStrategy(states=states))

    for _ in states:
        await harness.bot.tick()

    assert harness.saved == [{"centre": "100"}, {"centre": "101"}, {"centre": "100"}]
    row = await harness.journal.load_bot_row(BOT)
    assert row is not None
    assert json.loads(row["strategy_state"]) == {"centre": "100"}


async def test_cancels_are_sent_before_new_orders(make_harness: MakeHarness) -> None:
    def decide(tick: int, ctx: TickContext) -> list[Decision]:
        if tick == 1:
            return [limit(Side.BUY, "0.1", "90.00"), limit(Side.SELL, "0.1", "110.00")]
        if tick == 2:
            # New orders listed first, cancels of both resting orders last (and interleaved).
            first, second = (o.client_order_id for o in ctx.open_orders)
            return [
                limit(Side.BUY, "0.2", "91.00"),
                CancelIntent(first),
                OrderIntent(SYMBOL, Side.BUY, OrderType.MARKET, D("0.01")),
                CancelIntent(second),
            ]
        return []

    harness = await make_harness(ScriptedStrategy(decide))
    await harness.bot.tick()
    first_tick = list(harness.exchange.log)
    resting = [cid for _, cid in first_tick]
    assert [kind for kind, _ in first_tick] == ["create", "create"]

    await harness.bot.tick()

    second_tick = harness.exchange.log[len(first_tick) :]
    assert [kind for kind, _ in second_tick] == ["cancel", "cancel", "create", "create"]
    assert [cid for _, cid in second_tick[:2]] == resting
    assert all(cid > max(resting) for _, cid in second_tick[2:])
    book = harness.bot.gateway.book
    assert set(book.live_orders) == {second_tick[2][1]}  # only the new resting buy is live


async def test_the_strategy_sees_the_book_and_each_fill_once(make_harness: MakeHarness) -> None:
    def decide(tick: int, ctx: TickContext) -> list[Decision]:
        if tick == 1:
            return [OrderIntent(SYMBOL, Side.BUY, OrderType.MARKET, D("0.5"), tag="entry")]
        return []

    harness = await make_harness(ScriptedStrategy(decide))
    for _ in range(3):
        await harness.bot.tick()

    first, second, third = harness.strategy.contexts
    assert (first.position_base, first.balances, first.new_fills) == (D(0), OPENING, [])
    assert second.position_base == D("0.5")
    assert [(f.side, f.amount, f.tag) for f in second.new_fills] == [(Side.BUY, D("0.5"), "entry")]
    assert second.balances["BTC"] == D("1.5")
    assert third.new_fills == []
