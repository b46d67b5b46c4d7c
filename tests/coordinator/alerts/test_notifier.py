"""The webhook notifier against a real local HTTP sink: what it sends, when, and what it gives up.

The sink is an aiohttp app on 127.0.0.1 (a free port) that records every body and answers from a
script of statuses; it can also hang. The notifier's backoff goes through an injected `sleep`
that records the delays it is asked for, so no test waits for real backoff.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from coordinator.alerts.model import Alert, AlertState, Transition
from coordinator.alerts.notifier import NotifierConfigError, WebhookNotifier, webhook_url
from coordinator.config.alerting import NotificationsConfig, Severity, WebhookConfig
from tests.support_config import eventually

SECRET_PATH = "/services/T0000/B0000/s3cr3tT0ken"
ENV = "ALERT_WEBHOOK_URL"
AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HANG_GUARD = 10.0  # seconds: only a bound against a hung test, never a speed assertion


@pytest.fixture(autouse=True)
def a_proxy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with a dead proxy in the environment: the notifier must not use it."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


@dataclass
class Sink:
    """A webhook receiver: records JSON bodies, answers `script` in order, then 200."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str], str]] = field(default_factory=deque)
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, status: int, headers: dict[str, str] | None = None, text: str = "") -> None:
        self.script.append((status, headers or {}, text))

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        if self.hang:
            await self.release.wait()
        status, headers, text = self.script.popleft() if self.script else (200, {}, "ok")
        return web.Response(status=status, headers=headers, text=text)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    recorder = Sink()
    app = web.Application()
    app.router.add_post(SECRET_PATH, recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    recorder.url = f"http://{host}:{port}{SECRET_PATH}"
    try:
        yield recorder
    finally:
        recorder.release.set()  # let a hanging handler finish so the runner can stop
        await runner.cleanup()


@dataclass
class RecordingSleep:
    """Returns at once; remembers every delay. Set `gate` to hold each sleep until released."""

    delays: list[float] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0)


def notifications(**overrides: Any) -> NotificationsConfig:
    webhook = {
        "url_env": ENV,
        "timeout_seconds": 5,
        "max_attempts": 5,
        "initial_backoff_seconds": 0.5,
        "max_backoff_seconds": 1.5,
    }
    webhook.update(overrides.pop("webhook", {}))
    settings: dict[str, Any] = {"group_wait_seconds": 0, "max_queued": 100}
    settings.update(overrides)
    return NotificationsConfig(webhook=WebhookConfig(**webhook), **settings)


def transition(
    name: str = "order_failure_rate_high",
    *,
    severity: Severity = Severity.CRITICAL,
    to: AlertState = AlertState.FIRING,
    labels: dict[str, str] | None = None,
    repeat: bool = False,
) -> Transition:
    alert = Alert(
        name=name,
        severity=severity,
        labels={"exchange": "ndax"} if labels is None else labels,
        state=to,
        since=AT,
        value=7.5,
        threshold=5.0,
        summary=f"{name}: 7.5 % of orders failed over 15 minutes",
        runbook="runbook 001, Alert Trigger",
        resolved_at=AT if to is AlertState.RESOLVED else None,
    )
    return Transition(alert=alert.as_dict(), to=to, at=AT, repeat=repeat)


@pytest.fixture
async def make_notifier(
    sink: Sink,
) -> AsyncIterator[Callable[..., Awaitable[WebhookNotifier]]]:
    """Started notifiers pointed at the sink; each is closed after the test."""
    made: list[WebhookNotifier] = []

    async def make(
        config: NotificationsConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        *,
        url: str | None = None,
        start: bool = True,
    ) -> WebhookNotifier:
        notifier = WebhookNotifier(
            config or notifications(),
            url or sink.url,
            sleep=sleep or RecordingSleep(),
            clock=lambda: AT,
        )
        made.append(notifier)
        if start:
            await notifier.start()
        return notifier

    yield make
    for notifier in made:
        await asyncio.wait_for(notifier.close(timeout=1.0), HANG_GUARD)


def notifier_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "alert-webhook-notifier"]


# -- what is sent -------------------------------------------------------------------------------


