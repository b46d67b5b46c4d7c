"""Two real coordinator processes on one PostgreSQL database: one leads and trades, the other
stands by. kill -9 of the leader while its paper bots trade: the standby leads within the
target, resolves the orders left in flight, starts the bots again one by one (--on-takeover
resume), and the journal holds every order once and an unbroken audit chain. A leader paused
past its lease (SIGSTOP, then SIGCONT) is fenced: it writes nothing, and ends with exit 3. A
leader cut off from the database (its packets dropped) stops before its lease can lapse, the
standby takes over, and what the old one queued is fenced when the network heals."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support_config import write_fast_config
from tests.support_postgres import PostgresServer
from tests.support_process import CoordinatorProcess, wait_for
from tests.support_proxy import PartitionableProxy
from tests.test_postgres_end_to_end import assert_audit_chain_unbroken, orders_once

LEASE = 2.0  # seconds: the test's lease (the default is 5)
TAKEOVER_TARGET = 10.0


class Node(CoordinatorProcess):
    def __init__(self, root: Path, config_dir: Path, dsn: str, name: str, takeover: str) -> None:
        (root / name).mkdir()
        super().__init__(root / name, config_dir, root / name / "data")
        self.dsn, self.name, self.takeover = dsn, name, takeover

    def args(self) -> list[str]:
        return [
            *super().args(), "--database", self.dsn, "--node-name", self.name,
            "--lease-seconds", str(LEASE), "--on-takeover", self.takeover,
        ]  # fmt: skip

    def role(self) -> dict[str, Any] | None:
        try:
            status, document = self.request("GET", "/status", timeout=1)
        except OSError:
            return None
        if status != 200:
            return None
        role: dict[str, Any] = document["coordinator"]["role"]
        return role


def assert_nothing_traded_since(dsn: str, took_over_at: datetime) -> None:
    """No order or fill after the takeover (node-b's bots stay stopped, so any would be the
    old leader's), every order once, the audit chain unbroken."""
    since = took_over_at.isoformat(timespec="microseconds")
    with psycopg.connect(dsn) as db:
        late = db.execute(
            "SELECT (SELECT COUNT(*) FROM orders WHERE created_at > %s),"
            " (SELECT COUNT(*) FROM fills WHERE recorded_at > %s)",
            (since, since),
        ).fetchone()
        assert late == (0, 0)
        orders_once(db)
        assert_audit_chain_unbroken(db)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGCONT)  # a test that paused one
        node.kill()


def two_nodes(
    tmp_path: Path, server: PostgresServer, nodes: list[Node], takeover: str
) -> tuple[Node, Node, str]:
    dsn = server.create_database()
    config_dir = write_fast_config(tmp_path / "config")
    a = Node(tmp_path, config_dir, dsn, "node-a", takeover).start()
    nodes.append(a)
    a.wait_ready()
    assert (a.role() or {}).get("role") == "leader"
    b = Node(tmp_path, config_dir, dsn, "node-b", takeover).start()
    nodes.append(b)
    b.wait_ready()
    _, document = b.request("GET", "/status")
    assert document["role"] == "standby"
    assert document["leader"]["holder"] == "node-a"
    health_status, health = b.request("GET", "/health")
    assert (health_status, health["status"]) == (200, "standby")
    refused, answer = b.request("POST", "/start-sequential", {}, token=b.token)
    assert refused == 503
    assert "node-a leads" in answer["error"]["message"]
    return a, b, dsn


def test_kill_9_of_the_leader_while_bots_trade_the_standby_leads_and_resumes_them(
    tmp_path: Path, postgres_server: PostgresServer, nodes: list[Node]
) -> None:
    a, b, dsn = two_nodes(tmp_path, postgres_server, nodes, takeover="resume")
    a.control("/start-sequential")
    wait_for(lambda: a.bots()["ndax"]["fills"] >= 3, 15, "ndax trading on node-a")
    orders_before = a.bots()["ndax"]["orders"]

    assert a.proc is not None
    a.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    a.proc.wait(timeout=5)
    wait_for(lambda: (b.role() or {}).get("role") == "leader", TAKEOVER_TARGET, "node-b to lead")
    took = time.monotonic() - killed

    assert took < TAKEOVER_TARGET
    assert (b.role() or {})["term"] == 2
    wait_for(lambda: b.bots()["ndax"]["state"] == "running", 15, "ndax running on node-b")
    fills = b.bots()["ndax"]["fills"]
    wait_for(lambda: b.bots()["ndax"]["fills"] > fills, 10, "ndax trading on node-b")
    assert b.bots()["ndax"]["orders"] > orders_before
    assert b.interrupt(within=10) == 0

    with psycopg.connect(dsn) as db:
        assert orders_once(db) > orders_before
        live = db.execute(
            "SELECT COUNT(*) FROM orders WHERE status IN ('pending_submit', 'open')"
        ).fetchone()
        assert live == (0,)  # in flight at the kill: resolved by node-b; at its stop: cancelled
        assert_audit_chain_unbroken(db)


