"""The kill switch: once activated, no order leaves the process, and that survives restarts.

Activation closes the gate first, synchronously (every gateway re-checks it with no await before
each send, so nothing is sent after `activate` has begun), then makes the state durable in the
store's safety lane, then halts every bot. It stays active across restarts until an operator lifts
it: `override` (operator token; refused during the cooldown after the last activation and while
the global breaker is open) or `force_override` (admin token and a named approver; bypasses both
and clears the activation-count trip). Activations are counted: more than
`activation_limit.max_activations` within `window_minutes` trips the global breaker, latched.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from bots.book import BotBook
from bots.gateway import Refusal
from bots.models import OrderIntent
from coordinator.config.models import KillSwitchConfig, RecoverySettings
from coordinator.errors import Conflict
from coordinator.store.journal import SqliteJournal, iso, parse_time
from coordinator.store.sqlite import Write

log = logging.getLogger(__name__)

STATE_KEY = "kill_switch"


class Trigger(enum.StrEnum):
    MANUAL = "manual"
    DAILY_LOSS = "daily_loss"
    DRAWDOWN = "drawdown"
    ORDER_FAILURES = "consecutive_order_failures"
    BREAKER_OPEN = "exchange_breaker_open"
    CRASH_LOOP = "bot_crash_loop"


# The reason of an activation that gave none (an operator in a hurry): such an activation does
# not open an incident record by itself; one with a reason does.
NO_REASON = "(no reason given)"


@dataclass(frozen=True, slots=True)
class KillSwitchState:
    active: bool = False
    reason: str | None = None
    by: str | None = None
    at: datetime | None = None
    trigger: str | None = None
    cooldown_until: datetime | None = None
    last_lifted: dict[str, Any] | None = None  # {kind, by, approved_by, reason, at}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = iso(self.at) if self.at else None
        data["cooldown_until"] = iso(self.cooldown_until) if self.cooldown_until else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KillSwitchState:
        try:
            return cls(
                active=bool(data["active"]),
                reason=data.get("reason"),
                by=data.get("by"),
                at=parse_time(data.get("at")),
                trigger=data.get("trigger"),
                cooldown_until=parse_time(data.get("cooldown_until")),
                last_lifted=data.get("last_lifted"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the stored kill switch state is unreadable: {exc!r}") from exc


class KillSwitchGate:
    """The order gate: refuses every order while the switch is active."""

    def __init__(self, switch: KillSwitch) -> None:
        self.switch = switch

    def check(self, intent: OrderIntent, book: BotBook) -> Refusal | None:
        state = self.switch.state
        if not state.active:
            return None
        since = iso(state.at) if state.at else "an unknown time"
        return Refusal("kill_switch", f"the kill switch is active since {since}: {state.reason}")


Halt = Callable[[str], Awaitable[None]]
TripGlobalBreaker = Callable[[str], None]
GlobalBreakerOpen = Callable[[], str | None]  # why it is open, or None


class KillSwitch:
    def __init__(
        self,
        config: KillSwitchConfig,
        recovery: RecoverySettings,
        journal: SqliteJournal,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.cooldown = timedelta(minutes=recovery.recovery.cooldown_period_minutes)
        self.journal = journal
        self.clock = clock
        self.state = KillSwitchState()
        self.gate = KillSwitchGate(self)
        # Wired by the coordinator: how to halt every bot and how to reach the global breaker.
        self.halt: Halt | None = None
        self.trip_global_breaker: TripGlobalBreaker | None = None
        self.global_breaker_open: GlobalBreakerOpen | None = None
        self.clear_global_breaker: Callable[[str, str], None] | None = None  # (by, reason)
        # Wired by the coordinator: how far the halt has got (bots not stopped, orders open).
        self.halt_progress: Callable[[], dict[str, int]] | None = None
        self.halt_started_at: datetime | None = None
        self.halt_completed_at: datetime | None = None
        self._halting: asyncio.Future[Any] | None = None
        # Activations in the limit's window, oldest first: loaded at start, then kept here so
        # an activation does not wait for a read of the store before it answers.
        self._activation_times: deque[datetime] = deque()
        self._epoch = 0  # moves at every activation, so a lift in flight can tell
        self._lifting = False  # a lift's write is under way
        self._window = timedelta(minutes=config.activation_limit.window_minutes)
        # Where the latest activation's time went (time.monotonic(), comparable across
        # processes on one machine): call, gate closed, state durable, halt completed.
        self._timing: dict[str, float | None] = {}

    @property
    def active(self) -> bool:
        return self.state.active

    async def load(self, safety_state: Mapping[str, dict[str, Any]] | None = None) -> None:
        """Read the persisted state back (from `safety_state` when the caller has read it);
        an unreadable one is treated as ACTIVE (fail safe)."""
        if safety_state is None:
            safety_state = await self.journal.load_safety_state()
        stored = safety_state.get(STATE_KEY)
        if stored is not None:
            try:
                self.state = KillSwitchState.from_json(stored)
            except ValueError as exc:
                log.critical("%s; treating the kill switch as active", exc)
                self.state = KillSwitchState(
                    active=True,
                    reason=str(exc),
                    by="coordinator",
                    at=self.clock(),
                    trigger="unreadable_state",
                )
        self._activation_times = deque(
            await self.journal.kill_switch_activation_times_since(self.clock() - self._window)
        )
        if self.state.active:
            log.warning(
                "kill switch is ACTIVE (since %s, %s: %s): no bot may start until it is overridden",
                self.state.at,
                self.state.trigger,
                self.state.reason,
            )

    # -- activate ------------------------------------------------------------------------------

    async def activate(
        self,
        reason: str,
        actor: str,
        trigger: Trigger,
        wait_for_halt: bool = True,
        audit: Write | None = None,
    ) -> dict[str, Any]:
        """Close the gate, make it durable, halt every bot. With `wait_for_halt` False the
        answer comes once the gate is closed and durable, with the halt under way (`status()`'s
        `halt` says when it completed). `audit` (the activation's audit entry) commits in the
        same transaction as the state, one fsync for both; the answer's `audited` says whether
        it was written (not when the switch was active already: nothing was written)."""
        called = time.monotonic()
        now = self.clock()
        self._epoch += 1  # a lift whose write is under way sees it and does not lift
        # Active, unless a lift is being written: then this activation is a new one, written
        # after the lift's write (one writer thread, in order), so the disk ends active too.
        already = self.state.active and not self._lifting
        try:
            if not already:
                self._timing = {"called": called, "gate_closed": None, "durable": None}
                # The gate closes here, before the first await: from now on nothing is sent.
                self.state = KillSwitchState(
                    active=True,
                    reason=reason,
                    by=actor,
                    at=now,
                    trigger=trigger.value,
                    cooldown_until=now + self.cooldown,
                    last_lifted=self.state.last_lifted,
                )
                self._timing["gate_closed"] = time.monotonic()
                log.critical("KILL SWITCH ACTIVATED by %s (%s): %s", actor, trigger.value, reason)
                await self._record_activation(reason, actor, trigger, now, audit)
                self._timing["durable"] = time.monotonic()
            else:
                log.warning(
                    "kill switch activation by %s while already active (%s): %s",
                    actor,
                    self.state.reason,
                    reason,
                )
        finally:
            # Whatever the store did, the bots are halted: the switch wins even a failed write
            # (which then propagates, so the caller hears that the state may not survive).
            if self.halt is not None:
                self.halt_started_at, self.halt_completed_at = self.clock(), None
                self._timing["halt_completed"] = None
                halting = asyncio.ensure_future(self.halt(f"kill switch: {reason}"))
                halting.add_done_callback(_log_halt_failure)
                self._halting = halting
                if wait_for_halt:
                    await asyncio.shield(halting)
        return {"already_active": already, "audited": not already and audit is not None,
                **self.status()}

    def note_halt_completed(self) -> None:
        """Every bot's halt has ended (its tick stopped, its orders cancelled or failed)."""
        self.halt_completed_at = self.clock()
        self._timing["halt_completed"] = time.monotonic()

    async def _record_activation(
        self, reason: str, actor: str, trigger: Trigger, now: datetime, audit: Write | None
    ) -> None:
        also: list[Write] = [
            (
                "INSERT INTO kill_switch_activations (at, trigger, reason, actor)"
                " VALUES (?, ?, ?, ?)",
                (iso(now), trigger.value, reason, actor),
            )
        ]
        if audit is not None:
            also.append(audit)
        await self.journal.save_safety_state(STATE_KEY, self.state.to_json(), now, also=also)
        self._activation_times.append(now)
        self._check_activation_limit()

    @property
    def _activations_in_window(self) -> int:
        since = self.clock() - self._window
        times = self._activation_times
        while times and times[0] < since:
            times.popleft()
        return len(times)

    def _check_activation_limit(self) -> None:
        limit = self.config.activation_limit
        count = self._activations_in_window
        if count > limit.max_activations and self.trip_global_breaker:
            self.trip_global_breaker(
                f"kill switch activated {count} times in "
                f"{limit.window_minutes} minutes (limit {limit.max_activations})"
            )

    # -- lift ------------------------------------------------------------------------------------

    async def override(self, reason: str, actor: str) -> dict[str, Any]:
        """Lift the switch, unless it is cooling down or the global breaker is open."""
        self._require_active()
        now = self.clock()
        until = self.state.cooldown_until
        if until is not None and now < until:
            left = until - now
            raise Conflict(
                f"the kill switch is in its cooldown for {_duration(left)} more (until "
                f"{iso(until)}); wait, or use force_override with the admin token"
            )
        why_open = self.global_breaker_open() if self.global_breaker_open else None
        if why_open:
            raise Conflict(
                f"the global breaker is open ({why_open}); override is refused until it closes, "
                f"or use force_override with the admin token"
            )
        return await self._lift("override", reason, actor, None)

    async def force_override(self, reason: str, actor: str, approved_by: str) -> dict[str, Any]:
        """Lift the switch whatever the cooldown and the activation-count breaker say."""
        self._require_active()
        result = await self._lift("force_override", reason, actor, approved_by)
        if self.clear_global_breaker is not None:
            self.clear_global_breaker(f"{actor} (approved by {approved_by})", reason)
        return result

    async def _lift(
        self, kind: str, reason: str, actor: str, approved_by: str | None
    ) -> dict[str, Any]:
        now = self.clock()
        lifted = {
            "kind": kind,
            "by": actor,
            "approved_by": approved_by,
            "reason": reason,
            "at": iso(now),
        }
        new_state = replace(KillSwitchState(), last_lifted=lifted)
        epoch = self._epoch
        self._lifting = True
        try:
            await self.journal.save_safety_state(STATE_KEY, new_state.to_json(), now)
        finally:
            self._lifting = False
        if self._epoch != epoch:
            # The switch was activated while the lift was being written: the activation wins.
            # Its own write most likely went after this one; whichever order they committed
            # in, the active state is written once more, last.
            log.warning("kill switch lift (%s) by %s abandoned: activated meanwhile", kind, actor)
            await self.journal.save_safety_state(STATE_KEY, self.state.to_json(), self.clock())
            raise Conflict("the kill switch was activated while it was being lifted; it stays "
                           "active")
        self.state = new_state  # only once it is durable: a failed write leaves it active
        log.warning(
            "kill switch lifted (%s) by %s%s: %s",
            kind,
            actor,
            f", approved by {approved_by}" if approved_by else "",
            reason,
        )
        return self.status()

    def _require_active(self) -> None:
        if not self.state.active:
            raise Conflict("the kill switch is not active")

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.clock()
        until = self.state.cooldown_until
        left = max(0.0, (until - now).total_seconds()) if until and self.state.active else 0.0
        limit = self.config.activation_limit
        halt: dict[str, Any] = {
            "started_at": iso(self.halt_started_at) if self.halt_started_at else None,
            "completed_at": iso(self.halt_completed_at) if self.halt_completed_at else None,
            "in_progress": self.halt_started_at is not None and self.halt_completed_at is None,
        }
        if self.halt_progress is not None:
            halt.update(self.halt_progress())
        return {
            **self.state.to_json(),
            "halt": halt,
            "halt_completed_at": halt["completed_at"],
            "last_activation_timing": self._timing_status(),
            "cooldown_seconds_left": round(left, 1),
            "activations_in_window": self._activations_in_window,
            "activation_limit": {
                "max_activations": limit.max_activations,
                "window_minutes": limit.window_minutes,
            },
        }


    def _timing_status(self) -> dict[str, Any] | None:
        """Milliseconds from the call of `activate` to each step of the latest activation
        (None: not reached yet), and the call's time.monotonic() for a benchmark on the same
        machine to line its own clock up with."""
        called = self._timing.get("called")
        if called is None:
            return None

        def after(step: str) -> float | None:
            at = self._timing.get(step)
            return round((at - called) * 1000, 3) if at is not None else None

        return {
            "called_monotonic": called,
            "gate_closed_ms": after("gate_closed"),
            "durable_ms": after("durable"),
            "halt_completed_ms": after("halt_completed"),
        }


def _log_halt_failure(halting: asyncio.Future[Any]) -> None:
    if not halting.cancelled() and halting.exception() is not None:
        log.error("the kill switch's halt failed: %r", halting.exception())


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds() + 0.999)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