async def test_a_delivered_message_has_the_slack_shape_and_names_alert_and_runbook(
    sink: Sink, make_notifier: Callable[..., Awaitable[WebhookNotifier]]
) -> None:
    notifier = await make_notifier()
    notifier.notify(transition())
    await eventually(lambda: notifier.status()["sent_messages"] == 1)

    [body] = sink.bodies
    assert body["text"] == "[bot-coordinator] 1 firing: order_failure_rate_high (ndax)"
    [attachment] = body["attachments"]
    assert attachment["color"] == "danger"
    assert attachment["title"] == "[FIRING] order_failure_rate_high (ndax)"
    assert "value: 7.5 (threshold 5.0)" in attachment["text"]
    assert "runbook: runbook 001, Alert Trigger" in attachment["text"]
    assert {"title": "exchange", "value": "ndax", "short": True} in attachment["fields"]
    assert attachment["ts"] == int(AT.timestamp())
    status = notifier.status()
    assert status["last_sent_at"] == AT.isoformat()
    assert status["failed_attempts"] == 0
    assert status["queued"] == 0


async def test_resolved_and_reminder_transitions_are_marked_as_such(
    sink: Sink, make_notifier: Callable[..., Awaitable[WebhookNotifier]]
) -> None:
    notifier = await make_notifier(start=False)
    notifier.notify(transition("kill_switch_active", labels={}, repeat=True))
    notifier.notify(transition(severity=Severity.WARNING, to=AlertState.RESOLVED))
    await notifier.start()
    await eventually(lambda: notifier.status()["sent_messages"] == 1)

    [body] = sink.bodies
    assert body["text"] == (
        "[bot-coordinator] 1 still firing, 1 resolved: "
        "kill_switch_active, order_failure_rate_high (ndax)"
    )
    reminder, resolved = body["attachments"]
    assert reminder["title"].startswith("[REMINDER")
    assert reminder["color"] == "danger"
    assert resolved["title"] == "[RESOLVED] order_failure_rate_high (ndax)"
    assert resolved["color"] == "good"


async def test_transitions_within_the_group_wait_go_out_as_one_message(
    sink: Sink, make_notifier: Callable[..., Awaitable[WebhookNotifier]]
) -> None:
    group_wait_over = asyncio.Event()
    sleep = RecordingSleep(gate=group_wait_over)
    notifier = await make_notifier(notifications(group_wait_seconds=30), sleep)
    notifier.notify(transition("bot_heartbeat_stale", labels={"bot": "b0"}))
    await eventually(lambda: len(sleep.delays) == 1)  # the group wait has begun
    for i in range(1, 6):
        notifier.notify(transition("bot_heartbeat_stale", labels={"bot": f"b{i}"}))
    assert sink.bodies == []

    group_wait_over.set()
    await eventually(lambda: notifier.status()["sent_messages"] == 1)
    [body] = sink.bodies
    assert body["text"].startswith("[bot-coordinator] 6 firing: bot_heartbeat_stale (b0), ")
    assert len(body["attachments"]) == 6
    assert 0 < sleep.delays[0] <= 30

    notifier.notify(transition("disk_space_low", labels={}))  # a new group
    await eventually(lambda: notifier.status()["sent_messages"] == 2)
    assert sink.bodies[1]["text"] == "[bot-coordinator] 1 firing: disk_space_low"


async def test_a_storm_is_one_bounded_message(
    sink: Sink, make_notifier: Callable[..., Awaitable[WebhookNotifier]]
) -> None:
    notifier = await make_notifier(start=False)
    for i in range(30):
        notifier.notify(transition("bot_crash_loop", labels={"bot": f"bot-{i}"}))
    await notifier.start()
    await eventually(lambda: notifier.status()["sent_messages"] == 1)

    [body] = sink.bodies
    assert body["text"].startswith("[bot-coordinator] 30 firing: bot_crash_loop (bot-0), ")
    assert body["text"].endswith("bot_crash_loop (bot-4), and 25 more")
    assert len(body["attachments"]) == 21
    assert body["attachments"][-1]["text"] == "10 more not shown"


# -- what is filtered ---------------------------------------------------------------------------


async def test_alerts_below_min_severity_are_not_sent(
    sink: Sink, make_notifier: Callable[..., Awaitable[WebhookNotifier]]
) -> None:
    notifier = await make_notifier(notifications(min_severity="critical"), start=False)
    notifier.notify(transition("backup_stale", severity=Severity.WARNING))
    notifier.notify(transition("backup_stale", severity=Severity.INFO))
    notifier.notify(transition("kill_switch_active", to=AlertState.PENDING))
    notifier.notify(transition("kill_switch_active"))
    assert notifier.status()["queued"] == 1

    await notifier.start()
    await eventually(lambda: notifier.status()["sent_messages"] == 1)
    [body] = sink.bodies
    assert [a["title"] for a in body["attachments"]] == ["[FIRING] kill_switch_active (ndax)"]


