"""Benchmark: backup, verify and reconcile on a journal of N fills.

Builds a consistent journal of N fills for the shipped paper bots (each fill its own order: an
intent and a fill event per market order, an acknowledgement between them for a grid's limit
order; the stored position and balances equal to the replay of the adjustments and fills), then
opens the real coordinator on it (uvloop) and runs, one at a time, what an operator runs against
a running coordinator (`--ops` picks some):

1. `backup`: config and database (`BackupService.backup_now`, the code path of `POST /backups`
   and of the schedule) into a temporary backup directory;
2. `reconcile`: a reconciliation report of every bot (`Coordinator.reconcile(None, False, ...)`,
   what the hourly schedule runs; with `--apply`, corrections are applied);
3. `verify-cli`: `bot-coordinator --verify-data` in a process of its own, as an operator runs it
   beside the coordinator;
4. `verify`: `verify_database` inside the coordinator's loop (its cost without the process
   start-up, and what it would do to the loop if it ran there).

For each: its duration; the event loop's lag meanwhile (how late a 5 ms sleep wakes:
p50/p99/max, and the stalls over 50 ms); how long a journal write (an audit entry, the normal
lane) and a read on the store's read connection take meanwhile (each probed every 50 ms); and
the peak RSS during the operation (VmHWM, reset before each operation through
/proc/self/clear_refs; ru_maxrss where that is not possible). `--tracemalloc` adds the peak of
Python allocations per operation (and slows everything down).

    .venv/bin/python scripts/bench_journal_ops.py --fills 100000
    .venv/bin/python scripts/bench_journal_ops.py --fills 1000000 --trading

The journal is built while no coordinator runs, with executemany in one transaction on a
connection of its own. The script fails if `verify_database` finds anything or the
reconciliation reports a difference on a journal that agrees with its paper exchanges.

Results are printed as JSON; record them in docs/benchmarks.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import random
import re
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvloop

from bots.ledger import Position, apply_changes, balance_changes, fee_in_quote
from bots.models import Side
from coordinator.config import CONFIG_FILES, embedded_config_dir, load_config
from coordinator.config.models import BotConfig, CoordinatorConfig
from coordinator.integrity import verify_database
from coordinator.runtime import DATABASE_FILE, Coordinator
from coordinator.store.journal import _balance_upserts, _position_upsert, iso
from coordinator.store.sqlite import Priority

TICK_SECONDS = 0.005  # the loop-lag ticker
PROBE_SECONDS = 0.05  # the write and read probes
STALL_SECONDS = 0.05  # a lag this long is counted as a stall
CHUNK_ORDERS = 5_000  # orders generated and inserted per executemany
FILL_AMOUNT = Decimal("0.0001")  # base asset per fill (13-15 of the quote asset)
SELL_MARKUP = Decimal("1.005")  # a round trip sells above its buy: the fees never drain the quote
# The order the operations run in. The in-process verify goes last: the memory it frees is not
# all handed back to the kernel, and it would inflate the next operation's RSS.
OPERATIONS = ("backup", "reconcile", "verify-cli", "verify")


# -- configuration --------------------------------------------------------------------------------


def make_config(directory: Path, bots: int) -> Path:
    """The shipped configuration (`bots` paper bots, copied from the shipped ones), with the
    backup and reconciliation schedules off: nothing runs but what the benchmark asks for."""
    source = embedded_config_dir()
    for name in CONFIG_FILES:  # the shipped files; two are rewritten below
        if (source / name).exists():
            (directory / name).write_text((source / name).read_text())
    recovery = json.loads((source / "recovery-settings.json").read_text())
    recovery["backups"]["interval_minutes"] = 0
    recovery["reconciliation"]["interval_minutes"] = 0
    (directory / "recovery-settings.json").write_text(json.dumps(recovery))
    template = json.loads((source / "bots.json").read_text())["bots"]
    entries = []
    for i in range(bots):
        entry = json.loads(json.dumps(template[i % len(template)]))
        if i >= len(template):
            entry["name"] = f"{entry['name']}-{i:03d}"
            entry["feed"]["seed"] = i + 1
        entries.append(entry)
    (directory / "bots.json").write_text(json.dumps({"version": 1, "bots": entries}))
    return directory


# -- the journal ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Ledger:
    """One bot while its journal is generated: its market and its book (replayed as we go)."""

    bot: BotConfig
    price: Decimal
    balances: dict[str, Decimal]
    position: Position = field(default_factory=Position)
    buy_price: Decimal = Decimal(0)
    next_side: Side = Side.BUY
    fills: int = 0


@dataclass(slots=True)
class BuildStats:
    orders: int = 0
    order_events: int = 0
    fills: int = 0
    per_bot: dict[str, int] = field(default_factory=dict)


def build_journal(
    database: Path, config: CoordinatorConfig, fills: int, history_days: float, seed: int
) -> dict[str, Any]:
    """Insert `fills` fills (one order each, interleaved across the bots in time) and store each
    bot's position and balances as `bots.ledger.replay` computes them. Blocking; run it while
    no coordinator is open on `database`."""
    began = time.perf_counter()
    rng = random.Random(seed)
    now = datetime.now(UTC)
    first = now - timedelta(days=history_days)
    step = (now - timedelta(minutes=1) - first) / max(fills, 1)
    stats = BuildStats()
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        ledgers = [_open_ledger(conn, bot) for bot in config.bots.bots]
        floor = conn.execute("SELECT COALESCE(MAX(client_order_id), 0) FROM orders").fetchone()[0]
        conn.execute("BEGIN IMMEDIATE")
        ids = _client_order_ids(int(floor))
        done = 0
        while done < fills:
            count = min(CHUNK_ORDERS, fills - done)
            orders: list[tuple[Any, ...]] = []
            events: list[tuple[Any, ...]] = []
            rows: list[tuple[Any, ...]] = []
            for j in range(done, done + count):
                ledger = ledgers[j % len(ledgers)]
                executed = first + step * j
                _one_order(ledger, next(ids), executed, rng, orders, events, rows)
            conn.executemany(
                "INSERT INTO orders (client_order_id, bot, exchange, symbol, side, type, amount,"
                " price, status, exchange_order_id, filled, tag, reason, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                orders,
            )
            conn.executemany(
                "INSERT INTO order_events (client_order_id, at, from_status, to_status, detail)"
                " VALUES (?, ?, ?, ?, ?)",
                events,
            )
            conn.executemany(
                "INSERT INTO fills (client_order_id, bot, trade_id, side, amount, price, fee,"
                " fee_currency, executed_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            stats.orders += len(orders)
            stats.order_events += len(events)
            stats.fills += len(rows)
            done += count
        for ledger in ledgers:
            for sql, params in [
                _position_upsert(ledger.bot.name, ledger.bot.symbol, ledger.position, now),
                *_balance_upserts(ledger.bot.name, ledger.balances, now),
            ]:
                conn.execute(sql, params)
            stats.per_bot[ledger.bot.name] = ledger.fills
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {
        "build_seconds": round(time.perf_counter() - began, 1),
        "orders": stats.orders,
        "order_events": stats.order_events,
        "fills": stats.fills,
        "fills_per_bot": stats.per_bot,
        "history_days": history_days,
        "database_mib": round(database.stat().st_size / 2**20, 1),
    }


def _open_ledger(conn: sqlite3.Connection, bot: BotConfig) -> _Ledger:
    """The bot's book before the generated fills: its adjustments (the paper account's opening
    balances, written by the coordinator that opened the database) and no fills."""
    if conn.execute("SELECT COUNT(*) FROM fills WHERE bot = ?", (bot.name,)).fetchone()[0]:
        raise SystemExit(f"{bot.name} already has fills: build on a fresh data dir")
    balances: dict[str, Decimal] = {}
    for asset, amount in conn.execute(
        "SELECT asset, amount FROM balance_adjustments WHERE bot = ? ORDER BY id", (bot.name,)
    ):
        balances[asset] = balances.get(asset, Decimal(0)) + Decimal(amount)
    return _Ledger(bot, bot.feed.start_price, balances)


def _client_order_ids(floor: int) -> Iterator[int]:
    """Increasing ids above the journal's largest (like `bots.ids.ClientOrderIds`)."""
    last = floor
    while True:
        last += 1
        yield last


