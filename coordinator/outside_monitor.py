"""The outside monitor: a separate process that watches the coordinator over HTTP.

No check inside the coordinator can say that the coordinator is gone (killed, hung, its loop
stalled): this one can. Every `monitor.poll_interval_seconds` it asks the coordinator's
`GET /health` and `GET /alerts` (both at once, each under `monitor.timeout_seconds`), keeps the
last answers and when they were seen, and judges two alerts of its own:

- `coordinator_down` (critical) fires when `failures_before_down` polls in a row fail (1 by
  default, so a `kill -9` shows within one poll interval): the connection is refused or times
  out, an answer is not JSON or not in the expected shape, or a 5xx other than /health's 503.
  It resolves at the first poll that succeeds again.
- `coordinator_unhealthy` (critical) fires when /health answers 503 `unhealthy` two polls in a
  row, and resolves when /health answers healthy or degraded. A poll without a /health answer
  says nothing about it: it stays as it was (`coordinator_down` tells the rest).

Its own transitions are logged and handed to its webhook notifier (source
"bot-coordinator-monitor"), with a reminder every `notifications.repeat_interval_minutes` while
one fires. The coordinator's own alerts are kept and listed (the monitor's GET /alerts,
`outside_monitor_app.alerts_listing`) but never notified again here: the coordinator notifies
them itself, and the monitor adds only what the coordinator cannot say about itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from coordinator.alerts.model import Alert, AlertState, Transition
from coordinator.alerts.notifier import WebhookNotifier
from coordinator.config.alerting import AlertsConfig, Severity

log = logging.getLogger(__name__)

SOURCE = "bot-coordinator-monitor"
COORDINATOR_DOWN = "coordinator_down"
COORDINATOR_UNHEALTHY = "coordinator_unhealthy"
UNHEALTHY_POLLS = 2  # /health answers unhealthy this many polls in a row: the alert fires
RUNBOOK_DOWN = "004 Step 1 (assess: curl :8000/status, tail logs/bot-coordinator.log)"
RUNBOOK_UNHEALTHY = "004 Step 1 (assess: curl :8000/health names the failing service)"
MAX_ANSWER_BYTES = 4 * 1024 * 1024
MAX_NAMED_SERVICES = 5
HEALTH_STATUSES = frozenset({"healthy", "degraded", "unhealthy"})
_SEVERITIES = frozenset(s.value for s in Severity)


class PollFailure(Exception):
    """One endpoint gave no usable answer: which, and how (never a body)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"GET {path}: {reason}")
        self.path = path
        self.reason = reason


def _utcnow() -> datetime:
    return datetime.now(UTC)


