"""Live config reload: the files re-read and checked as at start, the diff, what applies now,
at a bot's next start or only at a restart, the config gate held to, and every reload (or
refusal) audited with the config's hash before and after."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from coordinator.config import load_config
from coordinator.config.models import CoordinatorConfig
from coordinator.config_reload import (
    ApplyWhen,
    ConfigInvalid,
    ReloadNeedsApproval,
    config_sha256,
    plan_reload,
)
from coordinator.errors import BadRequest
from coordinator.lifecycle import BotState
from coordinator.runtime import Coordinator
from coordinator.safety.risk import RiskGate
from tests.support_config import eventually

Documents = dict[str, Any]


def rewrite(directory: Path, name: str, change: Callable[[Documents], None]) -> None:
    path = directory / name
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")


def lower_ndax_order_size(limits: Documents) -> None:
    limits["bots"]["ndax"]["max_order_notional"] = 5  # below its DCA's 25 CAD buys


async def audit_of(coordinator: Coordinator, action: str) -> list[dict[str, Any]]:
    return [e for e in await coordinator.journal.recent_audit(200) if e["action"] == action]


def risk_gate(coordinator: Coordinator, bot: str) -> RiskGate:
    gate = coordinator.supervisor.runner(bot).parts.risk_gate
    assert isinstance(gate, RiskGate)
    return gate


def order_notional_limit(coordinator: Coordinator, bot: str) -> Decimal:
    limit = risk_gate(coordinator, bot).limits.max_order_notional
    assert limit is not None
    return limit.value


async def loaded(directory: Path) -> CoordinatorConfig:
    return await asyncio.to_thread(load_config, directory)


# -- the plan (no coordinator) ---------------------------------------------------------------------


def test_an_unchanged_config_plans_no_change(config: CoordinatorConfig) -> None:
    plan = plan_reload(config, config, {})

    assert plan.changes == []
    assert plan.changed_bots == []
    assert plan.sha256_before == plan.sha256_after == config_sha256(config)


def test_each_section_says_when_its_change_applies(config: CoordinatorConfig) -> None:
    limits = config.limits.model_copy(update={"global_": config.limits.global_.model_copy(
        update={"max_concurrent_positions": 3})})  # fmt: skip
    retry = config.recovery.retry.model_copy(update={"max_retries": 1})
    backups = config.recovery.backups.model_copy(update={"keep_count": 3})
    ndax, kraken = config.bots.bots
    strategy = ndax.strategy.model_copy(update={"params": {"quote_amount": Decimal(30),
                                                           "interval_seconds": 0.2}})  # fmt: skip
    bots = config.bots.model_copy(update={"bots": (ndax.model_copy(update={"strategy": strategy}),
                                                   kraken)})  # fmt: skip
    new = config.model_copy(update={
        "limits": limits, "bots": bots,
        "recovery": config.recovery.model_copy(update={"retry": retry, "backups": backups}),
    })  # fmt: skip

    plan = plan_reload(config, new, {})

    by_path = {(c.file, c.path): c for c in plan.changes}
    assert by_path[("bot-limits.json", "$.global.max_concurrent_positions")].when is ApplyWhen.NOW
    assert by_path[("bot-limits.json", "$.global.max_concurrent_positions")].after == 3
    assert by_path[("recovery-settings.json", "$.retry.max_retries")].when is (
        ApplyWhen.NEXT_BOT_START
    )
    assert by_path[("recovery-settings.json", "$.backups.keep_count")].when is (
        ApplyWhen.COORDINATOR_RESTART
    )
    quote = by_path[("bots.json", "$.bots[name=ndax].strategy.params.quote_amount")]
    assert (quote.before, quote.after, quote.bot) == ("25", "30", "ndax")
    assert quote.when is ApplyWhen.COORDINATOR_RESTART
    # What runs: the new global limits and retry policy, the old bots and backups.
    assert plan.applied.limits.global_.max_concurrent_positions == 3
    assert plan.applied.recovery.retry.max_retries == 1
    assert plan.applied.bots == config.bots
    assert plan.applied.recovery.backups == config.recovery.backups
    assert plan.pending_files == {"bots.json", "recovery-settings.json"}
    # The limits shared across bots are not part of any bot's effective config, and the
    # strategy change is not applied: no bot's effective config changes.
    assert plan.changed_bots == []


def test_a_dead_mans_switch_change_waits_for_a_restart_but_a_url_change_does_not(
    config: CoordinatorConfig,
) -> None:
    exchanges = dict(config.endpoints.exchanges)
    name = next(iter(exchanges))
    moved_url = exchanges | {name: exchanges[name].model_copy(
        update={"backup": "https://backup.example.test"})}  # fmt: skip
    with_url = config.model_copy(update={"endpoints": config.endpoints.model_copy(
        update={"exchanges": moved_url})})  # fmt: skip

    assert {c.when for c in plan_reload(config, with_url, {}).changes} == {ApplyWhen.NOW}

    from coordinator.config.models import DeadMansSwitchConfig

    switch = DeadMansSwitchConfig(enabled=True, interval_seconds=15, timeout_seconds=60)
    moved_switch = exchanges | {name: exchanges[name].model_copy(
        update={"dead_mans_switch": switch})}  # fmt: skip
    with_switch = config.model_copy(update={"endpoints": config.endpoints.model_copy(
        update={"exchanges": moved_switch})})  # fmt: skip
    plan = plan_reload(config, with_switch, {})

    assert {c.when for c in plan.changes} == {ApplyWhen.COORDINATOR_RESTART}
    assert plan.applied.endpoints == config.endpoints


# -- the coordinator -------------------------------------------------------------------------------


async def test_new_limits_apply_to_running_bots_without_a_restart(
    coordinator: Coordinator, config: CoordinatorConfig
) -> None:
    await coordinator.start_sequential("operator-token")
    ndax = coordinator.supervisor.runner("ndax")
    await eventually(lambda: ndax.parts.book.fills_count > 0, what="ndax's first fill")
    before = config_sha256(coordinator.config)
    rewrite(config.source_dir, "bot-limits.json", lower_ndax_order_size)

    answer = await coordinator.reloader.reload(
        "operator-token", "test", approved_by="alice", reason="smaller buys"
    )

    assert answer["result"] == "applied"
    assert answer["sha256_before"] == before != answer["sha256_after"]
    [change] = answer["changes"]
    assert change == {
        "file": "bot-limits.json", "path": "$.bots.ndax.max_order_notional",
        "before": "250", "after": "5", "applies": "now",
    }  # fmt: skip
    assert answer["bots"]["ndax"]["effective_config_changed"] is True
    assert answer["bots"]["kraken"]["effective_config_changed"] is False
    assert answer["approved"] == ["ndax"]
    assert order_notional_limit(coordinator, "ndax") == 5
    assert order_notional_limit(coordinator, "kraken") == 1000
    # The bot is still running, and its next buys are refused by the new limit.
    refused = ndax.parts.book.refusals.get("max_order_notional", 0)
    await eventually(
        lambda: ndax.parts.book.refusals.get("max_order_notional", 0) > refused,
        what="a buy refused by the reloaded limit",
    )
    assert ndax.state is BotState.RUNNING
    # The gate's view: ndax runs its new config, approved by alice; the file is as read.
    entry = coordinator.config_gate.bot_entry("ndax")
    assert entry["approved"] is True
    assert entry["approved_by"] == "alice"
    assert coordinator.config_gate.changed_since_start() == []
    [reload] = await audit_of(coordinator, "config.reload")
    assert reload["result"] == "ok"
    assert reload["details"]["sha256_before"] == before
    assert reload["details"]["sha256_after"] == answer["sha256_after"]
    assert reload["details"]["approved_by"] == "alice"
    approvals = [e for e in await audit_of(coordinator, "config.approve") if
                 e["details"]["approved_by"] == "alice"]  # fmt: skip
    assert [e["subject"] for e in approvals] == ["ndax"]


async def test_a_broken_limits_file_is_refused_with_every_problem_and_the_old_limits_kept(
    coordinator: Coordinator, config: CoordinatorConfig
) -> None:
    await coordinator.start_bot("ndax", safe_mode=False, actor="operator-token")
    running = coordinator.config

    def break_limits(limits: Documents) -> None:
        limits["defaults"]["max_order_notional"] = -1
        limits["global"]["max_orders_per_minute"] = "many"

    rewrite(config.source_dir, "bot-limits.json", break_limits)

    with pytest.raises(ConfigInvalid) as refused:
        await coordinator.reloader.reload("operator-token", "test", approved_by="alice")

    assert refused.value.status == 422
    assert "the running config is kept" in refused.value.message
    paths = {(e["file"], e["path"]) for e in refused.value.errors}
    assert ("bot-limits.json", "$.defaults.max_order_notional") in paths
    assert ("bot-limits.json", "$.global.max_orders_per_minute") in paths
    assert coordinator.config is running
    assert order_notional_limit(coordinator, "ndax") == 250
    assert coordinator.supervisor.runner("ndax").state in (BotState.STARTING, BotState.RUNNING)
    [entry] = await audit_of(coordinator, "config.reload")
    assert entry["result"].startswith("refused: the configuration in")
    assert entry["details"]["sha256_before"] == config_sha256(running)
    assert {e["path"] for e in entry["details"]["errors"]} >= {"$.defaults.max_order_notional"}
    assert coordinator.reloader.status()["refused"] == 1


async def test_changing_a_running_bots_limits_needs_an_approver_and_changes_nothing_without(
    coordinator: Coordinator, config: CoordinatorConfig
) -> None:
    await coordinator.start_bot("ndax", safe_mode=False, actor="operator-token")
    rewrite(config.source_dir, "bot-limits.json", lower_ndax_order_size)

    with pytest.raises(ReloadNeedsApproval) as refused:
        await coordinator.reloader.reload("operator-token", "test")

    assert refused.value.status == 409
    assert "running bot ndax" in refused.value.message
    assert "$.bots.ndax.max_order_notional: 250 -> 5" in refused.value.message
    assert order_notional_limit(coordinator, "ndax") == 250
    [entry] = await audit_of(coordinator, "config.reload")
    assert entry["result"].startswith("refused: the effective config of running bot ndax")


async def test_a_dry_run_shows_the_plan_and_applies_nothing(
    coordinator: Coordinator, config: CoordinatorConfig
) -> None:
    rewrite(config.source_dir, "bot-limits.json", lower_ndax_order_size)

    answer = await coordinator.reloader.reload("operator-token", "test", dry_run=True)

    assert answer["result"] == "dry_run"
    assert [c["path"] for c in answer["changes"]] == ["$.bots.ndax.max_order_notional"]
    assert order_notional_limit(coordinator, "ndax") == 250
    assert await audit_of(coordinator, "config.reload") == []


async def test_a_stopped_bots_new_limits_apply_unapproved_and_its_next_start_asks_for_approval(
    coordinator: Coordinator, config: CoordinatorConfig
) -> None:
    rewrite(config.source_dir, "bot-limits.json", lower_ndax_order_size)

    answer = await coordinator.reloader.reload("sighup", "SIGHUP")  # no approver

    assert answer["result"] == "applied"
    assert answer["approved"] == []
    assert order_notional_limit(coordinator, "ndax") == 5
    assert coordinator.config_gate.refusal("ndax") is not None
    from coordinator.config_approval import ConfigNotApproved

    with pytest.raises(ConfigNotApproved):
        await coordinator.start_bot("ndax", safe_mode=False, actor="operator-token")
    started = await coordinator.start_bot(
        "ndax", safe_mode=False, actor="operator-token", accept_config_change=True,
        approved_by="alice",
    )  # fmt: skip
    assert started["state"] in ("starting", "running")


async def test_safety_settings_apply_at_once(
    coordinator: Coordinator, config: CoordinatorConfig
) -> None:
    def kill_switch(document: Documents) -> None:
        document["triggers"]["max_consecutive_order_failures"] = 2
        document["activation_limit"]["max_activations"] = 7

    def recovery(document: Documents) -> None:
        document["circuit_breaker"]["failure_threshold"] = 2
        document["circuit_breaker"]["recovery_timeout"] = 9
        document["recovery"]["cooldown_period_minutes"] = 1
        document["retry"]["max_retries"] = 1

    def endpoints(document: Documents) -> None:
        document["health_check_config"]["failure_threshold"] = 9

    def alerts(document: Documents) -> None:
        document.setdefault("rules", {}).setdefault("order_failure_rate", {})
        document["rules"]["order_failure_rate"]["critical_above_pct"] = 50

    for name, change in (("kill-switch.json", kill_switch), ("recovery-settings.json", recovery),
                         ("api-endpoints.json", endpoints), ("alerts.json", alerts)):  # fmt: skip
        rewrite(config.source_dir, name, change)

    answer = await coordinator.reloader.reload("operator-token", "test")

    assert answer["result"] == "applied"
    safety = coordinator.safety
    assert safety.watch.triggers.max_consecutive_order_failures == 2
    assert coordinator.kill_switch.config.activation_limit.max_activations == 7
    exchange = safety.board.names[1]
    assert safety.board.breaker(exchange).settings.failure_threshold == 2
    assert safety.board.breaker(exchange).settings.recovery_timeout == 9
    assert safety.board.breaker("global").settings.recovery_timeout == 9
    assert coordinator.kill_switch.cooldown.total_seconds() == 60
    assert coordinator.scopes.cooldown.total_seconds() == 60
    assert coordinator.health is not None
    assert coordinator.health.config.failure_threshold == 9
    assert coordinator.alerts is not None
    assert coordinator.alerts.config.rules.order_failure_rate.critical_above_pct == 50
    assert coordinator.supervisor.runner("ndax").settings.retry.max_retries == 1
    # Nothing ran: the retry change is not waiting on any bot's start.
    assert all(not bot["needs_bot_restart"] for bot in answer["bots"].values())


async def test_a_running_bot_reports_what_waits_for_its_next_start(
    coordinator: Coordinator, config: CoordinatorConfig
) -> None:
    await coordinator.start_bot("ndax", safe_mode=False, actor="operator-token")
    rewrite(config.source_dir, "recovery-settings.json",
            lambda document: document["retry"].update(max_retries=1))  # fmt: skip

    answer = await coordinator.reloader.reload("operator-token", "test")

    assert answer["bots"]["ndax"]["needs_bot_restart"] == [
        "recovery-settings.json: $.retry.max_retries: 3 -> 1"
    ]
    assert answer["bots"]["kraken"]["needs_bot_restart"] == []


async def test_a_bots_json_change_is_reported_per_bot_and_left_for_a_restart(
    coordinator: Coordinator, config: CoordinatorConfig
) -> None:
    def change(document: Documents) -> None:
        document["bots"][0]["strategy"]["params"]["quote_amount"] = 30

    rewrite(config.source_dir, "bots.json", change)

    answer = await coordinator.reloader.reload("operator-token", "test")

    assert answer["bots"]["ndax"]["needs_coordinator_restart"] == [
        "bots.json: $.bots[name=ndax].strategy.params.quote_amount: 25 -> 30"
    ]
    assert answer["bots"]["kraken"]["needs_coordinator_restart"] == []
    assert answer["sha256_after"] == answer["sha256_before"]  # nothing of it runs yet
    assert coordinator.supervisor.runner("ndax").parts.config.strategy.params.quote_amount == 25
    await coordinator.config_gate.check_files()
    assert coordinator.config_gate.changed_since_start() == ["bots.json"]


async def test_an_approver_that_is_blank_is_refused(coordinator: Coordinator) -> None:
    with pytest.raises(BadRequest, match="approved_by"):
        await coordinator.reloader.reload("operator-token", "test", approved_by="  ")


async def test_reload_is_refused_while_shutting_down(coordinator: Coordinator) -> None:
    coordinator.accepting = False
    try:
        with pytest.raises(Exception, match="shutting down"):
            await coordinator.reloader.reload("operator-token", "test")
    finally:
        coordinator.accepting = True


async def test_a_reload_keeps_read_only_bots_read_only(
    config: CoordinatorConfig, data_dir: Path
) -> None:
    from coordinator.bot_test import with_mode
    from coordinator.config.models import BotMode

    coordinator = await Coordinator.open(with_mode(config, BotMode.READ_ONLY), data_dir)
    coordinator.reloader.transform = lambda read: with_mode(read, BotMode.READ_ONLY)
    try:
        await coordinator.start_bot("ndax", safe_mode=False, actor="operator-token")
        rewrite(config.source_dir, "bot-limits.json", lower_ndax_order_size)

        answer = await coordinator.reloader.reload("sighup", "SIGHUP")  # a read-only bot needs
        # no approver: it sends no order
        assert answer["result"] == "applied"
        assert all(not bot["needs_coordinator_restart"] for bot in answer["bots"].values())
        assert all(bot.mode is BotMode.READ_ONLY for bot in coordinator.config.bots.bots)
        assert order_notional_limit(coordinator, "ndax") == 5
    finally:
        await coordinator.close(grace_seconds=0.5)