@pytest.mark.parametrize(("send_resolved", "queued"), [(True, 2), (False, 1)])
async def test_resolved_transitions_are_sent_only_when_send_resolved(
    make_notifier: Callable[..., Awaitable[WebhookNotifier]], send_resolved: bool, queued: int
) -> None:
    notifier = await make_notifier(notifications(send_resolved=send_resolved), start=False)
    notifier.notify(transition())
    notifier.notify(transition(to=AlertState.RESOLVED))
    assert notifier.status()["queued"] == queued


# -- delivery failures --------------------------------------------------------------------------


async def test_server_errors_are_retried_with_exponential_backoff_then_delivered(
    sink: Sink, make_notifier: Callable[..., Awaitable[WebhookNotifier]]
) -> None:
    sink.answer(500)
    sink.answer(500)
    sleep = RecordingSleep()
    notifier = await make_notifier(sleep=sleep)
    notifier.notify(transition())
    await eventually(lambda: notifier.status()["sent_messages"] == 1)

    assert len(sink.bodies) == 3
    assert sink.bodies[0] == sink.bodies[2]
    assert sleep.delays == [0.5, 1.0]
    status = notifier.status()
    assert status["failed_attempts"] == 2
    assert status["last_error"] == "HTTP 500"


async def test_a_webhook_failing_every_attempt_drops_the_message_without_logging_the_url(
    sink: Sink,
    make_notifier: Callable[..., Awaitable[WebhookNotifier]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for _ in range(5):
        sink.answer(503, text=f"upstream down for {SECRET_PATH}")
    sleep = RecordingSleep()
    notifier = await make_notifier(sleep=sleep)
    with caplog.at_level(logging.WARNING, logger="coordinator.alerts.notifier"):
        notifier.notify(transition())
        await eventually(lambda: notifier.status()["failed_messages"] == 1)

    assert len(sink.bodies) == 5
    assert sleep.delays == [0.5, 1.0, 1.5, 1.5]  # doubling, capped at max_backoff_seconds
    assert notifier.status()["sent_messages"] == 0
    assert notifier.status()["failed_attempts"] == 5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "dropped after 5 attempt(s)" in errors[0].getMessage()
    assert ENV in errors[0].getMessage()
    assert "s3cr3t" not in caplog.text
    assert "s3cr3t" not in str(notifier.status())


async def test_a_429_retry_after_is_honoured_up_to_the_cap(
    sink: Sink, make_notifier: Callable[..., Awaitable[WebhookNotifier]]
) -> None:
    sink.answer(429, {"Retry-After": "1.25"})
    sink.answer(429, {"Retry-After": "3600"})
    sink.answer(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    sleep = RecordingSleep()
    notifier = await make_notifier(sleep=sleep)
    notifier.notify(transition())
    await eventually(lambda: notifier.status()["sent_messages"] == 1)

    assert sleep.delays == [1.25, 1.5, 1.5]  # as asked, capped, and the backoff for a date


async def test_a_client_error_is_dropped_at_once_without_retry(
    sink: Sink,
    make_notifier: Callable[..., Awaitable[WebhookNotifier]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink.answer(404, text=f"no_service at {sink.url}")
    sleep = RecordingSleep()
    notifier = await make_notifier(sleep=sleep)
    with caplog.at_level(logging.WARNING, logger="coordinator.alerts.notifier"):
        notifier.notify(transition())
        await eventually(lambda: notifier.status()["failed_messages"] == 1)

    assert len(sink.bodies) == 1
    assert sleep.delays == []
    assert notifier.status()["failed_attempts"] == 1
    assert notifier.status()["last_error"] == "HTTP 404: no_service at <redacted>"
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "HTTP 404" in error.getMessage()
    assert "s3cr3t" not in caplog.text


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_an_unreachable_webhook_is_retried_then_dropped(
    make_notifier: Callable[..., Awaitable[WebhookNotifier]],
) -> None:
    sleep = RecordingSleep()
    url = f"http://127.0.0.1:{_closed_port()}{SECRET_PATH}"
    config = notifications(webhook={"max_attempts": 3})
    notifier = await make_notifier(config, sleep, url=url)
    notifier.notify(transition())
    await eventually(lambda: notifier.status()["failed_messages"] == 1)

    assert sleep.delays == [0.5, 1.0]
    assert notifier.status()["failed_attempts"] == 3
    assert notifier.status()["last_error"].startswith("ClientConnectorError")


async def test_a_hanging_webhook_never_blocks_notify(
    sink: Sink, make_notifier: Callable[..., Awaitable[WebhookNotifier]]
) -> None:
    sink.hang = True
    config = notifications(webhook={"timeout_seconds": 0.2, "max_attempts": 2})
    notifier = await make_notifier(config)
    notifier.notify(transition())
    await eventually(lambda: len(sink.bodies) == 1)  # the first attempt is hanging now

    # No await between these calls: the loop cannot run, so each notify() finished on its own.
    for i in range(20):
        notifier.notify(transition("bot_heartbeat_stale", labels={"bot": f"b{i}"}))
        assert notifier.status()["queued"] == i + 1

    await eventually(lambda: notifier.status()["failed_messages"] == 1)
    status = notifier.status()
    assert status["failed_attempts"] == 2
    assert status["last_error"] == "timed out after 0.2 s"

    await eventually(lambda: len(sink.bodies) == 3)  # the queued twenty, one message, hanging too
    await asyncio.wait_for(notifier.close(timeout=0.1), HANG_GUARD)
    assert notifier_tasks() == []
    notifier.notify(transition())  # after close: ignored, still no error
    assert notifier.status()["queued"] == 0


async def test_close_flushes_the_queue_without_waiting_out_the_group_wait(
    sink: Sink, make_notifier: Callable[..., Awaitable[WebhookNotifier]]
) -> None:
    sleep = RecordingSleep(gate=asyncio.Event())  # a group wait that never ends by itself
    notifier = await make_notifier(notifications(group_wait_seconds=600), sleep)
    notifier.notify(transition("kill_switch_active", labels={}))
    await eventually(lambda: len(sleep.delays) == 1)

    await asyncio.wait_for(notifier.close(timeout=5.0), HANG_GUARD)
    assert [b["text"] for b in sink.bodies] == ["[bot-coordinator] 1 firing: kill_switch_active"]
    assert notifier_tasks() == []


# -- the queue ----------------------------------------------------------------------------------


async def test_a_full_queue_drops_the_oldest_and_counts_it(
    sink: Sink, make_notifier: Callable[..., Awaitable[WebhookNotifier]]
) -> None:
    notifier = await make_notifier(notifications(max_queued=10), start=False)
    for i in range(15):
        notifier.notify(transition("bot_crash_loop", labels={"bot": f"bot-{i}"}))
    assert notifier.status()["queued"] == 10
    assert notifier.status()["dropped"] == 5

    await notifier.start()
    await eventually(lambda: notifier.status()["sent_messages"] == 1)
    titles = [a["title"] for a in sink.bodies[0]["attachments"]]
    assert titles == [f"[FIRING] bot_crash_loop (bot-{i})" for i in range(5, 15)]


def test_notify_needs_no_running_event_loop() -> None:
    notifier = WebhookNotifier(notifications(), "http://127.0.0.1:9/hook")
    notifier.notify(transition())
    assert notifier.status()["queued"] == 1


# -- disabled and misconfigured -----------------------------------------------------------------


async def test_a_disabled_notifier_does_nothing() -> None:
    notifier = WebhookNotifier(notifications(), None)
    await notifier.start()
    notifier.notify(transition())
    assert notifier_tasks() == []
    assert notifier.status() == {
        "enabled": False,
        "webhook_env": ENV,
        "queued": 0,
        "sent_messages": 0,
        "failed_messages": 0,
        "failed_attempts": 0,
        "dropped": 0,
        "last_error": None,
        "last_sent_at": None,
    }
    await asyncio.wait_for(notifier.close(), HANG_GUARD)


def test_webhook_url_reads_the_named_variable() -> None:
    url = "https://hooks.slack.com" + SECRET_PATH
    assert webhook_url(notifications(), {ENV: f" {url}\n"}) == url


def test_webhook_url_is_none_without_a_webhook() -> None:
    assert webhook_url(NotificationsConfig(), {ENV: "https://example.invalid/x"}) is None


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {ENV: ""},
        {ENV: "   "},
        {ENV: "hooks.slack.com" + SECRET_PATH},
        {ENV: "ftp://hooks.slack.com" + SECRET_PATH},
        {ENV: "https://" + SECRET_PATH},
        {ENV: "https://[hooks" + SECRET_PATH},
        {ENV: "https://hooks.slack.com/s3cr3t with space"},
    ],
)
def test_webhook_url_errors_name_the_variable_and_never_the_value(
    environ: dict[str, str],
) -> None:
    with pytest.raises(NotifierConfigError) as raised:
        webhook_url(notifications(), environ)
    assert ENV in str(raised.value)
    assert "s3cr3t" not in str(raised.value)
    assert raised.value.__cause__ is None