class OutsideMonitor:
    """Polls one coordinator and keeps its own alerts about it.

    `open()` (in the loop) before `poll_once()` or `start_polling()`; `close()` at the end,
    which also closes the notifier."""

    def __init__(
        self,
        config: AlertsConfig,
        coordinator_url: str,
        notifier: WebhookNotifier | None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.config = config
        self.settings = config.monitor
        self.url = coordinator_url.rstrip("/")
        self.notifier = notifier
        self.clock = clock
        self.keep_resolved = timedelta(minutes=config.keep_resolved_minutes)
        self.repeat_interval = timedelta(minutes=config.notifications.repeat_interval_minutes)
        # The coordinator as last seen.
        self.health: dict[str, Any] | None = None  # the last /health answer
        self.health_at: datetime | None = None
        self.alerts: dict[str, Any] | None = None  # the last /alerts answer
        self.alerts_at: datetime | None = None
        self.alerting: bool | None = None  # False: its /alerts answers 404 (alerting is off)
        self.reachable = False
        self.last_seen_at: datetime | None = None  # the last poll that fully succeeded
        self.last_error: str | None = None
        self.checked_at: datetime | None = None  # the last poll
        self.consecutive_failures = 0
        self.unhealthy_polls = 0
        self._alerts_fresh = False  # the listing above came from the last poll
        # The monitor's own alerts.
        self.active: dict[str, Alert] = {}
        self.resolved: list[Alert] = []  # newest last
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._session is None:
            # trust_env=False: a proxy from the environment must not stand between us and it.
            # force_close: every poll connects afresh, so a dead listener shows at once.
            self._session = aiohttp.ClientSession(
                trust_env=False, connector=aiohttp.TCPConnector(force_close=True)
            )
        if self.notifier is not None:
            await self.notifier.start()

    def start_polling(self) -> None:
        """Poll now, then every poll interval, in a named task (a crash is logged)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outside-monitor-poll")
            self._task.add_done_callback(_log_crash)

    async def stop_polling(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # our own cancellation still propagates

    async def close(self) -> None:
        await self.stop_polling()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self.notifier is not None:
            await self.notifier.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.poll_interval_seconds
        next_poll = loop.time()
        while True:
            try:
                await self.poll_once()
            except Exception as exc:  # a bug here must not end the watch; say so loudly
                log.critical("outside monitor poll failed: %r", exc, exc_info=exc)
            next_poll = max(next_poll + interval, loop.time())
            await asyncio.sleep(next_poll - loop.time())

    # -- one poll ---------------------------------------------------------------------------------

    async def poll_once(self) -> list[Transition]:
        """Ask /health and /alerts once; record the answers; judge the monitor's own alerts."""
        health, alerts = await asyncio.gather(
            self._health(), self._alerts(), return_exceptions=True
        )
        now = self.clock()
        self.checked_at = now
        errors: list[PollFailure] = []
        health_status: str | None = None
        if isinstance(health, dict):
            self.health, self.health_at = health, now
            health_status = str(health["status"])
        else:
            errors.append(_failure(health))
        if isinstance(alerts, BaseException):
            errors.append(_failure(alerts))
            self._alerts_fresh = False
        else:
            self.alerting = alerts is not None
            self.alerts, self.alerts_at, self._alerts_fresh = alerts, now, True
        self._record(errors, now)
        transitions = [
            t
            for t in (self._judge_down(now), self._judge_unhealthy(health_status, now))
            if t is not None
        ]
        self._forget_old(now)
        for transition in transitions:
            self._announce(transition)
        return transitions

    def _record(self, errors: list[PollFailure], now: datetime) -> None:
        if errors:
            self.reachable = False
            self.consecutive_failures += 1
            self.last_error = _error_text(errors)
        else:
            self.reachable = True
            self.consecutive_failures = 0
            self.last_seen_at = now
            self.last_error = None

    async def _get(self, path: str) -> tuple[int, Any]:
        """(HTTP status, parsed JSON); PollFailure for no answer, a 5xx (but /health's 503) or
        an answer that is not JSON."""
        if self._session is None:
            raise RuntimeError("OutsideMonitor.open() was not called")
        seconds = self.settings.timeout_seconds
        try:
            async with self._session.get(
                self.url + path, timeout=self._timeout, allow_redirects=False
            ) as response:
                status = response.status
                body = await _read_bounded(response, path)
        except TimeoutError:
            raise PollFailure(path, f"timed out after {seconds:g} s") from None
        except aiohttp.ClientError as exc:
            raise PollFailure(path, _describe(exc)) from None
        if status >= 500 and not (path == "/health" and status == 503):
            raise PollFailure(path, f"HTTP {status}")
        try:
            return status, json.loads(body)
        except ValueError:  # UnicodeDecodeError is a ValueError too
            raise PollFailure(path, f"HTTP {status} is not JSON") from None

    async def _health(self) -> dict[str, Any]:
        status, body = await self._get("/health")
        if (
            status not in (200, 503)
            or not isinstance(body, dict)
            or body.get("status") not in HEALTH_STATUSES
            or not isinstance(body.get("services"), dict)
        ):
            raise PollFailure("/health", f"HTTP {status} is not a health report")
        return body

    async def _alerts(self) -> dict[str, Any] | None:
        """The coordinator's alert listing; None when it answers 404 (alerting is off there)."""
        status, body = await self._get("/alerts")
        if status == 404 and isinstance(body, dict) and isinstance(body.get("error"), dict):
            return None
        if (
            status != 200
            or not isinstance(body, dict)
            or body.get("status") not in ("firing", "ok")
            or not _alert_list(body.get("firing"))
            or not _alert_list(body.get("resolved", []))
        ):
            raise PollFailure("/alerts", f"HTTP {status} is not an alert listing")
        return body

    # -- the monitor's own alerts -----------------------------------------------------------------

    def _judge_down(self, now: datetime) -> Transition | None:
        threshold = self.settings.failures_before_down
        if self.consecutive_failures >= threshold:
            polls = self.consecutive_failures
            summary = (
                f"the coordinator at {self.url} does not answer: {self.last_error} "
                f"({polls} poll{'s' if polls != 1 else ''} in a row)"
            )
            return self._breached(
                COORDINATOR_DOWN, summary, float(polls), float(threshold), RUNBOOK_DOWN, now
            )
        if self.reachable:
            return self._clear(
                COORDINATOR_DOWN, f"the coordinator at {self.url} answers again", now
            )
        return None

    def _judge_unhealthy(self, status: str | None, now: datetime) -> Transition | None:
        if status is None:  # no /health answer: nothing known about its health
            self.unhealthy_polls = 0
            return None
        if status != "unhealthy":
            self.unhealthy_polls = 0
            summary = f"the coordinator at {self.url} reports {status}"
            return self._clear(COORDINATOR_UNHEALTHY, summary, now)
        self.unhealthy_polls += 1
        if self.unhealthy_polls < UNHEALTHY_POLLS:
            return None
        assert self.health is not None
        services = unhealthy_services(self.health.get("services", {}))
        named = ", ".join(services[:MAX_NAMED_SERVICES]) or "no service named"
        if len(services) > MAX_NAMED_SERVICES:
            named += f" and {len(services) - MAX_NAMED_SERVICES} more"
        summary = (
            f"the coordinator at {self.url} reports unhealthy: {named} "
            f"({self.unhealthy_polls} polls in a row)"
        )
        return self._breached(
            COORDINATOR_UNHEALTHY,
            summary,
            float(self.unhealthy_polls),
            float(UNHEALTHY_POLLS),
            RUNBOOK_UNHEALTHY,
            now,
        )

    def _breached(
        self, name: str, summary: str, value: float, threshold: float, runbook: str, now: datetime
    ) -> Transition | None:
        alert = self.active.get(name)
        if alert is None:
            alert = Alert(
                name=name,
                severity=Severity.CRITICAL,
                labels={"coordinator": self.url},
                state=AlertState.FIRING,
                since=now,
                value=value,
                threshold=threshold,
                summary=summary,
                runbook=runbook,
                source=SOURCE,
                last_notified_at=now,
            )
            self.active[name] = alert
            return Transition(alert.as_dict(), AlertState.FIRING, now)
        alert.summary, alert.value = summary, value
        if (
            alert.last_notified_at is not None
            and now - alert.last_notified_at >= self.repeat_interval
        ):
            alert.last_notified_at = now
            return Transition(alert.as_dict(), AlertState.FIRING, now, repeat=True)
        return None

    def _clear(self, name: str, summary: str, now: datetime) -> Transition | None:
        alert = self.active.pop(name, None)
        if alert is None:
            return None
        alert.state, alert.resolved_at, alert.summary = AlertState.RESOLVED, now, summary
        self.resolved.append(alert)
        return Transition(alert.as_dict(), AlertState.RESOLVED, now)

    def _forget_old(self, now: datetime) -> None:
        cutoff = now - self.keep_resolved
        self.resolved = [a for a in self.resolved if a.resolved_at and a.resolved_at >= cutoff]

    def _announce(self, transition: Transition) -> None:
        alert = transition.alert
        if not transition.repeat:
            level = logging.INFO if transition.to is AlertState.RESOLVED else logging.ERROR
            log.log(level, "alert %s %s: %s", alert["name"], transition.to.value, alert["summary"])
        if self.notifier is not None:
            self.notifier.notify(transition)

    @property
    def alerts_stale(self) -> bool:
        """The coordinator's alerts kept are not from the last poll (it did not answer)."""
        return not self._alerts_fresh


def unhealthy_services(services: Mapping[str, Any]) -> list[str]:
    """The services a /health report calls unhealthy; a group's members as `group/member`."""
    names: list[str] = []
    for name, entry in services.items():
        if not isinstance(entry, dict):
            continue
        if "status" in entry:
            if entry["status"] == "unhealthy":
                names.append(name)
            continue
        for member, item in entry.items():  # a group: exchanges, bots
            if isinstance(item, dict) and item.get("status") == "unhealthy":
                names.append(f"{name}/{member}")
    return names


async def _read_bounded(response: aiohttp.ClientResponse, path: str) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise PollFailure(path, f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    return bytes(body)


def _alert_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(a, dict) and isinstance(a.get("name"), str) and a.get("severity") in _SEVERITIES
        for a in value
    )


def _failure(result: object) -> PollFailure:
    """A failed request's PollFailure; any other exception is a bug: re-raised."""
    if isinstance(result, PollFailure):
        return result
    if isinstance(result, BaseException):
        raise result
    raise TypeError(f"unexpected poll result {result!r}")


def _error_text(errors: list[PollFailure]) -> str:
    """`GET /health, /alerts: connection refused (...)` when both failed alike."""
    if len({e.reason for e in errors}) == 1:
        return f"GET {', '.join(e.path for e in errors)}: {errors[0].reason}"
    return "; ".join(str(e) for e in errors)


def _describe(exc: aiohttp.ClientError) -> str:
    """`connection refused (ClientConnectorError)`: the reason first, the type for a search."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        reason = os.strerror(error.errno) if error.errno else (error.strerror or str(error))
        return f"{reason.lower()} ({type(exc).__name__})"
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("the outside monitor stopped polling", exc_info=task.exception())
