"""What a drill is and how one is run: a scenario's fault and the runbook's response, timed
(detected, responded, recovered), inside a throwaway world, ending in the same checks for every
scenario: bots back, kill switch where it should be, reconciliation clean, the journal verified
(no order lost or doubled), and its incident record (a drill's) closed and exported.

Times are measured from the moment the fault is injected: detect is until the product shows the
fault (an alert, a state, a refusal), respond until the operator's first protective step is done
(the kill switch on, the bot stopped), recover until the bots trade again with every check clean.
A drill passes when every check holds and recover is within its kind's objective (runbook 000
section 7.2, `coordinator.incidents.model.OBJECTIVE_SECONDS`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.drills.config import write_drill_config
from coordinator.drills.harness import DrillFailed, DrillWorld, wait_for
from coordinator.incidents.model import OBJECTIVE_SECONDS, IncidentKind

MARKS = ("injected", "detected", "responded", "recovered")
BY = "drill"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str  # what `bot-coordinator drill NAME` takes
    title: str
    runbook: str  # where the procedure comes from, e.g. "004 Scenario 1"
    kind: IncidentKind  # sets the objective
    run: Callable[[Drill], None]
    configure: Callable[[dict[str, Any]], None] | None = None  # edits the drill's config
    venue: bool = False  # live-mode: needs the fake kraken venue

    @property
    def objective_seconds(self) -> int:
        return OBJECTIVE_SECONDS[self.kind]


@dataclass(slots=True)
class DrillResult:
    scenario: Scenario
    passed: bool = False
    seconds: dict[str, float] = field(default_factory=dict)  # each mark, since injected
    failure: str | None = None
    steps: list[str] = field(default_factory=list)
    incident: int | None = None
    report: Path | None = None  # the record's Markdown export
    kept: Path | None = None  # the world, kept for a look (a failure, or --keep)
    wall_seconds: float = 0.0

    def span(self, start: str, end: str) -> float | None:
        if start not in self.seconds or end not in self.seconds:
            return None
        return self.seconds[end] - self.seconds[start]

    @property
    def detect(self) -> float | None:
        return self.span("injected", "detected")

    @property
    def respond(self) -> float | None:
        return self.span("detected", "responded")

    @property
    def recover(self) -> float | None:
        return self.span("injected", "recovered")

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name, "title": self.scenario.title,
            "runbook": self.scenario.runbook, "kind": self.scenario.kind.value,
            "passed": self.passed, "detect_seconds": self.detect,
            "respond_seconds": self.respond, "recover_seconds": self.recover,
            "objective_seconds": self.scenario.objective_seconds, "failure": self.failure,
            "incident": self.incident, "report": str(self.report) if self.report else None,
            "kept": str(self.kept) if self.kept else None, "steps": self.steps,
            "wall_seconds": round(self.wall_seconds, 2),
        }  # fmt: skip


class Drill:
    """What a scenario's `run` is handed: the world, the venue (live-mode scenarios), and the
    stopwatch and log of steps that become the drill's result and incident record."""

    def __init__(self, scenario: Scenario, world: DrillWorld, venue: Any, result: DrillResult):
        self.scenario = scenario
        self.world = world
        self.venue = venue
        self.result = result
        self._t0 = time.monotonic()

    def mark(self, name: str) -> None:
        """Stamp a moment of the drill; `injected` starts the clock the others are measured
        from. A moment is stamped once (the first time it happens)."""
        assert name in MARKS, name
        now = time.monotonic() - self._t0
        if name == "injected":
            self._t0, now = time.monotonic(), 0.0
        self.result.seconds.setdefault(name, round(now, 3))

    def step(self, text: str) -> None:
        """An operator step, as the runbook words it; kept for the record and the report."""
        at = time.monotonic() - self._t0
        self.result.steps.append(f"+{at:6.2f}s {text}")

    def check(self, condition: bool, failure: str) -> None:
        if not condition:
            raise DrillFailed(failure)

    # ----- the incident record ----------------------------------------------------------

    def open_incident(self, issue: str) -> int:
        """Open the drill's incident record (POST /incidents with drill), as an operator who
        noticed the fault would; the id. When a kill switch activation opened one first (the
        operator's, `adopt_incident`, or a trip's: the open drill record), that one is it."""
        if self.result.incident is None:
            opened = self.world.get("/incidents?status=open")["incidents"]
            drills = [r for r in opened if r["drill"]]
            if drills:  # the kill switch tripped by itself and opened it
                self.result.incident = int(drills[0]["id"])
                self.note(f"the drill's record is #{self.result.incident}: {issue}", False)
                return self.result.incident
            answer = self.world.post(
                "/incidents",
                {"issue": issue, "kind": self.scenario.kind.value, "drill": True, "by": BY},
            )
            self.result.incident = int(answer["id"])
        return self.result.incident

    def adopt_incident(self, answer: dict[str, Any]) -> None:
        """The record the kill switch activation `answer` opened (or noted) is the drill's."""
        if self.result.incident is None and answer.get("incident") is not None:
            self.result.incident = int(answer["incident"])

    def note(self, text: str, action: bool = True) -> None:
        self.step(text)
        if self.result.incident is not None:
            self.world.post(
                f"/incidents/{self.result.incident}/notes",
                {"text": text, "action": action, "by": BY},
            )

    # ----- the operator's common steps --------------------------------------------------

    def boot(self) -> None:
        """The coordinator started as the README does, every bot started, all trading."""
        self.world.start_ready()
        self.world.post("/start-sequential")
        self.wait_trading({})
        self.step("coordinator started, start-sequential: every bot trading")

    def paper_drill(self, bot: str, **fault: Any) -> None:
        """Make a paper bot's exchange misbehave (POST /paper/drill)."""
        self.world.post("/paper/drill", {"bot": bot, **fault})

    def activate_kill_switch(self, reason: str) -> dict[str, Any]:
        """Runbook 004 Step 2: no token needed from this machine; every bot stops."""
        status, answer = self.world.request(
            "POST", "/kill-switch", {"action": "activate", "reason": reason}
        )
        self.check(status == 200, f"the kill switch activation answered {status}: {answer}")
        self.adopt_incident(answer)
        wait_for(self.all_stopped, 10, "every bot stopped after the kill switch")
        self.mark("responded")
        self.note(f"kill switch activated: {reason}")
        return dict(answer)

    def all_stopped(self) -> bool:
        return all(b["state"] in ("stopped", "crashed") for b in self.world.bots().values())

    def lift_kill_switch(self, reason: str) -> None:
        """Runbook 004 Step 6: override (inside the cooldown: force_override with an approver
        and the admin token, as the drill's scenarios are minutes long)."""
        body = {"action": "force_override", "reason": reason, "approved_by": "drill lead"}
        self.world.post("/kill-switch", body, admin=True)
        self.check(not self.world.get("/status")["kill_switch_active"], "the switch stayed on")
        self.note(f"kill switch lifted (force_override, approved by drill lead): {reason}")

    def recover_gradually(self, first: str = "ndax", done: bool = True) -> None:
        """Runbook 004 Step 6: one bot in safe mode, then start-sequential; recovered (with
        `done`) when every bot runs and has filled since."""
        fills = {name: bot["fills"] for name, bot in self.world.bots().items()}
        self.world.post("/start", {"bot": first, "safe_mode": True})
        self.note(f"started {first} in safe mode")
        self.world.post("/start-sequential")
        self.note("start-sequential: the other bots")
        self.wait_trading(fills)
        if done:
            self.mark("recovered")

    def wait_trading(self, fills_before: dict[str, int], within: float = 20.0) -> None:
        """Every bot running, each with a fill more than `fills_before` (the grid bot rests
        until the price moves; a fill is what proves an order path works)."""

        def trading() -> bool:
            bots = self.world.bots()
            return all(
                b["state"] == "running" and b["fills"] > fills_before.get(n, 0)
                for n, b in bots.items()
            )

        wait_for(trading, within, "every bot running and filling again")


