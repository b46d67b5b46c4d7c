"""Benchmark: N paper bots in one coordinator process.

Runs the real coordinator (store, supervisor, gateways, paper exchanges, offline feeds) in this
process on uvloop for a fixed time and measures what the issue asks for: that 100 bots fit in one
process, that the event loop is not blocked (loop lag), that group commit batches the bots'
writes (jobs per commit), that a safety write is not queued behind order writes (its latency
under load), memory and CPU, and how long a clean shutdown takes.

    .venv/bin/python scripts/bench_paper_bots.py --bots 100 --seconds 30
    .venv/bin/python scripts/bench_paper_bots.py --bots 100 --seconds 30 --no-group-commit

Results are printed as JSON; record them in docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from coordinator.config import CONFIG_FILES, embedded_config_dir, load_config
from coordinator.runtime import Coordinator
from coordinator.store.sqlite import Priority


def make_config(directory: Path, bots: int, tick: float, unlimited: bool) -> Path:
    source = embedded_config_dir()
    template = json.loads((source / "bots.json").read_text())["bots"]
    names = [f"{template[i % len(template)]['name']}-{i:03d}" for i in range(bots)]
    for name in CONFIG_FILES:
        if name == "bots.json":
            continue
        data = json.loads((source / name).read_text())
        if name == "kill-switch.json" and "execution_throttle" in data:
            # The shipped per-bot limits, for each copy of the shipped bot they name.
            throttle = data["execution_throttle"]
            own = throttle.get("bots", {})
            throttle["bots"] = {n: own[n.rsplit("-", 1)[0]] for n in names
                                if n.rsplit("-", 1)[0] in own}
            if unlimited:  # a DCA buying every 2 s executes 30 buys a minute
                del data["execution_throttle"]
        if name == "bot-limits.json":
            data["bots"] = {}
            if unlimited:  # measure the order path, not the risk limits' refusals
                data["global"]["max_orders_per_minute"] = 100_000
                data["global"]["max_concurrent_positions"] = 1000
                data["global"]["max_total_exposure"] = 10**9
        (directory / name).write_text(json.dumps(data))
    entries = []
    for i in range(bots):
        entry = json.loads(json.dumps(template[i % len(template)]))
        entry["name"] = names[i]
        entry["tick_interval_seconds"] = tick
        entry["feed"]["seed"] = i + 1
        if entry["strategy"]["name"] == "dca":
            entry["strategy"]["params"]["interval_seconds"] = tick * 2
        entries.append(entry)
    (directory / "bots.json").write_text(json.dumps({"version": 1, "bots": entries}))
    return directory


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sample_loop_lag(stop: asyncio.Event, lags: list[float], period: float = 0.01) -> None:
    """How late a 10 ms sleep wakes up: the time the loop spent on something else.

    perf_counter, not loop.time(): uvloop's clock has millisecond resolution."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(period)
        lags.append(max(0.0, time.perf_counter() - before - period))
        if lags[-1] > 0.02:
            print(f"loop lag {lags[-1] * 1000:.1f} ms at sample {len(lags)}", file=sys.stderr)


