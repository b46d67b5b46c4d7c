"""The timeline of an incident, read from audit entries, and the times measured from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator.incidents.model import IncidentKind
from coordinator.incidents.timeline import measure
from coordinator.store.journal import iso

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def entry(
    seconds: float, action: str, subject: str | None = None, result: str = "ok", **details: Any
) -> dict[str, Any]:
    entry.next_id += 1  # type: ignore[attr-defined]
    return {
        "id": entry.next_id,  # type: ignore[attr-defined]
        "at": iso(T0 + timedelta(seconds=seconds)),
        "actor": "ops",
        "action": action,
        "subject": subject,
        "reason": "why",
        "result": result,
        "details": details,
    }


entry.next_id = 0  # type: ignore[attr-defined]


def names(measurement: Any) -> list[str]:
    return [m.name for m in measurement.milestones]


def test_a_full_recovery_has_every_milestone_and_both_times() -> None:
    audit = [
        entry(0, "kill_switch.activate"),
        entry(120, "kill_switch.override"),
        entry(150, "bot.start", "kraken"),
        entry(200, "bots.start_sequential", outcome={"started": ["ndax"]}),
    ]
    m = measure(IncidentKind.CRITICAL, T0, ["kraken", "ndax"], audit)

    assert names(m) == [
        "detected", "kill_switch_activated", "kill_switch_overridden", "first_bot_back",
        "all_bots_back",
    ]  # fmt: skip
    assert m.respond_seconds == 0
    assert m.recover_seconds == 200
    assert m.objective_met is True
    assert m.bots_back == {"kraken": iso(T0 + timedelta(seconds=150)),
                           "ndax": iso(T0 + timedelta(seconds=200))}  # fmt: skip


def test_a_recovery_slower_than_the_objective_is_missed() -> None:
    audit = [
        entry(0, "kill_switch.activate"),
        entry(60, "kill_switch.force_override"),
        entry(6 * 60, "bot.start", "kraken"),
    ]
    m = measure(IncidentKind.PURCHASE_FAILURE, T0, ["kraken"], audit)

    assert m.recover_seconds == 360
    assert m.objective_seconds == 300
    assert m.objective_met is False


def test_while_a_bot_is_not_back_recovery_is_not_measured() -> None:
    audit = [
        entry(0, "kill_switch.activate"),
        entry(30, "kill_switch.override"),
        entry(40, "bot.start", "kraken"),
    ]
    m = measure(IncidentKind.CRITICAL, T0, ["kraken", "ndax"], audit)

    assert m.recover_seconds is None
    assert m.objective_met is None
    assert m.bots_not_back == ["ndax"]
    assert names(m)[-1] == "first_bot_back"


def test_bots_started_before_the_override_do_not_count_as_back() -> None:
    audit = [
        entry(-10, "bot.start", "kraken"),
        entry(0, "kill_switch.activate"),
        entry(5, "bot.start", "kraken", result="refused"),
    ]
    m = measure(IncidentKind.CRITICAL, T0, ["kraken"], audit)

    assert names(m) == ["detected", "kill_switch_activated"]
    assert m.bots_not_back == ["kraken"]


def test_time_to_respond_runs_from_detection_to_a_later_activation() -> None:
    audit = [entry(45, "kill_switch.activate"), entry(50, "kill_switch.override"),
             entry(55, "bot.start", "kraken")]  # fmt: skip
    m = measure(IncidentKind.CRITICAL, T0, ["kraken"], audit)

    assert m.respond_seconds == 45
    assert m.recover_seconds == 55


def test_an_activation_lifted_before_detection_is_not_this_incidents() -> None:
    audit = [
        entry(-600, "kill_switch.activate"),
        entry(-500, "kill_switch.override"),
        entry(30, "kill_switch.activate"),
    ]
    m = measure(IncidentKind.CRITICAL, T0, ["kraken"], audit)

    [activated] = [ms for ms in m.milestones if ms.name == "kill_switch_activated"]
    assert activated.at == T0 + timedelta(seconds=30)


def test_the_activation_in_force_at_detection_is_the_response_and_took_no_time() -> None:
    audit = [entry(-60, "kill_switch.activate"), entry(10, "kill_switch.override"),
             entry(20, "bot.start", "kraken")]  # fmt: skip
    m = measure(IncidentKind.CRITICAL, T0, ["kraken"], audit)

    assert m.respond_seconds == 0
    assert m.recover_seconds == 20


def test_without_a_kill_switch_the_bots_are_back_from_detection() -> None:
    m = measure(IncidentKind.PURCHASE_FAILURE, T0, ["kraken"],
                [entry(-5, "bot.start", "kraken"), entry(90, "bot.start", "kraken")])  # fmt: skip

    assert names(m) == ["detected", "first_bot_back", "all_bots_back"]
    assert m.respond_seconds is None
    assert m.recover_seconds == 90


def test_entries_that_are_not_ok_or_not_on_the_timeline_are_ignored() -> None:
    audit = [
        entry(0, "kill_switch.activate"),
        entry(5, "kill_switch.override", result="refused"),
        entry(6, "config.reload"),
        {"id": 99, "at": "not a time", "action": "kill_switch.override", "result": "ok"},
    ]
    m = measure(IncidentKind.CRITICAL, T0, ["kraken"], audit)

    assert names(m) == ["detected", "kill_switch_activated"]
