"""The alert state machine: samples in, transitions out.

Per alert (a rule's name and its subject's labels):

    (none) --breached--> PENDING --held for_seconds, 2+ samples--> FIRING
    PENDING --clear--> (none)                      (it never fired: nothing to say)
    FIRING --clear for resolve_after_seconds, 2+ samples--> RESOLVED (kept keep_resolved_minutes)

So an alert fires and resolves on edges, never on a single sample, and does not flap when a
value wobbles around its threshold for less than the hold times. A firing alert is announced
again every `repeat_interval` (a `Transition` with `repeat=True`) until it resolves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from coordinator.alerts.model import Alert, AlertState, Sample, Transition
from coordinator.config.alerting import RuleTiming

MIN_SAMPLES = 2
CHUNK = 256  # samples evaluated between two turns of the event loop


class AlertEngine:
    def __init__(
        self,
        timing: Callable[[str], RuleTiming],
        clock: Callable[[], datetime],
        keep_resolved: timedelta,
        repeat_interval: timedelta,
        source: str = "coordinator",
    ) -> None:
        self.timing = timing
        self.clock = clock
        self.keep_resolved = keep_resolved
        self.repeat_interval = repeat_interval
        self.source = source
        self.active: dict[str, Alert] = {}  # pending and firing, by key
        self.resolved: list[Alert] = []  # newest last
        self.evaluated_at: datetime | None = None

    def evaluate(self, samples: Iterable[Sample]) -> list[Transition]:
        """Feed one evaluation's samples (every subject of every rule); the moves they make.
        An active alert whose subject is no longer reported counts as clear."""
        transitions: list[Transition] = []
        for _ in self._evaluation(samples, transitions):
            pass
        return transitions

    async def evaluate_cooperatively(self, samples: Iterable[Sample]) -> list[Transition]:
        """`evaluate`, letting the event loop run every CHUNK samples: at 1,000 bots one
        evaluation is ~4,000 samples and tens of milliseconds, which held in one piece would
        stall every bot's tick and the kill switch's request behind it (docs/benchmarks.md)."""
        transitions: list[Transition] = []
        for _ in self._evaluation(samples, transitions):
            await asyncio.sleep(0)
        return transitions

    def _evaluation(
        self, samples: Iterable[Sample], transitions: list[Transition]
    ) -> Iterator[None]:
        now = self.clock()
        self.evaluated_at = now
        seen: set[str] = set()
        for n, sample in enumerate(samples, 1):
            key = sample.key
            seen.add(key)
            transition = self._observe(sample, key, now)
            if transition is not None:
                transitions.append(transition)
            if n % CHUNK == 0:
                yield
        for key in [k for k in self.active if k not in seen]:
            transition = self._clear(self.active[key], now)
            if transition is not None:
                transitions.append(transition)
        self._forget_old(now)

    def _observe(self, sample: Sample, key: str, now: datetime) -> Transition | None:
        alert = self.active.get(key)
        if not sample.breached:
            return self._clear(alert, now) if alert is not None else None
        if alert is None:
            alert = Alert(
                name=sample.name,
                severity=sample.severity,
                labels=dict(sample.labels),
                state=AlertState.PENDING,
                since=now,
                value=sample.value,
                threshold=sample.threshold,
                summary=sample.summary,
                runbook=sample.runbook,
                source=self.source,
                breached_since=now,
            )
            self.active[key] = alert
        alert.value, alert.threshold, alert.summary = sample.value, sample.threshold, sample.summary
        alert.breached_samples += 1
        alert.clear_samples, alert.clear_since = 0, None
        if alert.breached_since is None:
            alert.breached_since = now
        if alert.state is AlertState.PENDING:
            held = (now - alert.breached_since).total_seconds()
            timing = self.timing(alert.name)
            if alert.breached_samples >= MIN_SAMPLES and held >= timing.for_seconds:
                alert.state, alert.since, alert.last_notified_at = AlertState.FIRING, now, now
                return Transition(alert.as_dict(), AlertState.FIRING, now)
            return None
        last = alert.last_notified_at
        if last is not None and now - last >= self.repeat_interval:
            alert.last_notified_at = now
            return Transition(alert.as_dict(), AlertState.FIRING, now, repeat=True)
        return None

    def _clear(self, alert: Alert, now: datetime) -> Transition | None:
        if alert.state is AlertState.PENDING:
            del self.active[alert.key]  # it never fired
            return None
        alert.clear_samples += 1
        alert.breached_samples = 0
        if alert.clear_since is None:
            alert.clear_since = now
        held = (now - alert.clear_since).total_seconds()
        timing = self.timing(alert.name)
        if alert.clear_samples < MIN_SAMPLES or held < timing.resolve_after_seconds:
            return None
        del self.active[alert.key]
        alert.state, alert.resolved_at = AlertState.RESOLVED, now
        self.resolved.append(alert)
        return Transition(alert.as_dict(), AlertState.RESOLVED, now)

    def _forget_old(self, now: datetime) -> None:
        cutoff = now - self.keep_resolved
        self.resolved = [a for a in self.resolved if a.resolved_at and a.resolved_at >= cutoff]

    # -- reading ----------------------------------------------------------------------------------

    def firing(self) -> list[Alert]:
        return [a for a in self.active.values() if a.state is AlertState.FIRING]

    def listing(self) -> dict[str, Any]:
        """What GET /alerts answers: firing (most severe first), pending, recently resolved."""
        firing = sorted(self.firing(), key=lambda a: (-a.severity.rank, a.since, a.key))
        pending = [a for a in self.active.values() if a.state is AlertState.PENDING]
        counts = {"critical": 0, "warning": 0, "info": 0}
        for alert in firing:
            counts[alert.severity.value] += 1
        return {
            "status": "firing" if firing else "ok",
            "counts": counts,
            "firing": [a.as_dict() for a in firing],
            "pending": [a.as_dict() for a in pending],
            "resolved": [a.as_dict() for a in reversed(self.resolved)],
            "evaluated_at": self.evaluated_at.isoformat() if self.evaluated_at else None,
        }
