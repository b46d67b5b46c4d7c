"""The leader lease on a real PostgreSQL server: one holder at a time, a term that rises with
each new leader, and a fenced writer: a leader that lost its lease writes nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from coordinator.store.lease import Fenced, LeaderLease
from coordinator.store.pg_connection import PgConnection
from coordinator.store.postgres import PostgresStore
from coordinator.store.sqlite import StoreError
from tests.support_postgres import PostgresServer

SHORT = 0.4  # seconds: a lease that expires within the test


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture
def connections(dsn: str) -> Iterator[list[PgConnection]]:
    opened: list[PgConnection] = []
    yield opened
    for conn in opened:
        conn.close()


def lease(dsn: str, connections: list[PgConnection], node: str, seconds: float) -> LeaderLease:
    conn = PgConnection.connect(dsn)
    connections.append(conn)
    return LeaderLease(conn, node, lease_seconds=seconds)


def test_one_node_holds_the_lease_and_another_cannot_take_it_until_it_expires(
    dsn: str, connections: list[PgConnection]
) -> None:
    a = lease(dsn, connections, "node-a", SHORT)
    b = lease(dsn, connections, "node-b", SHORT)

    assert a.acquire() == 1
    assert b.acquire() is None
    assert b.view().holder == "node-a"
    assert a.renew()

    time.sleep(SHORT + 0.2)  # a stops renewing (dead, paused, cut off)
    assert b.view().expired
    assert b.acquire() == 2  # a new leader, a new term
    assert not a.renew()  # a finds out it lost the lease
    assert a.term is None
    assert b.view().holder == "node-b"


def test_of_many_standbys_racing_for_an_expired_lease_exactly_one_wins(
    dsn: str, connections: list[PgConnection]
) -> None:
    nodes = [lease(dsn, connections, f"node-{i}", 30) for i in range(6)]
    results: list[int | None] = [None] * len(nodes)
    start = threading.Barrier(len(nodes))

    def race(i: int) -> None:
        start.wait()
        results[i] = nodes[i].acquire()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r for r in results if r is not None) == [1]


def test_a_released_lease_is_taken_at_once(dsn: str, connections: list[PgConnection]) -> None:
    a = lease(dsn, connections, "node-a", 30)
    b = lease(dsn, connections, "node-b", 30)
    assert a.acquire() == 1

    a.release()

    assert b.acquire() == 2


def test_a_node_without_the_lease_has_no_fence(dsn: str, connections: list[PgConnection]) -> None:
    with pytest.raises(Fenced, match="does not hold"):
        lease(dsn, connections, "node-a", 30).fence()


async def test_a_leader_that_lost_its_lease_writes_nothing(
    dsn: str, connections: list[PgConnection]
) -> None:
    a = lease(dsn, connections, "node-a", SHORT)
    b = lease(dsn, connections, "node-b", 30)
    assert a.acquire() == 1
    store = await PostgresStore.open(dsn)
    try:
        store.set_fence(a.fence())
        await store.write([("INSERT INTO safety_state (key, value, updated_at) VALUES (?, ?, ?)",
                            ("written-as-leader", "{}", "t"))])  # fmt: skip

        await asyncio.sleep(SHORT + 0.2)  # a paused past its lease: b takes over
        assert await asyncio.to_thread(b.acquire) == 2
        with pytest.raises(StoreError, match="no longer holds term 1"):
            await store.write([(
                "INSERT INTO safety_state (key, value, updated_at) VALUES (?, ?, ?)",
                ("written-after-losing", "{}", "t"),
            )])  # fmt: skip

        rows = await store.fetch_all("SELECT key FROM safety_state ORDER BY key")
        assert [r["key"] for r in rows] == ["written-as-leader"]
    finally:
        await store.close()


def test_nodes_starting_together_create_the_lease_tables_once(dsn: str) -> None:
    """CREATE TABLE IF NOT EXISTS races with itself in PostgreSQL; the lease's is serialised."""
    errors: list[BaseException] = []
    start = threading.Barrier(6)
    opened: list[PgConnection] = []

    def start_node(i: int) -> None:
        conn = PgConnection.connect(dsn)
        opened.append(conn)
        start.wait()
        try:
            LeaderLease(conn, f"node-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_node, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for conn in opened:
        conn.close()

    assert errors == []
