"""Facts to feed the rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from coordinator.alerts.facts import BotFacts, BreakerFacts, ExchangeFacts, Facts
from coordinator.alerts.window import WindowCount
from coordinator.lifecycle import BotState

T0 = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)


def bot(name: str = "ndax", **changes: Any) -> BotFacts:
    base = BotFacts(
        name=name,
        exchange=name,
        mode="paper",
        state=BotState.RUNNING,
        tick_interval_seconds=1.0,
        heartbeat_age_seconds=0.5,
        running_for_seconds=600.0,
        crash_looped=False,
        last_error=None,
        window=WindowCount(100, 0),
    )
    return replace(base, **changes)


def facts(now: datetime = T0, **changes: Any) -> Facts:
    base = Facts(
        now=now,
        accepting=True,
        kill_switch={"active": False},
        bots=(bot("ndax"), bot("kraken")),
        breakers=(
            BreakerFacts("global", "closed", None, False),
            BreakerFacts("kraken", "closed", None, False),
        ),
        exchanges=(ExchangeFacts("kraken", "up", 80.0, None, "primary"),),
        reconciliation={"run_id": 1, "at": T0.isoformat(), "clean": True, "remaining": 0,
                        "errors": 0},
        backups={"interval_minutes": 60, "last_ok_age_seconds": 60.0, "result": "ok",
                 "failures": 0, "error": None},
        uptime_seconds=3600.0,
        disk_free_pct=50.0,
    )
    return replace(base, **changes)
