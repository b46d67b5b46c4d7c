"""The outside monitor (`bot-coordinator monitor`), as runbook 004 Step 1 uses it:
`curl http://localhost:8080/alerts` says whether the coordinator answers, and lists its alerts.

In-process, against a fake coordinator (an aiohttp app on 127.0.0.1 that this file switches
between healthy, unhealthy, broken answers, hanging and stopped) and a webhook sink that records
what is sent; polls are driven with `poll_once()`, never by sleeping. Then the real thing: the
coordinator process is killed with SIGKILL and the monitor process reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from coordinator.alerts.model import AlertState
from coordinator.alerts.notifier import WebhookNotifier
from coordinator.cli import build_parser
from coordinator.config.alerting import (
    AlertsConfig,
    MonitorConfig,
    NotificationsConfig,
    WebhookConfig,
)
from coordinator.outside_monitor import (
    COORDINATOR_DOWN,
    COORDINATOR_UNHEALTHY,
    SOURCE,
    OutsideMonitor,
    unhealthy_services,
)
from coordinator.outside_monitor_app import (
    EXIT_BAD_CONFIG,
    MonitorStartError,
    make_monitor_app,
    run_monitor,
    serve_monitor,
    with_overrides,
)
from tests.support_config import FakeClock, eventually, write_fast_config
from tests.support_process import CoordinatorProcess, child_env, free_port, wait_for

HANG_GUARD = 10.0  # seconds: only a bound against a hung test, never a speed assertion
WEBHOOK_PATH = "/hooks/monitor"

KILL_SWITCH_ALERT: dict[str, Any] = {
    "name": "kill_switch_active",
    "severity": "critical",
    "state": "firing",
    "labels": {},
    "since": "2026-11-23T12:00:00.000000+00:00",
    "resolved_at": None,
    "value": 1.0,
    "threshold": None,
    "summary": "the kill switch is active: drill",
    "runbook": "004 Step 1",
    "source": "coordinator",
}


@pytest.fixture(autouse=True)
def a_dead_proxy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor must reach the coordinator directly, never through an env-configured proxy."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


# -- the fake coordinator and the webhook sink ---------------------------------------------------


def _health_report(status: str, services: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "services": services or {"database": {"status": "healthy"}},
        "checked_at": "2026-11-23T12:00:00.000000+00:00",
    }


@dataclass
class FakeCoordinator:
    """/health and /alerts as the coordinator answers them; `mode` picks a failure."""

    mode: str = "healthy"  # healthy | unhealthy | not-json | wrong-shape | alerts-500 | hang
    firing: list[dict[str, Any]] = field(default_factory=list)
    alerting: bool = True
    unhealthy: dict[str, Any] = field(
        default_factory=lambda: {
            "database": {"status": "healthy"},
            "kill_switch": {"status": "unhealthy", "active": True},
            "bots": {"ndax": {"status": "unhealthy"}, "kraken": {"status": "healthy"}},
        }
    )
    port: int = 0
    _runner: web.AppRunner | None = None
    _hang: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/alerts", self.alerts)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening: the next poll's connection is refused."""
        for future in self._hang:
            if not future.done():
                future.set_result(None)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _maybe_hang(self) -> None:
        if self.mode == "hang":
            future = asyncio.get_running_loop().create_future()
            self._hang.append(future)
            await future

    async def health(self, request: web.Request) -> web.Response:
        await self._maybe_hang()
        if self.mode == "not-json":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        if self.mode == "wrong-shape":
            return web.json_response({"ok": True})
        if self.mode == "unhealthy":
            return web.json_response(_health_report("unhealthy", self.unhealthy), status=503)
        return web.json_response(_health_report("healthy"))

    async def alerts(self, request: web.Request) -> web.Response:
        await self._maybe_hang()
        if self.mode == "alerts-500":
            return web.json_response(
                {"error": {"code": "internal_error", "message": "x"}}, status=500
            )
        if not self.alerting:
            message = "alerting is not running in this coordinator"
            return web.json_response(
                {"error": {"code": "not_found", "message": message}}, status=404
            )
        return web.json_response(
            {
                "status": "firing" if self.firing else "ok",
                "counts": {"critical": len(self.firing), "warning": 0, "info": 0},
                "firing": self.firing,
                "pending": [],
                "resolved": [],
                "evaluated_at": "2026-11-23T12:00:00.000000+00:00",
                "source": "coordinator",
            }
        )


