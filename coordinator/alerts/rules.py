"""The alert rules: pure functions from `Facts` to `Sample`s, one per subject, breached or not.

A rule reports every subject it judges (so the engine sees a condition clear, not only appear).
Names, severities and the runbook section to read are fixed here; thresholds come from
alerts.json. `docs/monitoring/alert-rules.yml` holds the same rules for Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from coordinator.alerts.facts import Facts
from coordinator.alerts.model import Sample
from coordinator.config.alerting import AlertRules, RuleTiming, Severity
from coordinator.lifecycle import BotState

CRITICAL, WARNING = Severity.CRITICAL, Severity.WARNING

RUNBOOK_FAILURE_RATE = "001 Immediate Actions (check status, review recent failures)"
RUNBOOK_BREAKER = "004 Scenario 2 (API connection failures), Scenario 4 (circuit breaker)"
RUNBOOK_KILL_SWITCH = "004 Step 1 (assess), Step 6 (gradual recovery), Scenario 4"
RUNBOOK_STALE = "004 Step 1 (assess), Scenario 7 (resource exhaustion)"
RUNBOOK_CRASH_LOOP = "004 Scenario 1 (bot crashes repeatedly)"
RUNBOOK_BACKUP_ENDPOINT = "004 Scenario 2 step 5 (switch to backup API)"
RUNBOOK_RECONCILIATION = "004 Scenario 5 (data loss/corruption): reconcile with exchange"
RUNBOOK_BACKUPS = "004 Scenario 5 step 3 (restore from backup); 002 disaster recovery"
RUNBOOK_DISK = "004 Scenario 7 (system resource exhaustion)"
RUNBOOK_DEAD_MANS_SWITCH = (
    "004 Scenario 2 (API connection failures); then check the venue's open orders: an expired "
    "switch may have cancelled them all"
)

RUNBOOK_TRADING_SWITCH = (
    "004 Step 1 (assess); GET /status trading_controls says which switch and why; Step 6 "
    "(gradual recovery) once it is lifted"
)
RUNBOOK_BOT_DISABLED = (
    "004 Scenario 1 (bot misbehaving): find why its strategy repeated itself, then POST "
    "/bots/{name}/enable with approved_by"
)

Rule = Callable[[Facts, AlertRules], list[Sample]]

# Every alert name the coordinator can raise, with the rule settings that time it.
TIMING: dict[str, Callable[[AlertRules], RuleTiming]] = {
    "order_failure_rate_high": lambda r: r.order_failure_rate,
    "order_failure_rate_warning": lambda r: r.order_failure_rate,
    "exchange_breaker_open": lambda r: r.exchange_breaker_open,
    "kill_switch_active": lambda r: r.kill_switch_active,
    "bot_heartbeat_stale": lambda r: r.bot_heartbeat_stale,
    "bot_crash_loop": lambda r: r.bot_crash_loop,
    "exchange_on_backup_endpoint": lambda r: r.exchange_on_backup_endpoint,
    "reconciliation_differences": lambda r: r.reconciliation_differences,
    "backup_stale": lambda r: r.backup_stale,
    "backup_failed": lambda r: r.backup_failed,
    "disk_space_low": lambda r: r.disk_space_low,
    "disk_space_critical": lambda r: r.disk_space_low,
    "dead_mans_switch_failing": lambda r: r.dead_mans_switch_failing,
    "dead_mans_switch_expired": lambda r: r.dead_mans_switch_failing,
    "bot_trading_restricted": lambda r: r.bot_trading_restricted,
    "bot_disabled": lambda r: r.bot_disabled,
}


def order_failure_rate(facts: Facts, rules: AlertRules) -> list[Sample]:
    rule = rules.order_failure_rate
    samples: list[Sample] = []
    for bot in facts.bots:
        count = bot.window
        pct = round(count.failure_pct, 2)
        judged = count.orders >= rule.min_orders
        window = f"{rule.window_minutes:g} min"
        for name, severity, threshold in (
            ("order_failure_rate_high", CRITICAL, rule.critical_above_pct),
            ("order_failure_rate_warning", WARNING, rule.warning_above_pct),
        ):
            samples.append(
                Sample(
                    name,
                    severity,
                    {"bot": bot.name, "exchange": bot.exchange},
                    judged and pct > threshold,
                    pct,
                    threshold,
                    f"{bot.name}: {count.failed} of {count.orders} orders failed in the last "
                    f"{window} ({pct:g} %, threshold {threshold:g} %)",
                    RUNBOOK_FAILURE_RATE,
                )
            )
    return samples


def exchange_breaker_open(facts: Facts, rules: AlertRules) -> list[Sample]:
    return [
        Sample(
            "exchange_breaker_open",
            CRITICAL,
            {"breaker": breaker.name},
            breaker.state != "closed",
            1.0 if breaker.state != "closed" else 0.0,
            None,
            f"circuit breaker {breaker.name} is {breaker.state}"
            + (" (latched: only a reset or force_override closes it)" if breaker.latched else "")
            + (f": {breaker.reason}" if breaker.reason else ""),
            RUNBOOK_BREAKER,
        )
        for breaker in facts.breakers
    ]


def kill_switch_active(facts: Facts, rules: AlertRules) -> list[Sample]:
    ks = facts.kill_switch
    active = bool(ks.get("active"))
    summary = (
        f"the kill switch is active since {ks.get('at')} (by {ks.get('by')}, trigger "
        f"{ks.get('trigger')}): {ks.get('reason')}; nothing trades"
        if active
        else "the kill switch is not active"
    )
    return [
        Sample(
            "kill_switch_active",
            CRITICAL,
            {},
            active,
            1.0 if active else 0.0,
            None,
            summary,
            RUNBOOK_KILL_SWITCH,
        )
    ]


def bot_heartbeat_stale(facts: Facts, rules: AlertRules) -> list[Sample]:
    rule = rules.bot_heartbeat_stale
    samples = []
    for bot in facts.bots:
        limit = max(rule.min_stale_seconds, rule.stale_after_ticks * bot.tick_interval_seconds)
        should_tick = bot.state in (BotState.STARTING, BotState.RUNNING)
        # A bot that has not ticked yet is judged by how long ago it started.
        age = bot.heartbeat_age_seconds
        if age is None or (bot.running_for_seconds is not None and bot.running_for_seconds < age):
            age = bot.running_for_seconds
        stale = should_tick and age is not None and age > limit
        samples.append(
            Sample(
                "bot_heartbeat_stale",
                WARNING,
                {"bot": bot.name, "exchange": bot.exchange},
                stale,
                round(age, 1) if age is not None else None,
                limit,
                f"{bot.name} is {bot.state.value} but has not ticked for "
                f"{age or 0:.0f}s (limit {limit:g}s)",
                RUNBOOK_STALE,
            )
        )
    return samples


def bot_crash_loop(facts: Facts, rules: AlertRules) -> list[Sample]:
    return [
        Sample(
            "bot_crash_loop",
            CRITICAL,
            {"bot": bot.name, "exchange": bot.exchange},
            bot.crash_looped,
            1.0 if bot.crash_looped else 0.0,
            None,
            f"{bot.name} crashed and is not restarting until an operator starts it: "
            f"{bot.last_error}",
            RUNBOOK_CRASH_LOOP,
        )
        for bot in facts.bots
    ]


def exchange_on_backup_endpoint(facts: Facts, rules: AlertRules) -> list[Sample]:
    return [
        Sample(
            "exchange_on_backup_endpoint",
            WARNING,
            {"exchange": exchange.name},
            exchange.endpoint == "backup",
            1.0 if exchange.endpoint == "backup" else 0.0,
            None,
            f"{exchange.name}: the live account trades on its backup API root "
            f"(primary: {exchange.last_error or 'failing'})",
            RUNBOOK_BACKUP_ENDPOINT,
        )
        for exchange in facts.exchanges
    ]


def reconciliation_differences(facts: Facts, rules: AlertRules) -> list[Sample]:
    last = facts.reconciliation
    if last is None:
        return []
    remaining, errors = int(last["remaining"]), int(last["errors"])
    return [
        Sample(
            "reconciliation_differences",
            WARNING,
            {},
            not last["clean"],
            float(remaining),
            0.0,
            f"reconciliation #{last['run_id']} at {last['at']}: {remaining} difference(s) "
            f"left, {errors} exchange(s) unreadable (bot-coordinator reconcile)",
            RUNBOOK_RECONCILIATION,
        )
    ]


def backup_rules(facts: Facts, rules: AlertRules) -> list[Sample]:
    status = facts.backups
    if status is None or not status.get("interval_minutes"):
        return []  # backups off, or on demand only: no age to judge
    max_age = rules.backup_stale.max_age_minutes
    limit_s = 60 * (max_age if max_age is not None else 2 * status["interval_minutes"] + 10)
    age = status.get("last_ok_age_seconds")
    # With no good backup known, the coordinator's own age is how long it has gone without one.
    judged_age = age if age is not None else facts.uptime_seconds
    failed = status.get("result") == "failed"
    return [
        Sample(
            "backup_stale",
            WARNING,
            {},
            judged_age > limit_s,
            round(judged_age, 1),
            limit_s,
            f"the newest good backup is {judged_age / 60:.0f} min old (limit {limit_s / 60:g})"
            if age is not None
            else f"no good backup in {judged_age / 60:.0f} min (limit {limit_s / 60:g})",
            RUNBOOK_BACKUPS,
        ),
        Sample(
            "backup_failed",
            WARNING,
            {},
            failed,
            float(status.get("failures") or 0),
            None,
            f"the last backup failed: {status.get('error')}",
            RUNBOOK_BACKUPS,
        ),
    ]


def disk_space(facts: Facts, rules: AlertRules) -> list[Sample]:
    free = facts.disk_free_pct
    if free is None:
        return []
    rule = rules.disk_space_low
    summary = f"the data dir's file system has {free:.1f} % free"
    return [
        Sample(
            "disk_space_low", WARNING, {}, free < rule.warning_free_pct, round(free, 2),
            rule.warning_free_pct, summary, RUNBOOK_DISK,
        ),
        Sample(
            "disk_space_critical", CRITICAL, {}, free < rule.critical_free_pct, round(free, 2),
            rule.critical_free_pct, summary, RUNBOOK_DISK,
        ),
    ]


def dead_mans_switch(facts: Facts, rules: AlertRules) -> list[Sample]:
    """A live account's heartbeat fails or has stopped (warning); no beat acknowledged within
    the timeout, so the venue may have cancelled every order of the account (critical)."""
    samples = []
    for switch in facts.dead_mans_switches:
        labels = {"exchange": switch.exchange}
        age = switch.last_success_age_seconds
        value = round(age, 1) if age is not None else None
        summary = f"{switch.exchange}: dead man's switch {switch.state}: {switch.reason}"
        samples += [
            Sample(
                "dead_mans_switch_failing", WARNING, labels,
                switch.state in ("failing", "expired"), float(switch.consecutive_failures),
                None, summary, RUNBOOK_DEAD_MANS_SWITCH,
            ),
            Sample(
                "dead_mans_switch_expired", CRITICAL, labels, switch.state == "expired", value,
                float(switch.timeout_seconds), summary, RUNBOOK_DEAD_MANS_SWITCH,
            ),
        ]  # fmt: skip
    return samples


def trading_controls(facts: Facts, rules: AlertRules) -> list[Sample]:
    """A bot halted or reduce-only by a scoped switch (the kill switch has its own alert), and
    a bot the execution throttle disabled."""
    samples: list[Sample] = []
    for bot in facts.trading:
        labels = {"bot": bot.bot, "exchange": bot.exchange}
        restricted = bot.state != "active" and bot.scope != "kill_switch" and not bot.disabled
        samples.append(
            Sample(
                "bot_trading_restricted", WARNING, labels, restricted,
                1.0 if restricted else 0.0, None,
                f"{bot.bot}: trading is {bot.why}" if restricted else f"{bot.bot} trades freely",
                RUNBOOK_TRADING_SWITCH,
            )
        )  # fmt: skip
        samples.append(
            Sample(
                "bot_disabled", CRITICAL, labels, bot.disabled, 1.0 if bot.disabled else 0.0,
                None, f"{bot.bot}: {bot.why}" if bot.disabled else f"{bot.bot} is enabled",
                RUNBOOK_BOT_DISABLED,
            )
        )  # fmt: skip
    return samples


RULES: tuple[Rule, ...] = (
    order_failure_rate,
    exchange_breaker_open,
    kill_switch_active,
    bot_heartbeat_stale,
    bot_crash_loop,
    exchange_on_backup_endpoint,
    reconciliation_differences,
    backup_rules,
    disk_space,
    dead_mans_switch,
    trading_controls,
)


def evaluate_rules(facts: Facts, rules: AlertRules) -> Iterable[Sample]:
    """Every enabled rule's samples."""
    for rule in RULES:
        for sample in rule(facts, rules):
            if TIMING[sample.name](rules).enabled:
                yield sample
