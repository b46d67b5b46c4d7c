"""A consistent copy of the live journal, taken with SQLite's online backup API.

The copy is made from a connection of its own (never the store's writer or reader, so neither is
held up): `sqlite3.Connection.backup` with all pages in one step reads one snapshot of the
database under a read transaction. In WAL mode that read does not block the writer, and the
writer's later commits do not change the snapshot, so the copy is what the journal held at one
instant while bots keep trading. The copy is then made self-contained (`journal_mode=DELETE`: no
-wal file to lose) and checked with `PRAGMA integrity_check` before it may go into an archive.

Blocking: call from a thread.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Final

BUSY_TIMEOUT_SECONDS: Final = 10.0


class DatabaseBackupError(Exception):
    """The copy could not be made, or it fails its integrity check."""


def copy_database(live: Path, target: Path) -> int:
    """Copy the database at `live` to the new file `target`; its schema version."""
    if not live.is_file():
        raise DatabaseBackupError(f"no database at {live}")
    try:
        source = sqlite3.connect(
            f"{live.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECONDS
        )
        with closing(source), closing(sqlite3.connect(target)) as copy:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE").fetchone()
            copy.commit()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise DatabaseBackupError(f"copying {live} failed: {exc}") from exc
    return check_database(target)


def check_database(path: Path) -> int:
    """`PRAGMA integrity_check` must answer ok; the schema version (MAX(version) of
    schema_migrations, 0 if none)."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            if [tuple(row) for row in rows] != [("ok",)]:
                problems = "; ".join(str(row[0]) for row in rows[:5])
                raise DatabaseBackupError(f"integrity check of {path.name} failed: {problems}")
            return schema_version(conn)
    except sqlite3.Error as exc:
        raise DatabaseBackupError(f"{path.name} is not a usable SQLite database: {exc}") from exc


def schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0]) if row and row[0] is not None else 0
