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
from typing import TYPE_CHECKING, Any

from aiohttp import web

from coordinator import __version__
from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken
from coordinator.bot_test import with_mode
from coordinator.config.models import BotMode, CoordinatorConfig
from coordinator.errors import CoordinatorError
from coordinator.runtime import Coordinator
from coordinator.store.fence import LeaseLost
from coordinator.store.sqlite import StoreError
from coordinator.token_cli import token_reloader

if TYPE_CHECKING:
    from coordinator.leadership import Leadership

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
    node: str | None = None  # this node's name in the leader lease (PostgreSQL)
    lease_seconds: float = 5.0  # the leader lease's length (PostgreSQL)
    on_takeover: str = "stopped"  # "stopped" or "resume": the bots a takeover starts


async def serve(
    config: CoordinatorConfig,
    options: ServerOptions,
    token: ControlToken,
    admin_token: ControlToken | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (by a signal, when not given; then SIGHUP runs the re-read
    hooks too). On PostgreSQL, first wait as a standby until this node holds the leader lease
    (coordinator/leadership.py); raises LeaseLost when it stops leading."""
    on_signals = stop is None
    stop = stop or stop_on_signals()
    if options.database is None:
        await _lead(config, options, token, admin_token, stop, on_signals, None)
        return
    from coordinator.leadership import Leadership, default_node_name

    leadership = await Leadership.open(
        options.database,
        options.node or default_node_name(options.port),
        lease_seconds=options.lease_seconds,
    )
    # The standby's server, kept answering until the leader's is about to listen on the port:
    # a takeover is not a gap of refused connections while the journal opens.
    standby: list[web.AppRunner] = []
    try:
        if await _stand_by(leadership, options, stop, standby) is None:
            return  # stopped while a standby
        await _lead(config, options, token, admin_token, stop, on_signals, leadership, standby)
    finally:
        try:
            for runner in standby:
                await runner.cleanup()
            await leadership.release()  # a clean end: a standby need not wait the lease out
        finally:
            await leadership.close()


async def _stand_by(
    leadership: Leadership,
    options: ServerOptions,
    stop: asyncio.Event,
    standby: list[web.AppRunner],
) -> int | None:
    """The lease at once if it is free; else serve as a standby until it is ours (its term) or
    `stop` is set (None). The standby's server is left in `standby`, still serving."""
    term = await leadership.try_acquire()
    if term is not None:
        log.warning("%s leads (term %d)", leadership.node, term)
        return term
    from coordinator.api.standby import make_standby_app

    runner = web.AppRunner(
        make_standby_app(leadership, options.host), access_log=None, handle_signals=False
    )
    await runner.setup()
    standby.append(runner)
    await _listen(runner, options)
    view = await leadership.view()
    log.warning(
        "standby %s on http://%s:%d: %s leads (term %d); taking over when its lease lapses",
        leadership.node, options.host, options.port, view.holder, view.term,
    )
    return await leadership.wait_until_leader(stop)


async def _listen(runner: web.AppRunner, options: ServerOptions) -> None:
    site = web.TCPSite(runner, options.host, options.port)
    try:
        await site.start()
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc}"
        raise StartupError(
            f"cannot listen on {options.host}:{options.port}: the port {reason}; "
            f"stop the other process or pass --port"
        ) from exc


async def _lead(
    config: CoordinatorConfig,
    options: ServerOptions,
    token: ControlToken,
    admin_token: ControlToken | None,
    stop: asyncio.Event,
    on_signals: bool,
    leadership: Leadership | None,
    standby: list[web.AppRunner] | None = None,
) -> None:
    lost: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    coordinator = await _open_renewing(config, options, leadership, stop, lost, tasks)
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
        while standby:  # the standby's server gives the port up only now
            await standby.pop().cleanup()
        await _listen(runner, options)
        _announce(coordinator, options, token, admin_token)
        if leadership is not None:
            tasks.append(await _apply_standby_kill_switches(coordinator, leadership))
            if options.on_takeover == "resume":
                await _resume(coordinator)
        await stop.wait()
        log.info("shutting down: stopping bots and cancelling their open orders")
    finally:
        for task in tasks:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await _shutdown(coordinator, runner)
        except StoreError as exc:
            if not lost:
                raise
            # Expected: the fence refuses the journal writes of a node that lost the lease.
            log.error("shut down without the journal (the lease is gone): %s", exc)
    if lost:
        raise LeaseLost(lost[0])


async def _open_renewing(
    config: CoordinatorConfig,
    options: ServerOptions,
    leadership: Leadership | None,
    stop: asyncio.Event,
    lost: list[str],
    tasks: list[asyncio.Task[None]],
) -> Coordinator:
    """Open the coordinator, renewing the lease from the moment it is ours (into `tasks`), so
    a slow open (migrations, recovery) cannot let it lapse; losing it meanwhile sets `stop`,
    and the start ends as soon as it is up."""
    if leadership is not None:
        tasks.append(_keep_leading(leadership, stop, lost))
    try:
        coordinator = await Coordinator.open(
            config,
            options.data_dir,
            backup_dir=options.backup_dir,
            database=options.database,
            fence=leadership.fence() if leadership is not None else None,
        )
    except BaseException:
        for task in tasks:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        raise
    if leadership is not None:
        coordinator.role = {
            "role": "leader", "node": leadership.node, "term": leadership.lease.term,
            "lease_seconds": leadership.lease_seconds,
        }  # fmt: skip
    return coordinator


def _keep_leading(
    leadership: Leadership, stop: asyncio.Event, lost: list[str]
) -> asyncio.Task[None]:
    """Renew the lease in the background; on losing it, note why and stop serving."""

    async def on_lost(why: str) -> None:
        log.critical("%s stops leading: %s; stopping every bot now", leadership.node, why)
        lost.append(why)
        stop.set()

    return asyncio.create_task(leadership.keep(on_lost), name="leader-lease")


async def _apply_standby_kill_switches(
    coordinator: Coordinator, leadership: Leadership
) -> asyncio.Task[None]:
    """Activations filed on a standby (while no node led, or before this one did) are applied
    before any bot may start; later ones within half a second, by the task returned."""

    async def activate(request: Any) -> None:
        await coordinator.activate_kill_switch(
            f"{request.reason} (filed on standby {request.node})", f"standby:{request.node}"
        )

    if await leadership.apply_kill_switch_requests(activate):
        log.warning("a kill switch filed on a standby is applied: nothing starts")
    return asyncio.create_task(
        leadership.watch_kill_switch_requests(activate), name="kill-switch-requests"
    )


async def _resume(coordinator: Coordinator) -> None:
    """After a takeover: the bots the previous leader left running, one by one, each only once
    its orders left in flight are resolved (`start_bot` refuses until then)."""
    for name in coordinator.left_running:
        try:
            await coordinator.start_bot(name, False, "takeover")
            log.warning("%s: started again after the takeover (it was running)", name)
        except CoordinatorError as exc:
            log.error("%s: not started after the takeover: %s", name, exc)


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