def _one_order(
    ledger: _Ledger,
    cid: int,
    executed: datetime,
    rng: random.Random,
    orders: list[tuple[Any, ...]],
    events: list[tuple[Any, ...]],
    fills: list[tuple[Any, ...]],
) -> None:
    """One order of `FILL_AMOUNT`, filled by one fill: a buy at the market, then a sell a
    little above it, and so on (the position stays within one fill of flat)."""
    bot = ledger.bot
    side = ledger.next_side
    quantum = Decimal(1).scaleb(-bot.feed.price_decimals)
    if side is Side.BUY:
        drift = Decimal(str(round(rng.gauss(0, 0.001), 6)))
        ledger.price = max(quantum, (ledger.price * (1 + drift)).quantize(quantum))
        price = ledger.buy_price = ledger.price
    else:
        price = (ledger.buy_price * SELL_MARKUP).quantize(quantum)
    ledger.next_side = Side.SELL if side is Side.BUY else Side.BUY
    amount = FILL_AMOUNT
    quote = bot.quote_asset
    fee = (amount * price * bot.paper.fee_rate).quantize(Decimal("0.00000001"))
    created = executed - timedelta(milliseconds=200)
    limit = bot.strategy.name == "grid"
    exchange_order_id = f"paper-{bot.exchange}-{cid}"
    orders.append(
        (
            cid,
            bot.name,
            bot.exchange,
            bot.symbol,
            side.value,
            "limit" if limit else "market",
            str(amount),
            str(price) if limit else None,
            "filled",
            exchange_order_id,
            str(amount),
            "grid" if limit else "dca",
            None,
            iso(created),
            iso(executed),
        )
    )
    events.append((cid, iso(created), None, "pending_submit", "intent"))
    if limit:  # a grid order rests first
        events.append((cid, iso(created), "pending_submit", "open", "acknowledged"))
        events.append((cid, iso(executed), "open", "filled", "filled"))
    else:
        events.append((cid, iso(executed), "pending_submit", "filled", "filled"))
    fills.append(
        (
            cid,
            bot.name,
            f"{exchange_order_id}-t1",
            side.value,
            str(amount),
            str(price),
            str(fee),
            quote,
            iso(executed),
            iso(executed),
        )
    )
    # The steps of bots.ledger.replay, one fill at a time (verify_database checks the result
    # against the real replay).
    ledger.position = ledger.position.apply_fill(
        side, amount, price, fee_in_quote(fee, quote, price, bot.base_asset, quote)
    )
    changes = balance_changes(side, amount, price, fee, quote, bot.base_asset, quote)
    ledger.balances.update(apply_changes(ledger.balances, changes))
    if any(total < 0 for total in ledger.balances.values()):
        raise SystemExit(f"{bot.name}: a generated fill drove a balance negative")
    ledger.fills += 1


