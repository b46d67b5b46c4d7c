"""Restore a backup: check everything first, keep what is replaced, then replace all or nothing.

Checking changes nothing the coordinator reads. `prepare_restore` reads the whole archive through
`read_archive` (manifest, every member's size and sha256; a corrupt, truncated or tampered archive
raises `ArchiveError`), writes the archived config to a scratch directory and loads it with the
real loader (every file against its schema and the cross-file checks; `RestoreRefused` lists the
problems), and for a database restore copies the archived database where the caller says (beside
the live one for a real restore, into the scratch directory for a dry run) and checks it
(integrity check, a schema version this coordinator knows). The plan says which config files
differ (`describe_plan` renders a unified diff for `--dry-run`). `check_archive` is the same
check without a plan: what the start-up hint and the listing use, so that they only ever name an
archive that a restore accepts.

`apply_restore` is all or nothing, in three phases:

1. keep: every file the restore replaces is copied into `backups/pre-restore-<time>/` (the config
   files that differ; the database with its -wal and -shm), with `restore.json` naming the
   backup (its own name, not `backup-latest.tar.gz`, and its sha256); all fsync'd;
2. stage: each new config file is written as a temp file beside its target, with the mode (and,
   when permitted, the owner and group) of the file it replaces, and fsync'd; the staged
   database (already beside the live one) gets the kill switch row, ACTIVE (below);
3. rename: the config files, one rename each; then the live -wal and -shm are moved aside
   (renamed beside the database: an old WAL must never be replayed onto another database, and
   their copies are in pre-restore), the live database is kept aside (a hard link, else a
   rename), and the staged database is renamed into place; the directories are fsync'd.

A failure in phase 1 or 2 changes nothing (temp files and the pre-restore folder are removed). A
failure in phase 3 undoes every rename already done: a config file is put back from its
pre-restore copy, the database's files are renamed back; `RestoreFailed` says which state each
file is in and where the pre-restore folder is. Once everything is in place, the old database
files kept aside are removed (their copies are in pre-restore). A restore that died in phase 3
(power loss) leaves `.tmp-replaced-*` files in the data dir; the next restore refuses until an
operator has looked at them.

A restored database is older than the exchanges: orders and fills after the backup's time are not
in it. So the restored journal always has the kill switch ACTIVE (the `kill_switch` row of
`safety_state`, in the shape `KillSwitch.load` reads; not counted as an activation): no bot can
start until an operator has run `bot-coordinator reconcile` and overridden it.

Whether a restore may run at all (a coordinator trading, the kill switch) is the caller's
decision (`backup_cli.py`).

Blocking: call from a thread (or from the CLI, outside any event loop).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from coordinator.backups.archive import ArchiveContents, ScratchWriteError, read_archive
from coordinator.backups.database import DatabaseBackupError, check_database
from coordinator.backups.layout import (
    TEMP_PREFIX,
    copy_file,
    fsync_dir,
    os_reason,
    remove_tree,
    write_file,
)
from coordinator.backups.manifest import ADDED_LATER, DATABASE_MEMBERS, Manifest
from coordinator.backups.postgres_dump import (
    PostgresBackupError,
    PostgresDatabase,
    check_dump,
    coordinators_connected,
    dump_database,
    live_lease,
    restore_database,
    schema_version,
)
from coordinator.config import CONFIG_FILES, ConfigError, embedded_config_dir, load_config
from coordinator.safety.kill_switch import STATE_KEY, KillSwitchState
from coordinator.store.journal import iso
from coordinator.store.migrations import LATEST_VERSION
from coordinator.store.restored import RESTORED_KEY, RestoredJournal

DATABASE_FILE: Final = "coordinator.db"
DATABASE_COMPANIONS: Final = ("-wal", "-shm")
STAGED_DATABASE: Final = f"{TEMP_PREFIX}{DATABASE_FILE}.restore"
ASIDE_PREFIX: Final = f"{TEMP_PREFIX}replaced-"  # the old database files, during phase 3
RESTORE_TRIGGER: Final = "restore"
RECONCILE_COMMAND: Final = "bot-coordinator reconcile"


class RestoreRefused(Exception):
    """The restore would not be safe; nothing was changed. The message says why."""


class RestoreFailed(Exception):
    """The restore failed while applying; the message says which state each file is in."""

    def __init__(
        self, reason: str, states: Sequence[tuple[Path | str, str]], saved: Path | None
    ) -> None:
        self.reason = reason
        self.states = states
        self.saved = saved
        lines = [reason, *(f"  {path}: {state}" for path, state in states)]
        if saved is not None:
            lines.append(f"the pre-restore folder (the files as they were) is {saved}")
        super().__init__("\n".join(lines))


UNCHANGED: Final = "unchanged"


@dataclass(frozen=True, slots=True)
class ConfigChange:
    file: str
    current: bytes | None  # None: the file is missing now
    restored: bytes


@dataclass(slots=True)
class RestorePlan:
    archive: Path  # as the operator named it (possibly backups/backup-latest.tar.gz)
    source: Path  # the backup's own file (`archive` resolved through the hard link)
    sha256: str  # of the archive file
    manifest: Manifest
    config_dir: Path
    data_dir: Path
    changes: list[ConfigChange] = field(default_factory=list)
    staged_database: Path | None = None  # the checked copy; None: config only
    postgres: PostgresDatabase | None = None  # the journal to restore is there, not in data_dir

    @property
    def database_label(self) -> str:
        if self.postgres is not None:
            return f"the journal on PostgreSQL ({self.postgres.label})"
        return f"the database {self.data_dir / DATABASE_FILE}"

    @property
    def restores_database(self) -> bool:
        return self.staged_database is not None

    @property
    def nothing_to_do(self) -> bool:
        return not self.changes and not self.restores_database

    @property
    def backup_name(self) -> str:
        return self.manifest.archive

    @property
    def taken(self) -> str:
        return taken_at(self.manifest)


@dataclass(frozen=True, slots=True)
class RestoreOutcome:
    replaced: list[str]
    saved_in: Path | None
    warnings: list[str] = field(default_factory=list)  # cleanup that did not happen


def taken_at(manifest: Manifest) -> str:
    return manifest.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- checking ------------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A private scratch directory in the system's temp dir ($TMPDIR): checking an archive never
    needs the backup dir to be writable."""
    try:
        path = Path(tempfile.mkdtemp(prefix="bot-coordinator-restore-"))
    except OSError as exc:
        raise ScratchWriteError(
            f"cannot create a scratch directory in {tempfile.gettempdir()}: {os_reason(exc)}"
            " (set TMPDIR to a writable directory)"
        ) from exc
    try:
        yield path
    finally:
        remove_tree(path)


