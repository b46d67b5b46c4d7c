"""The journal on PostgreSQL in a backup: `pg_dump` out, and back in with the kill switch active.

**Out** (`dump_database`): `pg_dump --format=custom` reads the whole database in one
repeatable-read snapshot, so the dump is what the journal held at one instant while the leader
keeps trading (it takes no lock that blocks writes). The lease tables (`leader_lease`,
`kill_switch_requests`) are left out: they say who leads now, not what happened; a restore that
brought an old term back would hand out again a term that a paused old leader still holds, and
fencing would no longer stop it. The dump is then checked with `pg_restore --list`: it must read
back whole and hold the tables a restore needs.

**Back in** (`restore_database`): refused while any coordinator is connected to the database or
the lease is live ("never under a running coordinator"); the current journal is dumped first
(the pre-restore copy, to undo). Then one `psql --single-transaction` runs, in order: a guard
that locks the lease table (no coordinator can take the lease or write until the restore ends)
and fails if a lease is live; the dump as SQL (`pg_restore --clean --if-exists`: the journal's
tables dropped and recreated); the kill switch row set ACTIVE; a check that the restored schema
is one this coordinator knows. One transaction: on any error PostgreSQL rolls all of it back and
the journal is exactly as it was.

Connection passwords go to the tools in `PGPASSWORD`, never on their command line (where `ps`
shows them). psycopg is imported only when a function needs it: an install without the
`postgres` extra imports this module (the backup code does) and never calls them. Blocking:
call from a thread.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from coordinator.store.postgres_dsn import APPLICATION_NAME, redact_dsn

LEASE_TABLES: Final = ("leader_lease", "kill_switch_requests")
# Tables whose rows a dump must hold for a restore to be possible (and the kill switch set).
REQUIRED_TABLES: Final = ("schema_migrations", "safety_state", "orders", "audit_events")
TOOL_TIMEOUT_SECONDS: Final = 3600.0
_TOC_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")


class PostgresBackupError(Exception):
    """The dump or the restore could not be done; the message says why."""


@dataclass(frozen=True, slots=True)
class PostgresDatabase:
    """A journal on PostgreSQL, as a backup's source or a restore's target."""

    dsn: str

    @property
    def label(self) -> str:
        return redact_dsn(self.dsn)


def pg_tool(name: str) -> str:
    """The path of a PostgreSQL client program: on PATH, else the newest Debian install."""
    found = shutil.which(name)
    if found is not None:
        return found
    installed = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if installed:
        return str(installed[-1])
    raise PostgresBackupError(
        f"{name} is not installed: the journal on PostgreSQL is backed up and restored with "
        "PostgreSQL's own tools (apt install postgresql-client)"
    )


def _connection(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN without its password, and the environment that carries the password."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def _run(
    command: Sequence[str],
    env: dict[str, str] | None,
    what: str,
    abort: threading.Event | None = None,
) -> str:
    """Run a tool to the end (or until `abort`); its stdout. Fails naming `what` and the
    tool's last words."""
    try:
        process = subprocess.Popen(  # noqa: S603 (PostgreSQL's tools, arguments as a list)
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
    except OSError as exc:
        raise PostgresBackupError(f"{what}: cannot run {command[0]}: {exc}") from exc
    began = time.monotonic()
    while True:
        try:
            out, err = process.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            stopped = abort is not None and abort.is_set()
            if stopped or time.monotonic() - began > TOOL_TIMEOUT_SECONDS:
                process.kill()
                process.communicate()
                reason = "stopped" if stopped else f"no end after {TOOL_TIMEOUT_SECONDS:.0f} s"
                raise PostgresBackupError(f"{what}: {reason}") from None
    if process.returncode != 0:
        last = " | ".join(line for line in err.strip().splitlines()[-3:])
        raise PostgresBackupError(f"{what} failed (exit {process.returncode}): {last}")
    return out


def schema_version(dsn: str) -> int | None:
    """MAX(version) of schema_migrations; None when the database has no journal."""
    import psycopg

    try:
        with psycopg.connect(dsn, application_name="bot-coordinator-backup") as conn:
            exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
            if exists is None or exists[0] is None:
                return None
            row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    except psycopg.Error as exc:
        raise PostgresBackupError(f"cannot read {redact_dsn(dsn)}: {exc}") from exc
    return int(row[0]) if row is not None and row[0] is not None else 0


def dump_database(
    database: PostgresDatabase, target: Path, abort: threading.Event | None = None
) -> int:
    """Dump the journal at `database` into the new file `target`, checked; its schema version."""
    version = schema_version(database.dsn)
    if version is None:
        raise PostgresBackupError(f"{database.label} holds no journal (no schema_migrations)")
    conninfo, env = _connection(database.dsn)
    command = [
        pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
        *(f"--exclude-table={table}" for table in LEASE_TABLES),
        f"--file={target}", f"--dbname={conninfo}",
    ]
    try:
        _run(command, env, f"pg_dump of {database.label}", abort)
        check_dump(target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return version


def check_dump(path: Path) -> None:
    """The dump must read back whole (`pg_restore --list`) and hold every required table's
    rows, and none of the lease tables."""
    toc = _run([pg_tool("pg_restore"), "--list", str(path)], None, f"reading {path.name}")
    tables = {match.group(2) for line in toc.splitlines() if (match := _TOC_TABLE_DATA.match(line))}
    missing = [table for table in REQUIRED_TABLES if table not in tables]
    if missing:
        raise PostgresBackupError(
            f"{path.name} is not a dump of a bot-coordinator journal: no rows of "
            f"{', '.join(missing)}"
        )
    if lease := [table for table in LEASE_TABLES if table in tables]:
        raise PostgresBackupError(
            f"{path.name} holds the lease tables ({', '.join(lease)}): restoring them would "
            "bring back an old leader's term"
        )


def coordinators_connected(dsn: str) -> list[str]:
    """The other sessions on this database that are coordinators (their client addresses)."""
    import psycopg

    try:
        with psycopg.connect(dsn, application_name="bot-coordinator-restore") as conn:
            rows = conn.execute(
                "SELECT COALESCE(host(client_addr), 'local socket') FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = %s"
                " AND pid <> pg_backend_pid()",
                (APPLICATION_NAME,),
            ).fetchall()
    except psycopg.Error as exc:
        raise PostgresBackupError(f"cannot read {redact_dsn(dsn)}: {exc}") from exc
    return [str(row[0]) for row in rows]


def live_lease(dsn: str) -> str | None:
    """Who holds an unexpired lease on this database, if anyone."""
    import psycopg

    try:
        with psycopg.connect(dsn, application_name="bot-coordinator-restore") as conn:
            exists = conn.execute("SELECT to_regclass('leader_lease')").fetchone()
            if exists is None or exists[0] is None:
                return None
            row = conn.execute(
                "SELECT holder, term FROM leader_lease WHERE expires_at > clock_timestamp()"
                " ORDER BY term DESC LIMIT 1"
            ).fetchone()
    except psycopg.Error as exc:
        raise PostgresBackupError(f"cannot read {redact_dsn(dsn)}: {exc}") from exc
    return None if row is None else f"{row[0]} (term {row[1]})"


# Run by psql, in the restore's one transaction, after the dump's SQL (which empties
# search_path). psql fills in :'name' from its --set variables, quoted; it leaves
# dollar-quoted DO bodies alone, hence the setting the check reads.
_AFTER_SQL: Final = """
RESET search_path;
INSERT INTO safety_state (key, value, updated_at)
  VALUES (:'state_key', :'kill_switch', :'at')
  ON CONFLICT (key) DO UPDATE SET
    value = jsonb_set(excluded.value::jsonb, '{last_lifted}',
                      COALESCE(safety_state.value::jsonb -> 'last_lifted', 'null'))::text,
    updated_at = excluded.updated_at;
INSERT INTO safety_state (key, value, updated_at)
  VALUES (:'restored_key', :'restored', :'at')
  ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;
SET LOCAL bot_coordinator.latest_schema = :'latest';
DO $$ BEGIN
  IF (SELECT MAX(version) FROM schema_migrations)
     > current_setting('bot_coordinator.latest_schema')::bigint THEN
    RAISE EXCEPTION 'bot-coordinator restore: the schema is newer than this coordinator knows';
  END IF;
END $$;
"""

_GUARD_SQL: Final = """
LOCK TABLE leader_lease IN EXCLUSIVE MODE;
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM leader_lease WHERE expires_at > clock_timestamp()) THEN
    RAISE EXCEPTION 'bot-coordinator restore: a coordinator holds the lease';
  END IF;
END $$;
"""


def restore_database(
    database: PostgresDatabase,
    dump: Path,
    state_key: str,
    kill_switch: dict[str, object],
    at: str,
    latest: int,
    restored: tuple[str, dict[str, object]],
) -> None:
    """Replace the journal at `database` by the one in `dump`, all or nothing, with the kill
    switch `kill_switch` (its JSON) ACTIVE and the restore's mark `restored` (its key and JSON)
    beside it. The caller has refused the restore while coordinators are connected and has
    kept the pre-restore dump."""
    from coordinator.store.lease import CREATE_LEASE_TABLE

    with tempfile.TemporaryDirectory(prefix="bot-coordinator-pg-restore-") as scratch:
        script = Path(scratch) / "restore.sql"
        guard = Path(scratch) / "guard.sql"
        after = Path(scratch) / "after.sql"
        _run(
            [pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
             f"--file={script}", str(dump)],
            None,
            f"reading {dump.name}",
        )
        guard.write_text(f"{CREATE_LEASE_TABLE.strip()};\n{_GUARD_SQL}")
        after.write_text(_AFTER_SQL)
        value = json.dumps(kill_switch, default=str, sort_keys=True).replace("\x00", "")
        mark = json.dumps(restored[1], default=str, sort_keys=True).replace("\x00", "")
        conninfo, env = _connection(database.dsn)
        _run(
            [pg_tool("psql"), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
             f"--set=state_key={state_key}", f"--set=kill_switch={value}", f"--set=at={at}",
             f"--set=latest={int(latest)}", f"--set=restored_key={restored[0]}",
             f"--set=restored={mark}", "--single-transaction", f"--dbname={conninfo}",
             f"--file={guard}", f"--file={script}", f"--file={after}"],
            env,
            f"restoring {database.label} (rolled back: the journal is as it was)",
        )
