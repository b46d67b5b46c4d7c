"""Scoped trading controls: a switch per exchange and per bot, and reduce-only anywhere.

The global kill switch (`kill_switch.py`) stays what it was: no scope, everything halted, the
runbook's requests unchanged. Beside it, each scope (`global`, `exchange:<id>`, `bot:<name>`)
can hold its own switch in one of two states:

- `halted`: no order of a bot in the scope leaves the process, and its bots are halted (tick
  cancelled, orders cancelled); they may not start until the scope is lifted.
- `reducing`: only orders that shrink a bot's position pass (a sell up to the position held,
  net of the sells already resting; never a flip), and resting orders that would grow it are
  cancelled. The bots keep running. The `global` scope exists only for reducing: a global halt
  is the kill switch.

A bot's effective state is the most restrictive of the kill switch, the global scope, its
exchange's and its own: the global one wins over every scope. Each scope is its own persisted
switch (`scope:<key>` in `safety_state`, written in the store's safety lane with its audit
entry), with its own cooldown after it was set and its own override; an unreadable stored
scope loads as halted (fail safe).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bots.book import BotBook
from bots.gateway import Refusal
from bots.models import OrderIntent, Side
from coordinator.errors import Conflict, NotFound
from coordinator.safety.risk_limits import fmt
from coordinator.store.journal import SqliteJournal, iso, parse_time
from coordinator.store.sqlite import Write

log = logging.getLogger(__name__)

STATE_PREFIX = "scope:"


class TradingState(enum.StrEnum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


@dataclass(frozen=True, slots=True)
class Scope:
    """What a switch covers: every bot (`global`), one exchange's bots, or one bot."""

    kind: str  # "global" | "exchange" | "bot"
    name: str | None = None

    @property
    def key(self) -> str:
        return self.kind if self.name is None else f"{self.kind}:{self.name}"

    def describe(self) -> str:
        return "every bot" if self.name is None else f"{self.kind} {self.name}"

    def to_json(self) -> dict[str, str]:
        return {} if self.name is None else {self.kind: self.name}

    @classmethod
    def from_key(cls, key: str) -> Scope:
        kind, _, name = key.partition(":")
        if kind == "global" and not name:
            return GLOBAL_SCOPE
        if kind in ("exchange", "bot") and name:
            return cls(kind, name)
        raise ValueError(f"not a scope: {key!r}")


GLOBAL_SCOPE = Scope("global")


