"""Exchange health: a cheap status call per exchange, on a schedule, under a timeout.

Every exchange a bot reaches over the network is probed every `interval_seconds`
(api-endpoints.json `health_check_config`) with a call that must answer within
`timeout_seconds`. Latency, state and the last error are kept for `/status`: `up`, `degraded`
(failing, fewer than `failure_threshold` times in a row) or `down`. A failed probe is a transient
failure of that exchange and feeds its circuit breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coordinator.config.models import HealthCheckConfig
from coordinator.failover import EndpointFailover
from coordinator.store.journal import iso

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[Any]]


@dataclass(slots=True)
class ExchangeHealth:
    name: str
    state: str = "unknown"  # up, degraded, down, unknown (not probed yet)
    latency_ms: float | None = None
    consecutive_failures: int = 0
    last_checked_at: datetime | None = None
    last_ok_at: datetime | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "latency_ms": self.latency_ms,
            "consecutive_failures": self.consecutive_failures,
            "last_checked_at": iso(self.last_checked_at) if self.last_checked_at else None,
            "last_ok_at": iso(self.last_ok_at) if self.last_ok_at else None,
            "last_error": self.last_error,
        }


class HealthMonitor:
    def __init__(
        self,
        config: HealthCheckConfig,
        probes: Mapping[str, Probe],
        clock: Callable[[], datetime],
        on_failure: Callable[[str], None] | None = None,
        failovers: Mapping[str, EndpointFailover] | None = None,
    ) -> None:
        self.config = config
        self.failovers = dict(failovers or {})
        self.probes = dict(probes)
        self.clock = clock
        self.on_failure = on_failure
        self.health = {name: ExchangeHealth(name) for name in self.probes}
        self._task: asyncio.Task[None] | None = None

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(name) for name in self.probes))

    async def check(self, name: str) -> ExchangeHealth:
        health = self.health[name]
        began = time.perf_counter()
        try:
            await asyncio.wait_for(self.probes[name](), timeout=self.config.timeout_seconds)
        except Exception as exc:  # any failure of the probe is the exchange's ill health
            health.consecutive_failures += 1
            health.last_error = (
                f"no answer within {self.config.timeout_seconds:g}s"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"
            )
            failing_long = health.consecutive_failures >= self.config.failure_threshold
            new_state = "down" if failing_long else "degraded"
            if new_state != health.state:
                level = logging.ERROR if new_state == "down" else logging.WARNING
                log.log(level, "exchange %s is %s: %s", name, new_state, health.last_error)
            health.state = new_state
            health.latency_ms = None
            if self.on_failure is not None:
                self.on_failure(name)
            if name in self.failovers:
                self.failovers[name].observe(False, health.last_error)
        else:
            if health.state in ("degraded", "down"):
                log.warning("exchange %s is up again", name)
            health.state = "up"
            health.consecutive_failures = 0
            health.latency_ms = round((time.perf_counter() - began) * 1000, 1)
            health.last_ok_at = self.clock()
            health.last_error = None
            if name in self.failovers:
                self.failovers[name].observe(True)
        health.last_checked_at = self.clock()
        return health

    def start(self) -> None:
        if self.probes:
            self._task = asyncio.create_task(self._run(), name="exchange-health")

    async def _run(self) -> None:
        while True:
            await self.check_all()
            for failover in self.failovers.values():
                await failover.check_primary()
            await asyncio.sleep(self.config.interval_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def status(self) -> dict[str, Any]:
        status = {name: health.as_dict() for name, health in sorted(self.health.items())}
        for name, failover in self.failovers.items():
            status[name]["endpoint"] = failover.status()
        return status
