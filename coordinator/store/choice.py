"""Which journal the coordinator uses: SQLite in the data dir (the embedded default), or
PostgreSQL when `--database postgresql://...` or `$BOT_COORDINATOR_DATABASE` names one."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from coordinator.store.fence import TransactionFence
from coordinator.store.postgres_dsn import is_postgres_dsn
from coordinator.store.sqlite import MAX_BATCH_JOBS, SqliteStore, StoreError

DATABASE_ENV = "BOT_COORDINATOR_DATABASE"
DATABASE_FILE = "coordinator.db"


def database_target(option: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The PostgreSQL DSN to use, or None for SQLite. The option wins over the environment; a
    value that is not a postgresql:// DSN is refused, naming where it came from."""
    env = os.environ if environ is None else environ
    value, source = (option, "--database") if option else (env.get(DATABASE_ENV), DATABASE_ENV)
    if not value:
        return None
    if not is_postgres_dsn(value):
        raise StoreError(
            f"{source}: must be a postgresql://user@host:port/dbname DSN, got {value!r} "
            f"(leave it unset for SQLite in the data dir)"
        )
    try:
        import psycopg  # noqa: F401 (only whether it is installed)
    except ImportError:
        raise StoreError(
            f"{source}: the journal on PostgreSQL needs psycopg, which is not installed: "
            "pip install -e '.[postgres]'"
        ) from None
    return value


async def open_store(
    data_dir: Path,
    database: str | None,
    max_batch_jobs: int = MAX_BATCH_JOBS,
    fence: TransactionFence | None = None,
) -> SqliteStore:
    """`fence` (PostgreSQL only): the leader lease each write transaction checks first."""
    if database is None:
        if fence is not None:
            raise StoreError("a fence needs the journal on PostgreSQL")
        return await SqliteStore.open(data_dir / DATABASE_FILE, max_batch_jobs)
    from coordinator.store.postgres import PostgresStore  # psycopg only when asked for

    return await PostgresStore.open(database, max_batch_jobs, fence)
