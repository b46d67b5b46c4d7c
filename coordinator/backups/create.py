"""Take one backup: config files (and the database), archived, verified, then made the latest.

Steps, all inside a `.tmp-<archive>` work directory in the backup directory, under the backup
directory's lock:

1. read the six config files once; write those bytes to `work/config/` and check them with the
   real loader (`load_config`): an invalid configuration is never backed up, so it can never
   become the latest;
2. copy the database with SQLite's online backup API and check the copy (`database.py`), or
   for a journal on PostgreSQL, `pg_dump` it and check the dump (`postgres_dump.py`);
3. write the archive to `work/` (fsync), then read it back and check every hash against the
   manifest;
4. rename it to `config-YYYYmmdd-HHMMSS.tar.gz` and fsync the directory;
5. make it the latest (`publish.py`); then apply retention (`retention.py`).

Any failure (a full disk included) removes the work directory and the archive if it was already
renamed, leaves `backup-latest.tar.gz` and `config-latest/` as they were, and raises
`BackupFailed` with the reason. `abort` (a threading.Event) stops a backup between steps, for a
coordinator that shuts down.

Blocking: call from a thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from coordinator import __version__
from coordinator.backups.archive import read_archive, write_archive
from coordinator.backups.database import DatabaseBackupError, copy_database
from coordinator.backups.layout import (
    CHUNK,
    TEMP_PREFIX,
    BackupBusy,
    archive_name,
    archive_names,
    directory_lock,
    fsync_dir,
    remove_stale_temp,
    remove_tree,
    write_file,
)
from coordinator.backups.manifest import (
    CONFIG_PREFIX,
    ArchiveError,
    DatabaseInfo,
    FileEntry,
    Manifest,
    config_version,
    sha256_bytes,
)
from coordinator.backups.postgres_dump import (
    PostgresBackupError,
    PostgresDatabase,
    dump_database,
)
from coordinator.backups.publish import publish_latest
from coordinator.backups.retention import apply_retention
from coordinator.config import CONFIG_FILES, ConfigError, load_config

log = logging.getLogger(__name__)


class BackupFailed(Exception):
    """The backup was not taken; the previous latest is untouched. The message says why."""


@dataclass(frozen=True, slots=True)
class Retention:
    keep_count: int
    keep_days: float


@dataclass(frozen=True, slots=True)
class BackupRequest:
    config_dir: Path
    backup_dir: Path
    # The live journal to include (SQLite's file, or PostgreSQL's database), or None for the
    # config only.
    database: Path | PostgresDatabase | None
    trigger: str  # schedule | cli | api
    at: datetime
    retention: Retention | None = None
    abort: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class BackupResult:
    archive: Path
    manifest: Manifest
    size: int
    seconds: float
    deleted: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "archive": str(self.archive),
            "name": self.archive.name,
            "created_at": self.manifest.created_at.isoformat(),
            "trigger": self.manifest.trigger,
            "size": self.size,
            "seconds": round(self.seconds, 3),
            "files": [f.path for f in self.manifest.files],
            "database_schema_version": (
                self.manifest.database.schema_version if self.manifest.database else None
            ),
            "config_source": self.manifest.config_source,
            "deleted_by_retention": list(self.deleted),
        }


def take_backup(request: BackupRequest) -> BackupResult:
    began = time.monotonic()
    try:
        with directory_lock(request.backup_dir):
            remove_stale_temp(request.backup_dir)
            name = _archive_name(request)
            work = request.backup_dir / f"{TEMP_PREFIX}{name}"
            try:
                return _take(request, name, work, began)
            finally:
                remove_tree(work)
    except BackupFailed:
        raise
    except BackupBusy as exc:
        raise BackupFailed(str(exc)) from exc
    except OSError as exc:
        raise BackupFailed(f"writing the backup failed: {_os_reason(exc)}") from exc


def _archive_name(request: BackupRequest) -> str:
    return archive_name(request.at, set(archive_names(request.backup_dir)))


def _take(request: BackupRequest, name: str, work: Path, began: float) -> BackupResult:
    work.mkdir(mode=0o700)
    staged_config = work / "config"
    staged_config.mkdir(mode=0o700)
    config = _stage_config(request.config_dir, staged_config)
    _check_abort(request)
    database, db_copy = _stage_database(request, work)
    _check_abort(request)
    files = [FileEntry(CONFIG_PREFIX + f, len(data), sha256_bytes(data)) for f, data in config]
    members = [(CONFIG_PREFIX + f, staged_config / f) for f, _ in config]
    if database is not None and db_copy is not None:
        files.append(FileEntry(database.member, *_size_and_hash(db_copy)))
        members.append((database.member, db_copy))
    manifest = Manifest(
        archive=name,
        created_at=request.at,
        coordinator_version=__version__,
        trigger=request.trigger,
        config_source=str(request.config_dir.resolve()),
        config_versions={f: config_version(data) for f, data in config},
        database=database,
        files=tuple(files),
    )
    staged_archive = work / name
    write_archive(staged_archive, manifest, members)
    try:
        read_archive(staged_archive)
    except ArchiveError as exc:
        raise BackupFailed(f"the archive just written does not verify: {exc}") from exc
    _check_abort(request)
    final = request.backup_dir / name
    os.rename(staged_archive, final)
    try:
        fsync_dir(request.backup_dir)
        publish_latest(request.backup_dir, final, staged_config, manifest, work)
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    deleted: list[str] = []
    if request.retention is not None:
        deleted = apply_retention(
            request.backup_dir,
            request.at,
            request.retention.keep_count,
            request.retention.keep_days,
            protected={name},
        )
    size = final.stat().st_size
    seconds = time.monotonic() - began
    log.info("backup %s written (%d bytes, %.2fs, %s)", final, size, seconds, request.trigger)
    return BackupResult(final, manifest, size, seconds, tuple(deleted))


def _stage_config(config_dir: Path, staged: Path) -> list[tuple[str, bytes]]:
    """The config files' bytes, read once, written to `staged` and checked by the loader."""
    config: list[tuple[str, bytes]] = []
    for file in CONFIG_FILES:
        try:
            data = (config_dir / file).read_bytes()
        except OSError as exc:
            raise BackupFailed(f"cannot read {config_dir / file}: {_os_reason(exc)}") from exc
        write_file(staged / file, data)
        config.append((file, data))
    try:
        load_config(staged)
    except ConfigError as exc:
        issues = "; ".join(str(issue) for issue in exc.issues[:5])
        raise BackupFailed(
            f"the configuration in {config_dir} is invalid, so it is not backed up: {issues}"
        ) from exc
    return config


def _stage_database(request: BackupRequest, work: Path) -> tuple[DatabaseInfo | None, Path | None]:
    if request.database is None:
        return None, None
    if isinstance(request.database, PostgresDatabase):
        dump = work / "coordinator.pgdump"
        try:
            version = dump_database(request.database, dump, request.abort)
        except PostgresBackupError as exc:
            raise BackupFailed(str(exc)) from exc
        return DatabaseInfo(version, "pg_restore --list ok", "postgresql"), dump
    copy = work / "coordinator.db"
    try:
        version = copy_database(request.database, copy)
    except DatabaseBackupError as exc:
        raise BackupFailed(str(exc)) from exc
    return DatabaseInfo(version, "ok"), copy


def _size_and_hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _check_abort(request: BackupRequest) -> None:
    if request.abort.is_set():
        raise BackupFailed("stopped: the coordinator is shutting down")


def _os_reason(exc: OSError) -> str:
    if exc.filename:
        return f"{exc.strerror or exc} ({exc.filename})"
    return exc.strerror or str(exc)
