"""Live config reload: `POST /config/reload` and SIGHUP re-read `config/` while bots trade.

A reload reads the six files exactly as the start-up does (`load_config`, the same transform
the command line applied, `--read-only` for one), so a file the next start would refuse is
refused here, with every problem listed, and the running config is kept whole.

A valid config is compared with the running one section by section (`UNITS`). Each section
says when a change to it takes effect:

- `now`: the next order, evaluation, probe or activation uses it (the risk limits, the kill
  switch's triggers and limits, the breaker and health-check settings, alert thresholds, the
  endpoints' URLs). Nothing half-applies: the new values are swapped in with no `await`
  between them, after the reload's audit entry is on disk.
- `next_bot_start`: a running bot keeps what it started with until it starts again (its retry
  and partial-fill policies and its restart policy are fixed per run); a stopped bot gets it
  now. Reported per bot.
- `coordinator_restart`: not applied (a bot's own settings in bots.json, a bot added or
  removed, the backup schedule, the notifier, a venue's dead man's switch). Reported per bot
  where it is a bot's, and the file keeps showing as changed since start in `/status`.

The config gate (`config_approval.py`) is held to: a reload that changes the effective config
(limits included) of a bot that is running needs an approver (`approved_by`); without one it is
refused and nothing changes. With one, every changed bot's new config is approved, and those
approvals commit in one safety write with the reload's audit entry, which carries the config's
sha256 before and after. A SIGHUP carries no approver: it applies a reload that changes no
running bot's effective config and refuses, in the log and the audit, one that does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.config import ConfigError, load_config
from coordinator.config.fingerprint import (
    BotFingerprint,
    bot_fingerprints,
    canonical,
    canonical_json,
    file_hashes,
    sha256_text,
)
from coordinator.config.loader import (
    ALERTS_FILE,
    BOTS_FILE,
    ENDPOINTS_FILE,
    KILL_SWITCH_FILE,
    LIMITS_FILE,
    RECOVERY_FILE,
)
from coordinator.config.models import BotMode, CoordinatorConfig
from coordinator.config_approval import Approval, approval_writes, check_approver
from coordinator.errors import Conflict, CoordinatorError, ShuttingDown
from coordinator.lifecycle import BotState
from coordinator.safety.risk import RiskGate
from coordinator.store.journal import audit_entry, iso
from coordinator.store.sqlite import Priority, Write

if TYPE_CHECKING:
    from coordinator.runtime import Coordinator

log = logging.getLogger(__name__)

SIGHUP_ACTOR = "sighup"
MAX_LISTED_ERRORS = 100  # config problems carried in an answer and in the audit entry


class ApplyWhen(StrEnum):
    NOW = "now"
    NEXT_BOT_START = "next_bot_start"
    COORDINATOR_RESTART = "coordinator_restart"


@dataclass(frozen=True, slots=True)
class Unit:
    """A section of the config and when a change to it takes effect."""

    file: str
    path: tuple[str, ...]  # attributes from CoordinatorConfig down to the section
    when: ApplyWhen


UNITS: tuple[Unit, ...] = (
    Unit(BOTS_FILE, ("bots",), ApplyWhen.COORDINATOR_RESTART),
    Unit(LIMITS_FILE, ("limits",), ApplyWhen.NOW),
    Unit(KILL_SWITCH_FILE, ("kill_switch",), ApplyWhen.NOW),
    Unit(RECOVERY_FILE, ("recovery", "restart"), ApplyWhen.NEXT_BOT_START),
    Unit(RECOVERY_FILE, ("recovery", "retry"), ApplyWhen.NEXT_BOT_START),
    Unit(RECOVERY_FILE, ("recovery", "partial_fills"), ApplyWhen.NEXT_BOT_START),
    Unit(RECOVERY_FILE, ("recovery", "sequential_start"), ApplyWhen.NOW),
    Unit(RECOVERY_FILE, ("recovery", "recovery"), ApplyWhen.NOW),
    Unit(RECOVERY_FILE, ("recovery", "circuit_breaker"), ApplyWhen.NOW),
    Unit(RECOVERY_FILE, ("recovery", "shutdown"), ApplyWhen.NOW),
    Unit(RECOVERY_FILE, ("recovery", "reconciliation"), ApplyWhen.NOW),
    Unit(RECOVERY_FILE, ("recovery", "backups"), ApplyWhen.COORDINATOR_RESTART),
    Unit(RECOVERY_FILE, ("recovery", "version"), ApplyWhen.NOW),
    # The URLs: now. A venue's dead man's switch, or an exchange added or removed: a restart
    # (`_exchanges_when`).
    Unit(ENDPOINTS_FILE, ("endpoints", "exchanges"), ApplyWhen.NOW),
    Unit(ENDPOINTS_FILE, ("endpoints", "health_check_config"), ApplyWhen.NOW),
    Unit(ENDPOINTS_FILE, ("endpoints", "version"), ApplyWhen.NOW),
    Unit(ALERTS_FILE, ("alerts", "rules"), ApplyWhen.NOW),
    Unit(ALERTS_FILE, ("alerts", "evaluation_interval_seconds"), ApplyWhen.NOW),
    Unit(ALERTS_FILE, ("alerts", "keep_resolved_minutes"), ApplyWhen.NOW),
    Unit(ALERTS_FILE, ("alerts", "notifications"), ApplyWhen.COORDINATOR_RESTART),
    # Read by the outside monitor (`bot-coordinator monitor`) at its own start, not by us.
    Unit(ALERTS_FILE, ("alerts", "monitor"), ApplyWhen.NOW),
    Unit(ALERTS_FILE, ("alerts", "version"), ApplyWhen.NOW),
)


class ConfigInvalid(CoordinatorError):
    """The files on disk do not make a valid config; `errors` lists every problem."""

    status = 422
    code = "config_invalid"

    def __init__(self, message: str, issues: Iterable[Any]) -> None:
        super().__init__(message)
        self.errors = [
            {"file": issue.file, "path": issue.path, "reason": issue.reason} for issue in issues
        ][:MAX_LISTED_ERRORS]


class ReloadNeedsApproval(Conflict):
    code = "config_not_approved"


@dataclass(frozen=True, slots=True)
class Change:
    file: str
    path: str  # a JSON path into the file, as config errors name them
    before: Any
    after: Any
    when: ApplyWhen
    bot: str | None = None  # the bot a bots.json change belongs to

    def as_dict(self) -> dict[str, Any]:
        change = {
            "file": self.file, "path": self.path, "before": self.before, "after": self.after,
            "applies": self.when.value,
        }  # fmt: skip
        return change | ({"bot": self.bot} if self.bot is not None else {})

    def line(self) -> str:
        return f"{self.file}: {self.path}: {_show(self.before)} -> {_show(self.after)}"


@dataclass(slots=True)
class ReloadPlan:
    """What a reload would do: computed without changing anything."""

    running: CoordinatorConfig
    applied: CoordinatorConfig  # the running config with every section that applies replaced
    changes: list[Change]
    fingerprints: dict[str, BotFingerprint]  # of `applied`
    changed_bots: list[str]  # whose effective config differs from the running one
    files: dict[str, str | None]  # sha256 of each file as read
    pending_files: set[str] = field(default_factory=set)  # with a change not applied

    @property
    def sha256_before(self) -> str:
        return config_sha256(self.running)

    @property
    def sha256_after(self) -> str:
        return config_sha256(self.applied)

    def by_when(self, when: ApplyWhen) -> list[Change]:
        return [change for change in self.changes if change.when is when]


def config_sha256(config: CoordinatorConfig) -> str:
    """The sha256 of a whole config as the coordinator runs it (canonical JSON of every file's
    model; the directory it came from is not part of it)."""
    return sha256_text(canonical_json(config.model_dump(exclude={"source_dir"})))


# -- reading and planning (no coordinator needed) --------------------------------------------------


def read_config(
    directory: Path, transform: Callable[[CoordinatorConfig], CoordinatorConfig]
) -> tuple[CoordinatorConfig, dict[str, str | None]]:
    """Load `directory` as the start-up does, with the files' sha256. Blocking. Raises
    ConfigError, or ConfigInvalid when a file changed while it was being read."""
    before = file_hashes(directory)
    config = transform(load_config(directory))
    after = file_hashes(directory)
    if before != after:
        moved = ", ".join(name for name in after if before.get(name) != after[name])
        raise ConfigInvalid(
            f"{moved} changed while the config was being read; nothing was applied, reload "
            "again once the files are written",
            [],
        )
    return config, after


def plan_reload(
    running: CoordinatorConfig, new: CoordinatorConfig, files: dict[str, str | None]
) -> ReloadPlan:
    changes: list[Change] = []
    applied = running
    for unit in UNITS:
        old_value, new_value = _get(running, unit.path), _get(new, unit.path)
        if canonical(old_value) == canonical(new_value):
            continue
        when = unit.when
        if unit.path == ("endpoints", "exchanges"):
            when = _exchanges_when(running, new)
        changes.extend(_unit_changes(unit, when, old_value, new_value))
        if when is not ApplyWhen.COORDINATOR_RESTART:
            applied = _replaced(applied, unit.path, new_value)
    before, after = bot_fingerprints(running), bot_fingerprints(applied)
    changed_bots = [bot for bot in after if before[bot].sha256 != after[bot].sha256]
    pending = {c.file for c in changes if c.when is ApplyWhen.COORDINATOR_RESTART}
    return ReloadPlan(running, applied, changes, after, changed_bots, files, pending)


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def _replaced(model: Any, path: tuple[str, ...], value: Any) -> Any:
    """`model` with the attribute at `path` replaced (frozen models: copies along the path)."""
    head, *rest = path
    inner = value if not rest else _replaced(getattr(model, head), tuple(rest), value)
    return model.model_copy(update={head: inner})


def _exchanges_when(running: CoordinatorConfig, new: CoordinatorConfig) -> ApplyWhen:
    old, fresh = running.endpoints.exchanges, new.endpoints.exchanges
    if old.keys() != fresh.keys():
        return ApplyWhen.COORDINATOR_RESTART
    moved = any(old[name].dead_mans_switch != fresh[name].dead_mans_switch for name in old)
    return ApplyWhen.COORDINATOR_RESTART if moved else ApplyWhen.NOW


def _unit_changes(unit: Unit, when: ApplyWhen, old: Any, new: Any) -> list[Change]:
    prefix = unit.path[1:]  # the section's place in its file
    if unit.path == ("bots",):
        return _bot_changes(old, new)
    flat_old, flat_new = _flatten(canonical(old), prefix), _flatten(canonical(new), prefix)
    return [
        Change(unit.file, path, flat_old.get(path), flat_new.get(path), when)
        for path in sorted(flat_old.keys() | flat_new.keys())
        if flat_old.get(path, _MISSING) != flat_new.get(path, _MISSING)
    ]


def _bot_changes(old: Any, new: Any) -> list[Change]:
    """bots.json by bot name (a bot moved in the list has not changed)."""
    before = {bot.name: canonical(bot) for bot in old.bots}
    after = {bot.name: canonical(bot) for bot in new.bots}
    changes: list[Change] = []
    restart = ApplyWhen.COORDINATOR_RESTART
    for name in list(before) + [name for name in after if name not in before]:
        where = f"$.bots[name={name}]"
        if name not in after:
            changes.append(Change(BOTS_FILE, where, "(configured)", "(removed)", restart, name))
        elif name not in before:
            changes.append(Change(BOTS_FILE, where, "(not configured)", "(added)", restart, name))
        else:
            flat_old, flat_new = _flatten(before[name], ()), _flatten(after[name], ())
            for path in sorted(flat_old.keys() | flat_new.keys()):
                if flat_old.get(path, _MISSING) != flat_new.get(path, _MISSING):
                    changes.append(Change(
                        BOTS_FILE, where + path[1:], flat_old.get(path), flat_new.get(path),
                        restart, name,
                    ))  # fmt: skip
    if old.version != new.version:
        changes.append(Change(BOTS_FILE, "$.version", old.version, new.version, restart))
    return changes


_MISSING = object()


def _flatten(value: Any, prefix: tuple[str, ...]) -> dict[str, Any]:
    """Leaf values by JSON path (`$.defaults.max_order_notional`); a list is one leaf."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, (*prefix, "global" if key == "global_" else key)))
        return out
    path = "$" + "".join(f".{part}" for part in prefix)
    return {path: value}


