"""`bot-coordinator monitor`: the outside monitor's process, its HTTP side and its command.

    bot-coordinator monitor [--coordinator URL] [--host HOST] [--port PORT] [--interval SECONDS]

It serves, on alerts.json's `monitor.host:port` (127.0.0.1:8080):

- `GET /alerts`: the monitor's own alerts, then the coordinator's last-known ones
  (`OutsideMonitor.listing`); `curl http://localhost:8080/alerts` (runbook 004 Step 1).
- `GET /health`: the monitor itself, 200 `{"status": "ok"}`.

Anything else is a JSON 404 `{"error": {"code", "message"}}`. It logs to stderr only: the
coordinator's log file belongs to the coordinator. Exit codes: 0 stopped by SIGINT/SIGTERM,
1 could not listen, 2 bad configuration or options.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import logging.handlers
import math
import queue
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pydantic
from aiohttp import web

from coordinator.alerts.notifier import notifier_from_config
from coordinator.api.errors import Handler, error_response
from coordinator.arguments import port_number
from coordinator.config import ConfigError, load_config
from coordinator.config.alerting import AlertsConfig, MonitorConfig, Severity
from coordinator.outside_monitor import SOURCE, OutsideMonitor
from coordinator.server import stop_on_signals
from coordinator.store.journal import iso

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_BAD_CONFIG = 2
MONITOR = web.AppKey("monitor", OutsideMonitor)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_OPTIONS = {
    "coordinator_url": "--coordinator",
    "host": "--host",
    "port": "--port",
    "poll_interval_seconds": "--interval",
}


class MonitorStartError(Exception):
    """The monitor could not start; the message says why and what to do."""


# -- HTTP ---------------------------------------------------------------------------------------


def make_monitor_app(monitor: OutsideMonitor) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[MONITOR] = monitor
    app.router.add_get("/alerts", get_alerts)
    app.router.add_get("/health", get_health)
    return app


async def get_alerts(request: web.Request) -> web.Response:
    return web.json_response(alerts_listing(request.app[MONITOR]))


async def get_health(request: web.Request) -> web.Response:
    """The monitor answers: 200. Whether the coordinator does is in GET /alerts."""
    return web.json_response({"status": "ok"})


def alerts_listing(monitor: OutsideMonitor) -> dict[str, Any]:
    """GET /alerts: the monitor's own firing alerts first (most severe first), then the
    coordinator's last-known ones, each with its `source`; `coordinator.stale` is true when
    those are not from the last poll (it did not answer)."""
    own = sorted(monitor.active.values(), key=lambda a: (-a.severity.rank, a.since, a.key))
    theirs = monitor.alerts or {}
    firing = [a.as_dict() for a in own] + _with_source(theirs.get("firing", []))
    resolved = [a.as_dict() for a in reversed(monitor.resolved)]
    resolved += _with_source(theirs.get("resolved", []))
    counts = {s.value: 0 for s in Severity}
    for alert in firing:
        counts[alert["severity"]] = counts.get(alert["severity"], 0) + 1
    notifier = monitor.notifier
    return {
        "status": "firing" if firing else "ok",
        "counts": counts,
        "firing": firing,
        "resolved": resolved,
        "source": SOURCE,
        "coordinator": {
            "url": monitor.url,
            "reachable": monitor.reachable,
            "last_seen_at": _iso(monitor.last_seen_at),
            "last_error": monitor.last_error,
            "consecutive_failures": monitor.consecutive_failures,
            "health": str(monitor.health["status"]) if monitor.health else None,
            "health_at": _iso(monitor.health_at),
            "alerts_at": _iso(monitor.alerts_at),
            "alerting": monitor.alerting,  # false: its /alerts answers 404
            "stale": monitor.alerts_stale,
        },
        "checked_at": _iso(monitor.checked_at),
        "poll_interval_seconds": monitor.settings.poll_interval_seconds,
        "notifications": notifier.status() if notifier is not None else {"enabled": False},
    }


def _with_source(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**a, "source": a.get("source") or "coordinator"} for a in alerts]


def _iso(at: datetime | None) -> str | None:
    return iso(at) if at is not None else None


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            message = f"{request.method} is not allowed on {request.path}; use {allowed}"
            return error_response(405, "method_not_allowed", message, {"Allow": allowed})
        if exc.status == 404:
            return error_response(
                404, "not_found", f"no such endpoint: {request.method} {request.path}"
            )
        return error_response(exc.status, "http_error", exc.reason)
    except Exception as exc:
        log.error("internal error on %s %s: %r", request.method, request.path, exc, exc_info=exc)
        return error_response(500, "internal_error", "internal error; details are in its log")


# -- the process --------------------------------------------------------------------------------


async def serve_monitor(
    monitor: OutsideMonitor, host: str, port: int, stop: asyncio.Event | None = None
) -> None:
    """Listen on host:port and poll until `stop` is set (by SIGINT/SIGTERM when not given);
    then stop polling, close the HTTP server, and flush and close the notifier."""
    stop = stop or stop_on_signals()
    runner = web.AppRunner(make_monitor_app(monitor), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await monitor.open()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc}"
            raise MonitorStartError(
                f"cannot listen on {host}:{port}: the port {reason}; "
                "stop the other process or pass --port"
            ) from exc
        monitor.start_polling()
        log.info(
            "bot-coordinator monitor watching %s every %g s; ready: curl http://%s:%d/alerts",
            monitor.url,
            monitor.settings.poll_interval_seconds,
            host,
            port,
        )
        if host not in _LOOPBACK:
            log.warning("the monitor listens on %s, not loopback", host)
        await stop.wait()
        log.info("shutting down")
    finally:
        await monitor.stop_polling()
        await runner.cleanup()
        await monitor.close()
    log.info("stopped cleanly")


def add_monitor_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "monitor",
        help="watch a coordinator from outside; GET /alerts on 127.0.0.1:8080",
        description="Poll the coordinator's /health and /alerts, raise coordinator_down when it "
        "stops answering, and serve GET /alerts (its alerts and the coordinator's). "
        "Defaults come from alerts.json's monitor section.",
    )
    command.add_argument(
        "--coordinator",
        dest="monitor_coordinator",
        metavar="URL",
        help="the coordinator's base URL (monitor.coordinator_url, http://127.0.0.1:8000)",
    )
    command.add_argument(
        "--host",
        dest="monitor_host",
        metavar="HOST",
        help="the monitor's address (monitor.host, 127.0.0.1)",
    )
    command.add_argument(
        "--port",
        dest="monitor_port",
        metavar="PORT",
        type=port_number,
        help="the monitor's port (monitor.port, 8080)",
    )
    command.add_argument(
        "--interval",
        dest="monitor_interval",
        type=_seconds,
        metavar="SECONDS",
        help="seconds between polls (monitor.poll_interval_seconds, 5); the request timeout is "
        "cut to it when longer",
    )


def run_monitor(args: argparse.Namespace, config_dir: Path) -> int:
    """The `monitor` command: 0 after SIGINT/SIGTERM, 1 cannot listen, 2 bad config."""
    try:
        config = load_config(config_dir)
    except ConfigError as exc:
        _say(f"bot-coordinator monitor: the configuration in {config_dir} is invalid:")
        for issue in exc.issues:
            _say(f"  {issue}")
        _say("the monitor was not started; fix the files above and start again")
        return EXIT_BAD_CONFIG
    try:
        alerts = with_overrides(config.alerts, args)
    except pydantic.ValidationError as exc:
        for line in _option_problems(exc):
            _say(f"bot-coordinator monitor: {line}")
        return EXIT_BAD_CONFIG
    listener = _log_to_stderr(getattr(args, "log_level", "INFO"))
    try:
        return asyncio.run(_serve(alerts))
    finally:
        listener.stop()


def with_overrides(config: AlertsConfig, args: argparse.Namespace) -> AlertsConfig:
    """alerts.json with the command's options applied (validated like the file)."""
    settings: dict[str, Any] = config.monitor.model_dump()
    overrides = {
        "coordinator_url": getattr(args, "monitor_coordinator", None),
        "host": getattr(args, "monitor_host", None),
        "port": getattr(args, "monitor_port", None),
        "poll_interval_seconds": getattr(args, "monitor_interval", None),
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(settings["coordinator_url"], str):
        settings["coordinator_url"] = settings["coordinator_url"].rstrip("/")
    if isinstance(settings["poll_interval_seconds"], float | int):
        settings["timeout_seconds"] = min(
            settings["timeout_seconds"], settings["poll_interval_seconds"]
        )
    monitor = MonitorConfig.model_validate(settings)
    return config.model_copy(update={"monitor": monitor})


async def _serve(config: AlertsConfig) -> int:
    settings = config.monitor
    monitor = OutsideMonitor(
        config, settings.coordinator_url, notifier_from_config(config.notifications, SOURCE)[0]
    )
    try:
        await serve_monitor(monitor, settings.host, settings.port)
    except MonitorStartError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_START_FAILED
    return EXIT_OK


def _log_to_stderr(level: str) -> logging.handlers.QueueListener:
    """Readable lines on stderr, written by a listener thread so the loop never waits."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s", "%H:%M:%S")
    )
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(logging.handlers.QueueHandler(records))
    root.setLevel(level)
    listener.start()
    return listener


def _option_problems(exc: pydantic.ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        where = _OPTIONS.get(field, f"alerts.json monitor.{field}" if field else "monitor")
        lines.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
    return lines


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return seconds


def _say(line: str) -> None:
    print(line, file=sys.stderr)
