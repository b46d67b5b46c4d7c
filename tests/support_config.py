"""Test support: the shipped configuration made fast, and a polling wait."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from coordinator.config import CONFIG_FILES

REPO_CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

# The fast test configuration (see write_fast_config).
TICK = 0.05
DCA_INTERVAL = 0.2
INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 0.2
MAX_CRASHES = 3
GRACE = 1.0


# -- shared helpers (imported by the API, CLI and end-to-end tests) ------------------------------


def write_fast_config(target: Path, change: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The shipped configuration, made fast: ticks of 50 ms, a DCA buy every 200 ms, restarts
    after 50-200 ms, three crashes make a crash loop, a 1 s stop grace. The grid bot's price does
    not move (volatility 0), so its ladder rests and never fills. `change(documents)` may edit
    the documents (keyed by file name) before they are written."""
    target.mkdir(parents=True, exist_ok=True)
    docs = {
        name: json.loads((REPO_CONFIG_DIR / name).read_text(encoding="utf-8"))
        for name in CONFIG_FILES
    }
    bots = {bot["name"]: bot for bot in docs["bots.json"]["bots"]}
    for bot in bots.values():
        bot["tick_interval_seconds"] = TICK
    bots["ndax"]["strategy"]["params"]["interval_seconds"] = DCA_INTERVAL
    bots["kraken"]["feed"]["volatility_per_hour"] = 0
    recovery = docs["recovery-settings.json"]
    recovery["restart"].update(
        initial_backoff_seconds=INITIAL_BACKOFF,
        max_backoff_seconds=MAX_BACKOFF,
        multiplier=2,
        max_consecutive_crashes=MAX_CRASHES,
        healthy_after_seconds=60,
    )
    recovery["sequential_start"].update(health_timeout_seconds=3, delay_between_starts_seconds=0)
    recovery["shutdown"]["grace_seconds"] = GRACE
    recovery["retry"].update(initial_delay_seconds=0.01, max_delay_seconds=0.05)
    # A DCA buy every 200 ms is 300 executions a minute: far past the shipped throttle, which
    # is set for 5 s buys. Tests of the throttle set their own.
    docs["kill-switch.json"]["execution_throttle"] = {
        "max_same_side_executions": 100000,
        "window_seconds": 1,
    }
    if change is not None:
        change(docs)
    for name, document in docs.items():
        (target / name).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return target


async def eventually(
    predicate: Callable[[], bool], within: float = 5.0, what: str = "condition"
) -> None:
    """Wait until `predicate()` holds, polling; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


class FakeClock:
    """Wall-clock time a test moves by hand (cooldowns, windows, UTC days are measured in it)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def trading_config(documents: dict[str, Any]) -> None:
    """For the end-to-end tests: ticks of 100 ms, and a grid price that moves enough to fill."""
    for bot in documents["bots.json"]["bots"]:
        bot["tick_interval_seconds"] = 0.1
    kraken = next(b for b in documents["bots.json"]["bots"] if b["name"] == "kraken")
    kraken["feed"]["volatility_per_hour"] = 1.0
