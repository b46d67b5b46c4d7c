"""A writer that can no longer write must say so to every caller, never leave one hanging."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator.store.sqlite import SqliteStore, StoreError

INSERT = ("INSERT INTO audit_events (at, actor, action, result) VALUES ('t', 'a', 'b', 'c')", ())


async def test_writes_fail_with_an_error_once_the_write_connection_is_gone(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "c.db")
    try:
        # The disk went away, the connection died: the rollback after the failed BEGIN fails too
        # ("Cannot operate on a closed database").
        await store._writer.run(lambda conn: conn.close())

        with pytest.raises(StoreError):
            await asyncio.wait_for(store.write([INSERT]), timeout=5)
        with pytest.raises(StoreError, match="writer failed earlier"):
            await asyncio.wait_for(store.write([INSERT]), timeout=5)
        assert store.broken is not None
    finally:
        await store.close()  # closes what is left, and does not hang on the dead writer
