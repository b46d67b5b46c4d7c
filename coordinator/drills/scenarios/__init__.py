"""The drills, one per runbook scenario (`SCENARIOS`, in the order `drill --all` runs them)."""

from __future__ import annotations

from typing import Final

from coordinator.drills.scenario import Scenario
from coordinator.drills.scenarios import kill_switch, live, paper, resources

SCENARIOS: Final[tuple[Scenario, ...]] = (  # runbook 004's seven, then 000/001's purchases
    paper.CRASH_LOOP,
    live.API_FAILOVER,
    paper.CONFIG_CORRUPTION,
    kill_switch.SCENARIO,
    live.DATA_LOSS,
    live.CREDENTIALS_REVOKED,
    resources.DISK_FULL,
    resources.OPEN_FILES,
    live.INSUFFICIENT_FUNDS,
    live.PURCHASE_TIMEOUT,
    live.PARTIAL_FILL,
    paper.FAILURE_RATE,
)
BY_NAME: Final[dict[str, Scenario]] = {s.name: s for s in SCENARIOS}