@dataclass(frozen=True, slots=True)
class ScopeSwitch:
    """One scope's switch while it is set."""

    scope: Scope
    state: TradingState  # REDUCING or HALTED
    reason: str
    by: str
    at: datetime
    trigger: str
    cooldown_until: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope.to_json(),
            "key": self.scope.key,
            "state": self.state.value,
            "reason": self.reason,
            "by": self.by,
            "at": iso(self.at),
            "trigger": self.trigger,
            "cooldown_until": iso(self.cooldown_until),
        }

    @classmethod
    def from_json(cls, scope: Scope, data: Mapping[str, Any]) -> ScopeSwitch:
        try:
            at = parse_time(data["at"])
            until = parse_time(data["cooldown_until"])
            if at is None or until is None:
                raise ValueError("at and cooldown_until are required")
            return cls(
                scope=scope,
                state=TradingState(data["state"]),
                reason=str(data["reason"]),
                by=str(data["by"]),
                at=at,
                trigger=str(data["trigger"]),
                cooldown_until=until,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the stored switch of {scope.key} is unreadable: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class Effective:
    """A bot's effective trading state and the switch that decides it (None: active)."""

    state: TradingState
    switch: ScopeSwitch | None = None

    def why(self) -> str | None:
        s = self.switch
        if s is None:
            return None
        return f"{s.state.value} by the {s.scope.describe()} switch since {iso(s.at)}: {s.reason}"


ACTIVE = Effective(TradingState.ACTIVE)

# Wired by the coordinator: what a change of a scope does to the bots it covers.
Enforce = Callable[[Scope, TradingState, str], Awaitable[None]]


class ScopedSwitches:
    def __init__(
        self,
        journal: SqliteJournal,
        clock: Callable[[], datetime],
        cooldown: timedelta,
        bots: Mapping[str, str],  # bot name -> its exchange
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.cooldown = cooldown
        self.bots = dict(bots)
        self.exchanges = frozenset(self.bots.values())
        self.switches: dict[str, ScopeSwitch] = {}
        self.last_lifted: dict[str, dict[str, Any]] = {}
        self.enforce: Enforce | None = None
        self._enforcing: set[asyncio.Future[None]] = set()
        # Each bot's effective scoped state, recomputed at every change (there are few): the
        # gate right before a send reads one dict entry.
        self._effective: dict[str, Effective] = {}
        # Moves at every change: part of each bot's cached status document's key.
        self.revision = 0

    # -- reading ---------------------------------------------------------------------------------

    def scope(self, exchange: str | None = None, bot: str | None = None) -> Scope:
        """The scope a request names; NotFound for an exchange or bot no bot trades on."""
        if exchange is not None and bot is not None:
            raise ValueError("a scope names an exchange or a bot, not both")
        if bot is not None:
            if bot not in self.bots:
                raise NotFound(
                    f"scope.bot: no bot named {bot!r}; configured bots: {', '.join(self.bots)}"
                )
            return Scope("bot", bot)
        if exchange is not None:
            if exchange not in self.exchanges:
                raise NotFound(
                    f"scope.exchange: no bot trades on {exchange!r}; exchanges: "
                    f"{', '.join(sorted(self.exchanges))}"
                )
            return Scope("exchange", exchange)
        return GLOBAL_SCOPE

    def effective(self, bot: str) -> Effective:
        return self._effective.get(bot, ACTIVE)

    def covers(self, scope: Scope, bot: str) -> bool:
        if scope.kind == "global":
            return True
        if scope.kind == "exchange":
            return self.bots.get(bot) == scope.name
        return scope.name == bot

    def bots_in(self, scope: Scope) -> list[str]:
        return [bot for bot in self.bots if self.covers(scope, bot)]

    def load(self, stored: Mapping[str, Mapping[str, Any]]) -> None:
        """Read every stored scope back from the safety state (`journal.load_safety_state()`);
        an unreadable one loads as halted."""
        for key, value in stored.items():
            if not key.startswith(STATE_PREFIX):
                continue
            try:
                scope = Scope.from_key(key.removeprefix(STATE_PREFIX))
            except ValueError:
                log.error("ignoring stored scope state %r: not a scope", key)
                continue
            if value.get("last_lifted") is not None:
                self.last_lifted[scope.key] = value["last_lifted"]
            if not value.get("set", True):
                continue
            try:
                switch = ScopeSwitch.from_json(scope, value)
            except ValueError as exc:
                log.critical("%s; treating %s as halted", exc, scope.describe())
                now = self.clock()
                switch = ScopeSwitch(
                    scope, TradingState.HALTED, str(exc), "coordinator", now,
                    "unreadable_state", now,
                )  # fmt: skip
            self.switches[scope.key] = switch
            log.warning(
                "trading switch for %s is %s (since %s, %s): %s",
                scope.describe(),
                switch.state.value,
                iso(switch.at),
                switch.trigger,
                switch.reason,
            )
        self._recompute()

    # -- changing --------------------------------------------------------------------------------

    async def set(
        self,
        scope: Scope,
        state: TradingState,
        reason: str,
        actor: str,
        trigger: str,
        audit: Write | None = None,
    ) -> dict[str, Any]:
        """Set a scope's switch: in memory first (the gate reads it before the next send, with
        no await in between), then durable, then enforced on its bots. Tightening only: a
        halted scope asked to reduce stays halted (lift it first); asked again for the same
        state, nothing is written. The answer's `changed` says whether anything was."""
        if scope.kind == "global" and state is TradingState.HALTED:
            raise ValueError("a global halt is the kill switch, not a scope")
        current = self.switches.get(scope.key)
        if current is not None and _SEVERITY[current.state] >= _SEVERITY[state]:
            log.warning(
                "%s asked for %s on %s, which is %s already (%s)",
                actor, state.value, scope.describe(), current.state.value, current.reason,
            )  # fmt: skip
            return {"changed": False, "switch": current.to_json(), "audited": False}
        now = self.clock()
        switch = ScopeSwitch(scope, state, reason, actor, now, trigger, now + self.cooldown)
        self.switches[scope.key] = switch
        self._recompute()
        log.critical(
            "TRADING %s for %s by %s (%s): %s",
            state.value.upper(), scope.describe(), actor, trigger, reason,
        )  # fmt: skip
        try:
            await self.journal.save_safety_state(
                STATE_PREFIX + scope.key, switch.to_json(), now, also=[audit] if audit else ()
            )
        finally:
            # The bots are stopped (or reduced) even when the write failed: the switch wins.
            # In the background, as the kill switch's halt: the answer says the gate is closed
            # and durable, and the bots' `state` shows the halt's progress.
            if self.enforce is not None:
                enforcing = asyncio.ensure_future(self.enforce(scope, state, reason))
                self._enforcing.add(enforcing)
                enforcing.add_done_callback(self._enforced)
        return {"changed": True, "switch": switch.to_json(), "audited": audit is not None}

    def _enforced(self, task: asyncio.Future[None]) -> None:
        self._enforcing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("enforcing a trading switch failed: %r", task.exception())

    async def settled(self) -> None:
        """Wait for the halts and cancels the latest changes started (tests, shutdown)."""
        if self._enforcing:
            await asyncio.wait(set(self._enforcing), timeout=5.0)

    async def lift(
        self, scope: Scope, actor: str, reason: str, approved_by: str | None = None
    ) -> dict[str, Any]:
        """Lift a scope's switch; refused in its cooldown unless forced (`approved_by`)."""
        current = self.switches.get(scope.key)
        if current is None:
            raise Conflict(f"{scope.describe()} has no switch set (it trades as usual)")
        now = self.clock()
        if approved_by is None and now < current.cooldown_until:
            left = current.cooldown_until - now
            raise Conflict(
                f"the {scope.describe()} switch is in its cooldown for "
                f"{int(left.total_seconds() + 0.999)}s more (until {iso(current.cooldown_until)});"
                " wait, or use force_override with the admin token"
            )
        lifted = {
            "kind": "force_override" if approved_by else "override",
            "by": actor,
            "approved_by": approved_by,
            "reason": reason,
            "at": iso(now),
            "was": current.state.value,
        }
        await self.journal.save_safety_state(
            STATE_PREFIX + scope.key, {"set": False, "last_lifted": lifted}, now
        )
        if self.switches.get(scope.key) is not current:
            # Set again while the lift was being written: the new switch wins (its write was
            # queued after this one in the safety lane, so the disk ends with it too).
            raise Conflict(f"the {scope.describe()} switch was set again while it was being "
                           "lifted; it stays set")
        del self.switches[scope.key]
        self.last_lifted[scope.key] = lifted
        self._recompute()
        log.warning("trading switch for %s lifted by %s: %s", scope.describe(), actor, reason)
        return {"lifted": scope.to_json(), "was": current.state.value}

    def _recompute(self) -> None:
        effective: dict[str, Effective] = {}
        for bot, exchange in self.bots.items():
            best = ACTIVE
            for key in ("global", f"exchange:{exchange}", f"bot:{bot}"):
                switch = self.switches.get(key)
                if switch is not None and _SEVERITY[switch.state] > _SEVERITY[best.state]:
                    best = Effective(switch.state, switch)
            if best.switch is not None:
                effective[bot] = best
        self._effective = effective
        self.revision += 1

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "scopes": [
                {
                    **switch.to_json(),
                    "cooldown_seconds_left": round(
                        max(0.0, (switch.cooldown_until - now).total_seconds()), 1
                    ),
                    "bots": self.bots_in(switch.scope),
                }
                for switch in sorted(self.switches.values(), key=lambda s: s.scope.key)
            ],
            "last_lifted": dict(self.last_lifted),
        }

    def active_switches(self) -> Iterable[ScopeSwitch]:
        return self.switches.values()


class ScopeGate:
    """One bot's gate for the scoped switches: halted refuses everything; reducing lets through
    only an order that shrinks the position, counting what already rests on that side."""

    def __init__(self, switches: ScopedSwitches, bot: str) -> None:
        self.switches = switches
        self.bot = bot

    def check(self, intent: OrderIntent, book: BotBook) -> Refusal | None:
        effective = self.switches.effective(self.bot)
        if effective.switch is None:
            return None
        if effective.state is TradingState.HALTED:
            return Refusal("kill_switch", f"trading is {effective.why()}")
        return reducing_refusal(intent, book, effective)


def reducing_refusal(intent: OrderIntent, book: BotBook, effective: Effective) -> Refusal | None:
    """None when the order shrinks the position without flipping it, counting the orders
    already resting on its side; else why not."""
    base = book.position.base
    reduces = Side.SELL if base > 0 else Side.BUY if base < 0 else None
    held = abs(base)
    if intent.side is not reduces:
        what = "the bot is flat" if not base else f"the position is {fmt(base)}"
        return Refusal(
            "reduce_only",
            f"a {intent.side.value} would grow the position ({what}) and trading is "
            f"{effective.why()}",
        )
    resting = sum(
        (o.amount - o.filled for o in book.live_orders.values() if o.side is intent.side),
        start=held * 0,
    )
    if resting + intent.amount > held:
        return Refusal(
            "reduce_only",
            f"a {intent.side.value} of {fmt(intent.amount)} with {fmt(resting)} already resting "
            f"would flip the position of {fmt(base)}; trading is {effective.why()}",
        )
    return None


def orders_that_grow(book: BotBook) -> list[int]:
    """The resting orders a reducing bot cancels: every order on the side that grows the
    position, and on the other side whatever rests beyond the position held (oldest kept)."""
    base = book.position.base
    reduces = Side.SELL if base > 0 else Side.BUY if base < 0 else None
    room = abs(base)
    cancel: list[int] = []
    for order in sorted(book.live_orders.values(), key=lambda o: o.created_at):
        left = order.amount - order.filled
        if order.side is reduces and left <= room:
            room -= left
            continue
        cancel.append(order.client_order_id)
    return cancel
