"""The scheduled reconciliation: it runs on its own at the configured interval, audited, and
applies only when told to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bots.exchanges.paper import PaperExchange
from coordinator.config import load_config
from coordinator.config.models import CoordinatorConfig
from coordinator.runtime import Coordinator
from tests.support_config import eventually, write_fast_config


def every(minutes: float, apply: bool) -> Any:
    def change(documents: dict[str, Any]) -> None:
        documents["recovery-settings.json"]["reconciliation"].update(
            interval_minutes=minutes, apply_on_schedule=apply
        )

    return change


def config_in(tmp_path: Path, minutes: float, apply: bool) -> CoordinatorConfig:
    return load_config(write_fast_config(tmp_path / "config", every(minutes, apply)))


async def opened(tmp_path: Path, config: CoordinatorConfig) -> AsyncIterator[Coordinator]:
    data = tmp_path / "data"
    data.mkdir()
    coordinator = await Coordinator.open(config, data)
    try:
        yield coordinator
    finally:
        await coordinator.close(grace_seconds=0.5)


@pytest.fixture
def reporting_config(tmp_path: Path) -> CoordinatorConfig:
    return config_in(tmp_path, 0.002, apply=False)  # every 0.12 s


@pytest.fixture
def applying_config(tmp_path: Path) -> CoordinatorConfig:
    return config_in(tmp_path, 0.002, apply=True)


@pytest.fixture
def unscheduled_config(tmp_path: Path) -> CoordinatorConfig:
    return config_in(tmp_path, 0, apply=False)


@pytest.fixture
async def reporting(
    tmp_path: Path, reporting_config: CoordinatorConfig
) -> AsyncIterator[Coordinator]:
    async for coordinator in opened(tmp_path, reporting_config):
        yield coordinator


@pytest.fixture
async def applying(
    tmp_path: Path, applying_config: CoordinatorConfig
) -> AsyncIterator[Coordinator]:
    async for coordinator in opened(tmp_path, applying_config):
        yield coordinator


def move(coordinator: Coordinator, amount: str) -> None:
    adapter = coordinator.supervisor.runner("kraken").parts.adapter
    assert isinstance(adapter, PaperExchange)
    adapter.move_funds("AUD", Decimal(amount))


async def test_a_scheduled_run_reports_drift_without_correcting_it(
    reporting: Coordinator,
) -> None:
    assert reporting.status()["reconciliation"]["next_at"] is not None
    move(reporting, "-5")
    journal_before = reporting.supervisor.runner("kraken").parts.book.balances["AUD"]

    await eventually(
        lambda: (last := reporting.reconciler.last) is not None and last.differences == 1,
        what="a scheduled run that finds the drift",
    )

    last = reporting.reconciler.last
    assert last is not None
    assert (last.trigger, last.actor, last.applied) == ("schedule", "schedule", False)
    assert reporting.supervisor.runner("kraken").parts.book.balances["AUD"] == journal_before
    # The run is audited right after it ends (the report is visible a moment before).
    audit: list[dict[str, Any]] = []
    for _ in range(200):
        audit = [e for e in await reporting.journal.recent_audit(20) if e["actor"] == "schedule"]
        if audit:
            break
        await asyncio.sleep(0.01)
    assert audit
    assert {e["action"] for e in audit} == {"reconcile.report"}


async def test_a_scheduled_run_corrects_the_journal_when_told_to(applying: Coordinator) -> None:
    runner = applying.supervisor.runner("kraken")
    before = runner.parts.book.balances["AUD"]
    move(applying, "-5")

    await eventually(
        lambda: runner.parts.book.balances["AUD"] == before - 5, what="the drift corrected"
    )

    rows = await applying.store.fetch_all(
        "SELECT amount FROM balance_adjustments WHERE reason LIKE 'reconciliation%'"
    )
    assert [r["amount"] for r in rows] == ["-5"]


async def test_an_interval_of_zero_runs_no_schedule(
    tmp_path: Path, unscheduled_config: CoordinatorConfig
) -> None:
    async for coordinator in opened(tmp_path, unscheduled_config):
        assert coordinator.status()["reconciliation"]["next_at"] is None
        assert coordinator._reconcile_task is None
