"""Prometheus metrics (prometheus-client): what the order path, the store and the control plane
count as it happens, and a collector that reads every gauge from the coordinator at scrape time.

Every coordinator has its own `CollectorRegistry` (no process-global registry), so tests and
several coordinators in one process never share counters. Label sets are bounded: bot, exchange,
breaker, reason and status codes, route templates; never an order id.
"""

from coordinator.metrics.registry import CONTENT_TYPE, Metrics

__all__ = ["CONTENT_TYPE", "Metrics"]
