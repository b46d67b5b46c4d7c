"""Run the coordinator and its control plane until SIGINT or SIGTERM, then shut down cleanly.

Shutdown is two steps under one deadline: stop taking actions and stop every bot (their ticks end,
open orders are cancelled, state is persisted), then close the store and the HTTP server.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from coordinator import __version__
from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken
from coordinator.bot_test import with_mode
from coordinator.config.models import BotMode, CoordinatorConfig
from coordinator.runtime import Coordinator
from coordinator.token_cli import token_reloader

log = logging.getLogger(__name__)

SHUTDOWN_DEADLINE_SECONDS = 5.0


class StartupError(Exception):
    """The coordinator could not start; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ServerOptions:
    host: str
    port: int
    data_dir: Path
    backup_dir: Path | None = None  # None: no scheduled backups, no /backups
    read_only: bool = False  # --read-only: a config reload keeps every bot read-only too
    log_dir: Path | None = None  # what an incident snapshot takes the logs from
    database: str | None = None  # a PostgreSQL DSN; None: SQLite in data_dir


async def serve(
    config: CoordinatorConfig,
    options: ServerOptions,
    token: ControlToken,
    admin_token: ControlToken | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (by a signal, when not given; then SIGHUP runs the re-read
    hooks too)."""
    on_signals = stop is None
    stop = stop or stop_on_signals()
    coordinator = await Coordinator.open(
        config, options.data_dir, backup_dir=options.backup_dir, database=options.database
    )
    # From here on the coordinator holds the store's writer thread and its timers: whatever
    # fails (building the app, binding the port) closes it, or the process would outlive the
    # error, deaf to SIGTERM (seen: a start that failed in make_app hung until SIGKILL).
    runner: web.AppRunner | None = None
    try:
        if options.log_dir is not None:
            coordinator.evidence.log_dir = options.log_dir
        if options.read_only:  # a reload reads config/ as this start did
            coordinator.reloader.transform = lambda read: with_mode(read, BotMode.READ_ONLY)
        # What SIGHUP re-reads, in order: the token files (token rotation), then config/.
        tokens = {"operator": token} | ({"admin": admin_token} if admin_token is not None else {})
        reload_hooks: list[ReloadHook] = [
            token_reloader(coordinator, tokens),
            coordinator.reloader.sighup_hook(),
        ]
        if on_signals:
            reload_on_sighup(reload_hooks)
        app = make_app(coordinator, token, admin_token, options.host)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, options.host, options.port)
        try:
            await site.start()
        except OSError as exc:
            reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc}"
            raise StartupError(
                f"cannot listen on {options.host}:{options.port}: the port {reason}; "
                f"stop the other process or pass --port"
            ) from exc
        _announce(coordinator, options, token, admin_token)
        await stop.wait()
        log.info("shutting down: stopping bots and cancelling their open orders")
    finally:
        await _shutdown(coordinator, runner)


async def _shutdown(coordinator: Coordinator, runner: web.AppRunner | None) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        # Leave room after the bots' grace for cancelling orders and closing the store.
        grace = min(
            coordinator.config.recovery.shutdown.grace_seconds, SHUTDOWN_DEADLINE_SECONDS - 2
        )
        await asyncio.wait_for(
            coordinator.close(grace_seconds=grace), timeout=SHUTDOWN_DEADLINE_SECONDS - 0.5
        )
    except TimeoutError:
        log.critical(
            "shutdown deadline passed before every bot stopped; every committed write is on "
            "disk, and orders left open are resolved at the next start"
        )
    finally:
        if runner is not None:
            await runner.cleanup()
    log.info("stopped cleanly in %.2fs", loop.time() - began)


ReloadHook = Callable[[], Awaitable[None]]


def reload_on_sighup(hooks: Sequence[ReloadHook]) -> None:
    """On SIGHUP run every hook in turn; one that fails is logged and the others still run.
    The list is read at each signal, so a hook appended later is run too."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    async def run_hooks() -> None:
        for hook in list(hooks):
            try:
                await hook()
            except Exception as exc:
                log.error("SIGHUP: a re-read failed: %r", exc, exc_info=exc)

    def on_sighup() -> None:
        log.info("SIGHUP received: re-reading")
        task = loop.create_task(run_hooks())
        running.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(running.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGINT or SIGTERM (a second one is only logged)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(signame: str) -> None:
        if stop.is_set():
            log.warning("%s again: already shutting down", signame)
            return
        log.info("%s received", signame)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop, sig.name)
    return stop


def _announce(
    coordinator: Coordinator,
    options: ServerOptions,
    token: ControlToken,
    admin_token: ControlToken | None,
) -> None:
    bots = coordinator.config.bots.bots
    modes = ", ".join(f"{b.name} ({b.mode.value}, {b.market_data.value} data)" for b in bots)
    log.info(
        "bot-coordinator %s listening on http://%s:%d with %d bots: %s",
        __version__,
        options.host,
        options.port,
        len(bots),
        modes,
    )
    if token.source == "file":
        hint = f"export TOKEN=$(cat {token.path})"
    else:
        hint = "the token is in $BOT_COORDINATOR_TOKEN"
    log.info("control token: %s  (%s)", token.where(), hint)
    if admin_token is not None:
        log.info("admin token (force_override, breaker resets): %s", admin_token.where())
    log.info("ready: curl http://%s:%d/status", options.host, options.port)
    log.info(
        "dashboard: http://%s:%d/ in a browser (paste the control token once to start and stop "
        "bots; the kill switch button needs none)",
        "localhost" if options.host == "127.0.0.1" else options.host,
        options.port,
    )
    if options.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "the control plane listens on %s, not loopback: anything that reaches this machine "
            "can read /status",
            options.host,
        )