@pytest.fixture
async def fake() -> AsyncIterator[FakeCoordinator]:
    coordinator = FakeCoordinator()
    await coordinator.start()
    try:
        yield coordinator
    finally:
        await coordinator.stop()


@dataclass
class Sink:
    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(text="ok")

    def texts(self) -> list[str]:
        return [json.dumps(body) for body in self.bodies]


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    recorder = Sink()
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, recorder.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recorder.url = f"http://127.0.0.1:{runner.addresses[0][1]}{WEBHOOK_PATH}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


def alerts_config(coordinator_url: str, **monitor: Any) -> AlertsConfig:
    settings: dict[str, Any] = {
        "coordinator_url": coordinator_url,
        "poll_interval_seconds": 1,
        "timeout_seconds": 0.3,
    }
    settings.update(monitor)
    return AlertsConfig(
        version=1,
        monitor=MonitorConfig(**settings),
        notifications=NotificationsConfig(
            webhook=WebhookConfig(url_env="MONITOR_WEBHOOK_URL", max_attempts=1),
            group_wait_seconds=0,
            repeat_interval_minutes=60,
        ),
    )


MonitorFactory = Callable[..., Awaitable[OutsideMonitor]]


@pytest.fixture
async def make_monitor(
    fake: FakeCoordinator, sink: Sink, clock: FakeClock
) -> AsyncIterator[MonitorFactory]:
    opened: list[OutsideMonitor] = []

    async def make(**monitor_settings: Any) -> OutsideMonitor:
        config = alerts_config(fake.url, **monitor_settings)
        notifier = WebhookNotifier(config.notifications, sink.url, source=SOURCE, clock=clock)
        monitor = OutsideMonitor(config, fake.url, notifier, clock=clock)
        await monitor.open()
        opened.append(monitor)
        return monitor

    try:
        yield make
    finally:
        for monitor in opened:
            await monitor.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass
class Served:
    base: str
    session: aiohttp.ClientSession

    async def get(self, path: str, method: str = "GET") -> tuple[int, Any]:
        async with self.session.request(method, self.base + path) as response:
            return response.status, await response.json()

    async def alerts(self) -> dict[str, Any]:
        status, body = await self.get("/alerts")
        assert status == 200, body
        assert isinstance(body, dict)
        return body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[OutsideMonitor], Awaitable[Served]]]:
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession(trust_env=False)

    async def start(monitor: OutsideMonitor) -> Served:
        runner = web.AppRunner(make_monitor_app(monitor), handle_signals=False)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return Served(f"http://127.0.0.1:{runner.addresses[0][1]}", session)

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()
        await session.close()


def _names(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["name"] for a in alerts]


# -- in process, against the fake -----------------------------------------------------------------


async def test_monitor_alerts_list_the_coordinator_alerts_without_notifying_them_again(
    fake: FakeCoordinator,
    make_monitor: MonitorFactory,
    serve: Callable[[OutsideMonitor], Awaitable[Served]],
    sink: Sink,
) -> None:
    fake.firing = [KILL_SWITCH_ALERT]
    monitor = await make_monitor()
    served = await serve(monitor)

    assert await monitor.poll_once() == []
    assert await monitor.poll_once() == []
    listing = await served.alerts()

    assert listing["status"] == "firing"
    assert listing["firing"] == [KILL_SWITCH_ALERT]
    assert listing["counts"] == {"critical": 1, "warning": 0, "info": 0}
    section = listing["coordinator"]
    assert section["url"] == fake.url
    assert section["reachable"] is True
    assert section["health"] == "healthy"
    assert section["stale"] is False
    assert section["last_error"] is None
    assert section["last_seen_at"] is not None
    assert listing["checked_at"] is not None
    # The coordinator notifies its own alerts; the monitor adds nothing to the webhook.
    assert monitor.notifier is not None
    assert monitor.notifier.status()["queued"] == 0
    assert sink.bodies == []


