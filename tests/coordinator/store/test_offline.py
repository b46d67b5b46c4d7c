"""The offline commands on a journal on PostgreSQL: they hold the leader lease while they write
(fenced on its term) and give it up; while another coordinator leads they are refused, naming
it, except the kill switch, whose activation is filed for that leader."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import pytest

from coordinator.cli import main
from coordinator.store.lease import LeaderLease
from coordinator.store.pg_connection import PgConnection
from coordinator.store.postgres import PostgresStore
from tests.support_config import write_fast_config
from tests.support_postgres import PostgresServer


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> str:
    dsn = postgres_server.create_database()

    async def migrate() -> None:
        await (await PostgresStore.open(dsn)).close()

    asyncio.run(migrate())
    return dsn


def cli(tmp_path: Path, dsn: str, *command: str) -> int:
    config_dir = tmp_path / "config"
    if not config_dir.exists():
        write_fast_config(config_dir)
    return main(["--config-dir", str(config_dir), "--data-dir", str(tmp_path / "no-data"),
                 "--log-dir", str(tmp_path / "logs"), "--database", dsn, *command])  # fmt: skip


def one(dsn: str, sql: str) -> tuple[object, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()


def test_an_offline_kill_switch_is_written_under_the_lease_and_the_lease_given_back(
    tmp_path: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(tmp_path, dsn, "kill-switch", "activate", "--reason", "weekend") == 0

    row = one(dsn, "SELECT value FROM safety_state WHERE key = 'kill_switch'")
    assert row is not None
    state = json.loads(str(row[0]))
    assert (state["active"], state["reason"], state["by"]) == (True, "weekend", "cli")
    lease = one(dsn, "SELECT holder, term, expires_at < clock_timestamp() FROM leader_lease")
    assert lease is not None
    holder, term, expired = lease
    assert str(holder).startswith("cli:")
    assert (term, expired) == (1, True)  # held for the write, released at once after
    assert "written to postgresql://" in capsys.readouterr().err


def test_while_another_coordinator_leads_a_write_is_refused_naming_it(
    tmp_path: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = PgConnection.connect(dsn)
    try:
        assert LeaderLease(conn, "node-a", lease_seconds=60).acquire() == 1

        code = cli(tmp_path, dsn, "breaker", "reset", "daily_loss", "--approved-by", "alice",
                   "--reason", "reviewed")  # fmt: skip

        assert code == 1
        assert "node-a leads the journal" in capsys.readouterr().err
        lease = one(dsn, "SELECT holder, term FROM leader_lease")
        assert lease == ("node-a", 1)  # untouched
    finally:
        conn.close()


def test_while_another_coordinator_leads_the_kill_switch_is_filed_for_it(
    tmp_path: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = PgConnection.connect(dsn)
    try:
        lease = LeaderLease(conn, "node-a", lease_seconds=60)
        assert lease.acquire() == 1

        assert cli(tmp_path, dsn, "kill-switch", "activate", "--reason", "venue down") == 0

        assert "filed for it instead" in capsys.readouterr().err
        [request] = lease.pending_kill_switch_requests()
        assert request.reason == "venue down"
        assert request.node.startswith("cli:")
    finally:
        conn.close()


def test_an_offline_reconciliation_runs_on_the_journal_under_the_lease(
    tmp_path: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(tmp_path, dsn, "reconcile", "--json") == 0

    report = json.loads(capsys.readouterr().out)
    assert report["clean"] is True
    run = one(dsn, "SELECT COUNT(*) FROM reconciliation_runs")
    assert run == (1,)  # recorded in the journal on PostgreSQL
    lease = one(dsn, "SELECT term, expires_at < clock_timestamp() FROM leader_lease")
    assert lease == (1, True)


def test_a_database_that_does_not_answer_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/journal"  # nothing listens on port 1

    assert cli(tmp_path, unreachable, "kill-switch", "activate", "--reason", "x") == 1
    assert cli(tmp_path, unreachable, "reconcile") == 1

    err = capsys.readouterr().err
    assert err.count("cannot open the journal at postgresql://nobody@127.0.0.1:1/journal") == 2
    assert "Traceback" not in err
