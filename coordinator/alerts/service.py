"""The coordinator's alerting: every `evaluation_interval_seconds` the facts are gathered, the
rules judged and the engine moved; each transition is audited, counted and handed to the
notifier. It never touches the order path: it reads memory, and the disk reading runs in a
thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric

from coordinator.alerts.engine import AlertEngine
from coordinator.alerts.facts import Facts, disk_free_pct, gather, gather_cooperatively
from coordinator.alerts.model import AlertState, Transition
from coordinator.alerts.notifier import WebhookNotifier
from coordinator.alerts.rules import TIMING, evaluate_rules
from coordinator.alerts.window import OutcomeWindow
from coordinator.config.alerting import AlertsConfig, RuleTiming
from coordinator.metrics.registry import PREFIX, Metrics

if TYPE_CHECKING:
    from coordinator.runtime import Coordinator

log = logging.getLogger(__name__)


class AlertService:
    def __init__(
        self,
        coordinator: Coordinator,
        config: AlertsConfig,
        window: OutcomeWindow,
        data_dir: Path,
        metrics: Metrics | None = None,
        notifier: WebhookNotifier | None = None,
        notifications_off: str | None = None,  # why there is no notifier
    ) -> None:
        self.notifications_off = notifications_off
        self.coordinator = coordinator
        self.config = config
        self.window = window
        self.data_dir = data_dir
        self.metrics = metrics
        self.notifier = notifier
        self.engine = AlertEngine(
            self.timing,
            coordinator.clock,
            keep_resolved=timedelta(minutes=config.keep_resolved_minutes),
            repeat_interval=timedelta(minutes=config.notifications.repeat_interval_minutes),
        )
        self._task: asyncio.Task[None] | None = None
        self._audits: set[asyncio.Task[None]] = set()
        self._disk: float | None = None

    def apply_config(self, config: AlertsConfig) -> None:
        """A config reload's thresholds and timings: the next evaluation uses them (the
        notifier keeps its settings until the coordinator restarts)."""
        self.config = config
        self.window.resize(config.rules.order_failure_rate.window_minutes)
        self.engine.keep_resolved = timedelta(minutes=config.keep_resolved_minutes)

    def timing(self, name: str) -> RuleTiming:
        return TIMING[name](self.config.rules)

    async def evaluate_once(self) -> list[Transition]:
        """One evaluation, in pieces that let the event loop run between them."""
        self._disk = await asyncio.to_thread(disk_free_pct, self.data_dir)
        facts = replace(
            await gather_cooperatively(self.coordinator, self.window), disk_free_pct=self._disk
        )
        transitions = await self.engine.evaluate_cooperatively(
            evaluate_rules(facts, self.config.rules)
        )
        for transition in transitions:
            self._announce(transition)
        return transitions

    def facts(self) -> Facts:
        return replace(gather(self.coordinator, self.window), disk_free_pct=self._disk)

    def evaluate(self, facts: Facts) -> list[Transition]:
        transitions = self.engine.evaluate(evaluate_rules(facts, self.config.rules))
        for transition in transitions:
            self._announce(transition)
        return transitions

    def _announce(self, transition: Transition) -> None:
        alert = transition.alert
        if not transition.repeat:
            level = logging.ERROR if alert["severity"] == "critical" else logging.WARNING
            if transition.to is AlertState.RESOLVED:
                level = logging.INFO
            log.log(
                level,
                "alert %s %s: %s",
                alert["name"],
                transition.to.value,
                alert["summary"],
                extra={k: v for k, v in alert["labels"].items() if k in ("bot", "exchange")},
            )
            if self.metrics is not None:
                self.metrics.alert_transitions.labels(
                    alert["name"], alert["severity"], transition.to.value
                ).inc()
            self._audit(transition)
        if self.notifier is not None:
            self.notifier.notify(transition)

    def _audit(self, transition: Transition) -> None:
        alert = transition.alert
        task = asyncio.ensure_future(
            self.coordinator.journal.audit(
                actor="alerts",
                action=f"alert.{transition.to.value}",
                subject=_subject(alert),
                result="ok",
                reason=alert["summary"],
                at=transition.at,
                details={
                    "severity": alert["severity"],
                    "value": alert["value"],
                    "threshold": alert["threshold"],
                    "runbook": alert["runbook"],
                },
            )
        )
        self._audits.add(task)
        task.add_done_callback(self._audit_done)

    def _audit_done(self, task: asyncio.Task[None]) -> None:
        self._audits.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not audit an alert transition: %r", task.exception())

    # -- the schedule -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.notifier is not None:
            await self.notifier.start()
        await self.evaluate_once()  # /health has its disk reading from the start
        self._task = asyncio.create_task(self._run(), name="alerts")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.evaluation_interval_seconds)
            try:
                await self.evaluate_once()
            except Exception as exc:  # alerting must outlive one bad evaluation; say so
                log.critical("alert evaluation failed: %r", exc, exc_info=exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._audits:
            await asyncio.wait(set(self._audits), timeout=2.0)

    async def close_notifier(self, flush_seconds: float = 0.5) -> None:
        """Send what is queued if the webhook answers within `flush_seconds`, then stop: at
        shutdown, after the bots are stopped, so a dead webhook never holds them up."""
        if self.notifier is not None:
            await self.notifier.close(flush_seconds)

    # -- reading ----------------------------------------------------------------------------------

    def listing(self) -> dict[str, Any]:
        listing = self.engine.listing()
        listing["source"] = "coordinator"
        listing["evaluation_interval_seconds"] = self.config.evaluation_interval_seconds
        if self.notifier is not None:
            listing["notifications"] = self.notifier.status()
        else:
            listing["notifications"] = {"enabled": False, "why": self.notifications_off}
        return listing

    def metrics_families(self) -> Iterator[Metric]:
        firing = GaugeMetricFamily(
            f"{PREFIX}_alerts_firing",
            "Alerts firing now, by name and severity",
            labels=["alertname", "severity"],
        )
        counts: dict[tuple[str, str], int] = {}
        for alert in self.engine.firing():
            key = (alert.name, alert.severity.value)
            counts[key] = counts.get(key, 0) + 1
        for (name, severity), count in sorted(counts.items()):
            firing.add_metric([name, severity], count)
        yield firing
        rate = GaugeMetricFamily(
            f"{PREFIX}_order_failure_ratio",
            "Failed over sent orders in the failure-rate window (alerts.json), per bot",
            labels=["bot"],
        )
        for bot in self.window.bots():
            window = self.window.count(bot)
            if window.orders:
                rate.add_metric([bot], window.failed / window.orders)
        yield rate
        if self._disk is not None:
            disk = GaugeMetricFamily(
                f"{PREFIX}_data_dir_free_ratio",
                "Free space of the data dir's file system (0-1), read at each evaluation",
            )
            disk.add_metric([], self._disk / 100)
            yield disk
        if self.notifier is not None:
            status = self.notifier.status()
            for field in ("sent_messages", "failed_attempts", "dropped"):
                family = GaugeMetricFamily(
                    f"{PREFIX}_notifications_{field}",
                    f"Webhook notifier: {field.replace('_', ' ')}",
                )
                family.add_metric([], status.get(field, 0))
                yield family



def _subject(alert: dict[str, Any] | Any) -> str:
    labels = alert.get("labels") or {}
    if not labels:
        return str(alert["name"])
    return f"{alert['name']} " + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
