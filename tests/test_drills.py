"""Every drill, as an operator runs it: `bot-coordinator drill NAME` in a child process (its own
throwaway coordinator, fake venue and CLI calls), which must pass within its objective and leave
its drill-marked incident record exported. These are the product's end-to-end tests of the
runbooks (issue 15); each takes 10-25 s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.drills.scenarios import SCENARIOS
from tests.support_process import child_env


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_the_drill_passes_within_its_objective(name: str, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "coordinator", "drill", name, "--report-dir", str(reports)],
        capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads((reports / "summary.json").read_text())
    assert result["passed"] is True
    assert result["recover_seconds"] <= result["objective_seconds"]
    assert result["detect_seconds"] is not None
    assert result["respond_seconds"] is not None
    record = (reports / f"{name}.md").read_text()
    assert "(drill)" in record.splitlines()[0]
    assert "**Outcome:** success" in record
    assert "drill measured: detect" in record  # the audit-log verdict needs a kill switch
    assert "## Recovery time" in record
    assert "1 of 1 drills passed" in done.stdout
