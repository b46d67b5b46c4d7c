"""Benchmarks of issue 12 (performance at scale), one entry point, one JSON document on stdout.

    .venv/bin/python scripts/bench.py --all             # every sub-benchmark but --soak, < 5 min
    .venv/bin/python scripts/bench.py --all --quick     # small N
    .venv/bin/python scripts/bench.py --kill-switch --status
    .venv/bin/python scripts/bench.py --soak            # 100 bots for 30 minutes (not in --all)

Sub-benchmarks (each a JSON object with its figures and the machine):

- `--kill-switch`: `scripts/bench_kill_switch.py` against the real coordinator process: N paper
  grid bots resting orders (N = 10, 100, 1,000; --quick: 10, 100), 20 activations each, and
  1,000 bots of the shipped mix with orders flowing (the busy loop; --quick: 100): (a) the gate
  closed and durable (the coordinator's own timing), (b) the HTTP answer, (c)/(d) every bot
  stopped and every order cancelled, p50/p99/max. Within --all, 5 activations at 1,000 bots.
- `--status`: the real coordinator process with 100 running paper bots (the shipped mix, global
  limits lifted): `GET /status`, `?view=summary`, `/bots/{name}`, `/health`, `/metrics`, 300
  sequential requests on one keep-alive connection (50 for /metrics) and 64 concurrent clients
  for 5 s, with the coordinator's CPU per request; then /status and /health at 2 bots.
- `--scale`: `scripts/bench_paper_bots.py --bots 1000 --seconds 30 --unlimited --warmup 5`
  (--quick: 100 bots, 10 s) in a process of its own.
- `--order-path`: `scripts/bench_order_path.py` (300 bots, one order in flight each, then 1,000
  orders/s) with group commit, and its ceiling without.
- `--soak`: 100 paper bots in this process for 30 minutes (`--soak-minutes`): RSS, open file
  handles (/proc/self/fd), the store's backlog, loop lag, ticks, every minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_kill_switch
import bench_paper_bots
from bench_kill_switch import (
    coordinator_process,
    cpu_seconds,
    machine,
    rss_mib_of,
    start_all,
    status,
)
from bench_paper_bots import make_config, percentile, rss_mib

HERE = Path(__file__).resolve().parent
WORKER_FLAG = "--paper-bots-worker"


def ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2) if values else 0.0,
    }


# -- scale and order path: bench_paper_bots in a process of its own ------------------------------


def paper_bots(arguments: list[str], lift_bot_limits: bool = False) -> dict[str, Any]:
    command = [sys.executable, str(HERE / "bench.py"), WORKER_FLAG]
    if lift_bot_limits:
        command.append("--lift-bot-limits")
    command += arguments
    print("running", " ".join(["bench_paper_bots.py", *arguments]), file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_paper_bots failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["loop_lag_warnings_over_20ms"] = done.stderr.count("loop lag")
    return result


def paper_bots_worker(argv: list[str]) -> None:
    """Run bench_paper_bots.main with its argv; --lift-bot-limits also lifts the per-bot
    defaults of bot-limits.json (orders per minute, open orders)."""
    if "--lift-bot-limits" in argv:
        argv = [a for a in argv if a != "--lift-bot-limits"]
        original = bench_paper_bots.make_config

        def lifted(directory: Path, bots: int, tick: float, unlimited: bool) -> Path:
            original(directory, bots, tick, unlimited)
            path = directory / "bot-limits.json"
            limits = json.loads(path.read_text())
            limits["defaults"]["max_orders_per_minute"] = 10_000
            limits["defaults"]["max_open_orders"] = 1000
            path.write_text(json.dumps(limits))
            return directory

        bench_paper_bots.make_config = lifted
    sys.argv = ["bench_paper_bots.py", *argv]
    bench_paper_bots.main()


def bench_scale(quick: bool) -> dict[str, Any]:
    bots, seconds = (100, 10) if quick else (1000, 30)
    arguments = ["--bots", str(bots), "--seconds", str(seconds), "--unlimited", "--warmup", "5"]
    result = paper_bots(arguments)
    return {
        "benchmark": "scale",
        "command": "scripts/bench_paper_bots.py " + " ".join(arguments),
        **result,
        "machine": machine(),
    }


def bench_order_path(quick: bool, within_all: bool = False) -> dict[str, Any]:
    """scripts/bench_order_path.py in a process of its own: with group commit, the ceiling and
    1,000 orders/s; without, the ceiling only (it cannot carry 1,000/s: its queue would grow
    for the whole run)."""
    seconds = "5" if quick or within_all else "10"
    runs = []
    for extra, label in ((["--group-commit-only"], "group commit"),
                         (["--no-group-commit", "--seconds", "5", "--rate", "0"],
                          "no group commit")):
        command = [sys.executable, str(HERE / "bench_order_path.py"), "--bots", "300",
                   "--seconds", seconds, "--rate", "1000", *extra]
        print("running", " ".join(command[1:]), f"({label})", file=sys.stderr)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"bench_order_path failed ({done.returncode}): {done.stderr[-2000:]}")
        runs.extend(json.loads(done.stdout)["runs"])
    return {
        "benchmark": "order_path",
        "command": f"scripts/bench_order_path.py --bots 300 --seconds {seconds} --rate 1000 "
        "--group-commit-only; ... --no-group-commit --seconds 5 --rate 0",
        "runs": runs,
        "machine": machine(),
    }


# -- /status, /health, /metrics against the real process -----------------------------------------


async def sequential(
    session: aiohttp.ClientSession, url: str, requests: int, pid: int
) -> dict[str, Any]:
    async with session.get(url) as response:  # warm
        await response.read()
    latencies: list[float] = []
    statuses: set[int] = set()
    size = 0
    cpu_before = cpu_seconds(pid)
    for _ in range(requests):
        began = time.perf_counter()
        async with session.get(url) as response:
            body = await response.read()
        latencies.append(time.perf_counter() - began)
        statuses.add(response.status)
        size = len(body)
    cpu = cpu_seconds(pid) - cpu_before
    return {
        "requests": requests,
        "statuses": sorted(statuses),
        "bytes": size,
        **ms(latencies),
        "coordinator_cpu_ms_per_request": round(cpu * 1000 / requests, 2),
    }


async def concurrent(url: str, clients: int, seconds: float, pid: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: set[int] = set()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                latencies.append(time.perf_counter() - began)
                statuses.add(response.status)

        cpu_before, own_before = cpu_seconds(pid), time.process_time()
        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - began
        cpu, own = cpu_seconds(pid) - cpu_before, time.process_time() - own_before
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / wall, 1),
        "statuses": sorted(statuses),
        **ms(latencies),
        "coordinator_cpu_share": round(cpu / wall, 2),
        "client_cpu_share": round(own / wall, 2),
    }


async def status_at(
    bots: int, requests: int, clients: int, seconds: float, every_view: bool = True
) -> dict[str, Any]:
    with coordinator_process(lambda d: make_config(d, bots, 1.0, unlimited=True)) as process:
        async with aiohttp.ClientSession() as session:
            await process.ready(session)
            names = [b["name"] for b in (await status(session, process.base))["bots"]]
            start_seconds = await start_all(session, process, names)
            await asyncio.sleep(5.0)  # every bot ticking, orders resting
            idle_before = cpu_seconds(process.pid)
            await asyncio.sleep(3.0)
            idle = (cpu_seconds(process.pid) - idle_before) / 3.0
            running = sum(b["state"] == "running" for b in (await status(session, process.base))
                          ["bots"])
            endpoints = {}
            paths = ["/status", "/health"]
            if every_view:
                paths += ["/status?view=summary", f"/bots/{names[0]}", "/metrics"]
            for path in paths:
                url = process.base + path
                # /metrics at 100 bots is ~40 ms a request: fewer, so --all stays in 5 minutes
                count = requests if path != "/metrics" else requests // 6
                endpoints[path] = {
                    "sequential": await sequential(session, url, count, process.pid),
                    "concurrent": await concurrent(url, clients, seconds, process.pid),
                }
            rss = rss_mib_of(process.pid)
    return {
        "bots": bots,
        "bots_running": running,
        "start_all_seconds": round(start_seconds, 2),
        "coordinator_cpu_share_without_requests": round(idle, 3),
        "coordinator_rss_mib": round(rss, 1),
        "endpoints": endpoints,
    }


async def bench_status(quick: bool) -> dict[str, Any]:
    requests, clients, seconds = 300, 64, 4.0
    runs = []
    for bots in (100, 2):
        print(f"status: {bots} bots", file=sys.stderr)
        runs.append(await status_at(bots, requests, clients, seconds, every_view=bots == 100))
    return {
        "benchmark": "status",
        "note": "aiohttp client in this process, keep-alive connections, over loopback; the "
        "client shares the machine's cores with the coordinator (client_cpu_share)",
        "runs": runs,
        "machine": machine(),
    }


# -- kill switch ---------------------------------------------------------------------------------


async def bench_kill(quick: bool, within_all: bool) -> dict[str, Any]:
    """In --all, 5 activations at 1,000 bots (each restart re-places 6,000 orders, ~7 s) so
    that --all fits in 5 minutes; --kill-switch alone does 20 at every N."""
    counts, busy = ([10, 100], 100) if quick else ([10, 100, 1000], 1000)
    at_1000 = 5 if within_all else None
    result = await bench_kill_switch.run(counts, 20, 1.0, busy, at_1000)
    command = (f"scripts/bench_kill_switch.py --bots {','.join(map(str, counts))} "
               f"--repeats 20 --busy {busy}")
    if at_1000:
        command += " (5 activations at 1,000 bots)"
    return {"command": command, **result}


# -- soak ----------------------------------------------------------------------------------------


def soak_config(directory: Path, bots: int) -> Path:
    """The shipped mix, global limits lifted, with money for 30 minutes and more: each DCA bot
    spends 25 CAD every 2 s (its 10,000 would last 13 minutes), and nothing the bots do by
    design trips the kill switch (the DCA half's fees and the market's drift are a "loss" of
    ~2,000 AUD in about 11 minutes): the soak measures the process, not the triggers."""
    make_config(directory, bots, 1.0, unlimited=True)
    listing = json.loads((directory / "bots.json").read_text())
    for entry in listing["bots"]:
        balances = entry["paper"]["initial_balances"]
        for asset in balances:
            balances[asset] = balances[asset] * 100
    (directory / "bots.json").write_text(json.dumps(listing))
    kill = json.loads((directory / "kill-switch.json").read_text())
    kill["triggers"]["max_daily_loss"] = 10**9
    kill["triggers"]["max_drawdown_pct"] = 100
    (directory / "kill-switch.json").write_text(json.dumps(kill))
    limits = json.loads((directory / "bot-limits.json").read_text())
    limits["defaults"]["max_daily_loss"] = 10**9
    (directory / "bot-limits.json").write_text(json.dumps(limits))
    return directory


async def soak_run(
    bots: int, minutes: float, every: float, warmup_minutes: float = 10.0
) -> dict[str, Any]:
    from coordinator.config import load_config
    from coordinator.runtime import Coordinator

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        root = Path(tmp)
        (root / "config").mkdir()
        (root / "data").mkdir()
        config = await asyncio.to_thread(
            lambda: load_config(soak_config(root / "config", bots))
        )
        coordinator = await Coordinator.open(config, root / "data")
        await asyncio.gather(
            *(coordinator.supervisor.start(name) for name in coordinator.supervisor.runners)
        )
        stop = asyncio.Event()
        lags: list[float] = []
        sampler = asyncio.create_task(bench_paper_bots.sample_loop_lag(stop, lags))
        samples = []
        began = time.perf_counter()
        cpu_before = time.process_time()
        while time.perf_counter() - began < minutes * 60:
            await asyncio.sleep(every)
            window, lags[:] = list(lags), []
            now = coordinator.status()
            samples.append({
                "minute": round((time.perf_counter() - began) / 60, 2),
                "rss_mib": round(rss_mib(), 1),
                "open_fds": len(os.listdir("/proc/self/fd")),
                "store_backlog": coordinator.store.backlog,
                "store_jobs": now["store"]["jobs"],
                "ticks_total": sum(b["ticks"] for b in now["bots"]),
                "orders_total": sum(b["orders"] for b in now["bots"]),
                "loop_lag_ms_p99": round(percentile(window, 0.99) * 1000, 2),
                "loop_lag_ms_max": round(max(window) * 1000, 2) if window else 0.0,
            })
            print(f"soak: {samples[-1]}", file=sys.stderr)
        wall = time.perf_counter() - began
        cpu = time.process_time() - cpu_before
        stop.set()
        await sampler
        states = sorted({b["state"] for b in coordinator.status()["bots"]})
        kill_switch_active = coordinator.kill_switch.active
        await coordinator.close()
    warm = samples[1:] or samples
    rss_growth = (samples[-1]["rss_mib"] - warm[0]["rss_mib"]) / warm[0]["rss_mib"]
    # Warmed up: each paper account holds its most (200 closed orders, 200 trades: a DCA bot
    # gets there in ~7 minutes) and the breakers' windows are full.
    settled = [x for x in samples if x["minute"] >= warmup_minutes] or samples[-1:]
    settled_growth = (samples[-1]["rss_mib"] - settled[0]["rss_mib"]) / settled[0]["rss_mib"]
    return {
        "bots": bots,
        "warmup_minutes": warmup_minutes,
        "rss_growth_after_warmup_percent": round(100 * settled_growth, 2),
        "rss_mib_after_warmup_first_last": [settled[0]["rss_mib"], samples[-1]["rss_mib"]],
        "minutes": round(wall / 60, 1),
        "bot_states_at_end": states,
        "kill_switch_active_at_end": kill_switch_active,
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "rss_growth_after_first_sample_percent": round(100 * rss_growth, 2),
        "open_fds_first_last": [warm[0]["open_fds"], samples[-1]["open_fds"]],
        "store_backlog_max": max(s["store_backlog"] for s in samples),
        "loop_lag_ms_p99_median_of_samples": round(
            statistics.median(s["loop_lag_ms_p99"] for s in samples), 2
        ),
        "samples": samples,
    }


def bench_soak(minutes: float, every: float) -> dict[str, Any]:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(soak_run(100, minutes, every))
    return {"benchmark": "soak", **result, "machine": machine()}


# -- entry point ---------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == WORKER_FLAG:
        paper_bots_worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-switch", action="store_true")
    parser.add_argument("--status", action="store_true")
    parser.add_argument("--order-path", action="store_true")
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--soak", action="store_true", help="30 minutes; not in --all")
    parser.add_argument("--all", action="store_true", help="every sub-benchmark but --soak")
    parser.add_argument("--quick", action="store_true", help="small N, short runs")
    parser.add_argument("--soak-minutes", type=float, default=30.0)
    parser.add_argument("--soak-every", type=float, default=60.0, help="seconds between samples")
    args = parser.parse_args()
    chosen = [name for name in ("scale", "order_path", "status", "kill_switch", "soak")
              if getattr(args, name) or (args.all and name != "soak")]
    if not chosen:
        parser.error("say which: --kill-switch --status --order-path --scale --soak or --all")
    began = time.perf_counter()
    results: dict[str, Any] = {}
    for name in chosen:
        started = time.perf_counter()
        try:
            results[name] = run_one(name, args)
        except (Exception, SystemExit) as exc:  # report it and go on with the others
            print(f"{name} failed: {exc!r}", file=sys.stderr)
            results[name] = {"benchmark": name, "error": repr(exc), "machine": machine()}
        results[name]["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({
        "quick": args.quick,
        "benchmarks": chosen,
        "elapsed_seconds": round(time.perf_counter() - began, 1),
        "machine": machine(),
        "results": results,
    }, indent=2))


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "scale":
        return bench_scale(args.quick)
    if name == "order_path":
        return bench_order_path(args.quick, args.all)
    if name == "status":
        return asyncio.run(bench_status(args.quick))
    if name == "kill_switch":
        return asyncio.run(bench_kill(args.quick, args.all))
    return bench_soak(args.soak_minutes, args.soak_every)


if __name__ == "__main__":
    main()
