"""The drills, one per runbook scenario (`SCENARIOS`, in the order `drill --all` runs them)."""

from __future__ import annotations

from typing import Final

from coordinator.drills.scenario import Scenario
from coordinator.drills.scenarios import kill_switch, paper, resources

SCENARIOS: Final[tuple[Scenario, ...]] = (
    paper.CRASH_LOOP,
    paper.CONFIG_CORRUPTION,
    kill_switch.SCENARIO,
    paper.FAILURE_RATE,
    resources.DISK_FULL,
    resources.OPEN_FILES,
)
BY_NAME: Final[dict[str, Scenario]] = {s.name: s for s in SCENARIOS}
