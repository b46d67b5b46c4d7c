"""Runbook 004 Scenario 4, "Kill switch won't deactivate": five orders in a row fail, the kill
switch trips by itself and stops every bot; the operator's override is refused (the cooldown);
the investigation finds why (GET /kill-switch, the breakers, the activation count in the log);
the coordinator is killed and restarted (the switch is still on: it is durable); a force
override with an approver and the admin token lifts it; the bots come back gradually."""

from __future__ import annotations

from typing import Any

from coordinator.drills.harness import wait_for
from coordinator.drills.scenario import Drill, Scenario
from coordinator.incidents.model import IncidentKind


def kill_switch_will_not_deactivate(drill: Drill) -> None:
    world = drill.world
    drill.boot()
    drill.mark("injected")
    drill.paper_drill("ndax", fail_next=1000)  # the venue fails every order from now on
    drill.step("fault: ndax's exchange fails every order")
    wait_for(lambda: world.get("/status")["kill_switch_active"], 15, "the kill switch to trip")
    drill.mark("detected")
    switch = world.get("/kill-switch")
    drill.check(
        switch["trigger"] == "consecutive_order_failures",
        f"tripped by {switch['trigger']}, not consecutive order failures",
    )
    wait_for(drill.all_stopped, 10, "every bot stopped by the tripped switch")
    drill.mark("responded")
    drill.open_incident(f"kill switch tripped: {switch['reason']}")
    drill.paper_drill("ndax", fail_next=0)  # the venue is fixed
    drill.note("ndax's venue answers again (fault cleared)")

    status, refused = world.request(
        "POST", "/kill-switch", {"action": "override", "reason": "venue fixed"}, token=world.token
    )
    drill.check(status == 409, f"an override in the cooldown answered {status}: {refused}")
    drill.note(f"override refused (the symptom): {refused['error']['message']}", action=False)
    drill.note(
        f"GET /kill-switch: tripped by {switch['trigger']}, cooldown "
        f"{switch['cooldown_seconds_left']} s left; GET /breakers: ndax open", action=False,
    )  # fmt: skip

    world.kill()  # runbook step 2: pkill -f bot-coordinator
    world.start_ready()
    drill.check(world.get("/status")["kill_switch_active"], "the switch did not survive kill -9")
    drill.note("killed and restarted: the switch is still active (durable)")
    status, _ = world.request("POST", "/start", {"bot": "ndax"}, token=world.token)
    drill.check(status == 409, f"a bot started under the kill switch ({status})")
    force = {"action": "force_override", "reason": "venue fixed"}
    status, _ = world.request("POST", "/kill-switch", force, token=world.admin_token)
    drill.check(status == 400, f"force_override without an approver answered {status}")
    approved = {**force, "approved_by": "drill lead"}
    status, _ = world.request("POST", "/kill-switch", approved, token=world.token)
    drill.check(status == 403, f"force_override with the operator token answered {status}")
    breakers = world.get("/breakers")
    drill.check(breaker_open(breakers, "ndax"), f"ndax's breaker is not open: {breakers}")
    world.cli(
        "breaker", "reset", "ndax", "--approved-by", "drill lead", "--reason", "venue fixed"
    ).expect(0, "resetting ndax's circuit breaker (runbook step 2)")
    drill.note("ndax's circuit breaker was open (persisted): reset with `breaker reset ndax`")
    drill.lift_kill_switch("venue fixed, cooldown waived by the drill lead")
    drill.recover_gradually()


SCENARIO = Scenario(
    name="kill-switch-stuck",
    title="Kill switch won't deactivate",
    runbook="004 Scenario 4",
    kind=IncidentKind.CRITICAL,
    run=kill_switch_will_not_deactivate,
)


def breaker_open(breakers: dict[str, Any], exchange: str) -> bool:
    """Whether GET /breakers shows `exchange`'s breaker open (or half open: still refusing)."""
    state = str(breakers["exchanges"][exchange].get("state", ""))
    return state in ("open", "half_open")