def check_archive(archive: Path) -> Manifest:
    """Exactly what `restore ARCHIVE --config-only` checks before it changes anything: the whole
    archive against its manifest, and its config through the real loader. Raises
    `ArchiveError`, `RestoreRefused` or `ScratchWriteError`."""
    contents = read_archive(archive)
    with scratch_dir() as scratch:
        _complete_config(contents, None)
        _load_archived_config(archive, contents, scratch)
    return contents.manifest


def prepare_restore(
    archive: Path,
    config_dir: Path,
    data_dir: Path,
    config_only: bool,
    scratch: Path,
    database_to: Path | None = None,
    postgres: PostgresDatabase | None = None,
) -> RestorePlan:
    """Check `archive` completely and plan the restore. `scratch` is an empty directory for the
    config check; the archived database is copied to `database_to` (default: into `scratch`).
    `postgres`: the journal is on PostgreSQL there (the archive must hold a dump of one)."""
    if not config_only and database_to is None:
        database_to = scratch / DATABASE_FILE
    if database_to is not None:
        remove_tree(database_to)  # a stale copy from a restore that died: never a live file
    contents = read_archive(archive, database_to=None if config_only else database_to)
    try:
        _complete_config(contents, config_dir)
        _load_archived_config(archive, contents, scratch)
        assert contents.sha256 is not None  # a complete read
        plan = RestorePlan(
            archive,
            _own_file(archive, contents.manifest),
            contents.sha256,
            contents.manifest,
            config_dir,
            data_dir,
            postgres=postgres,
        )
        for file in CONFIG_FILES:
            current = _read_or_none(config_dir / file)
            if current != contents.config[file]:
                plan.changes.append(ConfigChange(file, current, contents.config[file]))
        if contents.database is not None:
            assert contents.manifest.database is not None
            engine = contents.manifest.database.engine
            _check_engine(engine, postgres)
            if engine == "postgresql":
                _check_archived_dump(contents.database, contents.manifest.database.schema_version)
            else:
                _check_archived_database(contents.database)
            plan.staged_database = contents.database
    except BaseException:
        if contents.database is not None:
            contents.database.unlink(missing_ok=True)
        raise
    return plan


