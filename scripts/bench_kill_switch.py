"""Benchmark: the kill switch in the real coordinator process, N paper bots resting orders.

Generates a config of N paper bots, every one the shipped kraken grid bot (levels 3, feed
volatility 0, so its limit orders rest and never fill), starts `python -m coordinator` on it
(one process configured with the largest N; a run for a smaller N starts the first N bots),
starts the bots through `POST /start`, waits until every one rests orders, then `--repeats`
times:

1. `POST /kill-switch {"action": "activate"}` from loopback (no token);
2. times, from just before the request is sent (time.monotonic(), which the coordinator's own
   probe uses too, so both clocks line up on one machine):
   (a) the gate closed, and the gate closed with the state durable: from the coordinator's
       `last_activation_timing` (GET /kill-switch), plus the time from the request to the call
       of `activate` (the request's wait for the event loop);
   (b) the HTTP answer;
   (c)/(d) every bot stopped and every order cancelled: the halt's completion in the same
       timing (a bot is stopped only once its orders are cancelled), checked against the halt's
       progress (no bot left running, no order open);
3. lifts the switch with `force_override` (admin token from data/admin.token), starts the bots
   again and waits until they rest orders again.

`--busy N` adds N bots of the shipped mix (half DCA buying every 2 s, half grid) at 1 s ticks,
orders flowing: at 1,000 bots the loop is busy (~80 % of a core), the "saturated" case.

So that 20+ activations in a row neither trip the global breaker nor wait out a cooldown, the
generated kill-switch.json allows 100 activations per minute and recovery-settings.json has a
cooldown of 0 minutes; the global risk limits are lifted (as `bench_paper_bots.py --unlimited`),
and so are the per-bot defaults of orders per minute and open orders.

    .venv/bin/python scripts/bench_kill_switch.py --bots 10,100,1000 --repeats 20 --busy 1000

Prints JSON; docs/benchmarks.md records the figures with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_paper_bots import make_config, percentile

TOKEN_ENVS = ("BOT_COORDINATOR_TOKEN", "BOT_COORDINATOR_ADMIN_TOKEN")


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib_of(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_grid_config(directory: Path, bots: int, tick: float) -> Path:
    """N copies of the shipped kraken grid bot that rest their orders, and a kill switch that
    can be activated many times in a row."""
    make_config(directory, bots, tick, unlimited=True)
    shipped = json.loads((directory / "bots.json").read_text())["bots"]
    grid = next(bot for bot in shipped if bot["strategy"]["name"] == "grid")
    entries = []
    for i in range(bots):
        entry = json.loads(json.dumps(grid))
        entry["name"] = f"grid-{i:04d}"
        entry["tick_interval_seconds"] = tick
        entry["strategy"]["params"]["levels"] = 3
        entry["feed"]["volatility_per_hour"] = 0
        entry["feed"]["seed"] = i + 1
        entries.append(entry)
    (directory / "bots.json").write_text(json.dumps({"version": 1, "bots": entries}))
    return allow_repeated_activations(directory)


def allow_repeated_activations(directory: Path, **triggers: object) -> Path:
    """Lift what 20+ activations in a row would run into: the per-bot order limits (6 orders
    per bot per activation: 60 a minute would refuse the ladders after ~10 activations), the
    activation-count breaker and the cooldown; `triggers` overrides kill-switch triggers."""
    limits = json.loads((directory / "bot-limits.json").read_text())
    limits["defaults"]["max_orders_per_minute"] = 10_000
    limits["defaults"]["max_open_orders"] = 1000
    (directory / "bot-limits.json").write_text(json.dumps(limits))
    kill = json.loads((directory / "kill-switch.json").read_text())
    kill["activation_limit"] = {"max_activations": 100, "window_minutes": 1}
    kill["triggers"].update(triggers)
    (directory / "kill-switch.json").write_text(json.dumps(kill))
    recovery = json.loads((directory / "recovery-settings.json").read_text())
    recovery["recovery"]["cooldown_period_minutes"] = 0
    (directory / "recovery-settings.json").write_text(json.dumps(recovery))
    return directory


class Process:
    """The real coordinator process on a generated config, and what a client needs to talk to it."""

    def __init__(self, root: Path, config_dir: Path) -> None:
        self.root = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if k not in TOKEN_ENVS}
        command = [sys.executable, "-m", "coordinator", "--port", str(self.port),
                   "--config-dir", str(config_dir), "--data-dir", str(root / "data"),
                   "--log-dir", str(root / "logs"), "--backup-dir", str(root / "backups")]
        self.log = (root / "coordinator.out").open("wb")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=environ)
        self.token = ""
        self.admin = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the coordinator exited with {self.proc.returncode}: "
                                 f"{(self.root / 'coordinator.out').read_text()[-2000:]}")
            try:
                async with session.get(self.base + "/status") as response:
                    if response.status == 200:
                        await response.read()
                        self.token = (self.root / "data" / "control.token").read_text().strip()
                        self.admin = (self.root / "data" / "admin.token").read_text().strip()
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise SystemExit("the coordinator did not answer within 90 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@contextmanager
def coordinator_process(config: Callable[[Path], Path]) -> Iterator[Process]:
    with tempfile.TemporaryDirectory(prefix="bench-process-") as scratch:
        root = Path(scratch)
        (root / "config").mkdir()
        process = Process(root, config(root / "config"))
        try:
            yield process
        except BaseException:
            process.stop()
            kept = Path(tempfile.gettempdir()) / f"bench-coordinator-{process.pid}.log"
            kept.write_bytes((root / "coordinator.out").read_bytes())
            print(f"the coordinator's output is kept in {kept}", file=sys.stderr)
            raise
        else:
            process.stop()


async def status(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(base + "/status") as response:
        data: dict[str, Any] = json.loads(await response.read())
        return data


async def post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], token: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.post(url, json=body, headers=headers) as response:
        return response.status, json.loads(await response.read())


async def start_all(session: aiohttp.ClientSession, process: Process, names: list[str]) -> float:
    """POST /start for every bot (64 at a time); seconds it took."""
    began = time.perf_counter()
    gate = asyncio.Semaphore(64)

    async def one(name: str) -> None:
        async with gate:
            code, body = await post(session, process.base + "/start", {"bot": name},
                                    process.token)
            if code != 200:
                raise SystemExit(f"POST /start {name}: {code} {body}")

    await asyncio.gather(*(one(name) for name in names))
    return time.perf_counter() - began


async def wait_resting(
    session: aiohttp.ClientSession,
    base: str,
    names: list[str] | None = None,
    within: float = 60.0,
    grid: bool = True,
) -> float:
    """Until every bot of `names` (default: all) runs, each with orders resting (`grid`) or
    with orders resting in all; seconds it took."""

    def ready(bot: dict[str, Any]) -> bool:
        return bool(bot["state"] == "running" and (bot["open_orders"] > 0 or not grid))

    async def chosen() -> list[dict[str, Any]]:
        async with session.get(base + "/status", params={"view": "summary"}) as response:
            bots: list[dict[str, Any]] = json.loads(await response.read())["bots"]
        return [b for b in bots if names is None or b["name"] in wanted]

    wanted = set(names or ())
    began = time.perf_counter()
    while time.perf_counter() - began < within:
        bots = await chosen()
        if all(ready(b) for b in bots) and sum(b["open_orders"] for b in bots) > 0:
            return time.perf_counter() - began
        await asyncio.sleep(0.1)
    bots = await chosen()
    lagging = [(b["name"], b["state"], b["open_orders"], b["last_refusal"]) for b in bots
               if not ready(b)]
    raise SystemExit(f"bots without resting orders after {within} s: {lagging[:5]} "
                     f"({len(lagging)} in all)")


async def kill_switch_state(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(base + "/kill-switch") as response:
        data: dict[str, Any] = json.loads(await response.read())
        return data


async def activation(session: aiohttp.ClientSession, process: Process) -> dict[str, Any]:
    """One activation, timed from just before the request is sent (time.monotonic(), the clock
    the coordinator's probe uses too, so the two line up on one machine):
    (a) the gate closed and the state durable, from the coordinator's own timing
    (`last_activation_timing`); (b) the HTTP answer, here; (c) every bot stopped and (d) every
    order cancelled: the halt's completion, from the coordinator's timing (a bot is stopped
    only once its orders are cancelled, so (c) = (d)). GET /kill-switch is polled every 20 ms
    only to know when the halt completed, and checked: no bot left running, no order open."""
    body = {"action": "activate", "reason": "bench"}
    sent = time.monotonic()
    code, reply = await post(session, process.base + "/kill-switch", body, None)
    answered = time.monotonic() - sent
    if code != 200 or reply.get("already_active"):
        raise SystemExit(f"activation answered {code}: {reply}")
    state = reply
    while state["halt"]["completed_at"] is None:
        if time.monotonic() - sent > 60:
            raise SystemExit(f"the halt did not complete within 60 s: {state['halt']}")
        await asyncio.sleep(0.02)
        state = await kill_switch_state(session, process.base)
    if state["halt"]["bots_not_stopped"] or state["halt"]["orders_open"]:
        raise SystemExit(f"the halt completed with bots or orders left: {state['halt']}")
    timing = state["last_activation_timing"]
    called = timing["called_monotonic"]
    offset = (called - sent) * 1000  # request sent -> activate called
    return {
        "to_activate_ms": offset,
        "a_gate_closed_ms": offset + timing["gate_closed_ms"],
        "a_durable_ms": offset + timing["durable_ms"],
        "answer_ms": answered * 1000,
        "halt_completed_ms": offset + timing["halt_completed_ms"],
        "halt_after_durable_ms": timing["halt_completed_ms"] - timing["durable_ms"],
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 0.50), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
        "min": round(min(values), 2),
    }


async def start_and_rest(
    session: aiohttp.ClientSession, process: Process, names: list[str], grid: bool
) -> float:
    began = time.perf_counter()
    await start_all(session, process, names)
    await wait_resting(session, process.base, names, within=60 + len(names) * 0.1, grid=grid)
    return time.perf_counter() - began


async def activations(
    session: aiohttp.ClientSession,
    process: Process,
    names: list[str],
    repeats: int,
    grid: bool,
) -> dict[str, Any]:
    """Start `names`, then `repeats` times: activate, time it, lift, start them again."""
    first_start = await start_and_rest(session, process, names, grid)
    await asyncio.sleep(2.0)  # every bot ticking at its own phase
    idle_before = cpu_seconds(process.pid)
    await asyncio.sleep(2.0)
    cpu_share = (cpu_seconds(process.pid) - idle_before) / 2.0
    runs: list[dict[str, Any]] = []
    resting: list[int] = []
    restarts: list[float] = []
    for n in range(repeats):
        resting.append(await open_orders(session, process.base, names))
        print(f"activation {n + 1} ({len(names)} bots, {resting[-1]} orders open)",
              file=sys.stderr)
        runs.append(await activation(session, process))
        code, reply = await post(
            session, process.base + "/kill-switch",
            {"action": "force_override", "reason": "bench", "approved_by": "bench"},
            process.admin,
        )
        if code != 200:
            raise SystemExit(f"force_override answered {code}: {reply}")
        if n + 1 < repeats:
            restarts.append(await start_and_rest(session, process, names, grid))
    return {
        "bots": len(names),
        "activations": len(runs),
        "orders_open_before_each_activation_min": min(resting),
        "coordinator_cpu_share_before_activations": round(cpu_share, 3),
        "request_to_activate_called_ms": summary([r["to_activate_ms"] for r in runs]),
        "a_gate_closed_ms": summary([r["a_gate_closed_ms"] for r in runs]),
        "a_gate_closed_and_durable_ms": summary([r["a_durable_ms"] for r in runs]),
        "b_http_answer_ms": summary([r["answer_ms"] for r in runs]),
        "c_d_every_bot_stopped_every_order_cancelled_ms": summary(
            [r["halt_completed_ms"] for r in runs]
        ),
        "start_all_seconds_first": round(first_start, 2),
        "restart_and_rest_again_seconds_p50": round(percentile(restarts, 0.5), 2)
        if restarts else None,
    }


async def open_orders(session: aiohttp.ClientSession, base: str, names: list[str]) -> int:
    async with session.get(base + "/status", params={"view": "summary"}) as response:
        bots = json.loads(await response.read())["bots"]
    wanted = set(names)
    return sum(b["open_orders"] for b in bots if b["name"] in wanted)


async def bench_counts(
    bot_counts: list[int], repeats: int, tick: float, repeats_at_1000: int | None = None
) -> list[dict[str, Any]]:
    """One coordinator process with max(bot_counts) grid bots configured; each run starts
    the first N of them (the others stay stopped)."""
    configured = max(bot_counts)
    results = []
    with coordinator_process(lambda d: make_grid_config(d, configured, tick)) as process:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await process.ready(session)
            names = [b["name"] for b in (await status(session, process.base))["bots"]]
            for bots in sorted(bot_counts):
                print(f"kill switch: {bots} grid bots, tick {tick} s", file=sys.stderr)
                times = repeats_at_1000 if bots >= 1000 and repeats_at_1000 else repeats
                result = await activations(session, process, names[:bots], times, grid=True)
                results.append({"tick_interval_seconds": tick, "bots_configured": configured,
                                **result, "coordinator_rss_mib": round(rss_mib_of(process.pid), 1)})
                await stop_all(session, process, names[:bots])
    return results


async def bench_busy(bots: int, repeats: int) -> dict[str, Any]:
    """The shipped mix (half DCA buying every 2 s, half grid), 1 s ticks, global limits lifted:
    at 1,000 bots the process runs at ~80 % of a core and its loop lags (docs/benchmarks.md)."""
    with coordinator_process(lambda d: make_mix_config(d, bots)) as process:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await process.ready(session)
            names = [b["name"] for b in (await status(session, process.base))["bots"]]
            print(f"kill switch: {bots} bots of the shipped mix (busy loop)", file=sys.stderr)
            result = await activations(session, process, names, repeats, grid=False)
            rss = rss_mib_of(process.pid)
    return {"mix": "shipped (dca + grid)", "tick_interval_seconds": 1.0, **result,
            "coordinator_rss_mib": round(rss, 1)}


def make_mix_config(directory: Path, bots: int) -> Path:
    make_config(directory, bots, 1.0, unlimited=True)
    # the DCA bots' spending is not a loss to stop
    return allow_repeated_activations(directory, max_daily_loss=10**9)


async def stop_all(session: aiohttp.ClientSession, process: Process, names: list[str]) -> None:
    gate = asyncio.Semaphore(64)

    async def one(name: str) -> None:
        async with gate:
            await post(session, process.base + "/stop", {"bot": name}, process.token)

    await asyncio.gather(*(one(name) for name in names))


async def run(
    bot_counts: list[int],
    repeats: int,
    tick: float,
    busy: int | None = None,
    repeats_at_1000: int | None = None,
) -> dict[str, Any]:
    """`repeats_at_1000`: fewer activations from 1,000 bots up (each restart re-places 6,000
    orders, ~7 s), so that `bench.py --all` fits in 5 minutes."""
    results = await bench_counts(bot_counts, repeats, tick, repeats_at_1000) if bot_counts else []
    busy_repeats = repeats_at_1000 if busy and busy >= 1000 and repeats_at_1000 else repeats
    busy_runs = [await bench_busy(busy, busy_repeats)] if busy else []
    return {"benchmark": "kill_switch", "runs": results, "busy_loop_runs": busy_runs,
            "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", default="10,100", help="comma-separated bot counts")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tick", type=float, default=1.0, help="tick interval of every bot")
    parser.add_argument("--busy", type=int, default=0,
                        help="also N bots of the shipped mix (orders flowing, a busy loop)")
    args = parser.parse_args()
    counts = [int(part) for part in args.bots.split(",") if part.strip()]
    print(json.dumps(asyncio.run(run(counts, args.repeats, args.tick, args.busy or None)),
                     indent=2))


if __name__ == "__main__":
    main()