async def test_a_stopped_coordinator_is_down_at_the_first_failed_poll_notified_then_resolved(
    fake: FakeCoordinator,
    make_monitor: MonitorFactory,
    serve: Callable[[OutsideMonitor], Awaitable[Served]],
    sink: Sink,
) -> None:
    fake.firing = [KILL_SWITCH_ALERT]
    monitor = await make_monitor()
    served = await serve(monitor)
    await monitor.poll_once()

    await fake.stop()
    [fired] = await monitor.poll_once()

    assert fired.to is AlertState.FIRING
    assert fired.alert["name"] == COORDINATOR_DOWN
    assert fired.alert["severity"] == "critical"
    assert fired.alert["source"] == SOURCE
    assert fake.url in fired.alert["summary"]
    assert "connection refused" in fired.alert["summary"]
    listing = await served.alerts()
    # Its own alert first, then the coordinator's last-known ones, marked stale.
    assert _names(listing["firing"]) == [COORDINATOR_DOWN, "kill_switch_active"]
    assert [a["source"] for a in listing["firing"]] == [SOURCE, "coordinator"]
    assert listing["counts"]["critical"] == 2
    section = listing["coordinator"]
    assert section["reachable"] is False
    assert section["stale"] is True
    assert "GET /health, /alerts: connection refused" in section["last_error"]
    assert section["health"] == "healthy"  # the last one known
    await eventually(lambda: len(sink.bodies) == 1, HANG_GUARD, "the webhook to get the alert")
    assert "[bot-coordinator-monitor]" in sink.bodies[0]["text"]
    assert COORDINATOR_DOWN in sink.bodies[0]["text"]

    assert await monitor.poll_once() == []  # still down: nothing new to say

    await fake.start()  # on the same port
    [resolved] = await monitor.poll_once()

    assert resolved.to is AlertState.RESOLVED
    assert resolved.alert["name"] == COORDINATOR_DOWN
    listing = await served.alerts()
    assert _names(listing["firing"]) == ["kill_switch_active"]
    assert _names(listing["resolved"]) == [COORDINATOR_DOWN]
    assert listing["coordinator"]["reachable"] is True
    assert listing["coordinator"]["stale"] is False
    await eventually(lambda: len(sink.bodies) == 2, HANG_GUARD, "the webhook to get the end")
    assert "1 resolved" in sink.bodies[1]["text"]


async def test_unhealthy_twice_in_a_row_fires_coordinator_unhealthy_naming_the_services(
    fake: FakeCoordinator, make_monitor: MonitorFactory, sink: Sink
) -> None:
    monitor = await make_monitor()
    fake.mode = "unhealthy"

    assert await monitor.poll_once() == []  # one answer is not enough
    [fired] = await monitor.poll_once()

    assert fired.alert["name"] == COORDINATOR_UNHEALTHY
    assert fired.alert["source"] == SOURCE
    assert "kill_switch, bots/ndax" in fired.alert["summary"]
    assert COORDINATOR_DOWN not in monitor.active  # a 503 from /health is an answer
    assert monitor.reachable
    await eventually(lambda: len(sink.bodies) == 1, HANG_GUARD, "the webhook to get the alert")
    assert COORDINATOR_UNHEALTHY in sink.bodies[0]["text"]

    fake.mode = "healthy"
    [resolved] = await monitor.poll_once()

    assert (resolved.alert["name"], resolved.to) == (COORDINATOR_UNHEALTHY, AlertState.RESOLVED)


async def test_an_unhealthy_answer_between_healthy_ones_fires_nothing(
    fake: FakeCoordinator, make_monitor: MonitorFactory
) -> None:
    monitor = await make_monitor()
    for mode in ("unhealthy", "healthy", "unhealthy", "healthy"):
        fake.mode = mode
        assert await monitor.poll_once() == []


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("not-json", "GET /health: HTTP 200 is not JSON"),
        ("wrong-shape", "GET /health: HTTP 200 is not a health report"),
        ("alerts-500", "GET /alerts: HTTP 500"),
        ("hang", "timed out after 0.3 s"),
    ],
)
async def test_an_answer_that_is_no_answer_makes_the_coordinator_down(
    fake: FakeCoordinator, make_monitor: MonitorFactory, mode: str, error: str
) -> None:
    monitor = await make_monitor()
    fake.mode = mode

    [fired] = await monitor.poll_once()

    assert fired.alert["name"] == COORDINATOR_DOWN
    assert error in fired.alert["summary"]
    assert monitor.last_error is not None
    assert error in monitor.last_error


