"""A bot: a strategy on a tick loop, trading through its order gateway.

Each tick reads the market, brings the bot's live orders up to date, asks the strategy what to do
and passes every decision through the gateway. Ticks are scheduled on a fixed grid from the start,
so a slow tick does not push every later one back. A tick that cannot get market data is skipped
and counted (the exchange may be down: that is not the bot's bug); any other exception ends
`run()` and the supervisor decides about a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bots.errors import TransientExchangeError
from bots.feeds.base import MarketFeed
from bots.gateway import OrderGateway
from bots.models import CancelIntent, MarketSnapshot
from bots.strategies.base import OpenOrderView, Strategy, TickContext

log = logging.getLogger(__name__)

SaveState = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class TickStats:
    ticks: int = 0  # ticks that completed with market data
    skipped_ticks: int = 0  # ticks skipped for a transient market data failure
    last_tick_at: datetime | None = None
    last_market: MarketSnapshot | None = None
    last_skip_reason: str | None = None
    lag_seconds: float = 0.0  # how late the latest tick started against its schedule
    healthy: asyncio.Event = field(default_factory=asyncio.Event)  # set after the first good tick


class Bot:
    def __init__(
        self,
        name: str,
        strategy: Strategy,
        feed: MarketFeed,
        gateway: OrderGateway,
        tick_interval: float,
        save_state: SaveState,
        stats: TickStats | None = None,
        clock: Callable[[], datetime] | None = None,
        on_tick: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.feed = feed
        self.gateway = gateway
        self.tick_interval = tick_interval
        self.stats = stats or TickStats()
        self._save_state = save_state
        self._clock = clock or (lambda: datetime.now(UTC))
        self._saved_state: dict[str, Any] | None = None
        self._on_tick = on_tick

    @property
    def phase_seconds(self) -> float:
        """Where in its interval this bot ticks, from its name: bots started together (a
        thousand in a third of a second) would otherwise all tick in the same burst every
        interval, and the loop would be saturated for that burst and idle for the rest."""
        return (zlib.crc32(self.name.encode()) % 1000) / 1000 * self.tick_interval

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set. The first tick is immediate; the second comes one interval
        plus the bot's phase later, and the rest one interval apart."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        phase = self.phase_seconds
        while not stop.is_set():
            self.stats.lag_seconds = max(0.0, loop.time() - next_at)
            await self.tick()
            next_at += self.tick_interval + phase
            phase = 0.0
            now = loop.time()
            if next_at < now:  # we fell behind: skip the missed slots rather than burst
                next_at = now
            # asyncio.timeout, not wait_for: wait_for wraps stop.wait() in a task of its own,
            # a task per bot per tick (docs/benchmarks.md).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_at - now)):
                    await stop.wait()

    async def tick(self) -> None:
        try:
            market = await self.feed.snapshot()
            await self.gateway.sync(market)
        except TransientExchangeError as exc:
            self.stats.skipped_ticks += 1
            self.stats.last_skip_reason = str(exc)
            log.warning("%s: tick skipped, market data unavailable: %s", self.name, exc)
            return
        book = self.gateway.book
        context = TickContext(
            market=market,
            now=self._clock(),
            position_base=book.position.base,
            balances=dict(book.balances),
            open_orders=[
                OpenOrderView(o.client_order_id, o.side, o.type, o.amount, o.price, o.filled, o.tag)
                for o in book.live_orders.values()
            ],
            new_fills=book.take_unseen_fills(),
        )
        decisions = self.strategy.on_tick(context)
        # Cancels first, so funds they free are there for the orders that follow.
        for decision in sorted(decisions, key=lambda d: not isinstance(d, CancelIntent)):
            if isinstance(decision, CancelIntent):
                await self.gateway.cancel(decision.client_order_id)
            else:
                await self.gateway.submit(decision)
        await self._persist_strategy_state()
        self.stats.ticks += 1
        self.stats.last_tick_at = context.now
        self.stats.last_market = market
        self.stats.last_skip_reason = None
        self.stats.healthy.set()
        if self._on_tick is not None:
            await self._on_tick()

    async def _persist_strategy_state(self) -> None:
        state = self.strategy.state()
        if state != self._saved_state:
            await self._save_state(state)
            # A copy: a strategy that hands out its own dict and mutates it later must still
            # be seen to have changed.
            self._saved_state = copy.deepcopy(state)
