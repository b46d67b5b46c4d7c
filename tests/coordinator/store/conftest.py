"""Fixtures for the store tests: the store on either engine.

`any_store` opens a store on SQLite (a file in tmp_path) and on PostgreSQL (a database of its
own on the session's throwaway server, `tests/support_postgres.py`): a test that takes it runs
on both. The PostgreSQL server is started only when a test asks for it, and a missing server
fails the test (`.ci/run` installs it): nothing is skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from coordinator.store.postgres import PostgresStore
from coordinator.store.sqlite import SqliteStore
from tests.support_postgres import PostgresServer

OpenAnyStore = Callable[[], Awaitable[SqliteStore]]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_any_store(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenAnyStore]:
    """Opens stores on `engine`, each on a fresh database; every one is closed afterwards."""
    opened: list[SqliteStore] = []
    server = request.getfixturevalue("postgres_server") if engine == "postgresql" else None

    async def factory() -> SqliteStore:
        if server is not None:
            dsn = await _in_thread(server.create_database)
            store: SqliteStore = await PostgresStore.open(dsn)
        else:
            store = await SqliteStore.open(tmp_path / f"store-{len(opened)}.db")
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


async def _in_thread(fn: Callable[[], str]) -> str:
    import asyncio

    return await asyncio.to_thread(fn)
