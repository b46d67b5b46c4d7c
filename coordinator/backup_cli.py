"""`bot-coordinator backup` and `bot-coordinator restore`: backups from the command line.

`backup [--backup-dir B] [--data-dir D] [--config-dir C]`: when a coordinator runs on the data
dir (it holds the data dir's lock), the backup is asked of it (`POST /backups` with the operator
token), so the database copy is taken beside the live writer and the backup is audited there;
otherwise it is taken directly (holding the lock, so no coordinator starts meanwhile).

`restore [ARCHIVE | --latest] [--config-only] [--dry-run]`: the archive is checked completely
and its config loaded by the real loader before anything is touched (`backups/restore.py`), in a
scratch directory under $TMPDIR (a dry run never writes to the backup dir). With neither ARCHIVE
nor `--latest` it lists the backups that verify and suggests `--latest`. Then the safety rules:

- a database is never restored under a running coordinator (stop it first, or `--config-only`);
- config is restored under a running coordinator only if no bot is trading or the kill switch is
  active (asked of its `/status`; a coordinator that does not answer is a refusal); the running
  process keeps the config it loaded until it is restarted;
- with no coordinator running, the data dir's lock is held for the whole restore;
- a real restore needs a writable backup dir (the backup dir's lock, and `pre-restore-<time>/`
  for what it replaces): without one it refuses before it changes anything;
- a restored database has the kill switch active; both the dry run and the restore say that the
  journal goes back to the backup's time and that `bot-coordinator reconcile` comes first.

`--dry-run` prints a unified diff per config file that would change and what would happen to the
database, and changes nothing. Exit codes: 0 done, 1 refused or failed (the message says what
state each file is in), 2 bad arguments or an invalid configuration to back up.

With `--database` (or $BOT_COORDINATOR_DATABASE) the journal is on PostgreSQL: `backup` dumps
it directly (`pg_dump` reads one snapshot beside a running leader, so no lock is needed), and
`restore` replaces it in one transaction, refused while any coordinator is connected to that
database (`backups/postgres_dump.py`).

`restore_hint` is what start-up prints when the config is invalid: the exact command that
restores the newest backup that the command accepts (checked the same way the restore checks it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from coordinator.backups.archive import ScratchWriteError, read_manifest
from coordinator.backups.create import BackupFailed, BackupRequest, Retention, take_backup
from coordinator.backups.layout import (
    LATEST_ARCHIVE,
    PRE_RESTORE_PREFIX,
    BackupBusy,
    archive_names,
    directory_lock,
    os_reason,
    unique_dir_name,
)
from coordinator.backups.manifest import ArchiveError, Manifest
from coordinator.backups.postgres_dump import PostgresDatabase
from coordinator.backups.restore import (
    STAGED_DATABASE,
    RestoreFailed,
    RestorePlan,
    RestoreRefused,
    apply_restore,
    check_archive,
    database_warnings,
    describe_plan,
    interrupted_restore,
    postgres_refusal,
    prepare_restore,
    scratch_dir,
    taken_at,
)
from coordinator.config import ConfigError, load_config
from coordinator.control_client import ControlPlaneError, ask_running
from coordinator.logging_setup import configure_logging, stop_logging
from coordinator.runtime import DATABASE_FILE
from coordinator.server import StartupError
from coordinator.store.choice import database_target, open_store
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import StoreError

BACKUP_COMMANDS: Final = frozenset({"backup", "restore"})
DEFAULT_BACKUP_DIR: Final = Path("backups")
DEFAULT_CONFIG_DIR: Final = Path("config")
DEFAULT_DATA_DIR: Final = Path("data")
ACTOR: Final = "cli"
QUIET_STATES: Final = frozenset({"stopped", "crashed"})
LISTED: Final = 5  # backups `restore` with no argument lists

LockDataDir = Callable[[Path], IO[str]]


def add_backup_commands(subparsers: Any) -> None:
    backup = subparsers.add_parser("backup", help="back up config and database now")
    _where(backup)
    restore = subparsers.add_parser(
        "restore", help="restore config (and database) from a backup, checked first"
    )
    restore.add_argument("archive", nargs="?", type=Path, help="a backups/config-*.tar.gz")
    restore.add_argument("--latest", action="store_true", help="the newest good backup")
    restore.add_argument("--config-only", action="store_true", help="leave the database alone")
    restore.add_argument("--dry-run", action="store_true", help="show what would change, only")
    _where(restore)


def _where(parser: argparse.ArgumentParser) -> None:
    """The top-level location options, also accepted after the command (`backup --data-dir D`).
    SUPPRESS: when not given here, the top-level value (or its default) stays."""
    suppress = argparse.SUPPRESS
    parser.add_argument("--backup-dir", type=Path, default=suppress, help="backups (./backups)")
    parser.add_argument("--data-dir", type=Path, default=suppress, help="database (./data)")
    parser.add_argument("--config-dir", type=Path, default=suppress, help="config (./config)")
    parser.add_argument("--log-dir", type=Path, default=suppress, help="log (./logs)")
    parser.add_argument("--host", default=suppress, help="a running coordinator's address")
    parser.add_argument("--port", type=_port, default=suppress, help="its port (8000)")
    parser.add_argument(
        "--database", default=suppress, metavar="DSN", help="the journal on PostgreSQL"
    )


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def run_backup_command(args: argparse.Namespace, config_dir: Path, lock: LockDataDir) -> int:
    """`backup` or `restore`, logged to the log dir like the coordinator itself."""
    try:
        listener = configure_logging(args.log_dir, args.log_level)
    except OSError as exc:
        _say(f"bot-coordinator: cannot write logs to {args.log_dir}: {exc}")
        return 2
    try:
        if args.command == "backup":
            return _backup(args, config_dir, lock)
        return _restore(args, lock)
    finally:
        stop_logging(listener)


# --- backup --------------------------------------------------------------------------------------


def _postgres(args: argparse.Namespace) -> PostgresDatabase | int | None:
    """The journal on PostgreSQL that --database or $BOT_COORDINATOR_DATABASE names; None for
    SQLite in the data dir; an exit code after saying what is wrong."""
    try:
        dsn = database_target(args.database)
    except StoreError as exc:
        _say(f"bot-coordinator: {exc}")
        return 2
    return None if dsn is None else PostgresDatabase(dsn)


def _backup(args: argparse.Namespace, config_dir: Path, lock_data_dir: LockDataDir) -> int:
    postgres = _postgres(args)
    if isinstance(postgres, int):
        return postgres
    if postgres is not None:  # pg_dump reads one snapshot beside a running leader: no lock
        return _backup_directly(args, config_dir, postgres)
    held = None
    if args.data_dir.is_dir():
        try:
            held = lock_data_dir(args.data_dir)
        except StartupError:
            return _backup_through_control_plane(args)
    try:
        return _backup_directly(args, config_dir)
    finally:
        if held is not None:
            held.close()


def _backup_directly(
    args: argparse.Namespace, config_dir: Path, postgres: PostgresDatabase | None = None
) -> int:
    try:
        settings = load_config(config_dir).recovery.backups
    except ConfigError as exc:
        _say(f"the configuration in {config_dir} is invalid, so it is not backed up:")
        for issue in exc.issues:
            _say(f"  {issue}")
        return 2
    database: Path | PostgresDatabase = args.data_dir / DATABASE_FILE
    if postgres is not None:
        database = postgres
        include = settings.include_database
    else:
        include = settings.include_database and args.data_dir.joinpath(DATABASE_FILE).is_file()
        if settings.include_database and not include:
            _say(f"no database at {database}: backing up the config only")
    request = BackupRequest(
        config_dir=config_dir,
        backup_dir=args.backup_dir,
        database=database if include else None,
        trigger="cli",
        at=datetime.now(UTC),
        retention=Retention(settings.keep_count, settings.keep_days),
    )
    try:
        result = take_backup(request)
    except BackupFailed as exc:
        _say(f"backup failed; the previous latest is unchanged: {exc}")
        _audit_directly(args.data_dir, None, f"error: {exc}", {"trigger": "cli"}, postgres=postgres)
        return 1
    _audit_directly(args.data_dir, result.archive.name, "ok", result.as_dict(), postgres=postgres)
    _say(f"backup written: {result.archive} ({result.size} bytes, {result.seconds:.2f}s)")
    print(json.dumps(result.as_dict(), indent=2))
    return 0


def _backup_through_control_plane(args: argparse.Namespace) -> int:
    answer = _ask(args, "POST", "/backups", {})
    if isinstance(answer, int):
        return answer
    _say(f"backup written by the running coordinator: {answer.get('archive')}")
    print(json.dumps(answer, indent=2))
    return 0


# --- restore -------------------------------------------------------------------------------------


def _archive_to_restore(args: argparse.Namespace) -> Path | int:
    """The archive the operator named, or an exit code after saying what is wrong."""
    if args.latest and args.archive is not None:
        _say("restore: name one backup: an ARCHIVE path, or --latest, not both")
        return 2
    if not args.latest and args.archive is None:
        return _list_restorable(args)
    archive: Path = args.backup_dir / LATEST_ARCHIVE if args.latest else args.archive
    if not archive.is_file():
        _say(f"restore: no backup at {archive}{_newest_good_hint(args.backup_dir, None)}")
        return 1
    return archive


def _restore(args: argparse.Namespace, lock_data_dir: LockDataDir) -> int:
    archive = _archive_to_restore(args)
    if isinstance(archive, int):
        return archive
    postgres = _postgres(args)
    if isinstance(postgres, int):
        return postgres
    held = None
    running = False
    if args.data_dir.is_dir():
        try:
            held = lock_data_dir(args.data_dir)
        except StartupError:
            running = True
    try:
        with contextlib.ExitStack() as stack:
            if not args.dry_run:  # a dry run writes nothing: it needs no lock and no space here
                try:
                    stack.enter_context(directory_lock(args.backup_dir))
                except BackupBusy as exc:
                    _say(f"restore refused; nothing was changed: {exc}")
                    return 1
                except OSError as exc:
                    _say(_unwritable_backup_dir(args.backup_dir, exc))
                    return 1
            if postgres is not None and not args.config_only:
                return _restore_postgres(args, archive, running, postgres)
            return _restore_locked(args, archive, running)
    except OSError as exc:  # outside what apply_restore accounts for: before any change
        _say(f"restore failed; nothing was changed: {os_reason(exc)}")
        return 1
    finally:
        if held is not None:
            held.close()


def _pre_restore_dir(args: argparse.Namespace) -> Path | int:
    """A new, empty pre-restore folder for what the restore replaces; or an exit code after
    saying the backup dir cannot take it."""
    saved = unique_dir_name(args.backup_dir, PRE_RESTORE_PREFIX, datetime.now(UTC))
    try:
        saved.mkdir(mode=0o700)
    except OSError as exc:
        _say(_unwritable_backup_dir(args.backup_dir, exc))
        return 1
    return saved


def _unwritable_backup_dir(backup_dir: Path, exc: OSError) -> str:
    return (
        f"restore refused; nothing was changed: cannot write to the backup directory "
        f"{backup_dir} ({os_reason(exc)}); a restore keeps the files it replaces there, in "
        f"{PRE_RESTORE_PREFIX}<time>/. Make it writable, or pass --backup-dir a writable "
        "directory and name the archive by its path (--dry-run works without it)"
    )


def _restore_locked(args: argparse.Namespace, archive: Path, running: bool) -> int:
    if running and not args.config_only and not args.dry_run:
        # Decided from the manifest before the database is copied beside the live one.
        try:
            holds_database = read_manifest(archive).database is not None
        except ArchiveError as exc:
            return _refused_archive(args, archive, exc)
        if holds_database:
            _say(f"restore refused; nothing was changed: {_database_under(args)}")
            return 1
    saved = None
    if not args.dry_run:
        if leftovers := interrupted_restore(args.data_dir):
            _say(
                "restore refused; nothing was changed: an earlier restore was interrupted and "
                f"left old database files in {args.data_dir}: "
                f"{', '.join(p.name for p in leftovers)}. Look at them (and at the newest "
                f"{PRE_RESTORE_PREFIX}* folder in {args.backup_dir}), then move them away"
            )
            return 1
        made = _pre_restore_dir(args)
        if isinstance(made, int):
            return made
        saved = made
    try:
        return _check_and_apply(args, archive, running, saved)
    finally:
        if saved is not None:
            with contextlib.suppress(OSError):
                saved.rmdir()  # only when empty: refused, or nothing to do


def _check_and_apply(
    args: argparse.Namespace, archive: Path, running: bool, saved: Path | None
) -> int:
    config_dir = args.config_dir or DEFAULT_CONFIG_DIR  # never the installed package's copy
    database_to = None
    if saved is not None and not args.config_only:  # staged beside the live one: one rename
        args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        database_to = args.data_dir / STAGED_DATABASE

    def prepare() -> RestorePlan:
        with scratch_dir() as scratch:
            return prepare_restore(
                archive, config_dir, args.data_dir, args.config_only, scratch, database_to
            )

    plan = _prepare(args, archive, prepare)
    if isinstance(plan, int):
        return plan
    try:
        if (ended := _dry_run_or_refusal(args, plan, _refusal(args, plan, running))) is not None:
            return ended
        assert saved is not None
        return _apply(args, plan, running, saved)
    finally:
        if database_to is not None:
            database_to.unlink(missing_ok=True)  # gone already when it was put in place


def _restore_postgres(
    args: argparse.Namespace, archive: Path, running: bool, postgres: PostgresDatabase
) -> int:
    """The config files and the journal on PostgreSQL (`postgres_dump.py`): checked in a
    scratch dir, refused while any coordinator is connected to the database."""
    config_dir = args.config_dir or DEFAULT_CONFIG_DIR
    saved = None
    try:
        with scratch_dir() as scratch:
            plan = _prepare(args, archive, lambda: prepare_restore(
                archive, config_dir, args.data_dir, False, scratch, postgres=postgres
            ))  # fmt: skip
            if isinstance(plan, int):
                return plan
            refusal = postgres_refusal(postgres) if plan.restores_database else None
            if refusal is None and running:
                refusal = _database_under(args)
            if (ended := _dry_run_or_refusal(args, plan, refusal)) is not None:
                return ended
            made = _pre_restore_dir(args)
            if isinstance(made, int):
                return made
            saved = made
            return _apply(args, plan, False, saved, postgres)
    except ScratchWriteError as exc:  # no scratch dir in $TMPDIR
        _say(f"restore failed; nothing was changed: {exc}")
        return 1
    finally:
        if saved is not None:
            with contextlib.suppress(OSError):
                saved.rmdir()  # only when empty: nothing to do


def _prepare(
    args: argparse.Namespace, archive: Path, prepare: Callable[[], RestorePlan]
) -> RestorePlan | int:
    """The checked plan, or an exit code after saying why the archive cannot be restored."""
    try:
        return prepare()
    except ArchiveError as exc:
        return _refused_archive(args, archive, exc)
    except RestoreRefused as exc:
        _say(f"restore refused; nothing was changed: {exc}")
        return 1
    except ScratchWriteError as exc:
        _say(f"restore failed; nothing was changed: {exc}")
        return 1


def _dry_run_or_refusal(
    args: argparse.Namespace, plan: RestorePlan, refusal: str | None
) -> int | None:
    """A dry run's exit code (the plan printed), or a refusal's; None: go on and restore."""
    if args.dry_run:
        print(describe_plan(plan))
        if refusal is not None:
            _say(f"a restore now would be refused: {refusal}")
            return 1
        _say("dry run: nothing was changed; run it again without --dry-run to restore")
        return 0
    if refusal is not None:
        _say(f"restore refused; nothing was changed: {refusal}")
        return 1
    return None


def _refused_archive(args: argparse.Namespace, archive: Path, exc: ArchiveError) -> int:
    _say(f"restore refused; nothing was changed: {exc}")
    _say(f"other backups are in {args.backup_dir}{_newest_good_hint(args.backup_dir, archive)}")
    return 1


def _apply(
    args: argparse.Namespace,
    plan: RestorePlan,
    running: bool,
    saved: Path,
    postgres: PostgresDatabase | None = None,
) -> int:
    if plan.nothing_to_do:
        _say(f"nothing to restore: {plan.config_dir} already matches {plan.backup_name}")
        return 0
    try:
        outcome = apply_restore(plan, saved, datetime.now(UTC))
    except RestoreFailed as exc:  # the message says what state each file is in
        _say(str(exc))
        return 1
    for path in outcome.replaced:
        _say(f"restored {path}")
    _say(f"from {plan.backup_name} (taken {plan.taken}, sha256 {plan.sha256})")
    _say(f"the files it replaced are in {outcome.saved_in}")
    for warning in outcome.warnings:
        _say(warning)
    if plan.restores_database:
        for warning in database_warnings(plan, done=True):
            _say(warning)
    details = {
        "archive": str(plan.source),
        "backup": plan.backup_name,
        "sha256": plan.sha256,
        "replaced": outcome.replaced,
        "saved_in": str(outcome.saved_in),
        "kill_switch_activated": plan.restores_database,
    }
    if running:
        _say("the running coordinator keeps the config it loaded until it is restarted")
    else:
        _audit_directly(
            args.data_dir, plan.backup_name, "ok", details, "backup.restore", postgres
        )
    return 0


def _database_under(args: argparse.Namespace) -> str:
    return (
        f"a coordinator is running on {args.data_dir}: the database is never restored "
        "under it; stop it first, or restore only the config with --config-only"
    )


def _refusal(args: argparse.Namespace, plan: RestorePlan, running: bool) -> str | None:
    """Why the restore must not happen now, or None."""
    if not running:
        return None
    if plan.restores_database:
        return _database_under(args)
    status = _ask(args, "GET", "/status", None)
    if isinstance(status, int):
        return f"a coordinator holds {args.data_dir} and its state could not be read"
    trading = [bot["name"] for bot in status.get("bots", []) if bot["state"] not in QUIET_STATES]
    if trading and not status.get("kill_switch_active", False):
        return (
            f"bots are trading ({', '.join(trading)}) and the kill switch is not active: "
            "activate the kill switch or stop the bots first"
        )
    return None


# --- which backups a restore accepts -------------------------------------------------------------


def restorable(backup_dir: Path, skip: Path | None = None) -> Iterator[tuple[Path, Manifest]]:
    """The archives a restore accepts, newest first, each checked as the restore checks it
    (`check_archive`): `backup-latest.tar.gz`, then the archives by the time in their names.
    Each file is checked once (the latest is a hard link to the newest archive), and `skip`'s
    file (one just refused, under any of its names) not at all."""
    seen: set[tuple[int, int]] = set()
    if skip is not None:
        with contextlib.suppress(OSError):
            seen.add(_file_key(skip))
    candidates = [backup_dir / LATEST_ARCHIVE]
    candidates += [backup_dir / name for name in reversed(archive_names(backup_dir))]
    for path in candidates:
        try:
            key = _file_key(path)
        except OSError:
            continue
        if key in seen:
            continue
        seen.add(key)
        try:
            manifest = check_archive(path)
        except (ArchiveError, RestoreRefused, ScratchWriteError):
            continue
        yield path, manifest


def _file_key(path: Path) -> tuple[int, int]:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise IsADirectoryError(str(path))
    return info.st_dev, info.st_ino


def _list_restorable(args: argparse.Namespace) -> int:
    """`restore` with no archive: the backups that verify, and the command for the newest."""
    _say("restore: name one backup: an ARCHIVE path, or --latest")
    found: list[tuple[Path, Manifest]] = []
    for entry in restorable(args.backup_dir):
        found.append(entry)
        if len(found) == LISTED:
            break
    if not found:
        _say(f"no backup in {args.backup_dir} verifies")
        return 2
    _say(f"backups in {args.backup_dir} that verify, newest first:")
    for path, manifest in found:
        holds = "config and database" if manifest.database is not None else "config only"
        via = f"  ({LATEST_ARCHIVE})" if path.name == LATEST_ARCHIVE else ""
        _say(f"  {args.backup_dir / manifest.archive}  taken {taken_at(manifest)}, {holds}{via}")
    newest = found[0][0]
    target = "--latest" if newest.name == LATEST_ARCHIVE else shlex.quote(str(newest))
    command = shlex.join(["bot-coordinator", "restore"]) + f" {target}"
    _say(f"to restore the newest: {command} [--config-only] [--dry-run]")
    return 2


def _newest_good_hint(backup_dir: Path, refused: Path | None) -> str:
    """Names the newest backup a restore accepts, never another name for `refused`."""
    for path, manifest in restorable(backup_dir, skip=refused):
        own = path.with_name(manifest.archive)  # the latest by its own name, when a link to it
        with contextlib.suppress(OSError):
            path = own if os.path.samefile(own, path) else path
        return f" (the newest that verifies is {path}, taken {taken_at(manifest)})"
    return " (none of them verifies)" if archive_names(backup_dir) else ""


# --- start-up on an invalid config ---------------------------------------------------------------


def restore_hint(args: argparse.Namespace) -> str | None:
    """The command that restores the newest backup that this very command accepts, or None."""
    for archive, manifest in restorable(args.backup_dir):
        target = ["--latest"] if archive.name == LATEST_ARCHIVE else [str(archive)]
        command = shlex.join(["bot-coordinator", "restore", *target, "--config-only", *_dirs(args)])
        return f"to restore the config of the newest good backup ({taken_at(manifest)}): {command}"
    return None


def _dirs(args: argparse.Namespace) -> list[str]:
    given: list[str] = []
    if args.config_dir is not None and args.config_dir != DEFAULT_CONFIG_DIR:
        given += ["--config-dir", str(args.config_dir)]
    if args.backup_dir != DEFAULT_BACKUP_DIR:
        given += ["--backup-dir", str(args.backup_dir)]
    if args.data_dir != DEFAULT_DATA_DIR:
        given += ["--data-dir", str(args.data_dir)]
    return given


# --- helpers -------------------------------------------------------------------------------------


def _ask(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None
) -> dict[str, Any] | int:
    """Ask the running coordinator; its JSON answer, or an exit code after saying why not."""
    try:
        return ask_running(args.data_dir, args.host, args.port, method, path, body, timeout=120)
    except ControlPlaneError as exc:
        _say(exc.message)
        return 1


def _audit_directly(
    data_dir: Path,
    subject: str | None,
    result: str,
    details: dict[str, Any],
    action: str = "backup.create",
    postgres: PostgresDatabase | None = None,
) -> None:
    """Audit an action taken with no coordinator running (best effort: the action is done).
    On PostgreSQL a leader may be writing too: the audit chain's primary key makes one of two
    racing appends fail and be retried, never fork the chain."""
    if postgres is None and not (data_dir / DATABASE_FILE).is_file():
        return

    async def audit() -> None:
        store = await open_store(data_dir, postgres.dsn if postgres is not None else None)
        try:
            await SqliteJournal(store).audit(
                actor=ACTOR,
                action=action,
                subject=subject,
                result=result,
                at=datetime.now(UTC),
                details=details,
            )
        finally:
            await store.close()

    try:
        asyncio.run(audit())
    except (StoreError, OSError) as exc:
        _say(f"(not audited: {exc})")


def _say(line: str) -> None:
    print(line, file=sys.stderr)
