"""Benchmark: kill -9 of the leading coordinator while its paper bots trade; how long until the
standby leads, and until its first bot trades again.

Starts a throwaway PostgreSQL server (Debian's, as the tests do: `bash scripts/install-postgres`)
and, for each round, a new database and two real coordinator processes on the embedded default
config (1 s ticks) with the default lease (5 s) and `--on-takeover resume`. The leader starts
its bots and trades; it is killed with SIGKILL; the script polls the standby's `GET /status`
every 20 ms and records when it answers as the leader (term 2) and when its first bot is
running again. Then it checks the journal: no client order id twice, nothing left in flight.

    .venv/bin/python scripts/bench_failover.py --rounds 5

Results are printed as JSON; record them in docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402 (after the path is set)

from coordinator.config import CONFIG_FILES, embedded_config_dir  # noqa: E402
from tests.support_postgres import PostgresServer  # noqa: E402
from tests.support_process import CoordinatorProcess  # noqa: E402


class Node(CoordinatorProcess):
    def __init__(self, root: Path, config_dir: Path, dsn: str, name: str, lease: float) -> None:
        (root / name).mkdir()
        super().__init__(root / name, config_dir, root / name / "data")
        self.dsn, self.name, self.lease = dsn, name, lease

    def args(self) -> list[str]:
        return [
            *super().args(), "--database", self.dsn, "--node-name", self.name,
            "--lease-seconds", str(self.lease), "--on-takeover", "resume",
        ]  # fmt: skip

    def status(self) -> dict[str, Any] | None:
        try:
            code, document = self.request("GET", "/status", timeout=0.5)
        except OSError:
            return None
        return document if code == 200 else None


def until(check: Any, within: float, what: str, every: float = 0.02) -> float:
    began = time.monotonic()
    while time.monotonic() - began < within:
        if check():
            return time.monotonic()
        time.sleep(every)
    raise SystemExit(f"timed out after {within}s waiting for {what}")


def one_round(server: PostgresServer, lease: float) -> dict[str, Any]:
    dsn = server.create_database()
    root = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    config_dir = root / "config"
    config_dir.mkdir()
    for name in CONFIG_FILES:  # the embedded default, as the README's first command runs it
        shutil.copy(embedded_config_dir() / name, config_dir / name)
    a = Node(root, config_dir, dsn, "node-a", lease).start()
    b = Node(root, config_dir, dsn, "node-b", lease)
    try:
        a.wait_ready()  # node-a leads; node-b, started after, stands by
        b.start()
        b.wait_ready()
        a.control("/start-sequential")
        until(lambda: (a.bots()["ndax"]["fills"] or 0) >= 2, 30, "node-a trading")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.proc.wait(timeout=5)

        def leads() -> bool:
            document = b.status()
            return bool(document and document["coordinator"]["role"].get("role") == "leader")

        led = until(leads, 30, "node-b to lead")

        def trading() -> bool:
            document = b.status()
            return bool(document and any(x["state"] == "running" for x in document["bots"]))

        resumed = until(trading, 30, "a bot running on node-b")
        b.interrupt(within=10)
    finally:
        a.kill()
        b.kill()
    with psycopg.connect(dsn) as db:
        row = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT client_order_id) FROM orders"
        ).fetchone()
        live = db.execute(
            "SELECT COUNT(*) FROM orders WHERE status IN ('pending_submit', 'open')"
        ).fetchone()
    shutil.rmtree(root, ignore_errors=True)
    assert row is not None
    assert live is not None
    return {
        "leading_after_s": round(led - killed, 2),
        "first_bot_running_after_s": round(resumed - killed, 2),
        "orders": row[0],
        "duplicate_client_order_ids": row[0] - row[1],
        "left_in_flight": live[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lease-seconds", type=float, default=5.0)
    args = parser.parse_args()
    server = PostgresServer().start()
    try:
        rounds = [one_round(server, args.lease_seconds) for _ in range(args.rounds)]
    finally:
        server.stop()
    leading = [r["leading_after_s"] for r in rounds]
    print(json.dumps({
        "lease_seconds": args.lease_seconds,
        "rounds": rounds,
        "leading_after_s": {"min": min(leading), "median": statistics.median(leading),
                            "max": max(leading)},
        "target_s": 10,
        "all_within_target": all(x < 10 for x in leading),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
