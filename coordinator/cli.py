"""`bot-coordinator`: run the coordinator and its control plane.

Exit codes: 0 clean stop; 1 could not start (port in use, another coordinator on the data dir,
unusable database); 2 bad configuration or arguments, with every problem listed.
`--verify-data` (`coordinator/verify_cli.py`) has its own: 0 clean, 1 inconsistent, 2 no database;
`--health-check` (`coordinator/health_cli.py`): 0 healthy, 1 not.
`config diff|approve` (`coordinator/config_cli.py`): 0 approved or nothing to approve, 1 refused
or failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from coordinator import __version__
from coordinator.accounts import MissingCredentials
from coordinator.api.auth import TokenError, load_or_create_admin_token, load_or_create_token
from coordinator.arguments import lease_seconds, port_number
from coordinator.backup_cli import (
    BACKUP_COMMANDS,
    add_backup_commands,
    restore_hint,
    run_backup_command,
)
from coordinator.bot_test import print_summary, run_bot_test, with_mode
from coordinator.breaker_cli import add_breaker_commands, reset_breaker
from coordinator.config import ConfigError, embedded_config_dir, load_config
from coordinator.config.models import BotMode, CoordinatorConfig
from coordinator.config_cli import add_config_commands, run_config_command, run_config_reload
from coordinator.control_cli import add_control_commands, run_control_command
from coordinator.drills.cli import add_drill_command, run_drill_command
from coordinator.health_cli import run_health_check
from coordinator.incident_cli import add_incident_commands, run_incident_command
from coordinator.log_analysis import add_analyze_logs_command, run_analyze_logs
from coordinator.logging_setup import configure_logging, stop_logging
from coordinator.outside_monitor_app import add_monitor_command, run_monitor
from coordinator.reconcile_cli import add_reconcile_command, reconcile
from coordinator.runtime import DATABASE_FILE
from coordinator.server import ServerOptions, StartupError, serve
from coordinator.store.choice import database_target
from coordinator.store.fence import LeaseLost
from coordinator.store.postgres_dsn import redact_dsn
from coordinator.store.sqlite import StoreError
from coordinator.token_cli import add_token_commands, refuse_exposure, run_token_command
from coordinator.verify_cli import run_verify_data

log = logging.getLogger("coordinator")

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_LEASE_LOST = 3  # a leader on PostgreSQL that stopped leading; restart it to stand by
DEFAULT_CONFIG_DIR = Path("config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bot-coordinator",
        description="Supervise trading bots and answer the control plane on 127.0.0.1:8000.",
    )
    parser.add_argument("--version", action="version", version=f"bot-coordinator {__version__}")
    parser.add_argument("--host", default="127.0.0.1", help="control plane address (127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8000, help="control plane port (8000)")
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="the operator's JSON config (./config; the embedded default when ./config is absent)",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="database and token")
    parser.add_argument(
        "--database",
        default=None,
        metavar="DSN",
        help="the journal on PostgreSQL (postgresql://user@host:port/dbname; also "
        "$BOT_COORDINATOR_DATABASE); without it, SQLite in the data dir. Several coordinators "
        "on one database: one leads and trades, the others stand by",
    )
    parser.add_argument(
        "--node-name",
        default=None,
        help="this coordinator's name in the leader lease (default host:port:pid)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=lease_seconds,
        default=5.0,
        help="the leader lease: a standby takes over this long after the leader stops renewing",
    )
    parser.add_argument(
        "--on-takeover",
        choices=["stopped", "resume"],
        default="stopped",
        help="after a takeover, leave every bot stopped (default) or start again, one by one, "
        "those the previous leader was running",
    )
    parser.add_argument("--log-dir", type=Path, default=Path("logs"), help="JSON-lines log")
    parser.add_argument(
        "--backup-dir", type=Path, default=Path("backups"), help="config and database backups"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument(
        "--no-uvloop", action="store_true", help="use the standard asyncio loop instead of uvloop"
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="every bot read-only: market data is read, every order is refused and counted",
    )
    parser.add_argument("--bot", metavar="NAME", help="with --test: the bot to run alone")
    parser.add_argument(
        "--test",
        action="store_true",
        help="run --bot NAME alone in paper mode (or --read-only) on a throw-away journal",
    )
    parser.add_argument(
        "--ticks", type=_ticks, default=10, help="with --test: how many ticks to run (10)"
    )
    parser.add_argument(
        "--verify-data",
        action="store_true",
        help="check the journal's integrity (read-only) and exit: 0 clean, 1 inconsistent,"
        " 2 no database",
    )
    parser.add_argument(
        "--health-check",
        action="store_true",
        help="ask the running coordinator's /health, or check config, journal, kill switch, "
        "dirs, disk and exchanges on its own; exit 0 healthy, 1 not",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="with --verify-data or --health-check: print the report as JSON",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_breaker_commands(commands)
    add_control_commands(commands)
    add_config_commands(commands)
    add_incident_commands(commands)
    add_drill_command(commands)
    add_reconcile_command(commands)
    add_backup_commands(commands)
    add_monitor_command(commands)
    add_analyze_logs_command(commands)
    add_token_commands(commands)
    return parser


def _ticks(text: str) -> int:
    try:
        ticks = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= ticks <= 100_000:
        raise argparse.ArgumentTypeError(f"{ticks} is outside 1-100000")
    return ticks


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.test and not args.bot:
        parser.error("--test needs --bot NAME")
    if args.bot and not args.test:
        parser.error("--bot needs --test (to start one bot in a running coordinator: POST /start)")
    if args.json and not (args.verify_data or args.health_check):
        parser.error("--json needs --verify-data or --health-check")
    # The journal, token and logs hold positions, balances and credentials' whereabouts: files
    # this process creates are readable by its user only.
    previous_umask = os.umask(0o077)
    try:
        return _main(args)
    finally:
        os.umask(previous_umask)


def _before_config(args: argparse.Namespace) -> int | None:
    """The commands that run before (or without) a valid config; None for the others."""
    if args.command == "drill":  # its own throwaway worlds: needs none of this one's config
        return run_drill_command(args)
    if args.verify_data:  # the data can be checked while the config is broken
        return run_verify_data(args)
    if args.command == "token":  # rotation: the token files and the running coordinator only
        return run_token_command(args)
    if args.command == "analyze-logs":  # reads the log; must not write to it, nor need a config
        return run_analyze_logs(args)
    if args.command == "monitor":  # a process of its own, watching the coordinator from outside
        return run_monitor(args, _config_dir(args.config_dir))
    if args.health_check:  # a broken config is one of the things it reports
        return run_health_check(args, _config_dir(args.config_dir))
    if args.command in BACKUP_COMMANDS:  # restore mends a broken config
        return run_backup_command(args, _config_dir(args.config_dir), _lock_data_dir)
    if args.command == "incident":  # evidence and records, with or without a valid config
        return run_incident_command(
            args, _config_dir(args.config_dir), lambda command: _on_journal(args, command)
        )
    if args.command == "config" and args.config_action == "reload":  # the running one checks it
        return run_config_reload(args, lambda: _coordinator_holds(args.data_dir))
    return None


def _main(args: argparse.Namespace) -> int:
    if (code := _before_config(args)) is not None:
        return code
    config_dir = _config_dir(args.config_dir)
    try:
        config = load_config(config_dir)
    except ConfigError as exc:
        _say(f"bot-coordinator: the configuration in {config_dir} is invalid:")
        for issue in exc.issues:
            _say(f"  {issue}")
        _say("nothing was started; fix the files above and start again")
        if (hint := restore_hint(args)) is not None:
            _say(hint)
        return EXIT_BAD_CONFIG
    try:
        listener = configure_logging(args.log_dir, args.log_level)
    except OSError as exc:
        _say(f"bot-coordinator: cannot write logs to {args.log_dir}: {exc}")
        return EXIT_BAD_CONFIG
    try:
        if args.command == "breaker":
            return _breaker(args, config)
        if args.command in ("kill-switch", "bot"):
            return _on_journal(args, lambda running: run_control_command(args, config, running))
        if args.command == "config":  # the config gate: diff, approve
            return _on_journal(args, lambda running: run_config_command(args, config, running))
        if args.command == "reconcile":
            return _reconcile(args, config)
        if args.test:
            return _bot_test(args, config)
        if args.read_only:
            log.warning("--read-only: every bot is read-only; orders are refused and counted")
            config = with_mode(config, BotMode.READ_ONLY)
        return _run(args, config_dir, config)
    finally:
        stop_logging(listener)


def _bot_test(args: argparse.Namespace, config: CoordinatorConfig) -> int:
    try:
        with (
            tempfile.TemporaryDirectory(prefix=f"bot-test-{args.bot}-") as scratch,
            asyncio.Runner(loop_factory=_loop_factory(args.no_uvloop)) as runner,
        ):
            summary = runner.run(
                run_bot_test(config, args.bot, args.ticks, args.read_only, Path(scratch))
            )
    except LookupError as exc:
        _say(f"bot-coordinator: --bot: {exc}")
        return EXIT_BAD_CONFIG
    except MissingCredentials as exc:
        _say(f"bot-coordinator: {exc}")
        return EXIT_BAD_CONFIG
    print_summary(summary)
    return EXIT_OK if summary["error"] is None else EXIT_START_FAILED


def _reconcile(args: argparse.Namespace, config: CoordinatorConfig) -> int:
    return _on_journal(args, lambda running: reconcile(args, config, running))


def _breaker(args: argparse.Namespace, config: CoordinatorConfig) -> int:
    return _on_journal(args, lambda running: reset_breaker(args, config, running))


def _coordinator_holds(data_dir: Path) -> bool:
    """Whether a running coordinator holds `data_dir` (its lock is taken)."""
    if not (data_dir / DATABASE_FILE).exists():
        return False
    try:
        lock = _lock_data_dir(data_dir)
    except StartupError:
        return True
    lock.close()
    return False


def _on_journal(args: argparse.Namespace, command: Callable[[bool], int]) -> int:
    """Run a command on the data dir's journal: `command(True)` when a coordinator holds it
    (ask that one), else `command(False)` holding the lock so none starts meanwhile. With the
    journal on PostgreSQL (`args.database` becomes its DSN, from the option or the
    environment), the command holds the leader lease instead (`store/offline.py`) and is
    refused while another coordinator leads."""
    try:
        args.database = database_target(args.database)
    except StoreError as exc:
        _say(f"bot-coordinator: {exc}")
        return EXIT_BAD_CONFIG
    if args.database is None and not (args.data_dir / DATABASE_FILE).exists():
        _say(f"no journal at {args.data_dir / DATABASE_FILE}: pass the coordinator's --data-dir")
        return EXIT_START_FAILED
    lock = None
    if args.data_dir.is_dir():
        try:
            lock = _lock_data_dir(args.data_dir)
        except StartupError:
            return command(True)
    try:
        return command(False)
    except StoreError as exc:  # on PostgreSQL: another coordinator leads, or no database
        _say(f"bot-coordinator: {exc}")
        return EXIT_START_FAILED
    finally:
        if lock is not None:
            lock.close()


def _run(args: argparse.Namespace, config_dir: Path, config: CoordinatorConfig) -> int:
    if config_dir != DEFAULT_CONFIG_DIR and args.config_dir is None:
        log.info("no ./config here: running on the embedded default config (%s)", config_dir)
    if (refused := refuse_exposure(args.host, args.data_dir)) is not None:
        return refused
    # A SIGHUP (`token rotate`) between taking the lock and the server's own handler must not
    # end the process: ignored until `serve` installs the handler that re-reads the tokens.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if args.data_dir.stat().st_mode & 0o077:
            log.warning("%s is readable by other users; chmod 700 it", args.data_dir)
        lock = _lock_data_dir(args.data_dir)
        token = load_or_create_token(args.data_dir)
        admin_token = load_or_create_admin_token(args.data_dir)
    except (OSError, TokenError, StartupError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_START_FAILED
    try:
        database = database_target(args.database)
    except StoreError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_START_FAILED
    options = ServerOptions(
        args.host, args.port, args.data_dir, args.backup_dir, read_only=args.read_only,
        log_dir=args.log_dir, database=database, node=args.node_name,
        lease_seconds=args.lease_seconds, on_takeover=args.on_takeover,
    )
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.no_uvloop)) as runner:
            runner.run(serve(config, options, token, admin_token))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_START_FAILED
    except LeaseLost as exc:
        log.critical("stopped leading: %s (start it again to stand by)", exc)
        return EXIT_LEASE_LOST
    except StoreError as exc:
        where = redact_dsn(database) if database else args.data_dir
        log.error("cannot use the database in %s: %s", where, exc)
        return EXIT_START_FAILED
    except MissingCredentials as exc:
        log.error("cannot start: %s", exc)
        return EXIT_BAD_CONFIG
    finally:
        lock.close()
    return EXIT_OK


def _config_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    if (DEFAULT_CONFIG_DIR / "bots.json").exists():
        return DEFAULT_CONFIG_DIR
    return embedded_config_dir()


def _lock_data_dir(data_dir: Path) -> IO[str]:
    """One coordinator per data dir: two would trade the same accounts from two journals."""
    handle = (data_dir / "coordinator.lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StartupError(
            f"another coordinator (pid {holder}) is running on {data_dir}; stop it first"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _loop_factory(no_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    if not no_uvloop:
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed; using the standard asyncio loop")
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
    return asyncio.new_event_loop


def _say(line: str) -> None:
    print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
