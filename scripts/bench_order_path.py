"""Benchmark: the order path's ceiling and per-order latency, in one coordinator process.

Every order goes the whole way an order goes: the gates (kill switch, breakers, the bot's risk
limits and the global ones), the intent journaled (synchronous=FULL), the paper exchange's fill,
the fill and the position journaled, the book changed. No strategy and no tick loop: the bots
are not started, so what is measured is the path, not what the strategies ask of it.

- Ceiling (closed loop): each of `--bots` bots has one order in flight at all times (alternate
  small market buys and sells, so the position stays near zero) for `--seconds`: durable orders
  per second, and each order's latency.
- Latency at a rate (open loop): orders issued at `--rate` per second, round robin over the
  bots, for `--seconds`: each order's time from issue to the gateway's answer (its queueing
  included), p50/p99/max.

Both with group commit (512 jobs per commit, the default) and without (`--no-group-commit`:
one job per commit). At the end every order is counted in the journal: an order the benchmark
counted that is not there is a failure, not a figure.

    .venv/bin/python scripts/bench_order_path.py --bots 100 --seconds 10 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_paper_bots import make_config, percentile

from bots.gateway import OrderGateway
from bots.models import OrderIntent, OrderType, Side
from coordinator.config import load_config
from coordinator.runtime import Coordinator
from coordinator.store.sqlite import MAX_BATCH_JOBS

AMOUNT = Decimal("0.0001")


def lift_limits(directory: Path, bots: int) -> Path:
    """The shipped config for `bots` paper bots with every order-count limit out of the way
    (the figures are the path's, not the limits' refusals)."""
    make_config(directory, bots, 1.0, unlimited=True)
    path = directory / "bot-limits.json"
    limits = json.loads(path.read_text())
    # The schema's maxima: 100,000 a minute in all (a 10 s ceiling phase at 5,000/s is 50,000).
    limits["global"]["max_orders_per_minute"] = 100_000
    limits["defaults"]["max_orders_per_minute"] = 10_000
    limits["defaults"]["max_open_orders"] = 1000
    path.write_text(json.dumps(limits))
    return directory


def ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000, 3),
        "p99_ms": round(percentile(values, 0.99) * 1000, 3),
        "max_ms": round(max(values) * 1000, 3) if values else 0.0,
    }


class Orders:
    """Alternate buys and sells per bot; count every outcome."""

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        self.latencies: list[float] = []
        self._sides: dict[str, itertools.cycle[Side]] = {}

    async def one(self, gateway: OrderGateway) -> None:
        sides = self._sides.setdefault(gateway.identity.bot, itertools.cycle((Side.BUY, Side.SELL)))
        intent = OrderIntent(gateway.identity.symbol, next(sides), OrderType.MARKET, AMOUNT)
        began = time.perf_counter()
        result = await gateway.submit(intent)
        self.latencies.append(time.perf_counter() - began)
        self.outcomes[result.outcome] = self.outcomes.get(result.outcome, 0) + 1
        if result.outcome == "refused":
            self.refusals[result.code] = self.refusals.get(result.code, 0) + 1


async def ready_gateways(coordinator: Coordinator) -> list[OrderGateway]:
    gateways = []
    for runner in coordinator.supervisor.runners.values():
        gateway = runner.gateway()
        await gateway.sync(await runner.parts.feed.snapshot())  # a price to value orders at
        gateways.append(gateway)
    return gateways


async def closed_loop(gateways: list[OrderGateway], seconds: float) -> dict[str, Any]:
    orders = Orders()
    deadline = time.perf_counter() + seconds

    async def keep_one_in_flight(gateway: OrderGateway) -> None:
        while time.perf_counter() < deadline:
            await orders.one(gateway)

    cpu_before, loop_before = time.process_time(), time.thread_time()
    began = time.perf_counter()
    await asyncio.gather(*(keep_one_in_flight(g) for g in gateways))
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu_before
    loop_cpu = time.thread_time() - loop_before
    sent = orders.outcomes.get("sent", 0)
    return {
        "in_flight": len(gateways),
        "seconds": round(wall, 2),
        "orders": len(orders.latencies),
        "outcomes": orders.outcomes,
        "refusals": orders.refusals,
        "durable_orders_per_second": round(sent / wall, 1),
        "per_order": ms(orders.latencies),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "cpu_ms_per_order": round(1000 * cpu / max(1, len(orders.latencies)), 3),
        "loop_thread_cpu_ms_per_order": round(1000 * loop_cpu / max(1, len(orders.latencies)), 3),
    }


async def open_loop(gateways: list[OrderGateway], rate: float, seconds: float) -> dict[str, Any]:
    """Issue orders at `rate` per second from a clock, not from the answers: a slow order
    queues the next ones behind it, and their latency shows it."""
    orders = Orders()
    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * seconds)
    cpu_before, loop_before = time.process_time(), time.thread_time()
    began = time.perf_counter()
    for n, gateway in zip(range(total), itertools.cycle(gateways), strict=False):
        due = began + n / rate
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        task = asyncio.create_task(orders.one(gateway))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    issued = time.perf_counter() - began
    await asyncio.gather(*tasks)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu_before
    loop_cpu = time.thread_time() - loop_before
    return {
        "rate_asked": rate,
        "rate_issued": round(total / issued, 1),
        "seconds": round(wall, 2),
        "orders": len(orders.latencies),
        "outcomes": orders.outcomes,
        "refusals": orders.refusals,
        "per_order": ms(orders.latencies),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "loop_thread_cpu_percent": round(100 * loop_cpu / wall, 1),
    }


async def journaled_orders(coordinator: Coordinator) -> int:
    row = await coordinator.store.fetch_one("SELECT COUNT(*) FROM orders")
    return int(row[0]) if row else 0


async def one_run(args: argparse.Namespace, group_commit: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-orders-") as tmp:
        root = Path(tmp)
        (root / "config").mkdir()
        (root / "data").mkdir()
        directory = root / "config"
        config = await asyncio.to_thread(lambda: load_config(lift_limits(directory, args.bots)))
        coordinator = await Coordinator.open(
            config, root / "data", max_batch_jobs=MAX_BATCH_JOBS if group_commit else 1
        )
        try:
            gateways = await ready_gateways(coordinator)
            before = coordinator.store.stats.as_dict()
            ceiling = await closed_loop(gateways, args.seconds)
            middle = coordinator.store.stats.as_dict()
            at_rate: dict[str, Any] = {"outcomes": {}}
            if args.rate > 0:
                at_rate = await open_loop(gateways, args.rate, args.seconds)
            after = coordinator.store.stats.as_dict()
            sent = ceiling["outcomes"].get("sent", 0) + at_rate["outcomes"].get("sent", 0)
            counted = sum(ceiling["outcomes"].values()) + sum(at_rate["outcomes"].values())
            in_journal = await journaled_orders(coordinator)
        finally:
            await coordinator.close()

    def per_commit(a: dict[str, Any], b: dict[str, Any]) -> float:
        commits = b["commits"] - a["commits"]
        return round((b["jobs"] - a["jobs"]) / commits, 1) if commits else 0.0

    ceiling["jobs_per_commit"] = per_commit(before, middle)
    if args.rate > 0:
        at_rate["jobs_per_commit"] = per_commit(middle, after)
    if in_journal != counted:
        raise SystemExit(f"{counted} orders submitted but {in_journal} in the journal")
    return {
        "group_commit": group_commit,
        "ceiling": ceiling,
        "at_rate": at_rate if args.rate > 0 else None,
        "orders_sent": sent,
        "orders_in_journal": in_journal,
    }


def machine() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "cores": os.cpu_count(), "loop": "uvloop"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=100, help="bots, one order in flight each")
    parser.add_argument("--seconds", type=float, default=10.0, help="each phase's length")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="open loop: orders/s (0: no open loop)"
    )
    parser.add_argument(
        "--no-group-commit", action="store_true", help="only the run with one job per commit"
    )
    parser.add_argument(
        "--group-commit-only", action="store_true", help="only the run with group commit"
    )
    args = parser.parse_args()
    modes = [not args.no_group_commit] if args.no_group_commit or args.group_commit_only else [
        True, False
    ]
    runs = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for group_commit in modes:
            print(f"order path: group commit {group_commit}", file=sys.stderr)
            runs.append(runner.run(one_run(args, group_commit)))
    print(json.dumps({
        "benchmark": "order_path",
        "command": "scripts/bench_order_path.py " + " ".join(sys.argv[1:]),
        "bots": args.bots,
        "runs": runs,
        "machine": machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