def _complete_config(contents: ArchiveContents, config_dir: Path | None) -> None:
    """An archive from before a config file existed (`ADDED_LATER`) restores the others and
    keeps that one as it is in `config_dir` (the shipped default where there is none)."""
    for file in ADDED_LATER - contents.config.keys():
        current = _read_or_none(config_dir / file) if config_dir is not None else None
        contents.config[file] = (
            current if current is not None else (embedded_config_dir() / file).read_bytes()
        )


def _load_archived_config(archive: Path, contents: ArchiveContents, scratch: Path) -> None:
    config = scratch / "config"
    try:
        config.mkdir(mode=0o700)
        for file in CONFIG_FILES:
            write_file(config / file, contents.config[file])
    except OSError as exc:
        raise ScratchWriteError(
            f"cannot write a scratch copy of the archived config: {os_reason(exc)}"
        ) from exc
    try:
        load_config(config)
    except ConfigError as exc:
        issues = "\n  ".join(str(issue) for issue in exc.issues)
        raise RestoreRefused(
            f"the configuration in {archive.name} does not pass this coordinator's checks:"
            f"\n  {issues}"
        ) from exc
    finally:
        remove_tree(config)


def _own_file(archive: Path, manifest: Manifest) -> Path:
    """The backup's own file when `archive` is another name for it (`backup-latest.tar.gz` is a
    hard link to the newest archive); else `archive` itself."""
    own = archive.with_name(manifest.archive)
    if own != archive:
        with contextlib.suppress(OSError):
            if os.path.samefile(own, archive):
                return own
    return archive


def _check_engine(engine: str, postgres: PostgresDatabase | None) -> None:
    here = "postgresql" if postgres is not None else "sqlite"
    if engine == here:
        return
    member = DATABASE_MEMBERS[engine]
    if engine == "postgresql":
        how = "restore it with --database postgresql://... (the database to replace)"
    else:
        how = "restore it without --database (into the data dir's SQLite file)"
    raise RestoreRefused(
        f"the backup holds a journal on {_ENGINE_NAMES[engine]} ({member}) and the journal here "
        f"is on {_ENGINE_NAMES[here]}: {how}, or restore only the config with --config-only"
    )


_ENGINE_NAMES: Final = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _check_archived_dump(path: Path, version: int) -> None:
    try:
        check_dump(path)
    except PostgresBackupError as exc:
        raise RestoreRefused(f"the archived database is unusable: {exc}") from exc
    if version > LATEST_VERSION:
        raise RestoreRefused(
            f"the archived database is at schema version {version}, newer than this "
            f"coordinator knows ({LATEST_VERSION}): restore it with the newer coordinator"
        )


def postgres_refusal(database: PostgresDatabase) -> str | None:
    """Why the journal on PostgreSQL must not be restored now (a coordinator uses it), or None."""
    try:
        connected = coordinators_connected(database.dsn)
        holder = live_lease(database.dsn)
    except PostgresBackupError as exc:
        return str(exc)
    if connected:
        return (
            f"{len(connected)} coordinator connection(s) on {database.label} (from "
            f"{', '.join(sorted(set(connected)))}): the journal is never restored under a "
            "running coordinator, leader or standby; stop every one first, or restore only "
            "the config with --config-only"
        )
    if holder is not None:
        return (
            f"the lease on {database.label} is held by {holder} and has not expired: wait for "
            "it to expire (a coordinator stopped by kill -9 holds it a few seconds)"
        )
    return None


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
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'safety_state'"
        ).fetchone()
    if found is None:
        raise RestoreRefused(
            f"the archived database (schema version {version}) has no safety_state table, so "
            "it cannot be restored with the kill switch active"
        )


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def interrupted_restore(data_dir: Path) -> list[Path]:
    """The old database files a restore kept aside and did not get to remove (it died)."""
    try:
        return sorted(p for p in data_dir.iterdir() if p.name.startswith(ASIDE_PREFIX))
    except FileNotFoundError:
        return []


