"""Benchmark: the dashboard's chart series (GET /bots/{name}/series) at a million fills.

Builds a real journal (the store's own migrations) holding one bot with N fills, one a second
apart, then times what the endpoint does: the first request (SQLite sums every fill into
one-minute slots), a request with nothing new (only the fills past the last id are read: none),
a request after 1,000 new fills, and a 2,000-point request. The event loop's lag is sampled
during the first request: the scan runs in aiosqlite's thread, so the loop should stay free.

    .venv/bin/python scripts/bench_series.py --fills 1000000

Results are printed as JSON; record them in docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator.dashboard.series import FillSeries  # noqa: E402 (after the path is set)
from coordinator.store.sqlite import SqliteStore  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def seed(path: Path, fills: int, first_trade: int = 0) -> None:
    """`fills` fills for bot b, one a second, alternating buy and sell around 100."""
    conn = sqlite3.connect(path)
    try:
        if first_trade == 0:
            at = T0.isoformat()
            conn.execute(
                "INSERT INTO bots (name, exchange, symbol, mode, updated_at)"
                " VALUES ('b', 'paper', 'BTC/CAD', 'paper', ?)", (at,))
            conn.execute(
                "INSERT INTO orders (client_order_id, bot, exchange, symbol, side, type, amount,"
                " status, created_at, updated_at) VALUES (1, 'b', 'paper', 'BTC/CAD', 'buy',"
                " 'market', '1', 'filled', ?, ?)", (at, at))

        def rows() -> Any:
            for i in range(first_trade, first_trade + fills):
                at = (T0 + timedelta(seconds=i)).isoformat(timespec="microseconds")
                side = "buy" if i % 2 else "sell"
                price = f"{100 + (i % 50) / 10:.1f}"
                yield (f"t{i}", side, "0.001", price, "0.0001", "CAD", at, at)

        conn.executemany(
            "INSERT INTO fills (client_order_id, bot, trade_id, side, amount, price, fee,"
            " fee_currency, executed_at, recorded_at) VALUES (1, 'b', ?, ?, ?, ?, ?, ?, ?, ?)",
            rows(),
        )
        conn.commit()
    finally:
        conn.close()


async def lag_sampler(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - before - 0.01)


async def timed(series: FillSeries, points: int) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    answer = await series.series("b", "BTC", "CAD", points=points)
    return time.perf_counter() - began, answer


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-series-") as tmp:
        path = Path(tmp) / "journal.db"
        store = await SqliteStore.open(path)
        await store.close()
        began = time.perf_counter()
        seed(path, args.fills)
        seeded = time.perf_counter() - began
        store = await SqliteStore.open(path)
        try:
            series = FillSeries(store)
            stop, lags = asyncio.Event(), []
            sampler = asyncio.create_task(lag_sampler(stop, lags))
            first, answer = await timed(series, 300)
            stop.set()
            await sampler
            again, _ = await timed(series, 300)
            seed(path, 1000, first_trade=args.fills)
            after_new, newer = await timed(series, 300)
            fine, fine_answer = await timed(series, 2000)
            body = json.dumps(answer).encode()
            return {
                "fills": args.fills,
                "seed_seconds": round(seeded, 1),
                "first_request_ms": round(first * 1000, 1),
                "nothing_new_ms": round(again * 1000, 2),
                "after_1000_new_fills_ms": round(after_new * 1000, 2),
                "points_2000_ms": round(fine * 1000, 2),
                "points_returned": len(answer["points"]),
                "points_returned_2000": len(fine_answer["points"]),
                "fills_counted_after_new": newer["fills"],
                "response_bytes_300_points": len(body),
                "loop_lag_max_ms_during_first": round(max(lags, default=0) * 1000, 2),
                "python": sys.version.split()[0],
                "sqlite": sqlite3.sqlite_version,
            }
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=1_000_000)
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
