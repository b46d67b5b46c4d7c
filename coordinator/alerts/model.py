"""What an alert is: one condition of one rule for one subject (a bot, an exchange, ...).

An alert moves `pending -> firing -> resolved` (or `pending -> inactive` when its condition
clears before it fired); only `firing` and `resolved` are shown and notified. Every transition
is a `Transition`, which the engine audits and hands to the notifier.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator.config.alerting import Severity
from coordinator.store.journal import iso


class AlertState(enum.StrEnum):
    PENDING = "pending"  # the condition holds, not yet for long enough
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Sample:
    """One rule's reading for one subject at one evaluation."""

    name: str  # the alert's name, e.g. "order_failure_rate_high"
    severity: Severity
    labels: Mapping[str, str]  # bounded: bot, exchange, breaker; never an order id
    breached: bool
    value: float | None
    threshold: float | None
    summary: str
    runbook: str  # the runbook section to read

    @property
    def key(self) -> str:
        return alert_key(self.name, self.labels)


def alert_key(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


@dataclass(slots=True)
class Alert:
    name: str
    severity: Severity
    labels: dict[str, str]
    state: AlertState
    since: datetime  # when it started firing (pending: when the condition was first seen)
    value: float | None
    threshold: float | None
    summary: str
    runbook: str
    source: str = "coordinator"  # or "monitor"
    resolved_at: datetime | None = None
    last_notified_at: datetime | None = None
    # Evaluation bookkeeping, not shown.
    breached_since: datetime | None = None
    clear_since: datetime | None = None
    breached_samples: int = 0
    clear_samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return alert_key(self.name, self.labels)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity.value,
            "state": self.state.value,
            "labels": dict(self.labels),
            "since": iso(self.since),
            "resolved_at": iso(self.resolved_at) if self.resolved_at else None,
            "value": self.value,
            "threshold": self.threshold,
            "summary": self.summary,
            "runbook": self.runbook,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert moved: `to` is FIRING (it fired) or RESOLVED (it ended). `alert` is a snapshot
    taken at the move, as a dict (`Alert.as_dict`)."""

    alert: Mapping[str, Any]
    to: AlertState
    at: datetime
    repeat: bool = False  # a reminder of an alert still firing, not a new move
