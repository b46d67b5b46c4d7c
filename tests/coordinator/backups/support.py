"""Helpers for the backup tests: a journal to back up, archives to inspect and to damage."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

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


def fail_writes(
    monkeypatch: pytest.MonkeyPatch, to: Callable[[str], bool], error: int = errno.ENOSPC
) -> None:
    """`os.write` (the lowest-level write the backup code makes) fails with `error` for the
    files whose path `to` accepts, as a full disk or a failing device would."""
    real = os.write

    def write(fd: int, data: Any) -> int:
        if to(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(error, os.strerror(error))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def read_only(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """`directory` behaves as on a read-only file system: every call that would create, change
    or remove something under it fails with EROFS (chmod alone does not stop root)."""
    inside = str(directory.resolve())

    def under(path: Any) -> bool:
        text = os.path.abspath(os.fspath(path))
        return text == inside or text.startswith(inside + os.sep)

    def refuse(path: Any) -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real_open = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        if flags & writes and under(path):
            raise refuse(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    for name in ("mkdir", "rmdir", "unlink", "remove"):
        monkeypatch.setattr(os, name, _refusing(getattr(os, name), under, refuse, 1))
    for name in ("rename", "replace", "link"):
        monkeypatch.setattr(os, name, _refusing(getattr(os, name), under, refuse, 2))


def _refusing(
    real: Callable[..., Any],
    under: Callable[[Any], bool],
    refuse: Callable[[Any], OSError],
    paths: int,
) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("dir_fd") is None:
            for path in args[:paths]:
                if under(path):
                    raise refuse(path)
        return real(*args, **kwargs)

    return call


def live_database_with_wal(data_dir: Path, rows: int, more: int, scratch: Path) -> Path:
    """A journal in `data_dir` as a process that died leaves it: `rows` bots checkpointed into
    the database file and `more` bots only in its -wal (and -shm)."""
    scratch.mkdir()
    source = make_database(scratch, rows=rows)
    with closing(sqlite3.connect(source)) as conn:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        with conn:
            conn.executemany(
                "INSERT INTO bots (name, exchange, symbol, mode, updated_at)"
                " VALUES (?, 'paper', 'BTC/CAD', 'paper', '2026-11-23T00:00:00Z')",
                [(f"late-{i}",) for i in range(more)],
            )
        data_dir.mkdir(mode=0o700, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):  # copied while open: the WAL is not checkpointed
            shutil.copyfile(f"{source}{suffix}", data_dir / f"{DATABASE_FILE}{suffix}")
    return data_dir / DATABASE_FILE


def files_of(directory: Path) -> dict[str, bytes]:
    """The files directly in `directory` with their bytes (the data dir's lock file aside)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != "coordinator.lock"
    }
