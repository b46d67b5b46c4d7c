"""`bot-coordinator --verify-data` on a large journal in PostgreSQL: its duration and peak RSS.

The journal is the one `bench_journal_ops.py` builds (one fill per order over the shipped paper
bots, every check clean), written to SQLite and then copied table by table into a new database
on a throwaway PostgreSQL server (tests/support_postgres.py; Debian's postgresql package). The
check runs as an operator runs it: `python -m coordinator --verify-data --json --database DSN`
in a process of its own, which must exit 0 (clean); its peak RSS is the kernel's ru_maxrss of
that child.

    .venv/bin/python scripts/bench_verify_postgres.py --fills 100000
    .venv/bin/python scripts/bench_verify_postgres.py --fills 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import psycopg  # noqa: E402 (after the path is set)
from bench_journal_ops import build_journal, make_config  # noqa: E402

from coordinator.config import load_config  # noqa: E402
from coordinator.runtime import DATABASE_FILE, Coordinator  # noqa: E402
from coordinator.store.postgres import PostgresStore  # noqa: E402
from tests.support_postgres import PostgresServer  # noqa: E402


def copy_tables(sqlite_path: Path, dsn: str) -> dict[str, int]:
    """Every table both journals have (their common columns), SQLite's rows into PostgreSQL's
    emptied table, with COPY. The rows each table got."""
    copied: dict[str, int] = {}
    with contextlib.closing(sqlite3.connect(sqlite_path)) as src, psycopg.connect(dsn) as dst:
        tables = [
            name
            for (name,) in src.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations'"
            )
        ]
        pg_columns: dict[str, list[str]] = {}
        for table, column in dst.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY ordinal_position"
        ):
            pg_columns.setdefault(table, []).append(column)
        tables = [t for t in tables if t in pg_columns]
        dst.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        for table in tables:
            mine = [c for (_, c, *_) in src.execute(f"PRAGMA table_info({table})")]
            columns = [c for c in mine if c in pg_columns[table]]
            names = ", ".join(columns)
            rows = 0
            with dst.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in src.execute(f"SELECT {names} FROM {table}"):
                    copy.write_row(row)
                    rows += 1
            copied[table] = rows
        dst.commit()
    return copied


def verify_in_child(dsn: str, data_dir: Path) -> dict[str, Any]:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "coordinator", "--verify-data", "--json", "--database", dsn,
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"--verify-data exited {done.returncode}")
    return {
        "seconds": round(seconds, 2),
        "child_rss_mib_peak": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "checked": json.loads(done.stdout)["checked"],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-verify-pg-") as tmp:
            root = Path(tmp)
            for name in ("config", "data"):
                (root / name).mkdir()
            config = load_config(make_config(root / "config", args.bots))
            await (await Coordinator.open(config, root / "data")).close("bench: schema created")
            built = await asyncio.to_thread(
                build_journal, root / "data" / DATABASE_FILE, config, args.fills, 30.0, 1
            )
            dsn = server.create_database()
            await (await PostgresStore.open(dsn)).close()  # the same migrations
            began = time.perf_counter()
            copied = await asyncio.to_thread(copy_tables, root / "data" / DATABASE_FILE, dsn)
            print(f"copied in {time.perf_counter() - began:.1f} s: {copied}", file=sys.stderr)
            return {
                "fills": args.fills,
                "built": built,
                "verify_cli": verify_in_child(dsn, root / "data"),
            }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=100_000, help="fills in the journal")
    parser.add_argument("--bots", type=int, default=2, help="paper bots (the shipped two)")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
