"""What the alert rules and `/health` read: one plain snapshot of the coordinator's state.

Gathering is synchronous and reads memory only (no store query, no exchange call), so it is
cheap enough for every evaluation and every `/health` poll with a hundred bots. The disk
reading, a system call, is taken separately off the loop (`disk_free_pct`).
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.alerts.window import OutcomeWindow, WindowCount
from coordinator.lifecycle import BotState

CHUNK = 100  # bots whose facts are taken between two turns of the event loop

if TYPE_CHECKING:
    from coordinator.runtime import Coordinator
    from coordinator.supervisor import BotRunner


@dataclass(frozen=True, slots=True)
class BotFacts:
    name: str
    exchange: str
    mode: str
    state: BotState
    tick_interval_seconds: float
    heartbeat_age_seconds: float | None  # since the last completed tick; None: none yet
    running_for_seconds: float | None  # since it was last started (None: not started)
    crash_looped: bool  # crashed and left crashed for an operator
    last_error: str | None
    window: WindowCount  # orders sent and failed in the failure-rate window
    unresolved_orders: int = 0  # orders from the previous run not yet resolved: it cannot start


@dataclass(frozen=True, slots=True)
class BreakerFacts:
    name: str  # "global" or an exchange id
    state: str  # closed, open, half_open
    reason: str | None
    latched: bool


@dataclass(frozen=True, slots=True)
class ExchangeFacts:
    name: str
    state: str  # up, degraded, down, unknown
    latency_ms: float | None
    last_error: str | None
    endpoint: str  # primary or backup


@dataclass(frozen=True, slots=True)
class DeadMansSwitchFacts:
    """An exchange whose live accounts' dead man's switch heartbeat runs."""

    exchange: str
    state: str  # armed, arming, failing, expired (coordinator/safety/dead_mans_switch.py)
    reason: str
    consecutive_failures: int
    last_success_age_seconds: float | None  # None: no beat acknowledged yet
    timeout_seconds: int


@dataclass(frozen=True, slots=True)
class TradingFacts:
    """A bot's effective trading state (coordinator/safety/scopes.py, the throttle)."""

    bot: str
    exchange: str
    state: str  # active, reducing, halted
    scope: str | None  # which switch decides it: "kill_switch", "exchange:kraken", ...
    why: str | None
    disabled: bool  # by the execution throttle


@dataclass(frozen=True, slots=True)
class Facts:
    now: datetime
    accepting: bool
    kill_switch: dict[str, Any]
    bots: tuple[BotFacts, ...]
    breakers: tuple[BreakerFacts, ...]
    exchanges: tuple[ExchangeFacts, ...]
    reconciliation: dict[str, Any] | None  # the newest run of this process
    backups: dict[str, Any] | None  # BackupService.status(), None when backups are off
    uptime_seconds: float
    disk_free_pct: float | None = None
    dead_mans_switches: tuple[DeadMansSwitchFacts, ...] = ()
    trading: tuple[TradingFacts, ...] = ()


async def gather_cooperatively(coordinator: Coordinator, window: OutcomeWindow | None) -> Facts:
    """`gather`, letting the event loop run every CHUNK bots (a thousand bots' facts are
    ~15 ms of work)."""
    now = coordinator.clock()
    bots: list[BotFacts] = []
    for n, runner in enumerate(list(coordinator.supervisor.runners.values()), 1):
        bots.append(_bot(runner, now, window))
        if n % CHUNK == 0:
            await asyncio.sleep(0)
    return gather(coordinator, window, now, tuple(bots))


def gather(
    coordinator: Coordinator,
    window: OutcomeWindow | None,
    now: datetime | None = None,
    bots: tuple[BotFacts, ...] | None = None,
) -> Facts:
    """The facts as they stand (`now` and the bots' facts, when given, were taken earlier)."""
    now = now if now is not None else coordinator.clock()
    if bots is None:
        bots = tuple(_bot(r, now, window) for r in coordinator.supervisor.runners.values())
    status = coordinator.safety.status()
    breakers = [_breaker(status["global"])] + [
        _breaker(snapshot) for snapshot in status["exchanges"].values()
    ]
    last = coordinator.reconciler.last
    return Facts(
        now=now,
        accepting=coordinator.accepting,
        kill_switch=coordinator.kill_switch.status(),
        bots=bots,
        breakers=tuple(breakers),
        exchanges=tuple(_exchanges(coordinator)),
        reconciliation=None
        if last is None
        else {
            "run_id": last.run_id,
            "at": last.finished_at.isoformat(),
            "clean": last.clean,
            "remaining": last.remaining,
            "errors": last.errors,
        },
        backups=coordinator.backups.status() if coordinator.backups is not None else None,
        uptime_seconds=coordinator.uptime_seconds(),
        dead_mans_switches=tuple(_dead_mans_switches(coordinator, now)),
        trading=tuple(_trading(coordinator)),
    )


def _trading(coordinator: Coordinator) -> list[TradingFacts]:
    facts = []
    for runner in coordinator.supervisor.runners.values():
        state = coordinator.bot_trading_state(runner)
        facts.append(
            TradingFacts(
                runner.name, runner.parts.config.exchange, state["state"], state["scope"],
                state["why"], state["disabled"],
            )
        )  # fmt: skip
    return facts


def disk_free_pct(path: Path) -> float | None:
    """Free space of the file system holding `path`, in percent (blocking: run in a thread)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return 100.0 * usage.free / usage.total if usage.total else None


def _bot(runner: BotRunner, now: datetime, window: OutcomeWindow | None) -> BotFacts:
    last_tick = runner.stats.last_tick_at
    started = runner.started_at
    return BotFacts(
        name=runner.name,
        exchange=runner.parts.config.exchange,
        mode=runner.parts.config.mode.value,
        state=runner.state,
        tick_interval_seconds=runner.parts.config.tick_interval_seconds,
        heartbeat_age_seconds=(now - last_tick).total_seconds() if last_tick else None,
        running_for_seconds=(now - started).total_seconds() if started else None,
        crash_looped=runner.state is BotState.CRASHED and runner.next_restart_at is None,
        last_error=runner.last_error,
        window=window.count(runner.name) if window is not None else WindowCount(0, 0),
        unresolved_orders=len(runner.unresolved_orders),
    )


def _breaker(snapshot: dict[str, Any]) -> BreakerFacts:
    return BreakerFacts(
        name=str(snapshot["name"]),
        state=str(snapshot["state"]),
        reason=snapshot.get("reason"),
        latched=bool(snapshot.get("latched")),
    )


def _exchanges(coordinator: Coordinator) -> list[ExchangeFacts]:
    if coordinator.health is None:
        return []
    failovers = coordinator.health.failovers
    return [
        ExchangeFacts(
            name=name,
            state=health.state,
            latency_ms=health.latency_ms,
            last_error=health.last_error,
            endpoint=failovers[name].active if name in failovers else "primary",
        )
        for name, health in sorted(coordinator.health.health.items())
    ]


def _dead_mans_switches(coordinator: Coordinator, now: datetime) -> list[DeadMansSwitchFacts]:
    switch = coordinator.dead_mans_switch
    if switch is None:
        return []
    return [
        DeadMansSwitchFacts(
            exchange=reading.exchange,
            state=reading.state.value,
            reason=reading.reason,
            consecutive_failures=reading.consecutive_failures,
            last_success_age_seconds=(now - reading.last_success_at).total_seconds()
            if reading.last_success_at is not None
            else None,
            timeout_seconds=reading.settings.timeout_seconds,
        )
        for reading in switch.readings(now)
        if reading.heartbeat and reading.settings is not None
    ]
