"""The config gate in the coordinator: a bot whose config changed since it was approved does not
start, neither alone nor in a sequence, until someone approves it; each refusal is counted and
audited, each approval audited with both hashes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator.bot_test import with_mode
from coordinator.config import load_config
from coordinator.config.models import BotMode, CoordinatorConfig
from coordinator.config_approval import FIRST_START, ConfigNotApproved
from coordinator.errors import BadRequest
from coordinator.runtime import Coordinator
from tests.support_config import write_fast_config

Reopen = Callable[[CoordinatorConfig], Awaitable[Coordinator]]


def change_ndax(documents: dict[str, Any]) -> None:
    bots = documents["bots.json"]["bots"]
    assert bots[0]["name"] == "ndax"
    bots[0]["strategy"]["params"]["quote_amount"] = 30


async def load(directory: Path, change: Callable[[dict[str, Any]], None]) -> CoordinatorConfig:
    return await asyncio.to_thread(lambda: load_config(write_fast_config(directory, change)))


@pytest.fixture
async def reopen(config: CoordinatorConfig, data_dir: Path) -> AsyncIterator[Reopen]:
    """Run a coordinator on `config` once (its bots' configs are approved at that first start),
    then `await reopen(changed)` opens the next one on the same data dir."""
    first = await Coordinator.open(config, data_dir)
    await first.close(grace_seconds=0.5)
    opened: list[Coordinator] = []

    async def factory(changed: CoordinatorConfig) -> Coordinator:
        coordinator = await Coordinator.open(changed, data_dir)
        opened.append(coordinator)
        return coordinator

    yield factory
    for coordinator in opened:
        await coordinator.close(grace_seconds=0.5)


@pytest.fixture
async def changed(tmp_path: Path) -> CoordinatorConfig:
    return await load(tmp_path / "changed", change_ndax)


async def audit_of(coordinator: Coordinator, action: str) -> list[dict[str, Any]]:
    return [e for e in await coordinator.journal.recent_audit(200) if e["action"] == action]


def refusals_metric(coordinator: Coordinator, bot: str) -> str:
    text = coordinator.metrics.render().decode()
    [line] = [
        line for line in text.splitlines()
        if line.startswith(f'bot_coordinator_config_refusals_total{{bot="{bot}"}}')
    ]  # fmt: skip
    return line.split()[-1]


async def test_the_first_start_approves_every_bot_and_records_code_and_config_hashes(
    coordinator: Coordinator,
) -> None:
    status = coordinator.status()
    start = (await audit_of(coordinator, "coordinator.start"))[0]
    approvals = await audit_of(coordinator, "config.approve")

    for bot in status["bots"]:
        entry = bot["config"]
        assert entry["approved"] is True
        assert entry["approved_by"] == FIRST_START
        assert entry["sha256"] == entry["approved_sha256"]
        full = coordinator.config_gate.bot_entry(bot["name"])  # GET /config's, in full
        assert full["code_version"] == status["config"]["code_version"]
        assert entry["refusals"] == 0
        assert start["details"]["config_sha256"][bot["name"]] == entry["sha256"]
    assert start["details"]["code_version"] == status["config"]["code_version"]
    assert sorted(e["subject"] for e in approvals) == ["kraken", "ndax"]
    assert all(e["id"] > start["id"] for e in approvals)  # recorded after the start entry
    assert status["config"]["changed_since_start"] == []
    assert status["config"]["unapproved_bots"] == []


async def test_a_changed_config_is_refused_at_start_counted_and_audited(
    reopen: Reopen, changed: CoordinatorConfig
) -> None:
    coordinator = await reopen(changed)

    with pytest.raises(ConfigNotApproved) as refused:
        await coordinator.start_bot("ndax", safe_mode=False, actor="operator-token")

    ndax = coordinator.bot_status(coordinator.supervisor.runner("ndax"))
    assert refused.value.status == 409
    assert ndax["config"]["sha256"] in refused.value.message
    assert ndax["config"]["approved_sha256"] in refused.value.message
    assert "bot-coordinator config approve --approved-by WHO" in refused.value.message
    assert ndax["state"] == "stopped"
    assert ndax["config"]["approved"] is False
    assert ndax["config"]["refusals"] == 1
    assert refusals_metric(coordinator, "ndax") == "1.0"
    assert coordinator.status()["config"]["unapproved_bots"] == ["ndax"]
    [entry] = await audit_of(coordinator, "bot.start")
    assert entry["subject"] == "ndax"
    assert entry["result"].startswith("refused: bot 'ndax' cannot start: its effective config")
    started = await coordinator.start_bot("kraken", safe_mode=False, actor="operator-token")
    assert started["state"] in ("starting", "running")


async def test_start_sequential_refuses_the_changed_bot_and_starts_the_others(
    reopen: Reopen, changed: CoordinatorConfig
) -> None:
    coordinator = await reopen(changed)

    result = await coordinator.start_sequential("operator-token")

    assert list(result["refused"]) == ["ndax"]
    assert "its effective config" in result["refused"]["ndax"]
    assert result["started"] == ["kraken"]
    assert result["failed"] is None
    assert coordinator.supervisor.runner("ndax").state.value == "stopped"
    ndax = coordinator.bot_status(coordinator.supervisor.runner("ndax"))
    assert ndax["config"]["refusals"] == 1
    assert refusals_metric(coordinator, "ndax") == "1.0"
    [refusal] = await audit_of(coordinator, "bot.start")
    assert (refusal["subject"], refusal["details"]) == ("ndax", {"via": "start_sequential"})
    assert refusal["result"].startswith("refused: ")
    [sequence] = await audit_of(coordinator, "bots.start_sequential")
    assert list(sequence["details"]["outcome"]["refused"]) == ["ndax"]


async def test_accepting_the_change_with_an_approver_starts_and_audits_both_hashes(
    reopen: Reopen, changed: CoordinatorConfig
) -> None:
    coordinator = await reopen(changed)
    before = coordinator.bot_status(coordinator.supervisor.runner("ndax"))["config"]

    started = await coordinator.start_bot(
        "ndax", False, "operator-token", accept_config_change=True, approved_by="ops lead"
    )

    assert started["state"] in ("starting", "running")
    assert started["config"]["approved"] is True
    assert started["config"]["approved_by"] == "ops lead"
    [approval] = [
        e for e in await audit_of(coordinator, "config.approve") if e["actor"] == "operator-token"
    ]
    assert approval["subject"] == "ndax"
    assert approval["details"]["previous_sha256"] == before["approved_sha256"]
    assert approval["details"]["config_sha256"] == before["sha256"]
    assert approval["details"]["approved_by"] == "ops lead"
    [start] = await audit_of(coordinator, "bot.start")
    assert start["result"] == "ok"
    assert start["details"] == {
        "safe_mode": False, "accept_config_change": True, "approved_by": "ops lead",
    }  # fmt: skip


async def test_start_sequential_accepting_the_changes_approves_and_starts_every_bot(
    reopen: Reopen, changed: CoordinatorConfig
) -> None:
    coordinator = await reopen(changed)

    result = await coordinator.start_sequential(
        "operator-token", accept_config_change=True, approved_by="ops lead"
    )

    assert result["started"] == ["ndax", "kraken"]
    assert result["refused"] == {}
    approvals = [
        e for e in await audit_of(coordinator, "config.approve") if e["actor"] == "operator-token"
    ]
    assert [e["subject"] for e in approvals] == ["ndax"]  # kraken's config was approved already


@pytest.mark.parametrize(
    ("accept", "approved_by", "message"),
    [
        (True, None, "approved_by: required with accept_config_change"),
        (False, "ops lead", "approved_by: only with accept_config_change"),
    ],
)
async def test_an_acceptance_without_an_approver_is_a_400_naming_approved_by(
    reopen: Reopen,
    changed: CoordinatorConfig,
    accept: bool,
    approved_by: str | None,
    message: str,
) -> None:
    coordinator = await reopen(changed)

    with pytest.raises(BadRequest, match=message) as alone:
        await coordinator.start_bot("ndax", False, "operator-token", accept, approved_by)
    with pytest.raises(BadRequest, match=message):
        await coordinator.start_sequential("operator-token", accept, approved_by)

    assert alone.value.status == 400
    assert {r.state.value for r in coordinator.supervisor.runners.values()} == {"stopped"}
    assert coordinator.config_gate.approvals["ndax"].approved_by == FIRST_START
    refused = await audit_of(coordinator, "bot.start")
    assert refused[0]["result"].startswith("refused: approved_by:")


async def test_a_bot_added_to_the_config_is_approved_at_its_first_start_and_starts(
    reopen: Reopen, tmp_path: Path
) -> None:
    def add_a_bot(documents: dict[str, Any]) -> None:
        bots = documents["bots.json"]["bots"]
        bots.append({**bots[0], "name": "ndax-two"})

    coordinator = await reopen(await load(tmp_path / "grown", add_a_bot))

    entry = coordinator.bot_status(coordinator.supervisor.runner("ndax-two"))["config"]
    assert (entry["approved"], entry["approved_by"]) == (True, FIRST_START)
    started = await coordinator.start_bot("ndax-two", False, "operator-token")
    assert started["state"] in ("starting", "running")


async def test_a_config_file_edited_under_a_running_coordinator_shows_in_its_status(
    coordinator: Coordinator, config: CoordinatorConfig
) -> None:
    path = config.source_dir / "bots.json"
    text = path.read_text(encoding="utf-8")
    assert '"quote_amount": 25' in text
    path.write_text(text.replace('"quote_amount": 25', '"quote_amount": 30'), encoding="utf-8")
    before = coordinator.status()["config"]

    await coordinator.config_gate.check_files()  # the watch's pass, run now

    after = coordinator.status()["config"]
    assert before["changed_since_start"] == []
    assert after["changed_since_start"] == ["bots.json"]
    assert after["files"]["bots.json"]["changed"] is True
    bots_json = after["files"]["bots.json"]
    assert bots_json["sha256_now"] != bots_json["sha256_at_start"]
    assert after["files"]["bot-limits.json"]["changed"] is False
    # What runs is what was read at start: still approved, still startable.
    assert after["unapproved_bots"] == []
    [audit] = await audit_of(coordinator, "config.changed_on_disk")
    assert audit["subject"] == "bots.json"
    started = await coordinator.start_bot("ndax", False, "operator-token")
    assert started["config"]["approved"] is True


async def test_a_read_only_verification_run_is_not_held_by_the_gate_nor_approves_anything(
    reopen: Reopen, config: CoordinatorConfig
) -> None:
    coordinator = await reopen(with_mode(config, BotMode.READ_ONLY))  # `--read-only`
    approvals = await audit_of(coordinator, "config.approve")  # the first start's, before

    result = await coordinator.start_sequential("operator-token")

    assert result["started"] == ["ndax", "kraken"]
    assert result["refused"] == {}
    assert coordinator.status()["config"]["unapproved_bots"] == ["ndax", "kraken"]
    assert await audit_of(coordinator, "config.approve") == approvals