def run_scenario(scenario: Scenario, report_dir: Path, keep: bool = False) -> DrillResult:
    """One drill, start to end, in a world of its own under the system's temp dir."""
    began = time.monotonic()
    result = DrillResult(scenario)
    root = Path(tempfile.mkdtemp(prefix=f"drill-{scenario.name}-"))
    venue = _start_venue() if scenario.venue else None
    world = DrillWorld(root, venue.environment() if venue is not None else None)
    try:
        write_drill_config(world.config_dir, scenario.configure, venue)
        drill = Drill(scenario, world, venue, result)
        scenario.run(drill)
        _finish(drill, report_dir)
        result.passed = _within_objective(result)
    except DrillFailed as exc:
        result.failure = str(exc)
    except Exception as exc:  # a drill that breaks is a failed drill, with its traceback
        result.failure = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
    finally:
        world.kill()
        if venue is not None:
            venue.stop()
    if keep or not result.passed:
        result.kept = root
    else:
        shutil.rmtree(root, ignore_errors=True)
    result.wall_seconds = time.monotonic() - began
    return result


def _start_venue() -> Any:
    from coordinator.drills.venue import KrakenVenue

    venue = KrakenVenue()
    venue.start()
    return venue


def _within_objective(result: DrillResult) -> bool:
    recover = result.recover
    if recover is None:
        result.failure = "the drill never marked its recovery"
        return False
    if recover > result.scenario.objective_seconds:
        result.failure = (
            f"recovered in {recover:.1f} s, past the objective of "
            f"{result.scenario.objective_seconds} s"
        )
        return False
    return True


