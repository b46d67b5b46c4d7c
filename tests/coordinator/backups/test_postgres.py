"""Backups of a journal on PostgreSQL: `pg_dump` into the archive, checked; a restore in one
transaction with the kill switch active and the lease's term kept; refused while a coordinator
uses the database; a failed restore changes nothing. On the tests' real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import psycopg
import pytest

from coordinator.backups.postgres_dump import pg_tool
from coordinator.cli import main
from coordinator.store.lease import LeaderLease
from coordinator.store.pg_connection import PgConnection
from coordinator.store.postgres import PostgresStore
from coordinator.store.restored import RestoredJournal
from tests.coordinator.backups.support import make_database, manifest_of, members
from tests.support_postgres import PostgresServer


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture
def dirs(tmp_path: Path, config_dir: Path, backup_dir: Path, dsn: str) -> list[str]:
    return [
        "--config-dir", str(config_dir), "--backup-dir", str(backup_dir),
        "--data-dir", str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs"),
        "--database", dsn,
    ]


def add_bots(dsn: str, names: range) -> None:
    async def write() -> None:
        store = await PostgresStore.open(dsn)
        try:
            await store.write([
                (
                    "INSERT INTO bots (name, exchange, symbol, mode, updated_at)"
                    " VALUES (?, 'paper', 'BTC/CAD', 'paper', '2026-12-07T00:00:00Z')",
                    (f"bot-{i}",),
                )
                for i in names
            ])
        finally:
            await store.close()

    asyncio.run(write())


def scalar(dsn: str, sql: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    return None if row is None else row[0]


def lead_once(dsn: str, node: str) -> int:
    """Take the lease and give it up (as a leader that stopped cleanly); the term it had."""
    conn = PgConnection.connect(dsn)
    try:
        lease = LeaderLease(conn, node)
        term = lease.acquire()
        assert term is not None
        lease.release()
        return term
    finally:
        conn.close()


def kill_switch(dsn: str) -> dict[str, object] | None:
    value = scalar(dsn, "SELECT value FROM safety_state WHERE key = 'kill_switch'")
    return None if value is None else json.loads(str(value))


def test_a_backup_holds_a_checked_dump_of_the_journal_and_not_the_lease(
    dsn: str, dirs: list[str], backup_dir: Path
) -> None:
    add_bots(dsn, range(25))
    lead_once(dsn, "node-a")

    assert main(["backup", *dirs]) == 0

    [archive] = sorted(backup_dir.glob("config-*.tar.gz"))
    database = manifest_of(archive)["database"]
    assert database["engine"] == "postgresql"
    assert database["path"] == "database/coordinator.pgdump"
    dump = backup_dir / "dump.pgdump"
    dump.write_bytes(members(archive)["database/coordinator.pgdump"])
    toc = subprocess.run(
        [pg_tool("pg_restore"), "--list", str(dump)], capture_output=True, text=True, check=True
    ).stdout
    assert "TABLE DATA public bots" in toc
    assert "leader_lease" not in toc
    assert "kill_switch_requests" not in toc
    assert scalar(dsn, "SELECT COUNT(*) FROM audit_events WHERE action = 'backup.create'") == 1


def test_a_restore_brings_the_journal_back_with_the_kill_switch_active_and_the_term_kept(
    dsn: str, dirs: list[str], backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_bots(dsn, range(25))
    lead_once(dsn, "node-a")
    assert main(["backup", *dirs]) == 0
    add_bots(dsn, range(25, 60))  # trading went on after the backup
    term = lead_once(dsn, "node-b")
    capsys.readouterr()

    assert main(["restore", "--latest", *dirs]) == 0

    assert scalar(dsn, "SELECT COUNT(*) FROM bots") == 25
    state = kill_switch(dsn)
    assert state is not None
    assert state["active"] is True
    assert state["trigger"] == "restore"
    stored = scalar(dsn, "SELECT value FROM safety_state WHERE key = 'journal_restored'")
    mark = RestoredJournal.from_json(json.loads(str(stored)))
    assert mark is not None
    assert mark.restored_at.isoformat() == state["at"]
    assert mark.backup_created_at <= mark.restored_at
    # The lease is not the journal's: its term goes on from where it was, never back.
    assert scalar(dsn, "SELECT term FROM leader_lease") == term
    assert lead_once(dsn, "node-c") == term + 1
    saved = next(backup_dir.glob("pre-restore-*"))
    assert (saved / "database" / "coordinator.pgdump").stat().st_size > 0
    assert json.loads((saved / "restore.json").read_text())["database_restored"] is True
    assert scalar(dsn, "SELECT COUNT(*) FROM audit_events WHERE action = 'backup.restore'") == 1
    err = capsys.readouterr().err
    assert "the kill switch is ACTIVE in the restored journal" in err
    assert main(["--verify-data", "--database", dsn, "--data-dir", dirs[5]]) == 0


def test_a_restore_is_refused_while_a_coordinator_is_connected_or_the_lease_is_live(
    dsn: str, dirs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    add_bots(dsn, range(10))
    assert main(["backup", *dirs]) == 0
    add_bots(dsn, range(10, 20))
    capsys.readouterr()

    async def connected() -> int:
        store = await PostgresStore.open(dsn)  # a standby or a leader: a coordinator's store
        try:
            return await asyncio.to_thread(main, ["restore", "--latest", *dirs])
        finally:
            await store.close()

    assert asyncio.run(connected()) == 1
    assert "coordinator connection(s)" in capsys.readouterr().err

    conn = PgConnection.connect(dsn)
    lease = LeaderLease(conn, "node-a", lease_seconds=60)
    assert lease.acquire() is not None
    conn.close()  # gone without releasing (kill -9): the lease is live for a minute
    assert main(["restore", "--latest", *dirs]) == 1
    assert "the lease on" in capsys.readouterr().err
    assert scalar(dsn, "SELECT COUNT(*) FROM bots") == 20
    assert kill_switch(dsn) is None


def test_a_restore_that_fails_inside_the_database_changes_nothing(
    dsn: str, dirs: list[str], backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_bots(dsn, range(10))
    assert main(["backup", *dirs]) == 0
    add_bots(dsn, range(10, 20))
    with psycopg.connect(dsn, autocommit=True) as conn:  # someone's view: DROP TABLE bots fails
        conn.execute("CREATE VIEW bot_names AS SELECT name FROM bots")
    capsys.readouterr()

    assert main(["restore", "--latest", *dirs]) == 1

    err = capsys.readouterr().err
    assert "rolled back: the journal is as it was" in err
    assert scalar(dsn, "SELECT COUNT(*) FROM bots") == 20
    assert kill_switch(dsn) is None
    assert not list(backup_dir.glob("pre-restore-*"))


def test_a_backup_of_one_engine_is_not_restored_onto_the_other(
    tmp_path: Path, dsn: str, dirs: list[str], backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite_dirs = dirs[:-2]
    make_database(tmp_path / "data", rows=5)
    assert main(["backup", *sqlite_dirs]) == 0
    add_bots(dsn, range(3))
    capsys.readouterr()

    assert main(["restore", "--latest", *dirs]) == 1
    assert "holds a journal on SQLite" in capsys.readouterr().err

    assert main(["backup", *dirs]) == 0
    capsys.readouterr()
    assert main(["restore", "--latest", *sqlite_dirs]) == 1
    assert "holds a journal on PostgreSQL" in capsys.readouterr().err
    assert main(["restore", "--latest", "--config-only", *sqlite_dirs]) == 0