async def test_failures_before_down_counts_failed_polls_in_a_row(
    fake: FakeCoordinator, make_monitor: MonitorFactory
) -> None:
    monitor = await make_monitor(failures_before_down=3)
    await fake.stop()

    assert await monitor.poll_once() == []
    assert await monitor.poll_once() == []
    [fired] = await monitor.poll_once()

    assert fired.alert["name"] == COORDINATOR_DOWN
    assert "(3 polls in a row)" in fired.alert["summary"]


async def test_a_coordinator_without_alerting_is_reachable_with_no_alerts(
    fake: FakeCoordinator,
    make_monitor: MonitorFactory,
    serve: Callable[[OutsideMonitor], Awaitable[Served]],
) -> None:
    fake.alerting = False
    monitor = await make_monitor()
    served = await serve(monitor)

    assert await monitor.poll_once() == []

    listing = await served.alerts()
    assert listing["status"] == "ok"
    assert listing["coordinator"]["reachable"] is True
    assert listing["coordinator"]["alerting"] is False


async def test_a_firing_alert_is_announced_again_after_the_repeat_interval(
    fake: FakeCoordinator, make_monitor: MonitorFactory, clock: FakeClock
) -> None:
    monitor = await make_monitor()
    await fake.stop()
    await monitor.poll_once()

    clock.advance(minutes=59)
    assert await monitor.poll_once() == []
    clock.advance(minutes=1)
    [reminder] = await monitor.poll_once()

    assert reminder.repeat
    assert reminder.alert["name"] == COORDINATOR_DOWN


async def test_the_poll_loop_polls_without_being_asked(
    fake: FakeCoordinator, make_monitor: MonitorFactory
) -> None:
    monitor = await make_monitor()
    monitor.start_polling()

    await eventually(lambda: monitor.reachable, HANG_GUARD, "the first poll")
    await monitor.stop_polling()


async def test_the_monitor_health_answers_and_unknown_routes_are_json_errors(
    make_monitor: MonitorFactory, serve: Callable[[OutsideMonitor], Awaitable[Served]]
) -> None:
    served = await serve(await make_monitor())

    assert await served.get("/health") == (200, {"status": "ok"})
    status, body = await served.get("/nope")
    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert "/nope" in body["error"]["message"]
    status, body = await served.get("/alerts", method="POST")
    assert status == 405
    assert body["error"]["code"] == "method_not_allowed"


async def test_a_port_in_use_is_a_clear_start_error(make_monitor: MonitorFactory) -> None:
    monitor = await make_monitor()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(MonitorStartError, match=rf"127\.0\.0\.1:{port}.*already in use"):
            await serve_monitor(monitor, "127.0.0.1", port)


def test_unhealthy_services_names_groups_by_member() -> None:
    services = {
        "database": {"status": "unhealthy"},
        "exchanges": {"kraken": {"status": "unhealthy"}, "ndax": {"status": "healthy"}},
        "disk": {"status": "degraded"},
    }

    assert unhealthy_services(services) == ["database", "exchanges/kraken"]


# -- the command's options and config -------------------------------------------------------------


def _args(**options: Any) -> argparse.Namespace:
    base = {
        "monitor_coordinator": None,
        "monitor_host": None,
        "monitor_port": None,
        "monitor_interval": None,
        "log_level": "INFO",
    }
    base.update(options)
    return argparse.Namespace(**base)


def test_options_override_the_config_and_cut_the_timeout_to_the_interval() -> None:
    config = AlertsConfig(version=1)

    changed = with_overrides(
        config,
        _args(
            monitor_coordinator="http://127.0.0.1:9000/",
            monitor_port=9090,
            monitor_interval=0.5,
        ),
    )

    assert changed.monitor.coordinator_url == "http://127.0.0.1:9000"
    assert changed.monitor.port == 9090
    assert changed.monitor.poll_interval_seconds == 0.5
    assert changed.monitor.timeout_seconds == 0.5
    assert changed.monitor.host == "127.0.0.1"
    assert with_overrides(config, _args()) == config


