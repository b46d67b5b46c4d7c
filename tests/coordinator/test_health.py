"""Exchange health: up, degraded, down, and back; a timeout is a failure; failures are counted
against the exchange's breaker."""

from __future__ import annotations

import asyncio

from coordinator.config.models import HealthCheckConfig
from coordinator.health import HealthMonitor
from tests.support_config import FakeClock

CONFIG = HealthCheckConfig(timeout_seconds=0.05, failure_threshold=3, interval_seconds=60)


class Venue:
    """A probe the test can make answer, fail or hang."""

    def __init__(self) -> None:
        self.mode = "ok"

    async def __call__(self) -> None:
        if self.mode == "fail":
            raise ConnectionError("connection refused")
        if self.mode == "hang":
            await asyncio.sleep(1)


async def test_an_exchange_goes_degraded_then_down_and_back_up() -> None:
    venue = Venue()
    failures: list[str] = []
    monitor = HealthMonitor(CONFIG, {"kraken": venue}, FakeClock(), failures.append)

    assert (await monitor.check("kraken")).state == "up"
    assert monitor.status()["kraken"]["latency_ms"] is not None

    venue.mode = "fail"
    states = [(await monitor.check("kraken")).state for _ in range(3)]
    assert states == ["degraded", "degraded", "down"]
    assert monitor.status()["kraken"]["last_error"] == "ConnectionError: connection refused"
    assert failures == ["kraken"] * 3  # each one counted against the kraken breaker

    venue.mode = "ok"
    health = await monitor.check("kraken")
    assert (health.state, health.consecutive_failures, health.last_error) == ("up", 0, None)


async def test_a_probe_that_does_not_answer_in_time_is_a_failure() -> None:
    venue = Venue()
    venue.mode = "hang"
    monitor = HealthMonitor(CONFIG, {"ndax": venue}, FakeClock())

    health = await monitor.check("ndax")

    assert health.state == "degraded"
    assert health.last_error == "no answer within 0.05s"
    assert health.latency_ms is None


async def test_a_coordinator_on_the_offline_feed_probes_nothing() -> None:
    monitor = HealthMonitor(CONFIG, {}, FakeClock())
    monitor.start()  # nothing to probe: no task, nothing reaches a network
    await monitor.stop()
    assert monitor.status() == {}
