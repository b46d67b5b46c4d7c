"""Benchmark: the kill switch in the real coordinator process, N paper grid bots resting orders.

Generates a config of N paper bots, every one the shipped kraken grid bot (levels 3, feed
volatility 0, so its limit orders rest and never fill), starts `python -m coordinator` on it,
starts every bot through `POST /start`, waits until every bot rests orders (`GET /status`:
open_orders > 0 for every bot), then repeats `--repeats` times:

1. `POST /kill-switch {"action": "activate"}` from loopback (no token), while a second client
   polls `GET /status` back to back (a 2 ms pause between polls) from the moment of the request;
2. times, from just before the request is sent:
   (b) the HTTP answer;
   (c) the first poll whose answer shows every bot `stopped`;
   (d) the first poll whose answer shows `open_orders` 0 for every bot;
   (c) and (d) are taken when that poll's answer is in hand, so they carry up to one /status
   round trip of error (reported as `status_poll_ms_p50`);
3. lifts the switch with `force_override` (admin token from data/admin.token), starts every bot
   again and waits until every bot rests orders again.

(a), the gate closed and the state durable, happens inside the process between two awaits and is
not visible from outside: the reply (b) comes after it, so (b) is an upper bound of (a) today.

So that 20+ activations in a row neither trip the global breaker nor wait out a cooldown, the
generated kill-switch.json allows 100 activations per minute and recovery-settings.json has a
cooldown of 0 minutes; the global risk limits are lifted (as `bench_paper_bots.py --unlimited`),
and so are the per-bot defaults of orders per minute and open orders.

    .venv/bin/python scripts/bench_kill_switch.py --bots 10,100,1000 --repeats 20
    .venv/bin/python scripts/bench_kill_switch.py --bots 100 --tick 0.05      # busier loop

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
    # 6 orders per bot per activation: the per-bot default of 60 orders a minute would refuse
    # the ladders after ~10 activations in a minute (and see the report on what that did).
    limits = json.loads((directory / "bot-limits.json").read_text())
    limits["defaults"]["max_orders_per_minute"] = 10_000
    limits["defaults"]["max_open_orders"] = 1000
    (directory / "bot-limits.json").write_text(json.dumps(limits))
    kill = json.loads((directory / "kill-switch.json").read_text())
    kill["activation_limit"] = {"max_activations": 100, "window_minutes": 1}
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
    """POST /start for every bot (16 at a time); seconds it took."""
    began = time.perf_counter()
    gate = asyncio.Semaphore(16)

    async def one(name: str) -> None:
        async with gate:
            code, body = await post(session, process.base + "/start", {"bot": name},
                                    process.token)
            if code != 200:
                raise SystemExit(f"POST /start {name}: {code} {body}")

    await asyncio.gather(*(one(name) for name in names))
    return time.perf_counter() - began


async def wait_resting(session: aiohttp.ClientSession, base: str, within: float) -> float:
    """Until every bot runs with orders resting; seconds it took."""
    began = time.perf_counter()
    while time.perf_counter() - began < within:
        bots = (await status(session, base))["bots"]
        if all(b["state"] == "running" and b["open_orders"] > 0 for b in bots):
            return time.perf_counter() - began
        await asyncio.sleep(0.1)
    bots = (await status(session, base))["bots"]
    lagging = [(b["name"], b["state"], b["open_orders"], b["last_refusal"]) for b in bots
               if not (b["state"] == "running" and b["open_orders"] > 0)]
    raise SystemExit(f"bots without resting orders after {within} s: {lagging[:5]} "
                     f"({len(lagging)} in all)")


async def activation(
    session: aiohttp.ClientSession, poller: aiohttp.ClientSession, process: Process
) -> dict[str, Any]:
    """One activation: (b) answer, (c) all stopped, (d) all orders cancelled, in ms."""
    seen: dict[str, float] = {}
    polls: list[float] = []
    last: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def poll(began: float) -> None:
        while not done.is_set() and time.perf_counter() - began < 60:
            sent = time.perf_counter()
            bots = (await status(poller, process.base))["bots"]
            now = time.perf_counter()
            polls.append(now - sent)
            last[:] = bots
            if "stopped" not in seen and all(b["state"] == "stopped" for b in bots):
                seen["stopped"] = now - began
            if "cancelled" not in seen and all(b["open_orders"] == 0 for b in bots):
                seen["cancelled"] = now - began
            if "stopped" in seen and "cancelled" in seen:
                return
            await asyncio.sleep(0.002)

    body = {"action": "activate", "reason": "bench"}
    began = time.perf_counter()
    watcher = asyncio.create_task(poll(began))
    code, reply = await post(session, process.base + "/kill-switch", body, None)
    answered = time.perf_counter() - began
    try:
        await asyncio.wait_for(watcher, timeout=60)
    finally:
        done.set()
    if code != 200 or reply.get("already_active"):
        raise SystemExit(f"activation answered {code}: {reply}")
    if "stopped" not in seen or "cancelled" not in seen:
        laggards = [(b["name"], b["state"], b["open_orders"], b["error"]) for b in last
                    if b["state"] != "stopped" or b["open_orders"]]
        raise SystemExit(f"not every bot stopped with no order within 60 s: {laggards[:5]} "
                         f"({len(laggards)} in all; {seen})")
    return {
        "answer_ms": answered * 1000,
        "all_stopped_ms": seen["stopped"] * 1000,
        "all_cancelled_ms": seen["cancelled"] * 1000,
        "polls": len(polls),
        "poll_ms": [p * 1000 for p in polls],
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 0.50), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
        "min": round(min(values), 2),
    }


async def bench_one(bots: int, repeats: int, tick: float) -> dict[str, Any]:
    with coordinator_process(lambda d: make_grid_config(d, bots, tick)) as process:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                aiohttp.ClientSession(timeout=timeout) as poller:
            await process.ready(session)
            names = [b["name"] for b in (await status(session, process.base))["bots"]]
            start_seconds = await start_all(session, process, names)
            await wait_resting(session, process.base, within=60 + bots * 0.1)
            first = await status(session, process.base)
            resting = sum(b["open_orders"] for b in first["bots"])
            status_bytes = len(json.dumps(first))
            idle_before = cpu_seconds(process.pid)
            await asyncio.sleep(3.0)
            cpu_share_idle = (cpu_seconds(process.pid) - idle_before) / 3.0

            runs: list[dict[str, Any]] = []
            resting_per_run: list[int] = []
            restart_seconds: list[float] = []
            for _ in range(repeats):
                before = await status(session, process.base)
                orders = [b["open_orders"] for b in before["bots"]]
                if min(orders) <= 0 or before["kill_switch_active"]:
                    raise SystemExit("a bot has no resting order before an activation")
                resting_per_run.append(sum(orders))
                print(f"activation {len(runs) + 1}", file=sys.stderr)
                runs.append(await activation(session, poller, process))
                code, reply = await post(
                    session, process.base + "/kill-switch",
                    {"action": "force_override", "reason": "bench", "approved_by": "bench"},
                    process.admin,
                )
                if code != 200:
                    raise SystemExit(f"force_override answered {code}: {reply}")
                began = time.perf_counter()
                await start_all(session, process, names)
                await wait_resting(session, process.base, within=60 + bots * 0.1)
                restart_seconds.append(time.perf_counter() - began)
            rss = rss_mib_of(process.pid)
    polls = [p for run in runs for p in run["poll_ms"]]
    return {
        "bots": bots,
        "tick_interval_seconds": tick,
        "activations": len(runs),
        "resting_orders_before_each_activation_min": min(resting_per_run),
        "resting_orders_at_start": resting,
        "status_bytes": status_bytes,
        "a_gate_closed_and_durable_ms": "not measured from outside (see the script's docstring)",
        "b_http_answer_ms": summary([r["answer_ms"] for r in runs]),
        "c_every_bot_stopped_ms": summary([r["all_stopped_ms"] for r in runs]),
        "d_every_order_cancelled_ms": summary([r["all_cancelled_ms"] for r in runs]),
        "status_polls_per_activation_p50": percentile([r["polls"] for r in runs], 0.5),
        "status_poll_ms_p50": round(percentile(polls, 0.5), 2),
        "status_poll_ms_p99": round(percentile(polls, 0.99), 2),
        "coordinator_cpu_share_before_activations": round(cpu_share_idle, 3),
        "coordinator_rss_mib_end": round(rss, 1),
        "start_all_bots_seconds_first": round(start_seconds, 2),
        "restart_and_rest_again_seconds_p50": round(percentile(restart_seconds, 0.5), 2),
    }


async def run(bot_counts: list[int], repeats: int, tick: float) -> dict[str, Any]:
    results = []
    for bots in bot_counts:
        print(f"kill switch: {bots} bots, tick {tick} s, {repeats} activations", file=sys.stderr)
        results.append(await bench_one(bots, repeats, tick))
    return {"benchmark": "kill_switch", "runs": results, "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", default="10,100", help="comma-separated bot counts")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tick", type=float, default=1.0, help="tick interval of every bot")
    args = parser.parse_args()
    counts = [int(part) for part in args.bots.split(",") if part.strip()]
    print(json.dumps(asyncio.run(run(counts, args.repeats, args.tick)), indent=2))


if __name__ == "__main__":
    main()