def test_a_bad_coordinator_url_exits_2_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = write_fast_config(tmp_path / "config")

    code = run_monitor(_args(monitor_coordinator="ftp://nowhere"), config_dir)

    assert code == EXIT_BAD_CONFIG == 2
    assert "--coordinator" in capsys.readouterr().err


def test_an_invalid_config_exits_2_listing_the_issues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def break_monitor(documents: dict[str, Any]) -> None:
        documents["alerts.json"]["monitor"]["port"] = 0

    config_dir = write_fast_config(tmp_path / "config", break_monitor)

    code = run_monitor(_args(), config_dir)

    assert code == 2
    err = capsys.readouterr().err
    assert "alerts.json" in err
    assert "port" in err


# -- end to end: the real coordinator, the real monitor, kill -9 ----------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _monitor_wired() -> bool:
    """`python -m coordinator monitor` exists once coordinator/cli.py adds the command."""
    return any(
        isinstance(action, argparse._SubParsersAction) and "monitor" in action.choices
        for action in build_parser()._actions
    )


needs_the_command = pytest.mark.skipif(
    not _monitor_wired(), reason="the monitor command is not wired into coordinator/cli.py yet"
)


def _get_json(url: str) -> Any:
    try:
        with _OPENER.open(url, timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):  # not up yet
        return None


def _monitor_process(
    root: Path, config_dir: Path, coordinator_url: str, port: int
) -> subprocess.Popen[bytes]:
    with (root / f"monitor-{port}.txt").open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coordinator",
                "--config-dir",
                str(config_dir),
                "monitor",
                "--coordinator",
                coordinator_url,
                "--port",
                str(port),
                "--interval",
                "0.5",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=root,
        )


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


@needs_the_command
def test_kill_9_of_the_coordinator_shows_as_coordinator_down_on_the_monitor(
    tmp_path: Path,
) -> None:
    config_dir = write_fast_config(tmp_path / "config")
    coordinator = CoordinatorProcess(tmp_path, config_dir)
    port = free_port()
    monitor: subprocess.Popen[bytes] | None = None
    url = f"http://127.0.0.1:{port}/alerts"

    def output() -> str:
        return (tmp_path / f"monitor-{port}.txt").read_text(errors="replace")

    def listing_where(check: Callable[[dict[str, Any]], bool]) -> Callable[[], Any]:
        def probe() -> Any:
            assert monitor is not None
            if monitor.poll() is not None:
                pytest.fail(f"the monitor exited with {monitor.returncode}:\n{output()}")
            body = _get_json(url)
            return body if body is not None and check(body) else None

        return probe

    try:
        coordinator.start()
        coordinator.wait_ready()
        monitor = _monitor_process(tmp_path, config_dir, coordinator.base, port)
        wait_for(
            listing_where(lambda b: b["coordinator"]["reachable"]),
            30,
            "the monitor to see the coordinator",
        )

        assert coordinator.proc is not None
        coordinator.proc.send_signal(signal.SIGKILL)
        assert coordinator.proc.wait(timeout=10) == -signal.SIGKILL
        listing = wait_for(
            listing_where(lambda b: COORDINATOR_DOWN in _names(b["firing"])),
            30,
            "coordinator_down on the monitor's /alerts",
        )

        down = listing["firing"][0]
        assert down["name"] == COORDINATOR_DOWN
        assert down["source"] == SOURCE
        assert coordinator.base in down["summary"]
        assert listing["coordinator"]["reachable"] is False
        assert listing["coordinator"]["stale"] is True
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(timeout=15) == 0, output()
        assert "coordinator_down firing" in output()
    finally:
        coordinator.kill()
        _stop(monitor)


@needs_the_command
def test_the_monitor_process_exits_1_when_its_port_is_in_use(tmp_path: Path) -> None:
    config_dir = write_fast_config(tmp_path / "config")
    monitor: subprocess.Popen[bytes] | None = None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            monitor = _monitor_process(tmp_path, config_dir, "http://127.0.0.1:9", port)
            assert monitor.wait(timeout=30) == 1
        finally:
            _stop(monitor)
    output = (tmp_path / f"monitor-{port}.txt").read_text()
    assert f"cannot listen on 127.0.0.1:{port}" in output
    assert "already in use" in output
    assert "Traceback" not in output
