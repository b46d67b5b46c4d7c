"""The venue's own dead man's switch: a heartbeat per live account, so that a coordinator that
dies, hangs or loses its network leaves no order resting on the venue for long.

Kraken's CancelAllOrdersAfter (ccxt's `cancel_all_orders_after`, reached through
`CcxtExchange.cancel_all_orders_after`) sets a timer on the venue: unless it is pushed back
within `timeout_seconds`, kraken cancels EVERY order of the account, on every market and whoever
placed it, and the timer stays off until it is armed again. Each heartbeat pushes it back every
`interval_seconds` (api-endpoints.json `exchanges.<id>.dead_mans_switch`).

What is armed, and when:

- Live accounts only: one heartbeat per ccxt client (one per API key), however many bots share
  it, for every account with a bot in live or safe mode. Paper bots have nothing on a venue;
  read-only bots place nothing, and arming the timer would be a write.
- From `start()` (in `Coordinator.open`, once the accounts exist) to `close()`, whatever the
  bots' states: a stopped bot may still hold orders on the venue (a cancel that failed, orders
  a previous process left), and those are exactly what the timer is for.
- The kill switch leaves the heartbeat alone: its halt cancels the orders itself, first, and the
  timer keeps running meanwhile.
- `close()`, after every bot is stopped, disarms (timeout 0) each account whose bots hold no
  live order any more, best effort, so the timer does not cancel hand-placed orders later for
  no reason. An account whose orders could not all be cancelled is left armed: the venue then
  cancels them when the timer runs out.

A beat that fails (no answer in time, a 5xx, a body that is not JSON, an auth error) is counted,
logged and, when transient, fed to the exchange's circuit breaker (`on_failure`). The state says
how bad it is: `failing` while the venue's timer still runs (the last acknowledged beat plus the
timeout, on our clock: a lower bound of the venue's), `expired` once it may have run out; the
venue may then have cancelled every order of the account (each bot's next sync finds out) and
the next successful beat arms the timer again. A heartbeat that stops beating (its task ended,
the event loop stalls) is `failing` once a beat is overdue, and `expired` the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bots.errors import ExchangeError, TransientExchangeError
from bots.exchanges.ccxt_adapter import CcxtExchange
from coordinator.config.models import ApiEndpointsConfig, BotMode, DeadMansSwitchConfig
from coordinator.store.journal import iso

if TYPE_CHECKING:
    from coordinator.supervisor import BotRunner

log = logging.getLogger(__name__)

# One disarm at shutdown waits at most this long: the whole shutdown has a 5 s deadline.
DISARM_WAIT_SECONDS = 1.0


class SwitchState(enum.StrEnum):
    ARMING = "arming"  # started; the first beat has not been answered yet
    ARMED = "armed"  # the last beat was acknowledged: the venue's timer runs
    FAILING = "failing"  # beats fail or are overdue; the venue's timer has not run out yet
    EXPIRED = "expired"  # no beat acknowledged within the timeout: the venue may have acted
    OFF = "off"  # not enabled, read-only bots only, or disarmed at shutdown
    UNPROTECTED = "unprotected"  # live bots on a venue without a dead man's switch
    PAPER = "paper"  # paper bots only: nothing of theirs rests on a venue


#: A running heartbeat's states, best first: an exchange with several accounts shows its worst.
HEARTBEAT_STATES = (SwitchState.ARMED, SwitchState.ARMING, SwitchState.FAILING, SwitchState.EXPIRED)

FailureSink = Callable[[str], None]  # told the exchange id of each transient failure


@dataclass(frozen=True, slots=True)
class SwitchReading:
    """One exchange's dead man's switch as it stands (every live account on it together)."""

    exchange: str
    state: SwitchState
    reason: str
    settings: DeadMansSwitchConfig | None
    bots: tuple[str, ...]
    protected: bool = False  # the venue's timer runs on every account (see `Heartbeat.protected`)
    beats: int = 0  # beats sent
    failures: int = 0  # of those, the ones that failed
    consecutive_failures: int = 0
    last_beat_at: datetime | None = None
    last_success_at: datetime | None = None  # when the newest acknowledged beat was sent
    expires_at: datetime | None = None  # the venue's timer runs out (by our clock)
    last_error: str | None = None  # the newest failure's, kept after a success
    accounts: tuple[dict[str, Any], ...] = ()

    @property
    def heartbeat(self) -> bool:
        """Whether a heartbeat runs for this exchange (the states an alert judges)."""
        return self.state in HEARTBEAT_STATES

    def as_dict(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "protected": self.protected,
            "state": self.state.value,
            "reason": self.reason,
            "interval_seconds": settings.interval_seconds if settings else None,
            "timeout_seconds": settings.timeout_seconds if settings else None,
            "last_beat_at": _iso(self.last_beat_at),
            "last_success_at": _iso(self.last_success_at),
            "expires_at": _iso(self.expires_at),
            "beats": self.beats,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "bots": list(self.bots),
            "accounts": list(self.accounts),
        }


class Heartbeat:
    """One live account's heartbeat: what it sent and what the venue answered."""

    def __init__(
        self,
        exchange: str,
        account: str,
        runners: list[BotRunner],
        settings: DeadMansSwitchConfig,
        clock: Callable[[], datetime],
        on_failure: FailureSink | None = None,
    ) -> None:
        adapter = runners[0].parts.adapter
        assert isinstance(adapter, CcxtExchange)
        self.exchange = exchange
        self.account = account  # the API key's variable name, never its value
        self.runners = runners
        self.adapter = adapter  # any bot's adapter: they share the account's client
        self.settings = settings
        self.clock = clock
        self.on_failure = on_failure
        self.beats = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.started_at: datetime | None = None
        self.last_beat_at: datetime | None = None
        self.last_success_at: datetime | None = None
        self.venue_trigger_at: datetime | None = None  # the venue's own word, when it gives one
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.disarmed_at: datetime | None = None
        self.in_flight = False  # a beat is waiting for the venue's answer
        self.last_answer_at: datetime | None = None  # when the newest beat ended, well or not
        self._task: asyncio.Task[None] | None = None

    @property
    def bots(self) -> tuple[str, ...]:
        return tuple(sorted(runner.name for runner in self.runners))

    @property
    def expires_at(self) -> datetime | None:
        """When the venue's timer runs out: the newest acknowledged beat was sent then, so the
        venue received it no earlier, and its timer ends no earlier than this."""
        if self.last_success_at is None:
            return None
        return self.last_success_at + timedelta(seconds=self.settings.timeout_seconds)

    # -- beating ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.started_at = self.clock()
        self._task = asyncio.create_task(
            self._run(), name=f"dead-mans-switch:{self.exchange}:{self.account}"
        )
        self._task.add_done_callback(self._ended)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.interval_seconds
        while True:
            began = loop.time()
            await self.beat()
            await asyncio.sleep(max(0.0, interval - (loop.time() - began)))

    async def beat(self) -> bool:
        """Push the venue's timer back by the timeout; whether the venue acknowledged it.
        Never raises (but CancelledError).

        Not cut short by a timer of ours: ccxt's own request timeout bounds it (a
        RequestTimeout is a failed beat), and cancelling a ccxt call midway would also cancel
        a market load or a rate-limit wait that the account's bots share. A beat that hangs
        shows as `failing` once it is overdue (`state`)."""
        at = self.clock()
        self.beats += 1
        self.last_beat_at = at
        self.in_flight = True
        try:
            trigger = await self.adapter.cancel_all_orders_after(self.settings.timeout_seconds)
        except ExchangeError as exc:
            self._failed(str(exc), transient=isinstance(exc, TransientExchangeError))
            return False
        except Exception as exc:  # a bug must not end the heartbeat: counted, logged, alerted
            log.exception("%s: dead man's switch beat failed unexpectedly", self.exchange)
            self._failed(f"{type(exc).__name__}: {exc}", transient=False)
            return False
        finally:
            self.in_flight = False
            self.last_answer_at = self.clock()
        self._succeeded(at, trigger)
        return True

    def _succeeded(self, at: datetime, trigger: datetime | None) -> None:
        was, _ = self.state(at)
        if was is SwitchState.EXPIRED and self.last_success_at is not None:
            log.warning(
                "%s: dead man's switch armed again after it expired; %s may have cancelled "
                "every order of the account meanwhile (each bot's next sync finds out)",
                self.exchange,
                self.adapter.venue,
            )
        elif self.consecutive_failures:
            log.warning(
                "%s: dead man's switch beats again after %d failure(s)",
                self.exchange,
                self.consecutive_failures,
            )
        elif self.last_success_at is None:
            log.info(
                "%s: dead man's switch armed for %s (bots %s): the venue cancels every order "
                "of the account if no beat arrives within %ds; a beat every %gs",
                self.exchange,
                self.account,
                ", ".join(self.bots),
                self.settings.timeout_seconds,
                self.settings.interval_seconds,
            )
        self.consecutive_failures = 0
        self.last_success_at = at
        self.venue_trigger_at = trigger

    def _failed(self, error: str, transient: bool) -> None:
        now = self.clock()
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error, self.last_error_at = error, now
        state, reason = self.state(now)
        log.log(
            logging.ERROR if state is SwitchState.EXPIRED else logging.WARNING,
            "%s: dead man's switch beat failed (%d in a row): %s; %s",
            self.exchange,
            self.consecutive_failures,
            error,
            reason,
        )
        if transient and self.on_failure is not None:
            self.on_failure(self.exchange)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return  # stopped
        error = task.exception()  # the loop never returns: it raised
        log.error(
            "%s: the dead man's switch heartbeat ended: %r; the venue's timer is no longer "
            "pushed back",
            self.exchange,
            error,
            exc_info=error,
        )
        self.last_error, self.last_error_at = f"heartbeat ended: {error!r}", self.clock()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def disarm(self) -> str:
        """At shutdown, after the bots are stopped: timeout 0, unless orders of ours are still
        live (the venue's timer then cancels them). Best effort; what happened, in words."""
        live = sum(len(runner.parts.book.live_orders) for runner in self.runners)
        expires = _iso(self.expires_at) or "never armed"
        if live:
            log.warning(
                "%s: %d order(s) still live after the bots stopped: the dead man's switch is "
                "left armed, so the venue cancels them when its timer runs out (%s)",
                self.exchange,
                live,
                expires,
            )
            return f"left armed: {live} order(s) still live; the venue's timer runs out {expires}"
        try:
            await asyncio.wait_for(self.adapter.cancel_all_orders_after(0), DISARM_WAIT_SECONDS)
        except Exception as exc:  # best effort at shutdown; say so
            why = str(exc)
            if isinstance(exc, TimeoutError):
                why = f"no answer within {DISARM_WAIT_SECONDS:g}s"
            log.warning("%s: disarming the dead man's switch failed: %s", self.exchange, why)
            return f"disarm failed: {why}; the venue's timer runs out {expires}"
        self.disarmed_at = self.clock()
        log.info("%s: dead man's switch disarmed at shutdown", self.exchange)
        return "disarmed"

    # -- reading ---------------------------------------------------------------------------------

    def protected(self, now: datetime) -> bool:
        """Whether the venue's timer runs: if the coordinator died now, the venue would cancel
        the account's orders (armed, or failing before the timer ran out)."""
        expires = self.expires_at
        return self.disarmed_at is None and expires is not None and now < expires

    def state(self, now: datetime) -> tuple[SwitchState, str]:
        """The state at `now`, and why, in words an operator acts on."""
        if self.disarmed_at is not None:
            return SwitchState.OFF, f"disarmed at shutdown ({iso(self.disarmed_at)})"
        if self.started_at is None:
            return SwitchState.OFF, "the heartbeat has not started"
        timeout, interval = self.settings.timeout_seconds, self.settings.interval_seconds
        expires = self.expires_at
        if expires is None and now >= self.started_at + timedelta(seconds=timeout):
            return SwitchState.EXPIRED, (
                f"no beat acknowledged in the {timeout}s since the heartbeat started"
                f"{self._failing()}: the orders are not protected"
            )
        if expires is not None and now >= expires:
            return SwitchState.EXPIRED, (
                f"no beat acknowledged since {iso(self.last_success_at or now)} (timeout "
                f"{timeout}s){self._failing()}: {self.adapter.venue} may have cancelled every "
                "order of the account, and its timer stays off until a beat succeeds"
            )
        runs_out = f"the venue's timer runs out at {iso(expires)}" if expires else "not armed"
        if self.consecutive_failures:
            return SwitchState.FAILING, (
                f"{self.consecutive_failures} beat(s) in a row failed ({self.last_error}); "
                + runs_out
            )
        # Silent: a beat sent and not answered, or none sent since the last one ended.
        since = self.last_beat_at if self.in_flight else self.last_answer_at
        silent = (now - (since or self.started_at)).total_seconds()
        if silent > 2 * interval:
            what = (
                f"the beat sent {silent:.0f}s ago is not answered"
                if self.in_flight
                else f"no beat for {silent:.0f}s (one every {interval:g}s expected): the "
                "heartbeat has stopped"
            )
            return SwitchState.FAILING, f"{what}; {runs_out}"
        if expires is None:
            return SwitchState.ARMING, "the first beat is under way"
        return SwitchState.ARMED, (
            f"{self.adapter.venue} cancels every order of the account unless a beat arrives "
            f"by {iso(expires)}"
        )

    def _failing(self) -> str:
        if not self.consecutive_failures:
            return ""
        return f"; {self.consecutive_failures} beat(s) in a row failed ({self.last_error})"

    def status(self, now: datetime) -> dict[str, Any]:
        state, reason = self.state(now)
        return {
            "account": self.account,
            "bots": list(self.bots),
            "protected": self.protected(now),
            "state": state.value,
            "reason": reason,
            "last_beat_at": _iso(self.last_beat_at),
            "last_success_at": _iso(self.last_success_at),
            "expires_at": _iso(self.expires_at),
            "venue_trigger_at": _iso(self.venue_trigger_at),
            "beats": self.beats,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
        }