def _finish(drill: Drill, report_dir: Path) -> None:
    """The end state every drill must reach, checked through the public interfaces."""
    world, result = drill.world, drill.result
    drill.check(
        not world.get("/status")["kill_switch_active"], "the kill switch is still on at the end"
    )
    report = world.post("/reconcile", {})
    drill.check(report["clean"], f"reconciliation is not clean: {report['summary']}")
    drill.note("reconciliation clean", action=False)
    if result.incident is None:
        drill.open_incident(f"drill {drill.scenario.name}: {drill.scenario.title}")
    _close_record(drill, report_dir)
    code = world.stop()
    drill.check(code == 0, f"the coordinator exited {code} on Ctrl-C:\n{world.output()}")
    world.cli("--verify-data").expect(0, "the journal must verify clean after the drill")
    drill.step("--verify-data: clean (no order lost, none doubled, audit chain intact)")


def _close_record(drill: Drill, report_dir: Path) -> None:
    world, result = drill.world, drill.result
    assert result.incident is not None
    record = str(result.incident)

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    drill.note(
        f"drill measured: detect {shown(result.detect)}, respond {shown(result.respond)}, "
        f"recover {shown(result.recover)} (objective {drill.scenario.objective_seconds} s)",
        action=False,
    )
    world.cli(
        "incident", "note", record, "--tick", "document", "test_kill_switch", "review_logs",
        "--by", BY,
    ).expect(0, "ticking the checklist")  # fmt: skip
    world.cli(
        "incident", "close", record, "--outcome", "success", "--by", BY,
        "--root-cause", f"drill: {drill.scenario.title} (injected)",
        "--lessons", "the runbook's steps recovered it; see the drill's steps",
    ).expect(0, "closing the drill's incident record")  # fmt: skip
    report_dir.mkdir(parents=True, exist_ok=True)
    target = report_dir / f"{drill.scenario.name}.md"
    world.cli("incident", "export", record, "--out", str(target)).expect(0, "exporting it")
    result.report = target