def test_a_leader_paused_past_its_lease_is_fenced_and_writes_nothing(
    tmp_path: Path, postgres_server: PostgresServer, nodes: list[Node]
) -> None:
    a, b, dsn = two_nodes(tmp_path, postgres_server, nodes, takeover="stopped")
    a.control("/start-sequential")
    wait_for(lambda: a.bots()["ndax"]["fills"] >= 3, 15, "ndax trading on node-a")

    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: (b.role() or {}).get("role") == "leader", TAKEOVER_TARGET, "node-b to lead")
    with psycopg.connect(dsn) as db:
        row = db.execute("SELECT term, acquired_at FROM leader_lease").fetchone()
    assert row is not None
    term, took_over_at = row
    assert term == 2
    a.proc.send_signal(signal.SIGCONT)  # it wakes up believing it leads

    assert a.proc.wait(timeout=15) == 3  # it finds out, stops its bots and ends
    output = a.text()
    assert "stops leading" in output
    assert b.bots()["ndax"]["state"] == "stopped"
    assert b.interrupt(within=10) == 0  # before reading the journal: it writes audit entries
    assert_nothing_traded_since(dsn, took_over_at)


def test_the_kill_switch_activated_on_a_standby_stops_the_leaders_bots(
    tmp_path: Path, postgres_server: PostgresServer, nodes: list[Node]
) -> None:
    a, b, _ = two_nodes(tmp_path, postgres_server, nodes, takeover="stopped")
    a.control("/start-sequential")
    wait_for(lambda: a.bots()["ndax"]["fills"] >= 1, 15, "ndax trading on node-a")

    status, answer = b.request(
        "POST", "/kill-switch", {"action": "activate", "reason": "seen from the standby"}
    )  # no token: stopping is never refused, on a standby either

    assert status == 200, answer
    assert answer["applied"] is True
    assert answer["applied_by_term"] == 1
    switch = a.request("GET", "/kill-switch")[1]
    assert switch["active"] is True
    assert switch["reason"] == "seen from the standby (filed on standby node-b)"
    assert switch["by"] == "standby:node-b"
    wait_for(
        lambda: {bot["state"] for bot in a.bots().values()} == {"stopped"}, 10,
        "node-a's bots stopped",
    )
    lift, refused = b.request("POST", "/kill-switch", {"action": "override", "reason": "x"})
    assert lift == 503  # a lift goes to the leader
    assert "node-a leads" in refused["error"]["message"]


def test_a_leader_cut_off_from_the_database_stops_trading_and_the_standby_takes_over(
    tmp_path: Path, postgres_server: PostgresServer, nodes: list[Node]
) -> None:
    proxy = PartitionableProxy(postgres_server.port).start()
    try:
        dsn = postgres_server.create_database()
        config_dir = write_fast_config(tmp_path / "config")
        # node-a reaches the database through the proxy, node-b directly.
        a = Node(tmp_path, config_dir, dsn.replace(f":{postgres_server.port}/",
                 f":{proxy.port}/"), "node-a", "stopped").start()  # fmt: skip
        nodes.append(a)
        a.wait_ready()
        b = Node(tmp_path, config_dir, dsn, "node-b", "stopped").start()
        nodes.append(b)
        b.wait_ready()
        a.control("/start-sequential")
        wait_for(lambda: a.bots()["ndax"]["fills"] >= 3, 15, "ndax trading on node-a")

        proxy.partition()  # node-a's packets to and from the database are dropped
        cut = time.monotonic()
        wait_for(lambda: "stops leading" in a.text(), LEASE * 2, "node-a to stop leading")
        stopped = time.monotonic() - cut
        wait_for(lambda: (b.role() or {}).get("role") == "leader", TAKEOVER_TARGET,
                 "node-b to lead")  # fmt: skip
        took = time.monotonic() - cut
        with psycopg.connect(dsn) as db:
            row = db.execute("SELECT term, acquired_at FROM leader_lease").fetchone()
        assert row is not None
        term, took_over_at = row
        assert term == 2
        assert stopped < LEASE, "node-a must stop before its lease can lapse"
        assert took < TAKEOVER_TARGET

        proxy.heal()  # what node-a queued meanwhile now reaches the database: fenced
        assert a.proc is not None
        assert a.proc.wait(timeout=20) == 3
        assert b.interrupt(within=10) == 0
    finally:
        proxy.stop()
    assert_nothing_traded_since(dsn, took_over_at)
