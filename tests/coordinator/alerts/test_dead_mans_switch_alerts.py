"""The dead man's switch rule: a heartbeat that fails or stops is a warning, one whose venue
timer may have run out is critical; an armed one raises nothing (test_rules.py drives both
alerts through the engine: fire, hold, resolve)."""

from __future__ import annotations

from dataclasses import replace

from coordinator.alerts.facts import DeadMansSwitchFacts
from coordinator.alerts.rules import evaluate_rules
from coordinator.config.alerting import AlertRules, Severity
from tests.coordinator.alerts.support import facts

RULES = AlertRules()
NAMES = ("dead_mans_switch_failing", "dead_mans_switch_expired")


def judged(*switches: DeadMansSwitchFacts) -> dict[str, tuple[bool, Severity, float | None]]:
    state = replace(facts(), dead_mans_switches=switches)
    return {
        s.name: (s.breached, s.severity, s.value)
        for s in evaluate_rules(state, RULES)
        if s.name in NAMES
    }


def kraken(state: str, failures: int = 0, age: float | None = 10.0) -> DeadMansSwitchFacts:
    return DeadMansSwitchFacts("kraken", state, f"{state} for a reason", failures, age, 60)


def test_an_armed_switch_is_judged_and_raises_nothing() -> None:
    assert judged(kraken("armed")) == {
        "dead_mans_switch_failing": (False, Severity.WARNING, 0.0),
        "dead_mans_switch_expired": (False, Severity.CRITICAL, 10.0),
    }


def test_a_failing_heartbeat_is_a_warning_until_the_venue_s_timer_may_have_run_out() -> None:
    assert judged(kraken("failing", failures=2, age=40.0)) == {
        "dead_mans_switch_failing": (True, Severity.WARNING, 2.0),
        "dead_mans_switch_expired": (False, Severity.CRITICAL, 40.0),
    }
    assert judged(kraken("expired", failures=5, age=75.0)) == {
        "dead_mans_switch_failing": (True, Severity.WARNING, 5.0),
        "dead_mans_switch_expired": (True, Severity.CRITICAL, 75.0),
    }


def test_the_expired_alert_names_the_exchange_the_timeout_and_the_reason() -> None:
    state = replace(facts(), dead_mans_switches=(kraken("expired", 3, 61.0),))
    [sample] = [s for s in evaluate_rules(state, RULES) if s.name == "dead_mans_switch_expired"]

    assert sample.labels == {"exchange": "kraken"}
    assert sample.threshold == 60
    assert sample.summary == "kraken: dead man's switch expired: expired for a reason"
    assert sample.runbook.startswith("004 Scenario 2")


def test_a_switch_that_never_acknowledged_a_beat_has_no_age() -> None:
    assert judged(kraken("arming", age=None))["dead_mans_switch_expired"] == (
        False,
        Severity.CRITICAL,
        None,
    )


def test_no_heartbeat_no_sample() -> None:
    assert judged() == {}