@dataclass(slots=True)
class _Exchange:
    """The bots on one exchange, sorted by what the switch can do for them."""

    name: str
    settings: DeadMansSwitchConfig | None
    bots: list[str] = field(default_factory=list)
    read_only: list[str] = field(default_factory=list)
    live: dict[int, list[BotRunner]] = field(default_factory=dict)  # by the account's client
    heartbeats: list[Heartbeat] = field(default_factory=list)
    fixed: tuple[SwitchState, str] | None = None  # when no heartbeat runs: the state and why


class DeadMansSwitch:
    """Every live account's heartbeat, and the state of each exchange a bot trades on."""

    def __init__(
        self,
        endpoints: ApiEndpointsConfig,
        runners: Iterable[BotRunner],
        clock: Callable[[], datetime],
        on_failure: FailureSink | None = None,
    ) -> None:
        self.clock = clock
        self._exchanges: dict[str, _Exchange] = {}
        for runner in runners:
            config, adapter = runner.parts.config, runner.parts.adapter
            exchange = self._exchanges.get(config.exchange)
            if exchange is None:
                endpoints_of = endpoints.exchanges.get(config.exchange)
                settings = endpoints_of.dead_mans_switch if endpoints_of else None
                exchange = self._exchanges[config.exchange] = _Exchange(config.exchange, settings)
            exchange.bots.append(config.name)
            if not isinstance(adapter, CcxtExchange):
                continue  # a paper account
            if config.mode is BotMode.READ_ONLY:
                exchange.read_only.append(config.name)
            else:
                exchange.live.setdefault(id(adapter.client), []).append(runner)
        for exchange in self._exchanges.values():
            exchange.fixed = _fixed_state(exchange)
            if exchange.fixed is None:
                assert exchange.settings is not None
                exchange.heartbeats = [
                    Heartbeat(
                        exchange.name,
                        accounts[0].parts.config.credentials.api_key_env or exchange.name,
                        accounts,
                        exchange.settings,
                        clock,
                        on_failure,
                    )
                    for accounts in exchange.live.values()
                ]

    @property
    def heartbeats(self) -> list[Heartbeat]:
        return [hb for exchange in self._exchanges.values() for hb in exchange.heartbeats]

    def start(self) -> None:
        for heartbeat in self.heartbeats:
            heartbeat.start()

    async def close(self) -> dict[str, str]:
        """Stop beating, then disarm what may be disarmed (see `Heartbeat.disarm`); what
        happened, by exchange (and account, when an exchange has several)."""
        heartbeats = self.heartbeats
        for heartbeat in heartbeats:
            await heartbeat.stop()
        outcomes = await asyncio.gather(*(heartbeat.disarm() for heartbeat in heartbeats))
        several = {hb.exchange for hb in heartbeats if len(self._exchanges[hb.exchange].live) > 1}
        return {
            f"{hb.exchange}:{hb.account}" if hb.exchange in several else hb.exchange: outcome
            for hb, outcome in zip(heartbeats, outcomes, strict=True)
        }

    def readings(self, now: datetime | None = None) -> list[SwitchReading]:
        """Each exchange a bot trades on, by name."""
        now = now if now is not None else self.clock()
        return [_reading(self._exchanges[name], now) for name in sorted(self._exchanges)]

    def status(self) -> dict[str, dict[str, Any]]:
        """`/status`'s `dead_mans_switch`: each exchange a bot trades on."""
        return {reading.exchange: reading.as_dict() for reading in self.readings()}


