"""Restore a backup: check everything first, keep what is replaced, then replace atomically.

`prepare_restore` changes nothing outside its work directory: it reads the whole archive through
`read_archive` (manifest, every member's size and sha256; a corrupt, truncated or tampered
archive raises `ArchiveError`), writes the archived config to a scratch directory and loads it
with the real loader (every file against its schema and the cross-file checks; `RestoreRefused`
lists the problems), and for a database restore checks the archived database (integrity check,
a schema version this coordinator knows). The plan says which config files differ
(`describe_plan` renders a unified diff for `--dry-run`).

`apply_restore` first copies what it will replace into `backups/pre-restore-<time>/` (config
files that differ; the database with its -wal and -shm) and stages the new database beside the
live one, then replaces: each config file by temp file + fsync + rename; the database by
removing the old -wal/-shm (an old WAL must never be replayed onto another database) and one
rename. Whether a restore may run at all (a coordinator trading, the kill switch) is the
caller's decision (`backup_cli.py`).

Blocking: call from a thread (or from the CLI, outside any event loop).
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from coordinator.backups.archive import read_archive
from coordinator.backups.database import DatabaseBackupError, check_database
from coordinator.backups.layout import (
    PRE_RESTORE_PREFIX,
    TEMP_PREFIX,
    copy_file,
    fsync_dir,
    remove_tree,
    replace_file,
    unique_dir_name,
    write_file,
)
from coordinator.backups.manifest import Manifest
from coordinator.config import CONFIG_FILES, ConfigError, load_config
from coordinator.store.migrations import LATEST_VERSION

DATABASE_FILE: Final = "coordinator.db"
DATABASE_COMPANIONS: Final = ("-wal", "-shm")


class RestoreRefused(Exception):
    """The restore would not be safe; nothing was changed. The message says why."""


@dataclass(frozen=True, slots=True)
class ConfigChange:
    file: str
    current: bytes | None  # None: the file is missing now
    restored: bytes


@dataclass(slots=True)
class RestorePlan:
    archive: Path
    manifest: Manifest
    config_dir: Path
    data_dir: Path
    changes: list[ConfigChange] = field(default_factory=list)
    staged_database: Path | None = None  # the checked copy to put in place; None: config only

    @property
    def restores_database(self) -> bool:
        return self.staged_database is not None

    @property
    def nothing_to_do(self) -> bool:
        return not self.changes and not self.restores_database


@dataclass(frozen=True, slots=True)
class RestoreOutcome:
    replaced: list[str]
    saved_in: Path | None


def prepare_restore(
    archive: Path, config_dir: Path, data_dir: Path, config_only: bool, work: Path
) -> RestorePlan:
    """Check `archive` completely and plan the restore; `work` is an empty scratch directory."""
    contents = read_archive(archive, database_to=None if config_only else work / DATABASE_FILE)
    plan = RestorePlan(archive, contents.manifest, config_dir, data_dir)
    scratch = work / "config"
    scratch.mkdir(mode=0o700)
    for file in CONFIG_FILES:
        write_file(scratch / file, contents.config[file])
    try:
        load_config(scratch)
    except ConfigError as exc:
        issues = "\n  ".join(str(issue) for issue in exc.issues)
        raise RestoreRefused(
            f"the configuration in {archive.name} does not pass this coordinator's checks; "
            f"nothing was changed:\n  {issues}"
        ) from exc
    for file in CONFIG_FILES:
        current = _read_or_none(config_dir / file)
        if current != contents.config[file]:
            plan.changes.append(ConfigChange(file, current, contents.config[file]))
    if contents.database is not None:
        _check_archived_database(contents.database)
        plan.staged_database = contents.database
    return plan


def _check_archived_database(path: Path) -> None:
    try:
        version = check_database(path)
    except DatabaseBackupError as exc:
        raise RestoreRefused(f"the archived database is unusable: {exc}") from exc
    if version > LATEST_VERSION:
        raise RestoreRefused(
            f"the archived database is at schema version {version}, newer than this "
            f"coordinator knows ({LATEST_VERSION}): restore it with the newer coordinator"
        )


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def describe_plan(plan: RestorePlan) -> str:
    """What a restore would do: a unified diff per config file that differs, and the database."""
    made = plan.manifest.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"backup {plan.archive.name} ({plan.archive}), taken {made}, verified"]
    for change in plan.changes:
        lines.append(_diff(plan, change, made))
    unchanged = len(CONFIG_FILES) - len(plan.changes)
    lines.append(f"{unchanged} config file(s) already match the backup")
    if plan.restores_database:
        lines.append(
            f"the database {plan.data_dir / DATABASE_FILE} would be replaced by the copy from "
            f"{made} (schema version {_db_version(plan)}); journal entries written since then "
            "would be gone from it (the current file is kept in pre-restore)"
        )
    elif plan.manifest.database is not None:
        lines.append("the database is left as it is (--config-only)")
    else:
        lines.append("the backup holds no database; the database is left as it is")
    return "\n".join(lines)


def _db_version(plan: RestorePlan) -> int | str:
    return plan.manifest.database.schema_version if plan.manifest.database else "?"


def _diff(plan: RestorePlan, change: ConfigChange, made: str) -> str:
    path = plan.config_dir / change.file
    if change.current is None:
        return f"{path}: missing now; would be created from the backup"
    try:
        current = change.current.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return f"{path}: not UTF-8 text now ({len(change.current)} bytes); would be replaced"
    restored = change.restored.decode("utf-8").splitlines(keepends=True)
    diff = difflib.unified_diff(
        current, restored, f"{path} (current)", f"{path} (backup of {made})"
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in diff).rstrip("\n")


def apply_restore(plan: RestorePlan, backup_dir: Path, at: datetime) -> RestoreOutcome:
    """Carry out a prepared plan (the caller holds the data dir's and the backup dir's locks)."""
    if plan.nothing_to_do:
        return RestoreOutcome([], None)
    saved = unique_dir_name(backup_dir, PRE_RESTORE_PREFIX, at)
    saved.mkdir(mode=0o700)
    staged_db = _stage_database(plan)
    try:
        _save_current(plan, saved, at)
    except BaseException:
        if staged_db is not None:
            staged_db.unlink(missing_ok=True)
        raise
    replaced = []
    plan.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for change in plan.changes:
        replace_file(plan.config_dir / change.file, change.restored)
        replaced.append(str(plan.config_dir / change.file))
    if staged_db is not None:
        live = plan.data_dir / DATABASE_FILE
        for suffix in DATABASE_COMPANIONS:
            Path(f"{live}{suffix}").unlink(missing_ok=True)
        os.replace(staged_db, live)
        fsync_dir(plan.data_dir)
        replaced.append(str(live))
    return RestoreOutcome(replaced, saved)


def _stage_database(plan: RestorePlan) -> Path | None:
    if plan.staged_database is None:
        return None
    plan.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = plan.data_dir / f"{TEMP_PREFIX}{DATABASE_FILE}.restore"
    remove_tree(staged)
    copy_file(plan.staged_database, staged)
    return staged


def _save_current(plan: RestorePlan, saved: Path, at: datetime) -> None:
    """Copy what the restore replaces into `saved`, with a note of what happened."""
    kept: list[str] = []
    if plan.changes:
        (saved / "config").mkdir(mode=0o700)
    for change in plan.changes:
        if change.current is not None:
            write_file(saved / "config" / change.file, change.current)
            kept.append(f"config/{change.file}")
    if plan.restores_database:
        (saved / "database").mkdir(mode=0o700)
        live = plan.data_dir / DATABASE_FILE
        for path in (live, *(Path(f"{live}{s}") for s in DATABASE_COMPANIONS)):
            if path.exists():
                copy_file(path, saved / "database" / path.name)
                kept.append(f"database/{path.name}")
    note = {
        "restored_from": str(plan.archive),
        "backup_created_at": plan.manifest.created_at.isoformat(),
        "restored_at": at.isoformat(),
        "config_dir": str(plan.config_dir),
        "data_dir": str(plan.data_dir),
        "kept_here": kept,
        "undo": "copy these files back (stop the coordinator first)",
    }
    write_file(saved / "restore.json", (json.dumps(note, indent=2) + "\n").encode())
    for directory in (saved / "config", saved / "database", saved):
        if directory.is_dir():
            fsync_dir(directory)
