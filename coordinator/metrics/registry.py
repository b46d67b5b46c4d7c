"""The metrics a coordinator records as things happen (counters and histograms)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bots.gateway import BotIdentity, FailureClass
from bots.journal import TERMINAL_STATUSES, OrderStatus
from coordinator.alerts.window import OutcomeWindow

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "bot_coordinator"

ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

FAILED_OUTCOMES = frozenset({"rejected", "failed", "unresolved"})
SUBMIT_OUTCOMES = ("sent", *sorted(FAILED_OUTCOMES))
FINAL_STATUSES = tuple(s.value for s in sorted(TERMINAL_STATUSES, key=lambda s: s.value))

# The `*_created` series prometheus-client adds to every counter and histogram would double
# the exposition for a timestamp Prometheus does not use; this is process-wide and idempotent.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The registry and the instruments; also the gateways' `OrderObserver`."""

    def __init__(self, failures: OutcomeWindow | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.failures = failures  # the alert engine's window of order outcomes
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.orders = Counter(
            f"{PREFIX}_orders",
            "Orders that reached a final status in the journal",
            ["bot", "exchange", "status"],
            registry=r,
        )
        self.submits = Counter(
            f"{PREFIX}_order_submits",
            "Orders sent to an exchange, by how their submit ended (sent, rejected, failed, "
            "unresolved); the denominator of the failure rate",
            ["bot", "exchange", "outcome"],
            registry=r,
        )
        self.failures_total = Counter(
            f"{PREFIX}_order_failures",
            "Failed attempts to send an order, by reason and class (transient, permanent)",
            ["bot", "exchange", "reason", "class"],
            registry=r,
        )
        self.fills = Counter(f"{PREFIX}_fills", "Fills committed", ["bot", "exchange"], registry=r)
        self.filled_notional = Counter(
            f"{PREFIX}_filled_notional",
            "Filled notional (amount x price) in the quote currency",
            ["bot", "exchange", "currency"],
            registry=r,
        )
        self.ack_seconds = Histogram(
            f"{PREFIX}_order_ack_seconds",
            "Submit to acknowledgement: first send of an order to the exchange's answer",
            ["exchange"],
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.kill_switch_activations = Counter(
            f"{PREFIX}_kill_switch_activations",
            "Kill switch activations in this process, by trigger",
            ["trigger"],
            registry=r,
        )
        self.trading_switch_changes = Counter(
            f"{PREFIX}_trading_switch_changes",
            "Scoped trading switches set in this process, by scope kind and state",
            ["scope", "state"],
            registry=r,
        )
        self.execution_throttle_trips = Counter(
            f"{PREFIX}_execution_throttle_trips",
            "Bots disabled by the repeated-execution throttle in this process",
            ["bot"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            f"{PREFIX}_store_commit_seconds",
            "One store commit (a group of jobs) from BEGIN to COMMIT on disk, by lane",
            ["lane"],
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.http_seconds = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Control plane requests, by route template, method and status",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.config_refusals = Counter(
            f"{PREFIX}_config_refusals",
            "Starts refused because the bot's effective config is not the approved one",
            ["bot"],
            registry=r,
        )
        self.alert_transitions = Counter(
            f"{PREFIX}_alert_transitions",
            "Alerts that fired or resolved",
            ["alertname", "severity", "to"],
            registry=r,
        )

    def add_bot(self, identity: BotIdentity) -> None:
        """Every outcome and final status of the bot's orders at 0 from the start: a series
        that appears only at its first event hides that event from Prometheus' increase()."""
        for outcome in SUBMIT_OUTCOMES:
            self.submits.labels(identity.bot, identity.exchange, outcome)
        for status in FINAL_STATUSES:
            self.orders.labels(identity.bot, identity.exchange, status)
        self.fills.labels(identity.bot, identity.exchange)
        self.config_refusals.labels(identity.bot)
        self.filled_notional.labels(identity.bot, identity.exchange, identity.quote_asset)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def render_cooperatively(self) -> bytes:
        """`render`, with only the reading of the figures on the event loop: at 1,000 bots the
        exposition is ~28,000 lines and ~400 ms of formatting, which on the loop would stall
        every bot and the kill switch for a scrape's length. The figures are read here, at
        one instant; the text is written in a worker thread (sharing the GIL with the loop in
        short slices, not holding the loop)."""
        families = list(self.registry.collect())
        return await asyncio.to_thread(generate_latest, _Collected(families))

    # -- OrderObserver ----------------------------------------------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: labels() validates and locks on every call,
        several times per order on the order path (docs/benchmarks.md)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def send_failed(self, identity: BotIdentity, reason: str, failure: FailureClass) -> None:
        self._child(self.failures_total, identity.bot, identity.exchange, reason, failure).inc()

    def submit_ended(
        self, identity: BotIdentity, outcome: str, ack_seconds: float | None
    ) -> None:
        self._child(self.submits, identity.bot, identity.exchange, outcome).inc()
        if ack_seconds is not None:
            self._child(self.ack_seconds, identity.exchange).observe(ack_seconds)
        if self.failures is not None:
            self.failures.record(identity.bot, outcome in FAILED_OUTCOMES)

    def order_finished(self, identity: BotIdentity, status: OrderStatus) -> None:
        self._child(self.orders, identity.bot, identity.exchange, status.value).inc()

    def filled(self, identity: BotIdentity, amount: Decimal, price: Decimal) -> None:
        self._child(self.fills, identity.bot, identity.exchange).inc()
        self._child(
            self.filled_notional, identity.bot, identity.exchange, identity.quote_asset
        ).inc(float(amount * price))

    # -- the store --------------------------------------------------------------------------------

    def committed(self, seconds: float, safety: bool) -> None:
        self._child(self.commit_seconds, "safety" if safety else "normal").observe(seconds)


class _Collected:
    """Metric families read already, in the shape `generate_latest` asks of a registry."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