def _show(value: Any) -> str:
    return "(unset)" if value is None else str(value)


# -- the reloader ----------------------------------------------------------------------------------


class ConfigReloader:
    """One coordinator's reloads, one at a time."""

    def __init__(
        self,
        coordinator: Coordinator,
        transform: Callable[[CoordinatorConfig], CoordinatorConfig] = lambda config: config,
    ) -> None:
        self.coordinator = coordinator
        self.transform = transform
        self.reloads = 0
        self.refused = 0
        self.last: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def reload(
        self,
        actor: str,
        via: str,
        approved_by: str | None = None,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Re-read, check, diff and apply (see the module doc); the answer lists every
        change, when it applies, and each bot's part. Refusals are audited."""
        async with self._lock:
            coordinator = self.coordinator
            running = coordinator.config
            details: dict[str, Any] = {"via": via, "sha256_before": config_sha256(running)}
            try:
                if not coordinator.accepting:
                    raise ShuttingDown("the coordinator is shutting down; nothing is reloaded")
                approver = check_approver(approved_by) if approved_by is not None else None
                try:
                    new, files = await asyncio.to_thread(
                        read_config, running.source_dir, self.transform
                    )
                except ConfigError as exc:
                    raise ConfigInvalid(
                        f"the configuration in {running.source_dir} is invalid "
                        f"({len(exc.issues)} problem{'s' if len(exc.issues) != 1 else ''}: "
                        f"{exc.issues[0]}); nothing was applied, the running config is kept",
                        exc.issues,
                    ) from exc
                plan = plan_reload(running, new, files)
                answer = self._answer(plan, dry_run)
                if dry_run:
                    return answer
                needs = self._needs_approval(plan)
                if needs and approver is None:
                    raise ReloadNeedsApproval(
                        f"the effective config of running bot{'s' if len(needs) > 1 else ''} "
                        f"{', '.join(needs)} changes ({_summary(plan)}): reload with "
                        '"approved_by" naming who approved it (see the diff with "dry_run": '
                        "true)"
                        + ("; a SIGHUP cannot approve, use `bot-coordinator config reload "
                           "--approved-by WHO`" if via == "SIGHUP" else "")
                    )  # fmt: skip
            except CoordinatorError as exc:
                self.refused += 1
                if isinstance(exc, ConfigInvalid):
                    details["errors"] = exc.errors
                await coordinator.journal.audit(
                    actor=actor, action="config.reload", result=f"refused: {exc.message}",
                    at=coordinator.clock(), reason=reason, details=details,
                )  # fmt: skip
                raise
            await self._commit(plan, approver, reason, actor, via, details)
            self._apply(plan)
            self.reloads += 1
            answer["result"] = "applied" if plan.changes else "unchanged"
            answer["approved"] = list(plan.changed_bots) if approver is not None else []
            self.last = {"at": iso(coordinator.clock()), "via": via, "actor": actor,
                         "sha256": plan.sha256_after, "changes": len(plan.changes)}  # fmt: skip
            for change in plan.changes:
                log.info("config reload (%s): %s [%s]", via, change.line(), change.when.value)
            log.warning(
                "config reloaded (%s by %s): %d change(s), config sha256 %s -> %s",
                via, actor, len(plan.changes), plan.sha256_before[:16], plan.sha256_after[:16],
            )  # fmt: skip
            return answer

    def _needs_approval(self, plan: ReloadPlan) -> list[str]:
        runners = self.coordinator.supervisor.runners
        return [
            bot for bot in plan.changed_bots
            if bot in runners and runners[bot].state is not BotState.STOPPED
            and runners[bot].parts.config.mode is not BotMode.READ_ONLY
        ]  # fmt: skip

    async def _commit(
        self,
        plan: ReloadPlan,
        approver: str | None,
        reason: str | None,
        actor: str,
        via: str,
        details: dict[str, Any],
    ) -> None:
        """The approvals of every changed bot (with an approver) and the reload's audit entry,
        in one safety write: when it returns, what is about to apply is on disk."""
        gate = self.coordinator.config_gate
        clock = self.coordinator.clock
        async with gate.approving:
            at = clock()
            writes: list[Write] = []
            approvals: list[Approval] = []
            if approver is not None:
                for bot in plan.changed_bots:
                    fingerprint, previous = plan.fingerprints[bot], gate.approvals.get(bot)
                    if previous is not None and previous.config_sha256 == fingerprint.sha256:
                        continue
                    approval = Approval(
                        bot, fingerprint.sha256, fingerprint.config_json, gate.code.label,
                        approver, reason or "approved with a config reload", iso(at),
                        previous.config_sha256 if previous is not None else None,
                    )  # fmt: skip
                    approvals.append(approval)
                    writes.extend(approval_writes(approval, actor, f"config reload ({via})"))
            details = details | {
                "sha256_after": plan.sha256_after,
                "files": plan.files,
                "changes": [change.as_dict() for change in plan.changes],
                "not_applied": sorted(plan.pending_files),
                "effective_config_changed": plan.changed_bots,
                "approved_by": approver,
            }
            writes.append(audit_entry(
                actor=actor, action="config.reload", subject=None, result="ok", at=at,
                reason=reason, details=details,
            ))  # fmt: skip
            await self.coordinator.journal.store.write(writes, Priority.SAFETY)
            gate.adopt(plan.fingerprints, approvals, plan.files, plan.pending_files)

    def _apply(self, plan: ReloadPlan) -> None:
        """Swap the new settings in, with no await: no order sees half of a reload."""
        coordinator, new = self.coordinator, plan.applied
        safety = coordinator.safety
        # Risk limits: each bot's gates, and the limits shared across bots.
        for runner in coordinator.supervisor.runners.values():
            limits = new.limits.limits_for(runner.name)
            if isinstance(runner.parts.risk_gate, RiskGate):
                runner.parts.risk_gate.set_limits(limits)
            if isinstance(runner.parts.safe_mode_risk_gate, RiskGate):
                runner.parts.safe_mode_risk_gate.set_limits(limits, new.limits.safe_mode)
            # Fixed for a run: a running bot takes them at its next start.
            runner.settings = new.recovery
        safety.risk.global_limits = new.limits.global_
        # The kill switch, its triggers, the throttle, the scopes' cooldown.
        safety.config = new
        coordinator.kill_switch.config = new.kill_switch
        cooldown = timedelta(minutes=new.recovery.recovery.cooldown_period_minutes)
        coordinator.kill_switch.cooldown = cooldown
        coordinator.scopes.cooldown = cooldown
        safety.watch.triggers = new.kill_switch.triggers
        safety.watch.restart = new.recovery.restart
        safety.throttle.settings = new.kill_switch.execution_throttle
        breaker = new.recovery.circuit_breaker
        safety.board.apply_settings(breaker, breaker.for_global())
        coordinator.supervisor.settings = new.recovery
        coordinator.reconciler.settings = new.recovery.reconciliation
        # Endpoints and health checks.
        if coordinator.health is not None:
            coordinator.health.config = new.endpoints.health_check_config
            for exchange, failover in coordinator.health.failovers.items():
                failover.failure_threshold = new.endpoints.health_check_config.failure_threshold
                if exchange in new.endpoints.exchanges:
                    failover.retarget(new.endpoints.exchanges[exchange])
        # Alerts.
        if coordinator.alerts is not None:
            coordinator.alerts.apply_config(new.alerts)
        interval_moved = (
            plan.running.recovery.reconciliation.interval_minutes
            != new.recovery.reconciliation.interval_minutes
        )
        coordinator.config = new
        if interval_moved:
            coordinator.restart_reconcile_schedule()
        coordinator.forget_status_documents()

    def _answer(self, plan: ReloadPlan, dry_run: bool) -> dict[str, Any]:
        runners = self.coordinator.supervisor.runners
        bots: dict[str, Any] = {}
        before = self.coordinator.config_gate.fingerprints
        at_next_start = [c.line() for c in plan.by_when(ApplyWhen.NEXT_BOT_START)]
        for name, runner in runners.items():
            running = runner.state is not BotState.STOPPED
            own = [c.line() for c in plan.changes if c.bot == name]
            bots[name] = {
                "state": runner.state.value,
                "sha256_before": before[name].sha256 if name in before else None,
                "sha256_after": plan.fingerprints[name].sha256,
                "effective_config_changed": name in plan.changed_bots,
                "needs_bot_restart": at_next_start if running else [],
                "needs_coordinator_restart": own,
            }
        added = [c.bot for c in plan.changes if c.after == "(added)" and c.bot is not None]
        return {
            "result": "dry_run" if dry_run else "applied",
            "config_dir": str(plan.running.source_dir),
            "sha256_before": plan.sha256_before,
            "sha256_after": plan.sha256_after,
            "files": plan.files,
            "changes": [change.as_dict() for change in plan.changes],
            "applied_now": len(plan.by_when(ApplyWhen.NOW)),
            "at_next_bot_start": len(plan.by_when(ApplyWhen.NEXT_BOT_START)),
            "not_applied": [c.line() for c in plan.by_when(ApplyWhen.COORDINATOR_RESTART)],
            "bots": bots,
            "bots_added": added,
            "needs_approval": self._needs_approval(plan),
        }

    def sighup_hook(self) -> Callable[[], Awaitable[None]]:
        """The SIGHUP re-read (coordinator/server.py): a refusal is logged with its reason."""

        async def reload() -> None:
            try:
                answer = await self.reload(SIGHUP_ACTOR, "SIGHUP")
            except ConfigInvalid as exc:
                log.error("SIGHUP: config reload refused: %s", exc.message)
                for error in exc.errors or []:
                    log.error("  %s: %s: %s", error["file"], error["path"], error["reason"])
                return
            except CoordinatorError as exc:
                log.error("SIGHUP: config reload refused: %s", exc.message)
                return
            for line in answer["not_applied"]:
                log.warning("SIGHUP: not applied until the coordinator restarts: %s", line)

        return reload

    def status(self) -> dict[str, Any]:
        return {"reloads": self.reloads, "refused": self.refused, "last": self.last}


def _summary(plan: ReloadPlan, most: int = 3) -> str:
    lines = [change.line() for change in plan.changes if change.when is not
             ApplyWhen.COORDINATOR_RESTART]  # fmt: skip
    more = f"; {len(lines) - most} more" if len(lines) > most else ""
    return "; ".join(lines[:most]) + more
