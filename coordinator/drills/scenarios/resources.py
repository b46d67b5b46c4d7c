"""Runbook 004 Scenario 7, "System resource exhaustion", on the running coordinator's own
limits (prlimit on its pid, so no real disk fills and nothing else on the machine is touched):

- disk full: its file size limit is set just above its largest file, so the journal's next
  writes fail as on a full disk. Nothing may be sent whose intent could not be journaled; the
  bots stop; the operator frees space (lifts the limit), restarts, verifies, recovers.
- too many open files: its open-file limit is set at its lowest free descriptor, so it can open
  nothing (no control-plane connection, no file). The operator sees the control plane stop
  answering, stops the process (Ctrl-C; kill -9 if that hangs), raises the limit (the new
  process starts with the shell's), verifies and recovers.
"""

from __future__ import annotations

import os
import resource
import time

from coordinator.drills.harness import DrillFailed, DrillWorld, wait_for
from coordinator.drills.scenario import Drill, Scenario
from coordinator.incidents.model import IncidentKind

HEADROOM = 16 * 1024  # bytes the disk "has left" when it fills


def _largest_file(world: DrillWorld) -> int:
    files = [*world.data_dir.iterdir(), *world.log_dir.iterdir()]
    return max(path.stat().st_size for path in files if path.is_file())


def _health(world: DrillWorld) -> int | None:
    """GET /health's status code; None when it does not answer."""
    try:
        return world.request("GET", "/health", timeout=2)[0]
    except OSError:
        return None


def _stop(drill: Drill, why: str) -> None:
    """Stop the coordinator: Ctrl-C, and kill -9 when that does not end it in 15 s."""
    world = drill.world
    try:
        code = world.stop(within=15)
        drill.step(f"stopped the coordinator with Ctrl-C (exit {code}): {why}")
    except DrillFailed:
        world.kill()
        drill.step(f"Ctrl-C did not stop it within 15 s: kill -9 ({why})")


def _restart_after(drill: Drill, why: str) -> None:
    """Verify the journal, start the coordinator again, lift the kill switch if the restart
    finds it on."""
    world = drill.world
    world.cli("--verify-data").expect(0, "the journal verifies before the restart")
    drill.note("--verify-data: clean before the restart")
    world.start_ready()
    if world.get("/status")["kill_switch_active"]:
        drill.lift_kill_switch(f"{why}; journal verified")


def disk_full(drill: Drill) -> None:
    world = drill.world
    drill.boot()
    soft, hard = resource.prlimit(world.pid, resource.RLIMIT_FSIZE)
    drill.mark("injected")
    resource.prlimit(world.pid, resource.RLIMIT_FSIZE, (_largest_file(world) + HEADROOM, hard))
    drill.step("fault: the disk fills (the coordinator's file size limit)")
    wait_for(lambda: _health(world) == 503, 20, "GET /health to answer 503 unhealthy")
    drill.mark("detected")
    status, answer = world.request(
        "POST", "/kill-switch", {"action": "activate", "reason": "disk full"}
    )
    drill.check(
        status == 200 or (status == 503 and answer["error"]["code"] == "not_durable"),
        f"the kill switch on a full disk answered {status}: {answer}",
    )
    drill.step(f"kill switch activated on a full disk: {status} {answer.get('error', '')}")
    drill.check(world.get("/status")["kill_switch_active"], f"the switch is off: {answer}")
    fills = sum(bot["fills"] for bot in world.bots().values())
    time.sleep(0.5)  # ten ticks
    after = sum(bot["fills"] for bot in world.bots().values())
    drill.check(after == fills, f"{after - fills} fills after the kill switch on a full disk")
    drill.mark("responded")
    drill.step("GET /health 503; the kill switch is on and nothing trades")
    log = (world.log_dir / "bot-coordinator.log").read_text(encoding="utf-8", errors="replace")
    drill.check("disk I/O error" in log or "disk is full" in log, "the log names no disk error")
    resource.prlimit(world.pid, resource.RLIMIT_FSIZE, (soft, hard))
    drill.step("freed space (the limit lifted); the log names the failed writes")
    _stop(drill, "the disk was full")
    _restart_after(drill, "the disk was full")
    drill.open_incident("the disk filled: journal writes failed, every bot stopped")
    drill.recover_gradually()


def _lowest_free_descriptor(pid: int) -> int:
    used = {int(name) for name in os.listdir(f"/proc/{pid}/fd")}
    return next(n for n in range(len(used) + 1) if n not in used)


def too_many_open_files(drill: Drill) -> None:
    world = drill.world
    drill.boot()
    soft, hard = resource.prlimit(world.pid, resource.RLIMIT_NOFILE)
    drill.mark("injected")
    # No new descriptor below the limit, ever: 3 (stdin, stdout and stderr are open). The
    # lowest free one was used before, but a descriptor closed after (a finished request)
    # let the next connection in, and the drill waited in vain (seen under load in CI).
    in_use = len(os.listdir(f"/proc/{world.pid}/fd"))
    limit = min(_lowest_free_descriptor(world.pid), 3)
    resource.prlimit(world.pid, resource.RLIMIT_NOFILE, (limit, hard))
    drill.step(f"fault: the coordinator may open no more files ({in_use} open, limit {limit})")
    wait_for(lambda: _health(world) is None, 20, "the control plane to stop answering")
    drill.mark("detected")
    drill.step("GET /health does not answer (accept: too many open files)")
    _stop(drill, "too many open files")
    drill.mark("responded")
    _restart_after(drill, "too many open files")
    limit_now = resource.prlimit(world.pid, resource.RLIMIT_NOFILE)[0]
    drill.check(limit_now == soft, f"the new process has an open-file limit of {limit_now}")
    drill.open_incident("the coordinator ran out of file descriptors; its API stopped answering")
    drill.note(f"restarted with the shell's open-file limit ({soft}; `ulimit -n`)")
    drill.recover_gradually()


DISK_FULL = Scenario(
    name="disk-full", title="Resource exhaustion: disk full", runbook="004 Scenario 7",
    kind=IncidentKind.CRITICAL, run=disk_full,
)  # fmt: skip
OPEN_FILES = Scenario(
    name="too-many-open-files", title="Resource exhaustion: too many open files",
    runbook="004 Scenario 7", kind=IncidentKind.CRITICAL, run=too_many_open_files,
)  # fmt: skip
