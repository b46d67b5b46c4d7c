"""Benchmark: what /health, /metrics and /alerts cost a coordinator with N running paper bots.

Starts the real coordinator process (`python -m coordinator`) on a generated config of N paper
bots on the offline feed, starts every bot, then asks each endpoint `--requests` times in a row
from this process and reports the latency (p50, p99, max), the body size, and the coordinator's
own CPU time per request (from /proc/<pid>/stat), which is what polling costs it: at one poll a
second, CPU per request in ms / 1000 is the share of one core.

    .venv/bin/python scripts/bench_monitoring.py --bots 100 --requests 300

Prints JSON; docs/benchmarks.md records the figures with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_paper_bots import make_config, percentile

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ENDPOINTS = ("/health", "/metrics", "/alerts", "/status")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def get(base: str, path: str) -> tuple[int, bytes]:
    try:
        with OPENER.open(base + path, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post(base: str, path: str, token: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with OPENER.open(request, timeout=30) as response:
        return int(response.status)


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the coordinator exited with {proc.returncode}")
        try:
            if get(base, "/status")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the coordinator did not answer within 60 s")


def measure(base: str, pid: int, path: str, requests: int) -> dict[str, Any]:
    get(base, path)  # warm
    latencies: list[float] = []
    statuses: set[int] = set()
    size = 0
    cpu_before = cpu_seconds(pid)
    for _ in range(requests):
        began = time.perf_counter()
        status, body = get(base, path)
        latencies.append((time.perf_counter() - began) * 1000)
        statuses.add(status)
        size = len(body)
    cpu = cpu_seconds(pid) - cpu_before
    return {
        "statuses": sorted(statuses),
        "bytes": size,
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "coordinator_cpu_ms_per_request": round(cpu * 1000 / requests, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tick", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as scratch:
        root = Path(scratch)
        config_dir = make_config(root, args.bots, args.tick, unlimited=True)
        base = f"http://127.0.0.1:{args.port}"
        command = [sys.executable, "-m", "coordinator", "--port", str(args.port),
                   "--config-dir", str(config_dir), "--data-dir", str(root / "data"),
                   "--log-dir", str(root / "logs"), "--backup-dir", str(root / "backups")]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(base, proc)
            token = (root / "data" / "control.token").read_text().strip()
            names = [bot["name"] for bot in json.loads(get(base, "/status")[1])["bots"]]
            for name in names:
                post(base, "/start", token, {"bot": name})
            time.sleep(max(5.0, 3 * args.tick))  # every bot ticking, orders resting
            idle_before = cpu_seconds(proc.pid)
            time.sleep(5.0)
            idle_cpu = (cpu_seconds(proc.pid) - idle_before) / 5.0
            results = {path: measure(base, proc.pid, path, args.requests) for path in ENDPOINTS}
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    print(json.dumps({
        "bots": args.bots,
        "requests_per_endpoint": args.requests,
        "coordinator_cpu_share_without_polls": round(idle_cpu, 3),
        "endpoints": results,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
    }, indent=2))


if __name__ == "__main__":
    main()
