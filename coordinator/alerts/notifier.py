"""The webhook notifier: alert transitions to Slack-compatible incoming webhooks.

Used by the coordinator and by the outside monitor. `notify()` is synchronous and only appends
to a bounded queue (the oldest entry is dropped when it is full), so a dead or hanging webhook
never slows the alert engine; one background task groups what is queued (everything that
arrives within `group_wait_seconds` of the first queued transition goes out as ONE message) and
delivers it with capped exponential backoff. The body (`{"text", "attachments"}`) is understood
by Slack, Mattermost and Rocket.Chat.

The URL is a secret (a Slack webhook URL is its own credential): it is read from the env var
the config names and never logged; logs name the variable instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from coordinator.alerts.model import AlertState, Transition
from coordinator.config.alerting import NotificationsConfig, Severity

log = logging.getLogger(__name__)

MAX_ATTACHMENTS = 20  # per message; the rest are counted in the text
MAX_NAMES_IN_TEXT = 5
_COLORS = {Severity.CRITICAL: "danger", Severity.WARNING: "warning", Severity.INFO: "warning"}


class NotifierConfigError(Exception):
    """The webhook is configured but its env var is unusable: an operator must set it."""


def webhook_url(config: NotificationsConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """The webhook URL from the env var named by `config.webhook.url_env`; None: no webhook.

    Errors name the variable, never its value."""
    if config.webhook is None:
        return None
    name = config.webhook.url_env
    value = environ.get(name, "").strip()
    if not value:
        raise NotifierConfigError(
            f"environment variable {name} (notifications.webhook.url_env) is not set or empty; "
            "it must hold the webhook URL"
        )
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in value
    except ValueError:
        valid = False
    if not valid:
        raise NotifierConfigError(
            f"environment variable {name} (notifications.webhook.url_env) does not hold an "
            "http(s) URL"
        )
    return value


def _label_text(alert: Mapping[str, Any]) -> str:
    labels = alert.get("labels") or {}
    name = str(alert.get("name", "alert"))
    return f"{name} ({', '.join(str(v) for v in labels.values())})" if labels else name


def _kind(t: Transition) -> str:
    if t.to is AlertState.RESOLVED:
        return "resolved"
    return "still firing" if t.repeat else "firing"


def _attachment(t: Transition) -> dict[str, Any]:
    a = t.alert
    severity = Severity(a["severity"])
    title = {"firing": "FIRING", "still firing": "REMINDER, still firing", "resolved": "RESOLVED"}
    lines = [str(a.get("summary") or "")]
    if a.get("value") is not None:
        threshold = a.get("threshold")
        limit = f" (threshold {threshold})" if threshold is not None else ""
        lines.append(f"value: {a['value']}{limit}")
    if a.get("runbook"):
        lines.append(f"runbook: {a['runbook']}")
    fields = [{"title": "severity", "value": severity.value, "short": True}]
    fields += [{"title": k, "value": str(v), "short": True} for k, v in a["labels"].items()]
    fields.append({"title": "since", "value": str(a.get("since")), "short": True})
    if a.get("resolved_at"):
        fields.append({"title": "resolved at", "value": str(a["resolved_at"]), "short": True})
    fields.append({"title": "source", "value": str(a.get("source")), "short": True})
    return {
        "color": "good" if t.to is AlertState.RESOLVED else _COLORS[severity],
        "title": f"[{title[_kind(t)]}] {_label_text(a)}",
        "text": "\n".join(line for line in lines if line),
        "fields": fields,
        "ts": int(t.at.timestamp()),
    }


def build_message(transitions: Sequence[Transition], source: str) -> dict[str, Any]:
    """One bounded message for a group of transitions (at most MAX_ATTACHMENTS attachments)."""
    counts: dict[str, int] = {}
    for t in transitions:
        counts[_kind(t)] = counts.get(_kind(t), 0) + 1
    head = ", ".join(
        f"{counts[k]} {k}" for k in ("firing", "still firing", "resolved") if k in counts
    )
    names = [_label_text(t.alert) for t in transitions[:MAX_NAMES_IN_TEXT]]
    if len(transitions) > MAX_NAMES_IN_TEXT:
        names.append(f"and {len(transitions) - MAX_NAMES_IN_TEXT} more")
    attachments = [_attachment(t) for t in transitions[:MAX_ATTACHMENTS]]
    if len(transitions) > MAX_ATTACHMENTS:
        more = len(transitions) - MAX_ATTACHMENTS
        attachments.append({"color": "warning", "text": f"{more} more not shown"})
    return {"text": f"[{source}] {head}: {', '.join(names)}", "attachments": attachments}


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WebhookNotifier:
    """Queues alert transitions and delivers them, grouped, from one background task."""

    def __init__(
        self,
        config: NotificationsConfig,
        url: str | None,
        *,
        source: str = "bot-coordinator",
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = config
        self._webhook = config.webhook
        self._url = url if config.webhook is not None else None
        self._env = config.webhook.url_env if config.webhook is not None else None
        self._source = source
        self._clock = clock
        self._sleep = sleep
        self._queue: deque[tuple[float, Transition]] = deque()  # (monotonic arrival, transition)
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self._closed = False
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0  # transitions in the message being delivered
        self.sent_messages = 0
        self.failed_messages = 0  # given up on: retries exhausted or refused (4xx)
        self.failed_attempts = 0
        self.dropped = 0  # transitions dropped from a full queue
        self.last_error: str | None = None
        self.last_sent_at: datetime | None = None

    @property
    def enabled(self) -> bool:
        return self._url is not None

    def notify(self, transition: Transition) -> None:
        """Queue a transition if it passes the filters. Never raises, never waits."""
        try:
            if not self.enabled or self._closed or not self._wanted(transition):
                return
            if len(self._queue) >= self._config.max_queued:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("alert notification queue full: %d dropped so far", self.dropped)
            self._queue.append((time.monotonic(), transition))
            self._wakeup.set()
        except Exception:
            log.exception("alert notification not queued")

    def _wanted(self, t: Transition) -> bool:
        if t.to is AlertState.RESOLVED and not self._config.send_resolved:
            return False
        if t.to not in (AlertState.FIRING, AlertState.RESOLVED):
            return False
        return Severity(t.alert["severity"]).rank >= self._config.min_severity.rank

    async def start(self) -> None:
        if self._webhook is None or not self.enabled or self._task is not None or self._closed:
            return
        self._session = aiohttp.ClientSession(
            trust_env=False,  # never route the secret URL through an env-configured proxy
            timeout=aiohttp.ClientTimeout(total=self._webhook.timeout_seconds),
        )
        self._task = asyncio.create_task(self._run(), name="alert-webhook-notifier")
        self._task.add_done_callback(_log_crash)

    async def close(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 (a flush deadline)
        """Stop taking transitions, send what is queued within `timeout`, then cancel."""
        self._closed = True
        self._closing.set()
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait({task}, timeout=timeout)
            finally:  # also when close() itself is cancelled: the task never outlives it
                if not task.done():
                    task.cancel()
                    await asyncio.wait({task}, timeout=1.0)
        if self._session is not None:
            session, self._session = self._session, None
            try:
                await asyncio.wait_for(session.close(), timeout=1.0)
            except TimeoutError:
                log.warning("alert webhook session did not close within 1 s")
        unsent = len(self._queue) + self._in_flight
        if unsent:
            log.warning("%d alert transition(s) not sent at shutdown", unsent)

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "webhook_env": self._env,
            "queued": len(self._queue),
            "sent_messages": self.sent_messages,
            "failed_messages": self.failed_messages,
            "failed_attempts": self.failed_attempts,
            "dropped": self.dropped,
            "last_error": self.last_error,
            "last_sent_at": self.last_sent_at.isoformat() if self.last_sent_at else None,
        }

    async def _run(self) -> None:
        while True:
            while not self._queue:
                if self._closing.is_set():
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            # Group: wait out the rest of the first queued transition's group wait.
            remaining = self._queue[0][0] + self._config.group_wait_seconds - time.monotonic()
            if remaining > 0 and not self._closing.is_set():
                await self._pause(remaining)
            batch = [t for _, t in self._queue]
            self._queue.clear()
            self._in_flight = len(batch)
            try:
                await self._deliver(json.dumps(build_message(batch, self._source)).encode())
            except Exception:  # a bug, not the webhook: keep the task alive for the next alerts
                log.exception("alert notification of %d transition(s) failed", len(batch))
                self.failed_messages += 1
            self._in_flight = 0

    async def _pause(self, delay: float) -> None:
        """Sleep `delay`, cut short by close() so the last alerts still go out."""
        sleeper = asyncio.ensure_future(self._sleep(delay))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({sleeper, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            closing.cancel()

    async def _deliver(self, body: bytes) -> None:
        webhook = self._webhook
        assert webhook is not None
        for attempt in range(1, webhook.max_attempts + 1):
            status, retry_after, error = await self._attempt(body)
            if error is None:
                self.sent_messages += 1
                self.last_sent_at = self._clock()
                return
            self.failed_attempts += 1
            self.last_error = error
            if status is not None and 400 <= status < 500 and status != 429:
                self.failed_messages += 1
                log.error("alert webhook (%s) refused a message, not retried: %s", self._env, error)
                return
            if attempt == webhook.max_attempts:
                break
            delay = min(
                webhook.initial_backoff_seconds * 2 ** (attempt - 1), webhook.max_backoff_seconds
            )
            if retry_after is not None:
                delay = min(retry_after, webhook.max_backoff_seconds)
            log.warning("alert webhook (%s) failed: %s; retry in %.1f s", self._env, error, delay)
            await self._sleep(delay)
        self.failed_messages += 1
        log.error(
            "alert webhook (%s): message of %d transition(s) dropped after %d attempt(s): %s",
            self._env,
            self._in_flight,
            webhook.max_attempts,
            self.last_error,
        )

    async def _attempt(self, body: bytes) -> tuple[int | None, float | None, str | None]:
        """One POST: (status, Retry-After seconds on a 429, error or None when delivered).

        Error texts never hold the URL: aiohttp's own messages may, so only types are kept."""
        assert self._session is not None
        assert self._url is not None
        assert self._webhook is not None
        try:
            async with self._session.post(
                self._url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                if 200 <= response.status < 300:
                    return response.status, None, None
                snippet = (await response.content.read(200)).decode("utf-8", "replace")
                snippet = " ".join(self._redact(snippet).split())
                retry_after = _seconds(response.headers.get("Retry-After"))
                error = f"HTTP {response.status}" + (f": {snippet}" if snippet else "")
                return response.status, retry_after if response.status == 429 else None, error
        except TimeoutError:
            return None, None, f"timed out after {self._webhook.timeout_seconds:g} s"
        except aiohttp.ClientError as exc:
            detail = type(exc).__name__
            if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.strerror:
                detail += f" ({exc.os_error.strerror})"
            return None, None, detail

    def _redact(self, text: str) -> str:
        """A body may echo the request; the URL's path and query are the secret part."""
        assert self._url is not None
        parts = urlsplit(self._url)
        for secret in (self._url, parts.path if len(parts.path) > 1 else "", parts.query):
            text = text.replace(secret, "<redacted>") if secret else text
        return text


def _seconds(value: str | None) -> float | None:
    """A numeric Retry-After; an HTTP-date (or garbage) is ignored: the backoff applies."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("alert webhook notifier stopped", exc_info=task.exception())


def notifier_from_config(
    settings: NotificationsConfig,
    source: str,
    clock: Callable[[], datetime] = _utcnow,
    environ: Mapping[str, str] = os.environ,
) -> tuple[WebhookNotifier | None, str | None]:
    """The notifier alerts.json asks for, or None and why not (logged). Without a usable URL
    the coordinator and the monitor still raise and list their alerts, unnotified."""
    if settings.webhook is None:
        return None, "no webhook in alerts.json (notifications.webhook is null)"
    if not environ.get(settings.webhook.url_env):
        why = f"${settings.webhook.url_env} is not set"
        log.warning("alert notifications are off: %s (alerts.json notifications.webhook)", why)
        return None, why
    try:
        url = webhook_url(settings, environ)
    except NotifierConfigError as exc:
        log.error("alert notifications are off: %s", exc)
        return None, str(exc)
    return WebhookNotifier(settings, url, source=source, clock=clock), None