# -- measuring ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _status_kib(field_name: str) -> int | None:
    match = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else None


def release_freed_memory() -> None:
    """Collect, then hand the heap's free pages back to the kernel (glibc's malloc_trim), so
    that an operation's RSS is not measured on top of what the one before it freed but kept."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
            ctypes.CDLL(name).malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) to the current RSS; whether that worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def peak_rss_mib(reset_worked: bool) -> float:
    kib = _status_kib("VmHWM") if reset_worked else None
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


async def _tick(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 5 ms sleep wakes (perf_counter: uvloop's clock has 1 ms resolution)."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK_SECONDS)
        lags.append(max(0.0, time.perf_counter() - before - TICK_SECONDS))


async def _probe(
    stop: asyncio.Event, latencies: list[float], call: Callable[[], Awaitable[object]]
) -> None:
    while not stop.is_set():
        began = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - began)
        await asyncio.sleep(PROBE_SECONDS)


def _ms(values: list[float], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_ms_p50": round(statistics.median(values) * 1000, 2) if values else 0.0,
        f"{prefix}_ms_p99": round(percentile(values, 0.99) * 1000, 2),
        f"{prefix}_ms_max": round(max(values) * 1000, 2) if values else 0.0,
    }


async def measure(
    coordinator: Coordinator,
    operation: Callable[[], Awaitable[Any]],
    use_tracemalloc: bool,
) -> tuple[Any, dict[str, Any]]:
    """Run `operation` in the coordinator's loop with the ticker and the probes running."""
    journal, store = coordinator.journal, coordinator.store

    async def write() -> None:
        await journal.audit(
            actor="bench",
            action="bench.probe",
            result="ok",
            at=datetime.now(UTC),
            priority=Priority.NORMAL,
        )

    async def read() -> None:
        await store.fetch_one("SELECT COUNT(*) FROM bots")

    stop = asyncio.Event()
    lags: list[float] = []
    writes: list[float] = []
    reads: list[float] = []
    await asyncio.sleep(0.2)  # let what the previous operation left behind settle
    release_freed_memory()
    rss_before = rss_mib()
    reset_worked = reset_peak_rss()
    if use_tracemalloc:
        tracemalloc.reset_peak()
    tasks = [
        asyncio.create_task(_tick(stop, lags)),
        asyncio.create_task(_probe(stop, writes, write)),
        asyncio.create_task(_probe(stop, reads, read)),
    ]
    await asyncio.sleep(0)
    cpu_before = time.process_time()
    began = time.perf_counter()
    result = await operation()
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu_before
    stop.set()
    await asyncio.gather(*tasks)
    stalls = [lag for lag in lags if lag >= STALL_SECONDS]
    figures: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 2),
        "loop_lag_samples": len(lags),
        **_ms(lags, "loop_lag"),
        "stalls_over_50ms": len(stalls),
        "stalled_seconds": round(sum(stalls), 2),
        **_ms(writes, "write"),
        **_ms(reads, "read"),
        "rss_mib_before": round(rss_before, 1),
        "rss_mib_peak": round(peak_rss_mib(reset_worked), 1),
        "rss_peak_is_process_max": not reset_worked,
    }
    if use_tracemalloc:
        figures["python_alloc_mib_peak"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    return result, figures


# -- the run --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-journal-", dir=args.tmp_dir) as tmp:
        root = Path(tmp)
        for name in ("config", "data", "backups"):
            (root / name).mkdir()
        config = await asyncio.to_thread(
            lambda: load_config(make_config(root / "config", args.bots))
        )
        database = root / "data" / DATABASE_FILE
        # A first coordinator creates the schema, registers the bots and opens their accounts.
        await (await Coordinator.open(config, root / "data")).close("bench: schema created")
        built = await asyncio.to_thread(
            build_journal, database, config, args.fills, args.history_days, args.seed
        )
        print(f"journal built: {json.dumps(built)}", file=sys.stderr)

        rss_before_open = rss_mib()
        opened = time.perf_counter()
        coordinator = await Coordinator.open(config, root / "data", backup_dir=root / "backups")
        open_seconds = time.perf_counter() - opened
        if args.trading:
            await asyncio.gather(
                *(coordinator.supervisor.start(name) for name in coordinator.supervisor.runners)
            )
        if args.tracemalloc:
            tracemalloc.start()
        results: dict[str, Any] = {}
        try:
            for op in OPERATIONS:
                if op not in args.ops:
                    continue
                if op == "backup":
                    results[op] = await _backup(coordinator, args.tracemalloc)
                elif op == "reconcile":
                    results[op] = await _reconcile(coordinator, args)
                elif op == "verify-cli":
                    results[op] = await _verify_cli(coordinator, root / "data", args.tracemalloc)
                else:
                    results[op] = await _verify(coordinator, database, args.tracemalloc)
            status = coordinator.status()
        finally:
            if args.tracemalloc:
                tracemalloc.stop()
            closing_at = time.perf_counter()
            await coordinator.close("bench: done")
            close_seconds = time.perf_counter() - closing_at
        return {
            "fills": args.fills,
            "bots": args.bots,
            "trading": args.trading,
            "journal": built,
            "open_seconds": round(open_seconds, 2),
            "close_seconds": round(close_seconds, 2),
            "rss_mib_before_open": round(rss_before_open, 1),
            "orders_during_run": sum(b["orders"] for b in status["bots"]) - built["orders"],
            **results,
            "tracemalloc": args.tracemalloc,
            "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version,
            "cores": os.cpu_count(),
        }


async def _backup(coordinator: Coordinator, use_tracemalloc: bool) -> dict[str, Any]:
    backups = coordinator.backups
    assert backups is not None
    backup, figures = await measure(
        coordinator, lambda: backups.backup_now("api", "bench"), use_tracemalloc
    )
    figures["archive_mib"] = round(backup["size"] / 2**20, 1)
    figures["seconds_in_thread"] = backup["seconds"]
    print(f"backup: {json.dumps(figures)}", file=sys.stderr)
    return figures


async def _verify(
    coordinator: Coordinator, database: Path, use_tracemalloc: bool
) -> dict[str, Any]:
    report, figures = await measure(coordinator, lambda: verify_database(database), use_tracemalloc)
    figures["checked"] = report.checked
    figures["inconsistencies"] = len(report.inconsistencies)
    print(f"verify: {json.dumps(figures)}", file=sys.stderr)
    if not report.ok:
        print(report.render_text(), file=sys.stderr)
        raise SystemExit("verify_database found inconsistencies in the generated journal")
    return figures


async def _verify_cli(
    coordinator: Coordinator, data_dir: Path, use_tracemalloc: bool
) -> dict[str, Any]:
    """`bot-coordinator --verify-data --json` in a process of its own, as an operator runs it
    beside the coordinator: its duration (imports included) and peak RSS, and what it does to
    the coordinator's loop meanwhile."""

    async def verify_in_child() -> tuple[int, bytes, bytes]:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "coordinator",
            "--verify-data",
            "--json",
            "--data-dir",
            str(data_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await child.communicate()
        return await child.wait(), out, err

    (code, out, err), figures = await measure(coordinator, verify_in_child, use_tracemalloc)
    # The largest peak RSS of any waited-for child: this is the only child the script runs.
    figures["child_rss_mib_peak"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
    )
    figures["exit_code"] = code
    print(f"verify-cli: {json.dumps(figures)}", file=sys.stderr)
    if code != 0:
        print(out.decode(errors="replace")[-4000:], file=sys.stderr)
        print(err.decode(errors="replace")[-4000:], file=sys.stderr)
        raise SystemExit(f"bot-coordinator --verify-data exited with {code}")
    figures["checked"] = json.loads(out)["checked"]
    return figures


async def _reconcile(coordinator: Coordinator, args: argparse.Namespace) -> dict[str, Any]:
    reconciliation, figures = await measure(
        coordinator, lambda: coordinator.reconcile(None, args.apply, "bench"), args.tracemalloc
    )
    summary = reconciliation["summary"]
    figures["differences"] = summary["differences"]
    figures["errors"] = summary["errors"]
    figures["difference_list"] = [
        f"{d['bot']}: {d['kind']} {d['subject']}: journal {d['journal']}, exchange {d['exchange']}"
        for bot in reconciliation["bots"]
        for d in bot["differences"]
    ]
    if args.apply:
        figures["corrections"] = summary["corrections"]
        figures["correction_list"] = [
            f"{c['bot']}: {c['kind']} {c['subject']}: {c['action']}"
            for bot in reconciliation["bots"]
            for c in bot.get("corrections", [])
        ]
    print(f"reconcile: {json.dumps(figures)}", file=sys.stderr)
    if not args.trading and not reconciliation["clean"]:
        print(json.dumps(reconciliation, indent=2), file=sys.stderr)
        raise SystemExit("the reconciliation found differences in the generated journal")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=100_000, help="fills in the journal")
    parser.add_argument(
        "--bots", type=int, default=2, help="paper bots (copies of the shipped two)"
    )
    parser.add_argument(
        "--history-days",
        type=float,
        default=30.0,
        help="the fills are spread evenly over this many days up to now",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated prices")
    parser.add_argument(
        "--trading",
        action="store_true",
        help="start every bot (shipped ticks) so the operations run while the bots trade",
    )
    parser.add_argument(
        "--apply",
        action="store_true",
        help="reconcile with apply: corrections are written (to the temporary journal)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also report the peak of Python allocations per operation (slows them down)",
    )
    parser.add_argument(
        "--ops",
        type=lambda text: [op.strip() for op in text.split(",") if op.strip()],
        default=list(OPERATIONS),
        help="which operations to run: a comma-separated subset of"
        f" {','.join(OPERATIONS)}; they run in that order (one per process gives each the"
        " whole process to itself)",
    )
    parser.add_argument(
        "--tmp-dir", type=Path, default=None, help="where the temporary data dir goes"
    )
    args = parser.parse_args()
    if args.fills < 0 or args.bots < 1:
        parser.error("--fills must be >= 0 and --bots >= 1")
    if not args.ops or set(args.ops) - set(OPERATIONS):
        parser.error(f"--ops takes a comma-separated subset of {','.join(OPERATIONS)}")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
