"""Circuit breakers: stop sending to an exchange that keeps failing, and probe before trusting it.

A breaker is CLOSED while sends succeed. When `failure_threshold` transient failures (timeouts,
5xx, rate limits) fall within the last `monitoring_window` seconds it OPENS and refuses every
send. `recovery_timeout` seconds later it turns HALF_OPEN and lets up to `half_open_max_calls`
probe sends through: a probe that succeeds closes it, one that fails reopens it. Permanent
failures (the exchange refused this order: funds, size, symbol) say nothing about the exchange's
health and never count. A latched trip stays open until an operator resets it.

Time only moves when the breaker is asked: the open -> half-open step is taken lazily by
`_refresh()`, so no timer task is needed and a fake clock drives the tests.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bots.gateway import Refusal, SendFailure
from coordinator.config.models import CircuitBreakerSettings

log = logging.getLogger(__name__)

GLOBAL = "global"

OnChange = Callable[["CircuitBreaker", str], None]
Clock = Callable[[], datetime]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # sends go through; transient failures are counted
    OPEN = "open"  # every send is refused until the recovery timeout (forever if latched)
    HALF_OPEN = "half_open"  # a few probe sends go through; the first outcome decides


B = BreakerState
BREAKER_TRANSITIONS: Mapping[BreakerState, frozenset[BreakerState]] = {
    B.CLOSED: frozenset({B.OPEN, B.CLOSED}),  # threshold or trip; an idempotent reset
    B.OPEN: frozenset({B.HALF_OPEN, B.CLOSED}),  # recovery timeout; reset
    B.HALF_OPEN: frozenset({B.CLOSED, B.OPEN}),  # probe succeeded or reset; probe failed or trip
}


class InvalidBreakerTransition(Exception):
    def __init__(self, breaker: str, current: BreakerState, target: BreakerState) -> None:
        super().__init__(f"breaker {breaker!r}: cannot go from {current.value} to {target.value}")
        self.breaker = breaker
        self.current = current
        self.target = target


def check_breaker_transition(breaker: str, current: BreakerState, target: BreakerState) -> None:
    if target not in BREAKER_TRANSITIONS[current]:
        raise InvalidBreakerTransition(breaker, current, target)


class UnknownBreaker(LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"no circuit breaker named {name!r}; known: {', '.join(self.known)}")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat(timespec="microseconds")


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        settings: CircuitBreakerSettings,
        clock: Clock,
        on_change: OnChange | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._window = timedelta(seconds=settings.monitoring_window)
        self._recovery = timedelta(seconds=settings.recovery_timeout)
        self._state = B.CLOSED
        self._failures: deque[datetime] = deque()  # transient failures within the window
        self._calls: deque[datetime] = deque()  # every recorded outcome within the window
        self._opened_at: datetime | None = None  # the latest opening: the probe timer runs from it
        self._open_since: datetime | None = None  # the first opening since it was last closed
        self._reason: str | None = None
        self._latched = False
        self._probes = 0
        self._trips = 0

    def apply_settings(self, settings: CircuitBreakerSettings) -> None:
        """New settings from a config reload. The failures already counted stay; the new
        window and threshold judge them from the next outcome on."""
        self.settings = settings
        self._window = timedelta(seconds=settings.monitoring_window)
        self._recovery = timedelta(seconds=settings.recovery_timeout)

    @property
    def state(self) -> BreakerState:
        if self._state is not B.CLOSED:  # only time moves an open breaker to half-open
            self._refresh()
        return self._state

    @property
    def latched(self) -> bool:
        return self._latched

    @property
    def open_since(self) -> datetime | None:
        """When the current outage began: unlike `opened_at`, a failed probe does not move it,
        so "open for N minutes" means N minutes without a healthy send."""
        return self._open_since

    def would_allow(self) -> bool:
        if self._state is B.CLOSED:
            return True  # nothing moves a closed breaker but a send's outcome: no clock needed
        self._refresh()
        return self._allows_now()

    def _allows_now(self) -> bool:
        if self._state is B.HALF_OPEN:
            return self._probes < self.settings.half_open_max_calls
        return self._state is B.CLOSED

    def allow(self) -> bool:
        """May a send go now? In HALF_OPEN a yes takes a probe slot, which the send's outcome
        (or `release_probe()`) gives back."""
        if not self.would_allow():
            return False
        if self._state is B.HALF_OPEN:
            self._probes += 1
        return True

    def record_success(self) -> None:
        now = self._note_call()
        if self._state is B.HALF_OPEN:
            self._move(B.CLOSED, "a probe send succeeded", now)

    def record_transient_failure(self) -> None:
        now = self._note_call()
        self._failures.append(now)
        if self._state is B.HALF_OPEN:
            self._move(B.OPEN, "a probe send failed: the exchange is still failing", now)
        elif self._state is B.CLOSED and len(self._failures) >= self.settings.failure_threshold:
            why = (
                f"{len(self._failures)} transient failures within "
                f"{self.settings.monitoring_window:g}s"
            )
            self._move(B.OPEN, why, now)

    def record_permanent_failure(self) -> None:
        """The exchange answered and refused this order: it is up, so this is a call, not a
        failure, and a probe ending this way decides nothing."""
        self._note_call()
        self.release_probe()

    def release_probe(self) -> None:
        """A probe that ended without a verdict (cancelled, refused on purpose) frees its slot."""
        if self._state is B.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def trip(self, reason: str, latched: bool = False) -> None:
        """Open now. Tripping an open breaker restarts its recovery timer; a latched breaker
        never half-opens and keeps its reason until `reset()`."""
        now = self._clock()
        if self._state is not B.OPEN:
            self._move(B.OPEN, reason, now, latched=latched)
            return
        if self._latched and not latched:
            return
        self._opened_at, self._reason, self._latched = now, reason, latched or self._latched
        self._notify(f"tripped again while open: {reason}")

    def reset(self, by: str, reason: str) -> None:
        self._move(B.CLOSED, f"reset by {by}: {reason}", self._clock())

    def snapshot(self) -> dict[str, Any]:
        self._refresh()
        failures, calls = len(self._failures), len(self._calls)
        next_probe = None
        if self._state is B.OPEN and not self._latched and self._opened_at is not None:
            next_probe = self._opened_at + self._recovery
        return {
            "name": self.name,
            "state": self._state.value,
            "failures_in_window": failures,
            "calls_in_window": calls,
            "failure_rate": round(failures / calls, 4) if calls else 0.0,
            "opened_at": _iso(self._opened_at),
            "open_since": _iso(self._open_since),
            "next_probe_at": _iso(next_probe),
            "reason": self._reason,
            "latched": self._latched,
            "probes_in_flight": self._probes,
            "trips": self._trips,
        }

    @classmethod
    def restore(
        cls,
        name: str,
        settings: CircuitBreakerSettings,
        clock: Clock,
        data: Mapping[str, Any],
        on_change: OnChange | None = None,
    ) -> CircuitBreaker:
        """Rebuild from `snapshot()`. The window starts empty (only counts were kept) and no
        probe is in flight (the process that sent them is gone)."""
        try:
            return cls._restore(cls(name, settings, clock, on_change), data)
        except ValueError as exc:
            raise ValueError(f"breaker {name!r}: {exc}") from None

    @staticmethod
    def _restore(breaker: CircuitBreaker, data: Mapping[str, Any]) -> CircuitBreaker:
        if not isinstance(data, Mapping):
            raise ValueError(f"the snapshot must be a mapping, not {type(data).__name__}")
        if _field(data, "name", str) != breaker.name:
            raise ValueError(f"snapshot field 'name' is {data['name']!r}")
        state_text = _field(data, "state", str)
        if state_text not in set(B):
            raise ValueError(f"snapshot field 'state' is {state_text!r}")
        state = B(state_text)
        opened_at, open_since = _time_field(data, "opened_at"), _time_field(data, "open_since")
        for key, value in (("opened_at", opened_at), ("open_since", open_since)):
            if (value is None) != (state is B.CLOSED):
                raise ValueError(f"snapshot field {key!r} is {data[key]!r} for a {state} breaker")
        latched = _field(data, "latched", bool)
        if latched and state is not B.OPEN:
            raise ValueError(f"snapshot field 'latched' is true for a {state} breaker")
        trips = _field(data, "trips", int)
        if trips < 0:
            raise ValueError(f"snapshot field 'trips' is {trips}")
        breaker._state, breaker._opened_at, breaker._open_since = state, opened_at, open_since
        breaker._reason = _field(data, "reason", str, optional=True)
        breaker._latched, breaker._trips = latched, trips
        return breaker

    def _note_call(self) -> datetime:
        now = self._clock()
        self._calls.append(now)
        self._prune(now)
        return now

    def _prune(self, now: datetime) -> None:
        """Forget what happened `monitoring_window` seconds ago or earlier."""
        cutoff = now - self._window
        for times in (self._failures, self._calls):
            while times and times[0] <= cutoff:
                times.popleft()

    def _refresh(self) -> None:
        now = self._clock()
        self._prune(now)
        if (
            self._state is B.OPEN
            and not self._latched
            and self._opened_at is not None
            and now >= self._opened_at + self._recovery
        ):
            probes = self.settings.half_open_max_calls
            why = f"recovery timeout passed: up to {probes} probe send(s) may go"
            self._move(B.HALF_OPEN, why, now)

    def _move(
        self, target: BreakerState, why: str, now: datetime, *, latched: bool = False
    ) -> None:
        """The only place the state changes: checked against the table, then reported."""
        check_breaker_transition(self.name, self._state, target)
        self._state = target
        self._probes = 0
        if target is B.OPEN:
            self._opened_at, self._reason, self._latched = now, why, latched
            self._open_since = self._open_since or now
            self._trips += 1
        elif target is B.CLOSED:
            self._failures.clear()
            self._calls.clear()
            self._opened_at = self._open_since = self._reason = None
            self._latched = False
        level = logging.ERROR if target is B.OPEN else logging.WARNING
        log.log(level, "circuit breaker %r is now %s: %s", self.name, target.value, why)
        self._notify(why)

    def _notify(self, why: str) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(self, why)
        except Exception:  # a failed save must not stop the breaker from protecting
            log.exception("circuit breaker %r: on_change failed", self.name)


def _field(data: Mapping[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    if key not in data:
        raise ValueError(f"snapshot field {key!r} is missing")
    value = data[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"snapshot field {key!r} must be a {kind.__name__}, not {value!r}")
    return value


def _time_field(data: Mapping[str, Any], key: str) -> datetime | None:
    text = _field(data, key, str, optional=True)
    try:
        at = None if text is None else datetime.fromisoformat(text)
    except ValueError:
        at = None
    if text is not None and (at is None or at.tzinfo is None):
        raise ValueError(f"snapshot field {key!r} must be an ISO time with a zone, not {text!r}")
    return None if at is None else at.astimezone(UTC)


class BreakerBoard:
    """One breaker per exchange, and a `global` one that all their transient failures feed.

    It is the gateway's `SendGuard`: a send must pass the global breaker and its exchange's.
    `global_settings` lets the global breaker have its own threshold; by default it shares the
    exchanges' settings, so a single failing exchange opens it together with its own breaker."""

    def __init__(
        self,
        settings: CircuitBreakerSettings,
        clock: Clock,
        exchanges: Iterable[str],
        on_change: OnChange | None = None,
        *,
        global_settings: CircuitBreakerSettings | None = None,
    ) -> None:
        names = list(dict.fromkeys(exchanges))
        if GLOBAL in names:
            raise ValueError(f"an exchange may not be named {GLOBAL!r}")
        self._settings, self._global_settings = settings, global_settings or settings
        self._clock, self._on_change = clock, on_change
        self._global = CircuitBreaker(GLOBAL, self._global_settings, clock, on_change)
        self._exchanges = {name: CircuitBreaker(name, settings, clock, on_change) for name in names}

    @property
    def names(self) -> tuple[str, ...]:
        return (GLOBAL, *self._exchanges)

    def apply_settings(
        self, settings: CircuitBreakerSettings, global_settings: CircuitBreakerSettings
    ) -> None:
        """A config reload's settings, for every breaker at once."""
        self._settings, self._global_settings = settings, global_settings
        self._global.apply_settings(global_settings)
        for breaker in self._exchanges.values():
            breaker.apply_settings(settings)

    def breaker(self, name: str) -> CircuitBreaker:
        return self._global if name == GLOBAL else self._exchange(name)

    def open_since(self, name: str) -> datetime | None:
        return self.breaker(name).open_since

    def would_refuse(self, exchange: str) -> Refusal | None:
        return self._decide(exchange, take=False)

    def before_send(self, exchange: str) -> Refusal | None:
        return self._decide(exchange, take=True)

    def after_send(self, exchange: str, failure: SendFailure | Literal["cancelled"] | None) -> None:
        """Record how a send went on its exchange's breaker and the global one. "cancelled"
        (the send was abandoned, its outcome unknown) only frees a probe slot."""
        for breaker in (self._exchange(exchange), self._global):
            if failure is None:
                breaker.record_success()
            elif failure == "transient":
                breaker.record_transient_failure()
            elif failure == "permanent":
                breaker.record_permanent_failure()
            else:
                breaker.release_probe()

    def record_transient_failure(self, exchange: str) -> None:
        """A transient failure outside an order (market data, balances) on `exchange`."""
        for breaker in (self._exchange(exchange), self._global):
            breaker.record_transient_failure()

    def status(self) -> dict[str, Any]:
        return {
            GLOBAL: self._global.snapshot(),
            "exchanges": {name: b.snapshot() for name, b in self._exchanges.items()},
        }

    def restore(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Load persisted snapshots; all or nothing (a malformed one raises ValueError and
        changes no breaker). A snapshot of an exchange no longer configured is skipped."""
        rebuilt: dict[str, CircuitBreaker] = {}
        on_change = self._on_change
        for name, data in states.items():
            if name != GLOBAL and name not in self._exchanges:
                log.warning("saved state of unconfigured breaker %r is ignored", name)
                continue
            settings = self._global_settings if name == GLOBAL else self._settings
            rebuilt[name] = CircuitBreaker.restore(name, settings, self._clock, data, on_change)
        self._global = rebuilt.pop(GLOBAL, self._global)
        self._exchanges.update(rebuilt)

    def _exchange(self, name: str) -> CircuitBreaker:
        try:
            return self._exchanges[name]
        except KeyError:
            raise UnknownBreaker(name, self.names) from None

    def _decide(self, exchange: str, *, take: bool) -> Refusal | None:
        own = self._exchanges.get(exchange)
        if own is None:
            return Refusal("no_breaker", f"no circuit breaker watches exchange {exchange!r}")
        probing: list[CircuitBreaker] = []
        for breaker, code in ((self._global, "global_breaker_open"), (own, "breaker_open")):
            if not (breaker.allow() if take else breaker.would_allow()):
                for taken in probing:  # all or nothing: give back a slot taken from the global
                    taken.release_probe()
                return Refusal(code, _explain(breaker))
            if breaker.state is B.HALF_OPEN:
                probing.append(breaker)
        return None


def _explain(breaker: CircuitBreaker) -> str:
    """Why a breaker refuses, for the operator: which one, since when, why, and what next."""
    snap = breaker.snapshot()
    which = "global" if breaker.name == GLOBAL else f"exchange {breaker.name!r}"
    cause = f"the {which} circuit breaker is open since {snap['open_since']}"
    if snap["opened_at"] != snap["open_since"]:
        cause += f", reopened at {snap['opened_at']}"
    cause += f" ({snap['reason']})"
    if snap["state"] == B.HALF_OPEN:
        return f"{cause}; half-open: {snap['probes_in_flight']} probe send(s) already in flight"
    if snap["latched"]:
        return f"{cause}; latched: only an operator reset clears it"
    return f"{cause}; next probe at {snap['next_probe_at']}"
