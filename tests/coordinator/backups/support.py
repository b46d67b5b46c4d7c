"""Helpers for the backup tests: a journal to back up, archives to inspect and to damage."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sqlite3
import tarfile
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

from coordinator.backups.create import BackupRequest, BackupResult, Retention, take_backup
from coordinator.backups.layout import archive_sort_key
from coordinator.runtime import DATABASE_FILE
from coordinator.store.sqlite import SqliteStore


def make_database(data_dir: Path, rows: int = 0) -> Path:
    """A migrated journal in `data_dir` with (at least) `rows` bots (call outside any loop)."""

    async def create() -> None:
        store = await SqliteStore.open(data_dir / DATABASE_FILE)
        try:
            for start in range(0, rows, 500):
                await store.write(
                    [
                        (
                            "INSERT OR IGNORE INTO bots (name, exchange, symbol, mode, updated_at)"
                            " VALUES (?, 'paper', 'BTC/CAD', 'paper', '2026-11-23T00:00:00Z')",
                            (f"bot-{i}",),
                        )
                        for i in range(start, min(start + 500, rows))
                    ]
                )
        finally:
            await store.close()

    data_dir.mkdir(mode=0o700, exist_ok=True)
    asyncio.run(create())
    return data_dir / DATABASE_FILE


def backup(
    config_dir: Path,
    backup_dir: Path,
    at: datetime,
    database: Path | None = None,
    retention: Retention | None = None,
    trigger: str = "cli",
) -> BackupResult:
    return take_backup(
        BackupRequest(config_dir, backup_dir, database, trigger, at, retention=retention)
    )


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        out = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            out[member.name] = handle.read() if handle is not None else b""
        return out


def manifest_of(archive: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(members(archive)["manifest.json"])
    return loaded


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rebuild(
    archive: Path,
    target: Path,
    contents: dict[str, bytes],
    extra: list[tarfile.TarInfo] | None = None,
) -> Path:
    """An archive with `contents` (name -> bytes) in order, plus raw `extra` members."""
    with tarfile.open(target, "w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return target


def count(database: Path, table: str) -> int:
    with closing(sqlite3.connect(database)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes (what 'nothing changed' compares; the log
    and the lock file aside)."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
        and p.name not in (".backup.lock", "coordinator.lock")
        and "logs" not in p.relative_to(directory).parts
    }


def archives(backup_dir: Path) -> list[Path]:
    """The archives in `backup_dir`, oldest first (a test's own listing: in an async test,
    coordinator code must not do blocking I/O on the loop, and the test does it here)."""
    return sorted(backup_dir.glob("config-*.tar.gz"), key=lambda p: archive_sort_key(p.name))