# --- describing ----------------------------------------------------------------------------------


def describe_plan(plan: RestorePlan) -> str:
    """What a restore would do: a unified diff per config file that differs, and the database."""
    lines = [f"backup {_which(plan)}, taken {plan.taken}, verified", f"sha256 {plan.sha256}"]
    for change in plan.changes:
        lines.append(_diff(plan, change, plan.taken))
    unchanged = len(CONFIG_FILES) - len(plan.changes)
    lines.append(f"{unchanged} config file(s) already match the backup")
    if plan.restores_database and plan.postgres is not None:
        lines.append(
            f"{plan.database_label} would be replaced by the dump from {plan.taken} (schema "
            f"version {_db_version(plan)}), in one transaction; the current journal is dumped "
            "into pre-restore first (the lease tables are left as they are)"
        )
    elif plan.restores_database:
        lines.append(
            f"the database {plan.data_dir / DATABASE_FILE} would be replaced by the copy from "
            f"{plan.taken} (schema version {_db_version(plan)}); the current file, with its "
            "-wal and -shm, is kept in pre-restore"
        )
        lines.extend(database_warnings(plan, done=False))
    elif plan.manifest.database is not None:
        lines.append("the database is left as it is (--config-only)")
    else:
        lines.append("the backup holds no database; the database is left as it is")
    return "\n".join(lines)


def database_warnings(plan: RestorePlan, done: bool) -> list[str]:
    """What a database restore means for trading, said plainly (dry run and real run)."""
    goes = "went" if done else "goes"
    will = "is" if done else "will be"
    return [
        f"WARNING: the database {goes} back to {plan.taken}: orders and fills after that time "
        "are not in it (the exchanges still have them)",
        f"WARNING: the kill switch {will} ACTIVE in the restored journal (trigger "
        f'"{RESTORE_TRIGGER}"): no bot can start until it is overridden',
        f"WARNING: run `{RECONCILE_COMMAND}` (then `{RECONCILE_COMMAND} --apply`) before trading; "
        "override the kill switch only once the journal agrees with the exchanges",
    ]


def kill_switch_reason(plan: RestorePlan) -> str:
    return (
        f"database restored from {plan.backup_name} (taken {plan.taken}): the journal is older "
        f"than the exchanges; reconcile ({RECONCILE_COMMAND}) before overriding"
    )


def _which(plan: RestorePlan) -> str:
    if plan.archive.name == plan.backup_name:
        return f"{plan.backup_name} ({plan.source})"
    return f"{plan.backup_name} ({plan.source}, named as {plan.archive})"


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


# --- applying ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _File:
    """One file the restore replaces, and how far it got."""

    target: Path
    saved: Path | None = None  # its pre-restore copy; None when it did not exist
    stat: os.stat_result | None = None  # of the file it replaces
    temp: Path | None = None  # the new content, staged beside the target
    renamed: bool = False


@dataclass(slots=True)
class _Database:
    live: Path
    staged: Path
    asides: list[tuple[Path, Path]] = field(default_factory=list)  # (live name, aside name)
    linked: bool = False  # the live database is kept aside by a hard link (not renamed)
    replaced: bool = False


