"""A kill switch activation with a reason opens an incident record by itself."""

from __future__ import annotations

import pytest

from coordinator.incidents.book import IncidentBook
from coordinator.runtime import Coordinator
from coordinator.safety.kill_switch import NO_REASON


async def test_an_activation_with_a_reason_opens_a_critical_record_named_in_the_answer(
    coordinator: Coordinator,
) -> None:
    result = await coordinator.activate_kill_switch("kraken answers 500", "ops")

    record = await coordinator.incidents.get(result["incident"])
    assert record["kind"] == "critical"
    assert record["source"] == "kill_switch.activate"
    assert "kraken answers 500" in record["issue"]
    assert record["bots"] == list(coordinator.supervisor.runners)  # none running: every bot
    [activated] = [m for m in record["measurement"]["milestones"]
                   if m["name"] == "kill_switch_activated"]  # fmt: skip
    assert record["measurement"]["respond_seconds"] == 0
    assert "kraken answers 500" in activated["what"]


async def test_an_activation_without_a_reason_opens_nothing(coordinator: Coordinator) -> None:
    result = await coordinator.activate_kill_switch(NO_REASON, "ops")

    assert "incident" not in result
    assert await coordinator.incidents.list() == []


async def test_an_activation_while_active_opens_no_second_record(
    coordinator: Coordinator,
) -> None:
    await coordinator.activate_kill_switch("first", "ops")
    again = await coordinator.activate_kill_switch("second", "ops")

    assert again["already_active"] is True
    assert len(await coordinator.incidents.list()) == 1


async def test_the_recovery_is_measured_when_the_bots_are_back(coordinator: Coordinator) -> None:
    result = await coordinator.activate_kill_switch("drill", "ops")
    await coordinator.force_override_kill_switch("fixed", "admin", "risk")
    await coordinator.start_sequential("ops")

    record = await coordinator.incidents.get(result["incident"])
    m = record["measurement"]
    assert m["bots_not_back"] == []
    assert [ms["name"] for ms in m["milestones"]][-1] == "all_bots_back"
    assert m["objective_met"] is True


async def test_a_failing_incident_write_never_undoes_the_activation(
    coordinator: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: IncidentBook, **_: object) -> dict[str, object]:
        raise OSError("disk full")

    monkeypatch.setattr(IncidentBook, "on_kill_switch", broken)

    result = await coordinator.activate_kill_switch("disk trouble", "ops")

    assert result["incident"] is None
    assert coordinator.kill_switch.state.active
