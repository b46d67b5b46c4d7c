"""Test-wide fixtures: both event loops, a blocking-call detector, and the aioresponses shim."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aioresponses.core
import pytest
import uvloop
from blockbuster import BlockBuster, blockbuster_ctx

from coordinator.store.postgres import PostgresStore
from coordinator.store.sqlite import SqliteStore
from tests.support_postgres import OpenAnyStore, PostgresServer


def _install_aioresponses_shim() -> None:
    """aioresponses 0.7.9 does not pass `stream_writer`, which aiohttp 3.14 requires.

    Upstream: pnuckowski/aioresponses issue 289. The shim supplies a stub writer only while the
    installed aiohttp's `ClientResponse.__init__` still has that parameter, so it turns itself off
    once aioresponses passes it.
    """
    params = inspect.signature(aiohttp.ClientResponse.__init__).parameters
    if "stream_writer" not in params:
        return
    if getattr(aioresponses.core.ClientResponse, "_bot_coordinator_shim", False):
        return

    class _StubStreamWriter:
        output_size = 0
        buffer_size = 0

    class _ShimmedClientResponse(aiohttp.ClientResponse):
        _bot_coordinator_shim = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", _StubStreamWriter())
            super().__init__(*args, **kwargs)

    aioresponses.core.ClientResponse = _ShimmedClientResponse  # type: ignore[misc]


_install_aioresponses_shim()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on the stdlib loop and on uvloop (production uses uvloop)."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True)
def no_blocking_calls() -> Iterator[BlockBuster]:
    """Fail any call that blocks the event loop from our own packages (file I/O, sleep, sockets).

    Only frames from `coordinator` and `bots` are scanned: a test may do blocking set-up itself.
    """
    with blockbuster_ctx(["coordinator", "bots"]) as bb:
        yield bb


# -- the store on either engine -------------------------------------------------------------------
# `open_any_store` opens a store on SQLite (a file in tmp_path) and on PostgreSQL (a database of
# its own on the session's throwaway server, tests/support_postgres.py): a test that takes it
# runs on both. The server starts only when a test asks for it; a missing server fails the test
# (.ci/run installs it): nothing is skipped.


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
            dsn = await asyncio.to_thread(server.create_database)
            store: SqliteStore = await PostgresStore.open(dsn)
        else:
            store = await SqliteStore.open(tmp_path / f"store-{len(opened)}.db")
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


