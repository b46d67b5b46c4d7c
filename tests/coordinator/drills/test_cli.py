"""`bot-coordinator drill`'s usage: what it refuses, and what --list shows."""

from __future__ import annotations

import pytest

from coordinator.cli import main
from coordinator.drills.scenarios import SCENARIOS


def test_list_names_every_scenario_with_its_runbook(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "--list"]) == 0
    shown = capsys.readouterr().out
    for scenario in SCENARIOS:
        assert scenario.name in shown
        assert scenario.runbook in shown


def test_every_runbook_004_scenario_and_purchase_failure_has_a_drill() -> None:
    runbooks = {s.runbook for s in SCENARIOS}
    assert {f"004 Scenario {n}" for n in range(1, 8)} <= runbooks
    assert {"000 Scenario A", "000 Scenario B", "000 Scenario C", "001"} <= runbooks


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["drill"], "name the scenarios to run, or --all"),
        (["drill", "--all", "crash-loop"], "name the scenarios to run, or --all"),
        (["drill", "no-such"], "no scenario named 'no-such'"),
    ],
)
def test_a_wrong_choice_is_a_usage_error_naming_it(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert says in capsys.readouterr().err