def apply_restore(plan: RestorePlan, saved: Path, at: datetime) -> RestoreOutcome:
    """Carry out a prepared plan, all or nothing. `saved` is the new, empty pre-restore folder
    (made by the caller, which holds the data dir's and the backup dir's locks); a real restore's
    database must have been staged in the data dir (`prepare_restore(database_to=...)`)."""
    if plan.nothing_to_do:
        return RestoreOutcome([], None)
    if plan.postgres is not None and plan.staged_database is not None:
        return _apply_with_postgres(plan, plan.postgres, plan.staged_database, saved, at)
    files = [_File(plan.config_dir / change.file) for change in plan.changes]
    database = None
    if plan.staged_database is not None:
        if plan.staged_database.parent != plan.data_dir:
            raise ValueError("the database to restore is not staged beside the live one")
        database = _Database(plan.data_dir / DATABASE_FILE, plan.staged_database)
    try:
        _keep(plan, files, database, saved, at)
        _stage(plan, files, database, at)
    except BaseException as exc:
        _discard_staged(files, database)
        remove_tree(saved)
        if isinstance(exc, (OSError, sqlite3.Error)):
            raise RestoreFailed(
                f"restore failed before any file was replaced: {_reason(exc)}; nothing was changed",
                [(f.target, UNCHANGED) for f in files] + _database_state(database),
                None,
            ) from exc
        raise
    try:
        _rename(plan, files, database)
    except BaseException as exc:
        states = _roll_back(files, database, saved)
        _discard_staged(files, database)
        undone = (
            "every file replaced so far was put back"
            if not any(state.startswith("NOT") for _, state in states)
            else "SOME FILES COULD NOT BE PUT BACK (below): put them back from the pre-restore "
            "folder before starting the coordinator"
        )
        raise RestoreFailed(
            f"restore failed while putting files in place: {_reason(exc)}; {undone}",
            states,
            saved,
        ) from exc
    warnings = _remove_asides(database)
    replaced = [str(f.target) for f in files] + ([str(database.live)] if database else [])
    return RestoreOutcome(replaced, saved, warnings)


PG_PRE_RESTORE_DUMP: Final = "database/coordinator.pgdump"


def _apply_with_postgres(
    plan: RestorePlan, postgres: PostgresDatabase, dump: Path, saved: Path, at: datetime
) -> RestoreOutcome:
    """The journal on PostgreSQL and the config files. The journal first, in one transaction
    (all or nothing, with the kill switch ACTIVE); then the config files, all or nothing as
    for SQLite. The config files cannot join the database's transaction: if they fail after
    it committed, they are put back and the journal stays restored (said plainly)."""
    files = [_File(plan.config_dir / change.file) for change in plan.changes]
    try:
        _keep(plan, files, None, saved, at, postgres)
        _stage(plan, files, None, at)
        state = restored_kill_switch(plan, at, None)  # last_lifted: kept by the restore's SQL
        restore_database(
            postgres, dump, STATE_KEY, state.to_json(), iso(at), LATEST_VERSION,
            restored=(RESTORED_KEY, restored_mark(plan, at).to_json()),
        )  # fmt: skip
    except BaseException as exc:
        _discard_staged(files, None)
        remove_tree(saved)
        if isinstance(exc, (OSError, PostgresBackupError)):
            raise RestoreFailed(
                f"restore failed before anything was replaced: {_reason(exc)}; nothing was changed",
                [*((f.target, UNCHANGED) for f in files), (postgres.label, UNCHANGED)],
                None,
            ) from exc
        raise
    restored = (
        postgres.label,
        f"RESTORED from the backup (committed); the journal as it was is in "
        f"{saved / PG_PRE_RESTORE_DUMP}",
    )
    try:
        _rename(plan, files, None)
    except BaseException as exc:
        states = _roll_back(files, None, saved)
        _discard_staged(files, None)
        raise RestoreFailed(
            f"the journal was restored but the config files could not be put in place: "
            f"{_reason(exc)}; the config files replaced so far were put back (below)",
            [*states, restored],
            saved,
        ) from exc
    return RestoreOutcome([str(f.target) for f in files] + [postgres.label], saved)


