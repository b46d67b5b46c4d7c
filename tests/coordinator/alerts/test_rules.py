"""Every alert rule, through the engine, on its default timing and a clock moved by hand:
it fires when its condition has held, holds while it does, resolves once it has cleared,
and a single sample neither fires nor resolves it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from coordinator.alerts.engine import AlertEngine
from coordinator.alerts.facts import (
    BreakerFacts,
    DeadMansSwitchFacts,
    ExchangeFacts,
    Facts,
    TradingFacts,
)
from coordinator.alerts.rules import TIMING, evaluate_rules
from coordinator.alerts.window import WindowCount
from coordinator.config.alerting import AlertRules
from coordinator.lifecycle import BotState
from tests.coordinator.alerts.support import T0, bot, facts
from tests.support_config import FakeClock

RULES = AlertRules()
STEP = 5.0

Breach = Callable[[Facts], Facts]


def failing_bot(failed: int, orders: int = 100) -> Breach:
    return lambda f: replace(f, bots=(bot("ndax", window=WindowCount(orders, failed)),))


BREACHES: dict[str, Breach] = {
    "order_failure_rate_high": failing_bot(6),
    "order_failure_rate_warning": failing_bot(4),
    "exchange_breaker_open": lambda f: replace(
        f, breakers=(BreakerFacts("kraken", "open", "5 timeouts in 60s", False),)
    ),
    "kill_switch_active": lambda f: replace(
        f, kill_switch={"active": True, "reason": "drill", "by": "loopback", "trigger": "manual"}
    ),
    "bot_heartbeat_stale": lambda f: replace(f, bots=(bot("ndax", heartbeat_age_seconds=31.0),)),
    "bot_crash_loop": lambda f: replace(
        f, bots=(bot("ndax", state=BotState.CRASHED, crash_looped=True, last_error="boom"),)
    ),
    "exchange_on_backup_endpoint": lambda f: replace(
        f, exchanges=(ExchangeFacts("kraken", "up", 90.0, "timeout", "backup"),)
    ),
    "reconciliation_differences": lambda f: replace(
        f,
        reconciliation={"run_id": 2, "at": "t", "clean": False, "remaining": 3, "errors": 0},
    ),
    "backup_stale": lambda f: replace(
        f, backups={**(f.backups or {}), "last_ok_age_seconds": 131 * 60.0}
    ),
    "backup_failed": lambda f: replace(
        f, backups={**(f.backups or {}), "result": "failed", "error": "disk full", "failures": 1}
    ),
    "disk_space_low": lambda f: replace(f, disk_free_pct=9.0),
    "disk_space_critical": lambda f: replace(f, disk_free_pct=4.0),
    "dead_mans_switch_failing": lambda f: replace(
        f,
        dead_mans_switches=(
            DeadMansSwitchFacts("kraken", "failing", "1 beat(s) in a row failed", 1, 20.0, 60),
        ),
    ),
    "dead_mans_switch_expired": lambda f: replace(
        f,
        dead_mans_switches=(
            DeadMansSwitchFacts("kraken", "expired", "no beat acknowledged", 5, 75.0, 60),
        ),
    ),
    "bot_trading_restricted": lambda f: replace(
        f,
        trading=(
            TradingFacts("kraken", "kraken", "reducing", "exchange:kraken",
                         "reducing by the exchange kraken switch since t: unwind", False),
        ),
    ),
    "bot_disabled": lambda f: replace(
        f,
        trading=(
            TradingFacts("kraken", "kraken", "halted", "bot:kraken",
                         "bot kraken is disabled by the execution throttle", True),
        ),
    ),
}


def test_every_alert_the_rules_can_raise_is_covered_here() -> None:
    assert set(BREACHES) == set(TIMING)


def run(alerts: AlertEngine, clock: FakeClock, state: Facts, name: str) -> list[str]:
    moves = [
        t.to.value
        for t in alerts.evaluate(evaluate_rules(replace(state, now=clock()), RULES))
        if t.alert["name"] == name and not t.repeat
    ]
    clock.advance(seconds=STEP)
    return moves


@pytest.mark.parametrize("name", sorted(BREACHES))
def test_the_rule_fires_holds_and_resolves(name: str) -> None:
    clock = FakeClock(T0)
    timing = TIMING[name](RULES)
    alerts = AlertEngine(
        lambda n: TIMING[n](RULES), clock, timedelta(hours=1), timedelta(hours=1)
    )
    healthy = facts()
    breached = BREACHES[name](healthy)
    assert run(alerts, clock, healthy, name) == []

    fire_after = max(2, int(timing.for_seconds // STEP) + 1)
    moves = [m for _ in range(fire_after) for m in run(alerts, clock, breached, name)]
    assert moves == ["firing"], f"{name} after {fire_after} samples"
    assert any(a.name == name for a in alerts.firing())
    firing = next(a for a in alerts.firing() if a.name == name)
    assert firing.summary
    assert firing.runbook

    assert [m for _ in range(3) for m in run(alerts, clock, breached, name)] == []  # holds

    assert run(alerts, clock, healthy, name) == []  # one clear sample resolves nothing
    resolve_after = max(1, int(timing.resolve_after_seconds // STEP) + 1)
    moves = [m for _ in range(resolve_after) for m in run(alerts, clock, healthy, name)]
    assert moves == ["resolved"], f"{name} after {resolve_after + 1} clear samples"


@pytest.mark.parametrize("name", sorted(BREACHES))
def test_a_single_breached_sample_between_clear_ones_never_fires(name: str) -> None:
    clock = FakeClock(T0)
    alerts = AlertEngine(
        lambda n: TIMING[n](RULES), clock, timedelta(hours=1), timedelta(hours=1)
    )
    healthy, breached = facts(), BREACHES[name](facts())

    moves = [
        m for state in (healthy, breached, healthy, breached, healthy)
        for m in run(alerts, clock, state, name)
    ]

    assert moves == []


def test_the_failure_rate_is_not_judged_below_the_minimum_order_count() -> None:
    state = failing_bot(failed=3, orders=4)(facts())  # 75 %, but only 4 orders

    samples = [s for s in evaluate_rules(state, RULES) if s.name == "order_failure_rate_high"]

    assert [(s.breached, s.value) for s in samples] == [(False, 75.0)]


def test_the_failure_rate_thresholds_are_strictly_above() -> None:
    at_five = failing_bot(failed=5, orders=100)(facts())

    breached = {s.name for s in evaluate_rules(at_five, RULES) if s.breached}

    assert breached == {"order_failure_rate_warning"}


def test_a_stopped_bot_is_never_stale() -> None:
    state = replace(
        facts(),
        bots=(bot("ndax", state=BotState.STOPPED, heartbeat_age_seconds=86400.0),),
    )

    assert not any(s.breached for s in evaluate_rules(state, RULES))


def test_a_bot_that_never_ticked_is_stale_once_it_has_been_starting_too_long() -> None:
    state = replace(
        facts(),
        bots=(bot("ndax", state=BotState.STARTING, heartbeat_age_seconds=None,
                  running_for_seconds=45.0),),
    )

    stale = [s for s in evaluate_rules(state, RULES) if s.name == "bot_heartbeat_stale"]

    assert stale[0].breached
    assert stale[0].value == 45.0


def test_no_good_backup_at_all_is_stale_once_the_coordinator_has_run_long_enough() -> None:
    young = replace(facts(uptime_seconds=600.0), backups={
        "interval_minutes": 60, "last_ok_age_seconds": None, "result": None, "failures": 0})
    old = replace(young, uptime_seconds=131 * 60.0)

    def stale(state: Facts) -> bool:
        return any(s.breached for s in evaluate_rules(state, RULES) if s.name == "backup_stale")

    assert not stale(young)
    assert stale(old)


def test_a_rule_turned_off_in_config_raises_nothing() -> None:
    off = RULES.kill_switch_active.model_copy(update={"enabled": False})
    rules = RULES.model_copy(update={"kill_switch_active": off})
    state = BREACHES["kill_switch_active"](facts())

    assert not [s for s in evaluate_rules(state, rules) if s.name == "kill_switch_active"]
