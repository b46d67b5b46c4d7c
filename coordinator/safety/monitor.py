"""Automatic kill-switch triggers (kill-switch.json `triggers`), watched once a second.

Each trigger is a condition over the bots, the books and the breakers: a day's loss past the
limit (summed per quote currency: CAD and AUD are never added together), a bot's drawdown from
its equity peak, N orders in a row that failed, an exchange breaker open longer than the limit,
a bot in a crash loop. A trigger fires when its condition becomes true (edge, not level): after
an operator lifts the switch, a condition that still holds does not fire again until it has
cleared and come back. The risk gates keep refusing orders past the per-bot limits meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from coordinator.config.models import KillSwitchTriggers, RestartPolicy
from coordinator.lifecycle import BotState
from coordinator.safety.breaker import BreakerBoard
from coordinator.safety.kill_switch import Trigger
from coordinator.safety.risk import RiskContext
from coordinator.supervisor import BotRunner

CHUNK = 100  # bots looked at between two turns of the event loop

log = logging.getLogger(__name__)

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Breach:
    trigger: Trigger
    key: str  # identifies the condition, for edge detection
    reason: str


class TriggerWatch:
    def __init__(
        self,
        triggers: KillSwitchTriggers,
        restart: RestartPolicy,
        risk: RiskContext,
        board: BreakerBoard,
        clock: Callable[[], datetime],
    ) -> None:
        self.triggers = triggers
        self.restart = restart
        self.risk = risk
        self.board = board
        self.clock = clock
        self._peaks: dict[str, Decimal] = {}
        self._holding: set[str] = set()

    def new_breaches(self, runners: Iterable[BotRunner]) -> list[Breach]:
        """The breaches that became true since the last call."""
        return self._fresh(self.breaches(list(runners)))

    async def new_breaches_cooperatively(self, runners: list[BotRunner]) -> list[Breach]:
        """`new_breaches`, letting the event loop run every CHUNK bots: the watch runs every
        second, and at 1,000 bots one pass held in one piece was a 20-30 ms stall."""
        found: list[Breach] = []
        for n, runner in enumerate(runners, 1):
            found.extend(self._bot_breaches(runner))
            if n % CHUNK == 0:
                await asyncio.sleep(0)
        found.extend(self._daily_loss(runners))
        found.extend(self._breakers_open_too_long())
        return self._fresh(found)

    def _fresh(self, now: list[Breach]) -> list[Breach]:
        fresh = [b for b in now if b.key not in self._holding]
        self._holding = {b.key for b in now}
        return fresh

    def breaches(self, runners: list[BotRunner]) -> list[Breach]:
        found: list[Breach] = []
        for runner in runners:
            found.extend(self._bot_breaches(runner))
        found.extend(self._daily_loss(runners))
        found.extend(self._breakers_open_too_long())
        return found

    def _bot_breaches(self, runner: BotRunner) -> Iterable[Breach]:
        book = runner.parts.book
        limit = self.triggers.max_consecutive_order_failures
        if book.consecutive_failures >= limit:
            yield Breach(
                Trigger.ORDER_FAILURES,
                f"failures:{runner.name}",
                f"{runner.name}: {book.consecutive_failures} orders in a row failed "
                f"(limit {limit})",
            )
        if (
            self.triggers.bot_crash_loop
            and runner.state is BotState.CRASHED
            and runner.consecutive_crashes >= self.restart.max_consecutive_crashes
        ):
            yield Breach(
                Trigger.CRASH_LOOP,
                f"crash_loop:{runner.name}",
                f"{runner.name} is in a crash loop ({runner.consecutive_crashes} crashes in a "
                f"row, limit {self.restart.max_consecutive_crashes}: {runner.last_error})",
            )
        drawdown = self._drawdown_pct(runner)
        if drawdown is not None and drawdown > self.triggers.max_drawdown_pct:
            yield Breach(
                Trigger.DRAWDOWN,
                f"drawdown:{runner.name}",
                f"{runner.name}: equity is {drawdown:.2f} % below its peak "
                f"(limit {self.triggers.max_drawdown_pct} %)",
            )

    def _drawdown_pct(self, runner: BotRunner) -> Decimal | None:
        """Equity (quote + base at the last price) below its peak since this process started."""
        book = runner.parts.book
        if book.last_price is None:
            return None
        config = runner.parts.config
        equity = book.balances.get(config.quote_asset, Decimal(0)) + (
            book.balances.get(config.base_asset, Decimal(0)) * book.last_price
        )
        peak = max(self._peaks.get(runner.name, equity), equity)
        self._peaks[runner.name] = peak
        if peak <= 0:
            return None
        return (peak - equity) / peak * HUNDRED

    def _daily_loss(self, runners: list[BotRunner]) -> Iterable[Breach]:
        by_currency: dict[str, Decimal] = {}
        for runner in runners:
            pnl = self.risk.daily_pnl(runner.name)
            if pnl is not None:
                quote = runner.parts.config.quote_asset
                by_currency[quote] = by_currency.get(quote, Decimal(0)) + pnl
        limit = self.triggers.max_daily_loss
        for currency, pnl in sorted(by_currency.items()):
            if pnl <= -limit:
                yield Breach(
                    Trigger.DAILY_LOSS,
                    f"daily_loss:{currency}",
                    f"today's loss across {currency} bots is {-pnl:.2f} {currency} "
                    f"(limit {limit} {currency})",
                )

    def _breakers_open_too_long(self) -> Iterable[Breach]:
        limit = timedelta(minutes=self.triggers.exchange_breaker_open_minutes)
        now = self.clock()
        for name in self.board.names:
            since = self.board.open_since(name)
            if since is not None and now - since >= limit:
                minutes = int((now - since).total_seconds() // 60)
                yield Breach(
                    Trigger.BREAKER_OPEN,
                    f"breaker:{name}",
                    f"the {name} circuit breaker has been open for {minutes} minutes "
                    f"(limit {self.triggers.exchange_breaker_open_minutes})",
                )