def _reason(exc: BaseException) -> str:
    return os_reason(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__


def _database_state(database: _Database | None) -> list[tuple[Path, str]]:
    return [(database.live, UNCHANGED)] if database is not None else []


def _keep(
    plan: RestorePlan,
    files: list[_File],
    database: _Database | None,
    saved: Path,
    at: datetime,
    postgres: PostgresDatabase | None = None,
) -> None:
    """Phase 1: copy what the restore replaces into `saved`, with a note of what happened."""
    kept: list[str] = []
    if files:
        (saved / "config").mkdir(mode=0o700)
    for file in files:
        with contextlib.suppress(FileNotFoundError):
            file.stat = file.target.stat()
        if file.stat is not None:
            file.saved = saved / "config" / file.target.name
            copy_file(file.target, file.saved)
            kept.append(f"config/{file.target.name}")
    if database is not None:
        (saved / "database").mkdir(mode=0o700)
        for path in (database.live, *(Path(f"{database.live}{s}") for s in DATABASE_COMPANIONS)):
            if path.exists():
                copy_file(path, saved / "database" / path.name)
                kept.append(f"database/{path.name}")
    if postgres is not None:
        (saved / "database").mkdir(mode=0o700)
        if schema_version(postgres.dsn) is not None:  # an empty database has nothing to keep
            dump_database(postgres, saved / PG_PRE_RESTORE_DUMP)
            kept.append(PG_PRE_RESTORE_DUMP)
    note = {
        "restored_from": str(plan.source),
        "backup": plan.backup_name,
        "named_as": str(plan.archive),
        "archive_sha256": plan.sha256,
        "backup_created_at": plan.manifest.created_at.isoformat(),
        "restored_at": at.isoformat(),
        "config_dir": str(plan.config_dir),
        "data_dir": str(plan.data_dir),
        "database_restored": database is not None or postgres is not None,
        "database": postgres.label if postgres is not None else str(plan.data_dir / DATABASE_FILE),
        "kept_here": kept,
        "undo": "copy these files back (stop the coordinator first)"
        + (
            f"; the journal: pg_restore --clean --if-exists -d DSN {PG_PRE_RESTORE_DUMP}"
            if postgres is not None
            else ""
        ),
    }
    write_file(saved / "restore.json", (json.dumps(note, indent=2) + "\n").encode())
    for directory in (saved / "config", saved / "database", saved):
        if directory.is_dir():
            fsync_dir(directory)


def _stage(plan: RestorePlan, files: list[_File], database: _Database | None, at: datetime) -> None:
    """Phase 2: every new file written and fsync'd beside its target; nothing renamed yet."""
    if files:
        plan.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for file, change in zip(files, plan.changes, strict=True):
        file.temp = file.target.with_name(f"{TEMP_PREFIX}{file.target.name}.restore")
        remove_tree(file.temp)
        write_file(file.temp, change.restored)
        _same_mode_and_owner(file.temp, file.stat)
    if database is not None:
        with contextlib.suppress(FileNotFoundError):
            _same_mode_and_owner(database.staged, database.live.stat())
        _activate_kill_switch(database.staged, plan, at)


def _same_mode_and_owner(path: Path, like: os.stat_result | None) -> None:
    """`path` gets the mode, and when permitted the owner and group, of the file it replaces."""
    if like is None:
        return
    os.chmod(path, like.st_mode & 0o7777)
    with contextlib.suppress(PermissionError):
        os.chown(path, like.st_uid, like.st_gid)


def restored_kill_switch(
    plan: RestorePlan, at: datetime, last_lifted: dict[str, Any] | None
) -> KillSwitchState:
    """The kill switch a restored journal has: ACTIVE, saying why (either engine)."""
    return KillSwitchState(
        active=True,
        reason=kill_switch_reason(plan),
        by="restore",
        at=at,
        trigger=RESTORE_TRIGGER,
        cooldown_until=None,
        last_lifted=last_lifted,
    )


def restored_mark(plan: RestorePlan, at: datetime) -> RestoredJournal:
    """What the restored journal records of its restore (either engine): reconciliation
    adopts the orders placed between the backup and `at` by it (coordinator/store/restored.py)."""
    return RestoredJournal(plan.backup_name, plan.manifest.created_at, at)


def _activate_kill_switch(database: Path, plan: RestorePlan, at: datetime) -> None:
    """The kill switch ACTIVE in the staged journal (the row `KillSwitch.load` reads; no row in
    kill_switch_activations, so it does not count toward the activation limit)."""
    with closing(sqlite3.connect(database)) as conn:
        row = conn.execute("SELECT value FROM safety_state WHERE key = ?", (STATE_KEY,)).fetchone()
        last_lifted = None
        if row is not None:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                last_lifted = json.loads(row[0]).get("last_lifted")
        state = restored_kill_switch(
            plan, at, last_lifted if isinstance(last_lifted, dict) else None
        )
        value = json.dumps(state.to_json(), default=str, sort_keys=True)
        mark = json.dumps(restored_mark(plan, at).to_json(), sort_keys=True)
        with conn:
            for key, stored in ((STATE_KEY, value), (RESTORED_KEY, mark)):
                conn.execute(
                    "INSERT INTO safety_state (key, value, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (key, stored, iso(at)),
                )
    fd = os.open(database, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(plan: RestorePlan, files: list[_File], database: _Database | None) -> None:
    """Phase 3: renames only (they need no space)."""
    for file in files:
        assert file.temp is not None
        os.replace(file.temp, file.target)
        file.renamed = True
    if database is not None:
        for suffix in DATABASE_COMPANIONS:
            path = Path(f"{database.live}{suffix}")
            if path.exists():
                aside = plan.data_dir / f"{ASIDE_PREFIX}{path.name}"
                os.rename(path, aside)
                database.asides.append((path, aside))
        if database.live.exists():
            aside = plan.data_dir / f"{ASIDE_PREFIX}{database.live.name}"
            try:
                os.link(database.live, aside)  # the live name never goes missing
                database.linked = True
            except OSError:
                os.rename(database.live, aside)
            database.asides.append((database.live, aside))
        os.replace(database.staged, database.live)
        database.replaced = True
    if files:
        fsync_dir(plan.config_dir)
    if database is not None:
        fsync_dir(plan.data_dir)


def _roll_back(
    files: list[_File], database: _Database | None, saved: Path
) -> list[tuple[Path, str]]:
    """Undo phase 3 as far as it got; each file's state, said plainly."""
    states: list[tuple[Path, str]] = []
    for file in files:
        if not file.renamed:
            states.append((file.target, UNCHANGED))
            continue
        try:
            _put_back(file)
        except OSError as exc:
            before = (
                f"its previous version is {file.saved}"
                if file.saved is not None
                else "it did not exist before"
            )
            states.append(
                (
                    file.target,
                    f"NOT put back ({os_reason(exc)}): it holds the backup's version; {before}",
                )
            )
        else:
            states.append((file.target, "put back as it was"))
    if database is not None:
        states.append((database.live, _database_back(database, saved)))
    return states


def _put_back(file: _File) -> None:
    if file.saved is None:  # created by the restore
        file.target.unlink(missing_ok=True)
    else:
        temp = file.target.with_name(f"{TEMP_PREFIX}{file.target.name}.rollback")
        remove_tree(temp)
        try:
            copy_file(file.saved, temp)
            _same_mode_and_owner(temp, file.stat)
            os.replace(temp, file.target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    fsync_dir(file.target.parent)


def _database_back(database: _Database, saved: Path) -> str:
    if not database.asides and not database.replaced:
        return UNCHANGED
    try:
        if database.replaced and not any(live == database.live for live, _ in database.asides):
            database.live.unlink()  # there was no database before the restore
        for live, aside in reversed(database.asides):
            if live == database.live and database.linked and not database.replaced:
                aside.unlink()  # two names of one file: a rename between them does nothing
            else:
                os.replace(aside, live)
        fsync_dir(database.live.parent)
    except OSError as exc:
        return (
            f"NOT put back ({os_reason(exc)}): the database, -wal and -shm as they were are in "
            f"{saved / 'database'} (and any {ASIDE_PREFIX}* file in {database.live.parent})"
        )
    return "put back as it was" if database.replaced else UNCHANGED


def _discard_staged(files: list[_File], database: _Database | None) -> None:
    for file in files:
        if file.temp is not None and not file.renamed:
            file.temp.unlink(missing_ok=True)
    if database is not None and not database.replaced:
        database.staged.unlink(missing_ok=True)
        Path(f"{database.staged}-journal").unlink(missing_ok=True)


def _remove_asides(database: _Database | None) -> list[str]:
    """After success: the old database files kept aside go (their copies are in pre-restore)."""
    warnings: list[str] = []
    if database is None:
        return warnings
    for _, aside in database.asides:
        try:
            aside.unlink()
        except OSError as exc:
            warnings.append(
                f"could not remove {aside} ({os_reason(exc)}): an old database file, also kept "
                "in pre-restore; remove it by hand"
            )
    with contextlib.suppress(OSError):
        fsync_dir(database.live.parent)
    return warnings
