"""The drills that need no venue: the paper bots' own exchange misbehaves (POST /paper/drill), or
the operator's files do.

- crash loop (runbook 004 Scenario 1): a bug crashes ndax's tick three times in a row;
- config corruption (004 Scenario 3): bot-limits.json is cut short while the coordinator is
  down, it refuses to start, and the newest backup's config is restored;
- failure-rate alert (runbook 001): ndax's exchange fails some orders, the failure-rate alert
  fires; the operator stops the bot, the venue recovers, and the alert resolves.
"""

from __future__ import annotations

import shutil

from coordinator.drills.harness import wait_for
from coordinator.drills.scenario import Drill, Scenario
from coordinator.incidents.model import IncidentKind

FAILURE_RATE_ALERT = "order_failure_rate_high"


def crash_loop(drill: Drill) -> None:
    world = drill.world
    drill.boot()
    drill.mark("injected")
    drill.paper_drill("ndax", crash_next=3)  # max_consecutive_crashes in the drill's config
    drill.step("fault: a bug crashes ndax's tick, three times in a row")
    wait_for(lambda: "bot_crash_loop" in world.firing(), 15, "the crash-loop alert")
    drill.mark("detected")
    wait_for(lambda: world.get("/status")["kill_switch_active"], 10, "the switch to trip")
    wait_for(drill.all_stopped, 10, "every bot stopped by the crash-loop trip")
    drill.mark("responded")
    drill.open_incident("ndax is in a crash loop")
    drill.check("bot.crash_loop" in world.audit_actions(), "no bot.crash_loop in the audit log")
    log = (world.log_dir / "bot-coordinator.log").read_text(encoding="utf-8")
    drill.check("SimulatedBotBug" in log, "the crash's traceback is not in the log")
    drill.note("the log shows the crash's cause (a SimulatedBotBug traceback in ndax's tick)")
    drill.note("fix applied (the drill's bug is gone: it crashed its three times)")
    world.cli("--bot", "ndax", "--test", "--ticks", "20").expect(0, "ndax tested alone")
    drill.note("`bot-coordinator --bot ndax --test`: 20 ticks alone, no error")
    drill.lift_kill_switch("crash loop fixed and tested alone")
    drill.recover_gradually()


def config_corruption(drill: Drill) -> None:
    world = drill.world
    drill.boot()
    world.cli("backup").expect(0, "the scheduled backup (taken by hand in the drill)")
    drill.step("`bot-coordinator backup`: the config and journal are backed up")
    drill.check(world.stop() == 0, "the coordinator did not stop cleanly for maintenance")
    drill.mark("injected")
    limits = world.config_dir / "bot-limits.json"
    limits.write_bytes(limits.read_bytes()[:57])  # a half-written file
    drill.step("fault: config/bot-limits.json is cut short while the coordinator is down")
    world.start()
    code = world.wait_exit(30)
    output = world.output()
    drill.check(code != 0, "the coordinator started on a corrupt bot-limits.json")
    drill.check("bot-limits.json" in output, f"the refusal does not name the file:\n{output}")
    drill.check("restore" in output, f"the refusal does not say how to restore:\n{output}")
    drill.mark("detected")
    corrupted = world.config_dir / "corrupted"
    corrupted.mkdir()
    for path in world.config_dir.glob("*.json"):
        shutil.copy2(path, corrupted / path.name)
    drill.mark("responded")
    world.cli("restore", "--latest", "--config-only", "--dry-run").expect(0, "the dry run")
    world.cli("restore", "--latest", "--config-only").expect(0, "restoring the config")
    world.cli("--health-check").expect(0, "the health check after the restore")
    world.start_ready()
    drill.open_incident("the coordinator refused to start: config/bot-limits.json is corrupt")
    drill.note(f"refused to start (exit {code}), naming config/bot-limits.json")
    drill.note("saved the corrupted files in config/corrupted/ (runbook step 1)")
    drill.note("`restore --latest --config-only` (after its dry run); --health-check passes")
    drill.recover_gradually()


def failure_rate_alert(drill: Drill) -> None:
    world = drill.world
    drill.boot()
    drill.mark("injected")
    drill.paper_drill("ndax", fail_next=3)  # under the trip (5 in a row) and the breaker's 5
    drill.step("fault: ndax's exchange fails its next 3 orders")
    wait_for(lambda: FAILURE_RATE_ALERT in world.firing(), 20, "the failure-rate alert")
    drill.mark("detected")
    alert = world.firing()[FAILURE_RATE_ALERT]
    world.post("/stop", {"bot": "ndax"})
    drill.mark("responded")
    drill.open_incident(f"alert {FAILURE_RATE_ALERT}: {alert['summary']}")
    drill.note("stopped ndax (its purchases fail)")
    health = world.get("/health")
    breakers = world.get("/breakers")
    drill.note(
        f"GET /health: {health.get('status')}; ndax's breaker "
        f"{breakers['exchanges']['ndax']['state']}", action=False,
    )  # fmt: skip
    drill.note("the venue answers again (the drill's failures are spent)")
    drill.recover_gradually(done=False)
    wait_for(lambda: FAILURE_RATE_ALERT not in world.firing(), 60, "the alert to resolve")
    drill.mark("recovered")
    drill.note("the failure-rate alert resolved", action=False)


CRASH_LOOP = Scenario(
    name="crash-loop", title="Bot crashes repeatedly", runbook="004 Scenario 1",
    kind=IncidentKind.CRITICAL, run=crash_loop,
)  # fmt: skip
CONFIG_CORRUPTION = Scenario(
    name="config-corruption", title="Configuration corruption", runbook="004 Scenario 3",
    kind=IncidentKind.CRITICAL, run=config_corruption,
)  # fmt: skip
FAILURE_RATE = Scenario(
    name="failure-rate-alert", title="Purchase failure rate above 5 %", runbook="001",
    kind=IncidentKind.PURCHASE_FAILURE, run=failure_rate_alert,
)  # fmt: skip
