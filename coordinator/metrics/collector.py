"""Gauges read from the coordinator at scrape time: nothing is copied on the order path.

One `collect()` walks the bots, breakers, exchanges, backups, reconciliation, store and alerts
that `/status` shows; with 100 bots that is a few thousand samples (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator import __version__
from coordinator.lifecycle import BotState
from coordinator.metrics.registry import PREFIX
from coordinator.safety.dead_mans_switch import SwitchState
from coordinator.safety.scopes import TradingState

if TYPE_CHECKING:
    from coordinator.runtime import Coordinator

BREAKER_STATES = ("closed", "half_open", "open")
EXCHANGE_STATES = ("up", "degraded", "down", "unknown")


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels or [])


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


class CoordinatorCollector(Collector):
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        yield from self._process()
        yield from self._bots()
        yield from self._safety()
        yield from self._exchanges()
        yield from self._dead_mans_switches()
        yield from self._operations()

    def _process(self) -> Iterator[Metric]:
        c = self.coordinator
        info = _gauge("info", "Version of the running coordinator (always 1)", ["version"])
        info.add_metric([__version__], 1)
        yield info
        yield _single("uptime_seconds", "Seconds since the coordinator started", c.uptime_seconds())
        yield _single(
            "accepting_actions", "1 while control actions are taken, 0 shutting down",
            1 if c.accepting else 0,
        )
        depth = _gauge("store_queue_depth", "Store jobs queued, not yet committed")
        depth.add_metric([], c.store.backlog)
        yield depth
        failed = _counter("store_failed_jobs", "Store jobs rolled back", [])
        failed.add_metric([], c.store.stats.failed_jobs)
        yield failed

    def _bots(self) -> Iterator[Metric]:
        now = self.coordinator.clock()
        state = _gauge("bot_state", "1 for the bot's current lifecycle state", ["bot", "state"])
        restarts = _counter("bot_restarts", "Crash restarts of the bot's tick loop", ["bot"])
        crashes = _gauge("bot_consecutive_crashes", "Crashes in a row", ["bot"])
        looped = _gauge(
            "bot_crash_looped", "1 when the bot crashed and is left crashed for an operator",
            ["bot"],
        )
        interval = _gauge("bot_tick_interval_seconds", "The bot's configured tick", ["bot"])
        lag = _gauge("bot_tick_lag_seconds", "How late the newest tick started", ["bot"])
        heartbeat = _gauge("bot_heartbeat_age_seconds", "Seconds since the last tick", ["bot"])
        data_age = _gauge(
            "bot_market_data_age_seconds",
            "Seconds since the bot's last price reached us (what the stale data guard reads)",
            ["bot"],
        )
        position = _gauge("bot_position_base", "Position in the base asset", ["bot", "asset"])
        notional = _gauge(
            "bot_position_notional", "Position at the last price", ["bot", "currency"]
        )
        balance = _gauge("bot_balance", "Balance by asset", ["bot", "asset"])
        pnl = _gauge("bot_pnl", "PnL in the quote currency", ["bot", "currency", "kind"])
        open_orders = _gauge("bot_open_orders", "Orders live on the exchange", ["bot"])
        refusals = _counter(
            "risk_refusals", "Orders refused by our gates (risk limits, kill switch, breakers, "
            "read-only, self_trade, stale_market_data), by reason code", ["bot", "code"],
        )
        trading = _gauge(
            "bot_trading_state", "1 for the bot's effective trading state (active, reducing, "
            "halted: the kill switch, its exchange's or its own switch, or the throttle)",
            ["bot", "state"],
        )
        disabled = _gauge(
            "bot_disabled", "1 while the execution throttle keeps the bot disabled", ["bot"]
        )
        for runner in self.coordinator.supervisor.runners.values():
            name, book, config = runner.name, runner.parts.book, runner.parts.config
            effective = self.coordinator.bot_trading_state(runner)
            for each_state in TradingState:
                trading.add_metric([name, each_state.value], int(effective["state"] == each_state))
            disabled.add_metric([name], int(effective["disabled"]))
            for each in BotState:
                state.add_metric([name, each.value], 1 if runner.state is each else 0)
            restarts.add_metric([name], runner.restarts)
            crashes.add_metric([name], runner.consecutive_crashes)
            crash_looped = runner.state is BotState.CRASHED and runner.next_restart_at is None
            looped.add_metric([name], int(crash_looped))
            interval.add_metric([name], config.tick_interval_seconds)
            lag.add_metric([name], runner.stats.lag_seconds)
            if runner.stats.last_tick_at is not None:
                heartbeat.add_metric([name], (now - runner.stats.last_tick_at).total_seconds())
            if book.last_price_at is not None:
                data_age.add_metric([name], (now - book.last_price_at).total_seconds())
            base, quote = config.base_asset, config.quote_asset
            pos = book.position
            position.add_metric([name, base], float(pos.base))
            price = book.last_price
            if price is not None:
                notional.add_metric([name, quote], float(pos.base * price))
            unrealized = float(pos.unrealized_pnl(price)) if price is not None else 0.0
            realized, fees = float(pos.realized_pnl), float(pos.fees_paid)
            for kind, value in (
                ("realized", realized),
                ("unrealized", unrealized),
                ("fees", fees),
                ("total", realized + unrealized - fees),
            ):
                pnl.add_metric([name, quote, kind], value)
            for asset, total in sorted(book.balances.items()):
                balance.add_metric([name, asset], float(total))
            open_orders.add_metric([name], len(book.live_orders))
            for code, count in sorted(book.refusals.items()):
                refusals.add_metric([name, code], count)
        yield from (state, restarts, crashes, looped, interval, lag, heartbeat, data_age)
        yield from (position, notional, balance, pnl)
        yield from (open_orders, refusals, trading, disabled)

    def _safety(self) -> Iterator[Metric]:
        c = self.coordinator
        yield _single(
            "kill_switch_active", "1 while the kill switch is active", int(c.kill_switch.active)
        )
        status = c.safety.status()
        state = _gauge(
            "breaker_state", "1 for the breaker's current state", ["breaker", "state"]
        )
        failures = _gauge(
            "breaker_failures_in_window", "Transient failures in the breaker's window", ["breaker"]
        )
        trips = _counter("breaker_trips", "Times the breaker opened", ["breaker"])
        for snapshot in [status["global"], *status["exchanges"].values()]:
            name = str(snapshot["name"])
            for value in BREAKER_STATES:
                state.add_metric([name, value], 1 if snapshot["state"] == value else 0)
            failures.add_metric([name], snapshot["failures_in_window"])
            trips.add_metric([name], snapshot.get("trips") or 0)
        yield from (state, failures, trips)

    def _exchanges(self) -> Iterator[Metric]:
        health = self.coordinator.health
        state = _gauge("exchange_state", "1 for the exchange probe's state", ["exchange", "state"])
        latency = _gauge(
            "exchange_probe_latency_seconds", "The last successful status probe", ["exchange"]
        )
        backup = _gauge(
            "exchange_on_backup_endpoint", "1 while the live account uses its backup API root",
            ["exchange"],
        )
        if health is not None:
            for name, probe in sorted(health.health.items()):
                for value in EXCHANGE_STATES:
                    state.add_metric([name, value], 1 if probe.state == value else 0)
                if probe.latency_ms is not None:
                    latency.add_metric([name], probe.latency_ms / 1000)
                failover = health.failovers.get(name)
                backup.add_metric([name], 1 if failover and failover.active == "backup" else 0)
        yield from (state, latency, backup)

    def _dead_mans_switches(self) -> Iterator[Metric]:
        switch = self.coordinator.dead_mans_switch
        state = _gauge(
            "dead_mans_switch_state", "1 for the venue's dead man's switch's current state",
            ["exchange", "state"],
        )
        protected = _gauge(
            "dead_mans_switch_protected",
            "1 while the venue's timer runs: if the coordinator died, the venue would cancel "
            "the live accounts' orders",
            ["exchange"],
        )
        beats = _counter("dead_mans_switch_beats", "Heartbeats sent", ["exchange"])
        failures = _counter(
            "dead_mans_switch_failures", "Heartbeats that failed (counted in beats too)",
            ["exchange"],
        )
        age = _gauge(
            "dead_mans_switch_last_success_age_seconds",
            "Since the newest acknowledged heartbeat was sent; past the timeout the venue may "
            "have cancelled every order of the account", ["exchange"],
        )
        timeout = _gauge(
            "dead_mans_switch_timeout_seconds", "The timer each heartbeat sets on the venue",
            ["exchange"],
        )
        now = self.coordinator.clock()
        for reading in switch.readings(now) if switch is not None else ():
            name = reading.exchange
            for value in SwitchState:
                state.add_metric([name, value.value], int(reading.state is value))
            protected.add_metric([name], int(reading.protected))
            if not reading.heartbeat:
                continue
            beats.add_metric([name], reading.beats)
            failures.add_metric([name], reading.failures)
            if reading.last_success_at is not None:
                age.add_metric([name], (now - reading.last_success_at).total_seconds())
            if reading.settings is not None:
                timeout.add_metric([name], reading.settings.timeout_seconds)
        yield from (state, protected, beats, failures, age, timeout)

    def _operations(self) -> Iterator[Metric]:
        c = self.coordinator
        last = c.reconciler.last
        if last is not None:
            yield _single(
                "reconciliation_differences",
                "Differences the newest reconciliation left (after apply: those remaining)",
                last.remaining,
            )
            yield _single(
                "reconciliation_errors", "Exchanges the newest reconciliation could not read",
                last.errors,
            )
            yield _single(
                "reconciliation_last_run_timestamp_seconds", "When the newest one finished",
                last.finished_at.timestamp(),
            )
        if c.backups is not None:
            status = c.backups.status()
            if status["last_ok_age_seconds"] is not None:
                yield _single(
                    "backup_last_ok_age_seconds", "Age of the newest good backup",
                    status["last_ok_age_seconds"],
                )
            failures = _counter("backup_failures", "Backups that failed", [])
            failures.add_metric([], status["failures"])
            yield failures
            yield _single(
                "backup_last_failed", "1 when the last backup attempt failed",
                int(status["result"] == "failed"),
            )
            yield _single(
                "backup_interval_seconds", "backups.interval_minutes (0: on demand only)",
                60 * float(status["interval_minutes"]),
            )
        if c.alerts is not None:
            yield from c.alerts.metrics_families()


def _single(name: str, doc: str, value: float) -> GaugeMetricFamily:
    gauge = _gauge(name, doc)
    gauge.add_metric([], value)
    return gauge