def _fixed_state(exchange: _Exchange) -> tuple[SwitchState, str] | None:
    """The state of an exchange on which no heartbeat runs, and why; None when one does."""
    name, settings = exchange.name, exchange.settings
    if exchange.live:
        adapter = next(iter(exchange.live.values()))[0].parts.adapter
        assert isinstance(adapter, CcxtExchange)
        if not adapter.has_dead_mans_switch:
            return SwitchState.UNPROTECTED, (
                f"{name} has no exchange-side dead man's switch: if the coordinator dies, the "
                "live bots' orders stay on the venue until someone cancels them"
            )
        if settings is None or not settings.enabled:
            return SwitchState.OFF, (
                f"not enabled (api-endpoints.json exchanges.{name}.dead_mans_switch): if the "
                "coordinator dies, the live bots' orders stay on the venue"
            )
        return None
    if exchange.read_only:
        return SwitchState.OFF, (
            "read-only bots only: they place no orders, and arming the venue's timer would be "
            "a write"
        )
    return SwitchState.PAPER, "paper bots only: their orders never reach the venue"


def _reading(exchange: _Exchange, now: datetime) -> SwitchReading:
    bots = tuple(sorted(exchange.bots))
    if exchange.fixed is not None:
        state, reason = exchange.fixed
        return SwitchReading(exchange.name, state, reason, exchange.settings, bots)
    rank = {state: n for n, state in enumerate(HEARTBEAT_STATES)}
    judged = [(hb, *hb.state(now)) for hb in exchange.heartbeats]
    worst, state, reason = max(judged, key=lambda each: rank.get(each[1], -1))
    several = len(judged) > 1
    successes = [hb.last_success_at for hb in exchange.heartbeats]
    beats = [hb.last_beat_at for hb in exchange.heartbeats if hb.last_beat_at is not None]
    expiries = [hb.expires_at for hb in exchange.heartbeats if hb.expires_at is not None]
    return SwitchReading(
        exchange=exchange.name,
        state=state,
        reason=f"{worst.account}: {reason}" if several else reason,
        settings=exchange.settings,
        bots=bots,
        protected=all(hb.protected(now) for hb in exchange.heartbeats),
        beats=sum(hb.beats for hb in exchange.heartbeats),
        failures=sum(hb.failures for hb in exchange.heartbeats),
        consecutive_failures=max(hb.consecutive_failures for hb in exchange.heartbeats),
        last_beat_at=max(beats, default=None),
        # The oldest account's: an exchange is as protected as its least protected account.
        last_success_at=None if None in successes else min(s for s in successes if s),
        expires_at=min(expiries) if len(expiries) == len(successes) else None,
        last_error=worst.last_error,
        accounts=tuple(hb.status(now) for hb in exchange.heartbeats),
    )


def _iso(at: datetime | None) -> str | None:
    return iso(at) if at is not None else None
