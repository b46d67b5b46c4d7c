"""The journal for a command run with no coordinator on this data dir (`kill-switch`, `breaker`,
`bot`, `config`, `incident`, `reconcile`): SQLite's file in the data dir, or the journal on
PostgreSQL when `--database` (or $BOT_COORDINATOR_DATABASE) names one.

On SQLite the data dir's lock (held by the caller) keeps a coordinator from starting meanwhile.
On PostgreSQL another machine's coordinator may lead the same journal, and a write from here
beside it would be a second writer that no lease fences. So the command takes the leader lease
itself, as a leader of a few seconds named `cli:<host>:<pid>`, with every write fenced on that
term, and gives it up at the end: standbys wait meanwhile, and a leader cannot start under it.
While another node holds the lease the command is refused, naming the leader to ask instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from coordinator.store.choice import DATABASE_FILE, open_store
from coordinator.store.fence import TransactionFence
from coordinator.store.postgres_dsn import redact_dsn
from coordinator.store.sqlite import SqliteStore, StoreError


class LeaderRunning(StoreError):
    """Another coordinator leads the journal on PostgreSQL: ask it, not the database."""


def journal_label(data_dir: Path, database: str | None) -> str:
    return redact_dsn(database) if database is not None else str(data_dir / DATABASE_FILE)


@asynccontextmanager
async def held_lease(database: str | None) -> AsyncIterator[TransactionFence | None]:
    """On PostgreSQL, the leader lease held for this command (its fence, for the store that
    writes under it); None on SQLite, where the data dir's lock does that job."""
    if database is None:
        yield None
        return
    import psycopg

    from coordinator.leadership import Leadership

    try:
        leadership = await Leadership.open(
            database, f"cli:{socket.gethostname()}:{os.getpid()}"
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot open the journal at {redact_dsn(database)}: {exc}") from exc
    try:
        if await leadership.try_acquire() is None:
            view = await leadership.view()
            raise LeaderRunning(
                f"{view.holder} leads the journal on {redact_dsn(database)} (term {view.term}): "
                "run the command against that coordinator (--host and --port of its control "
                "plane), or stop it first"
            )

        async def on_lost(why: str) -> None:
            pass  # the fence refuses every write from here on, and the command fails on it

        keeping = asyncio.create_task(leadership.keep(on_lost), name="cli-lease")
        try:
            yield leadership.fence()
        finally:
            keeping.cancel()
            await asyncio.gather(keeping, return_exceptions=True)
            await leadership.release()
    finally:
        await leadership.close()


@asynccontextmanager
async def offline_journal(data_dir: Path, database: str | None) -> AsyncIterator[SqliteStore]:
    """The store, opened for this command; on PostgreSQL, with the lease held (module doc)."""
    async with held_lease(database) as fence:
        store = await open_store(data_dir, database, fence=fence)
        try:
            yield store
        finally:
            await store.close()