async def sample_write_latency(
    coordinator: Coordinator, stop: asyncio.Event, priority: Priority, out: list[float]
) -> None:
    journal = coordinator.journal
    while not stop.is_set():
        began = time.perf_counter()
        await journal.audit(
            actor="bench",
            action="bench.probe",
            result="ok",
            at=datetime.now(UTC),
            priority=priority,
        )
        out.append(time.perf_counter() - began)
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        (root / "config").mkdir()
        (root / "data").mkdir()
        config = await asyncio.to_thread(
            lambda: load_config(make_config(root / "config", args.bots, args.tick, args.unlimited))
        )
        rss_before = rss_mib()
        opened = time.perf_counter()
        coordinator = await Coordinator.open(
            config, root / "data", max_batch_jobs=1 if args.no_group_commit else 512
        )
        open_seconds = time.perf_counter() - opened
        started = time.perf_counter()
        await asyncio.gather(
            *(coordinator.supervisor.start(name) for name in coordinator.supervisor.runners)
        )
        start_seconds = time.perf_counter() - started
        ticks_at_start = sum(r.stats.ticks for r in coordinator.supervisor.runners.values())
        if args.warmup:
            await asyncio.sleep(args.warmup)  # every bot past its first tick, at its phase
        ticks_before = {
            name: r.stats.ticks for name, r in coordinator.supervisor.runners.items()
        }

        stop = asyncio.Event()
        lags: list[float] = []
        safety_latency: list[float] = []
        normal_latency: list[float] = []
        samplers = [
            asyncio.create_task(sample_loop_lag(stop, lags)),
            asyncio.create_task(
                sample_write_latency(coordinator, stop, Priority.SAFETY, safety_latency)
            ),
            asyncio.create_task(
                sample_write_latency(coordinator, stop, Priority.NORMAL, normal_latency)
            ),
        ]
        cpu_before = time.process_time()
        wall_before = time.perf_counter()
        stats_before = coordinator.store.stats.as_dict()
        await asyncio.sleep(args.seconds)
        wall = time.perf_counter() - wall_before
        cpu = time.process_time() - cpu_before
        stop.set()
        await asyncio.gather(*samplers)
        stats = coordinator.store.stats.as_dict()
        status = coordinator.status()
        states = {b["state"] for b in status["bots"]}
        ticks = [b["ticks"] - ticks_before[b["name"]] for b in status["bots"]]
        rss_running = rss_mib()

        burst = await measure_safety_write_behind_backlog(coordinator, args.burst)

        closing = time.perf_counter()
        await coordinator.close()
        close_seconds = time.perf_counter() - closing

        jobs = stats["jobs"] - stats_before["jobs"]
        commits = stats["commits"] - stats_before["commits"]
        return {
            "bots": args.bots,
            "tick_interval_seconds": args.tick,
            "seconds": round(wall, 1),
            "group_commit": not args.no_group_commit,
            "bot_states": sorted(states),
            "restarts": sum(b["restarts"] for b in status["bots"]),
            "warmup_seconds": args.warmup,
        "ticks_during_warmup": sum(ticks_before.values()) - ticks_at_start,
        "ticks_total": sum(ticks),
            "ticks_per_bot_min": min(ticks),
            "ticks_per_bot_expected": round(args.seconds / args.tick),
            "orders_total": sum(b["orders"] for b in status["bots"]),
            "refusals_total": sum(sum(b["refusals"].values()) for b in status["bots"]),
            "global_limits_lifted": args.unlimited,
            "fills_total": sum(b["fills"] for b in status["bots"]),
            "store_jobs": jobs,
            "store_commits": commits,
            "jobs_per_commit": round(jobs / commits, 2) if commits else 0,
            "largest_batch": stats["largest_batch"],
            "loop_lag_ms_p50": round(percentile(lags, 0.50) * 1000, 2),
            "loop_lag_ms_p99": round(percentile(lags, 0.99) * 1000, 2),
            "loop_lag_ms_max": round(max(lags) * 1000, 2) if lags else 0,
            "safety_write_ms_p50": round(statistics.median(safety_latency) * 1000, 2),
            "safety_write_ms_p99": round(percentile(safety_latency, 0.99) * 1000, 2),
            "normal_write_ms_p50": round(statistics.median(normal_latency) * 1000, 2),
            "normal_write_ms_p99": round(percentile(normal_latency, 0.99) * 1000, 2),
            **burst,
            "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
            "rss_mib_before_open": round(rss_before, 1),
            "rss_mib_running": round(rss_running, 1),
            "open_seconds": round(open_seconds, 2),
            "start_all_seconds": round(start_seconds, 2),
            "close_seconds": round(close_seconds, 2),
            "python": sys.version.split()[0],
            "cores": os.cpu_count(),
        }


async def measure_safety_write_behind_backlog(
    coordinator: Coordinator, jobs: int
) -> dict[str, Any]:
    """Queue `jobs` order-sized writes at once, then one safety write: how long does the safety
    write take, against how long the backlog takes to drain?"""
    store = coordinator.store
    await store.write([("CREATE TABLE IF NOT EXISTS bench_burst (n INTEGER, pad TEXT)", ())])
    began = time.perf_counter()
    backlog = [
        asyncio.ensure_future(
            store.write([("INSERT INTO bench_burst VALUES (?, ?)", (i, "x" * 200))])
        )
        for i in range(jobs)
    ]
    await asyncio.sleep(0)  # let them queue
    safety_began = time.perf_counter()
    await coordinator.journal.audit(
        actor="bench", action="bench.safety_probe", result="ok", at=datetime.now(UTC)
    )
    safety_ms = (time.perf_counter() - safety_began) * 1000
    await asyncio.gather(*backlog)
    drain_ms = (time.perf_counter() - began) * 1000
    return {
        "burst_backlog_jobs": jobs,
        "burst_backlog_drain_ms": round(drain_ms, 1),
        "burst_safety_write_ms": round(safety_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--tick", type=float, default=1.0, help="tick interval of every bot")
    parser.add_argument(
        "--warmup", type=float, default=0.0,
        help="seconds between starting every bot and measuring (ticks, lag, writes)",
    )
    parser.add_argument(
        "--no-group-commit",
        action="store_true",
        help="commit every write on its own, to measure what group commit saves",
    )
    parser.add_argument(
        "--unlimited",
        action="store_true",
        help="lift the global order-rate, position and exposure limits (measure the order path)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=5000,
        help="order writes queued at once for the safety-lane measurement",
    )
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
