"""The coordinator: one object that owns the store, the bots and their supervision.

The control plane and the CLI call it; it has no web or CLI concerns. Every control action is
audited (who, what, why, result) before its answer returns.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bots.errors import TransientExchangeError
from bots.exchanges.ccxt_adapter import CcxtExchange, make_private_exchange, point_client_at
from bots.exchanges.paper import PaperExchange
from bots.feeds.simulated import SimulatedFeed
from bots.ids import ClientOrderIds
from bots.journal import JournalOrder
from coordinator import __version__
from coordinator.accounts import Accounts, drill_rate_limits, load_credentials_source
from coordinator.alerts.notifier import notifier_from_config
from coordinator.alerts.service import AlertService
from coordinator.alerts.window import OutcomeWindow
from coordinator.backups.postgres_dump import PostgresDatabase
from coordinator.backups.service import BackupService
from coordinator.config.models import CoordinatorConfig, MarketDataSource
from coordinator.config_approval import ConfigGate, check_accept
from coordinator.config_reload import ConfigReloader
from coordinator.credentials import redact
from coordinator.errors import (
    Conflict,
    CoordinatorError,
    NotDurable,
    ShuttingDown,
    WrongState,
)
from coordinator.failover import EndpointFailover
from coordinator.health import HealthMonitor, Probe
from coordinator.incidents.book import IncidentBook
from coordinator.incidents.model import drill_mode
from coordinator.lifecycle import BotState
from coordinator.metrics import Metrics
from coordinator.metrics.collector import CoordinatorCollector
from coordinator.reconcile.reconciler import Reconciler
from coordinator.refusal_audit import RefusalAudit
from coordinator.safety.dead_mans_switch import DeadMansSwitch
from coordinator.safety.execution_throttle import ExecutionThrottle
from coordinator.safety.kill_switch import NO_REASON, Trigger
from coordinator.safety.layer import SafetyLayer
from coordinator.safety.scopes import (
    GLOBAL_SCOPE,
    Scope,
    TradingState,
    orders_that_grow,
)
from coordinator.store.choice import open_store
from coordinator.store.fence import TransactionFence
from coordinator.store.journal import SqliteJournal, audit_entry, iso
from coordinator.store.sqlite import MAX_BATCH_JOBS, Priority, SqliteStore, StoreError, Write
from coordinator.supervisor import BotRunner, Supervisor
from coordinator.wiring import PublicExchanges, build_bot_parts

log = logging.getLogger(__name__)

DATABASE_FILE = "coordinator.db"  # = coordinator.store.choice.DATABASE_FILE
# An incident record written after a kill switch activation may take this long; it never delays
# the switch (which is on and durable before), only the answer that names the record.
INCIDENT_WRITE_TIMEOUT_SECONDS = 5.0


@dataclass(slots=True)
class EvidencePaths:
    """Where an incident snapshot reads from and writes to."""

    data_dir: Path
    log_dir: Path = Path("logs")


@dataclass(slots=True)
class _BotDocument:
    """A bot's cached status document, what it was built from, and its JSON once asked for."""

    book: Any
    stats: Any
    config: Any
    key: tuple[Any, ...]
    document: dict[str, Any]
    json: bytes | None = None


# The fields of each bot in `status_summary()`.
SUMMARY_FIELDS = (
    "name", "exchange", "symbol", "mode", "state", "safe_mode", "orders", "fills", "open_orders",
    "last_tick", "error", "last_refusal", "trading",
)  # fmt: skip


class Coordinator:
    config_gate: ConfigGate  # set by open(): effective configs, approvals, files on disk
    left_running: list[str]  # set by open(): the bots the previous process left running
    role: dict[str, Any] | None = None  # serve(): on PostgreSQL, this node leads (name, term)
    reloader: ConfigReloader  # set by open(): POST /config/reload and SIGHUP
    evidence: EvidencePaths  # set by open(); serve() names the log dir

    def __init__(
        self,
        config: CoordinatorConfig,
        store: SqliteStore,
        journal: SqliteJournal,
        supervisor: Supervisor,
        public: PublicExchanges,
        clock: Callable[[], datetime],
        safety: SafetyLayer,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.alerts: AlertService | None = None
        self.safety = safety
        self.kill_switch = safety.kill_switch
        self.store = store
        self.journal = journal
        self.supervisor = supervisor
        self.public = public
        self.clock = clock
        self.started_at = clock()
        self._started_monotonic = time.monotonic()
        self.accepting = True
        self.accounts: Accounts | None = None
        self.health: HealthMonitor | None = None
        # The venues' own dead man's switches, one heartbeat per live account.
        self.dead_mans_switch: DeadMansSwitch | None = None
        self.backups: BackupService | None = None  # with a backup dir (coordinator/backups)
        self.reconciler = Reconciler(
            supervisor.runners, store, config.recovery.reconciliation, clock
        )
        self._reconcile_task: asyncio.Task[None] | None = None
        self._resolving: asyncio.Task[None] | None = None
        self.next_reconciliation_at: datetime | None = None
        # Cancellations a kill switch started and did not finish before answering.
        self._background: set[asyncio.Task[Any]] = set()
        self._bot_documents: dict[str, _BotDocument] = {}
        self.refusal_audit: RefusalAudit | None = None  # refused orders, summed, in the audit
        # incident records (coordinator/incidents); a drill's coordinator files drills
        self.incidents = IncidentBook(store, clock, drills=drill_mode(os.environ))
        self.kill_switch.halt = self.halt_all
        self.kill_switch.halt_progress = self._halt_progress
        self.scopes = safety.scopes
        self.scopes.enforce = self._enforce_scope
        self.throttle = safety.throttle
        self.throttle.on_disable = self._halt_disabled_bot

    @classmethod
    async def open(
        cls,
        config: CoordinatorConfig,
        data_dir: Path,
        clock: Callable[[], datetime] | None = None,
        max_batch_jobs: int = MAX_BATCH_JOBS,
        accounts: Accounts | None = None,
        backup_dir: Path | None = None,
        database: str | None = None,
        fence: TransactionFence | None = None,
    ) -> Coordinator:
        """`database`: a PostgreSQL DSN, or None for SQLite in `data_dir`; `fence`: the leader
        lease every write of that store checks first (coordinator/leadership.py)."""
        clock = clock or (lambda: datetime.now(UTC))
        window = OutcomeWindow(config.alerts.rules.order_failure_rate.window_minutes, clock)
        metrics = Metrics(window)
        store = await open_store(data_dir, database, max_batch_jobs, fence)
        store.on_commit = metrics.committed
        paced = drill_rate_limits(config, os.environ)  # {} unless a drill's local venue
        public = PublicExchanges(paced)
        if accounts is None:
            # The environment, and the credentials file it may name (read in a thread).
            source = await asyncio.to_thread(load_credentials_source)
            accounts = Accounts(
                lambda exchange, credentials, ssl_context: make_private_exchange(
                    exchange, credentials, ssl_context, rate_limit_ms=paced.get(exchange)
                ),
                source,
            )
        try:
            journal = SqliteJournal(store)
            # The kill switch is read back before anything else: no bot may start while it is
            # active, whatever happened to the previous process.
            safety = SafetyLayer(config, journal, clock)
            await safety.load()
            # What every bot runs (effective config, code version) and what was approved.
            gate = await ConfigGate.open(
                config, journal, clock, lambda bot: metrics.config_refusals.labels(bot).inc()
            )
            ids = ClientOrderIds(floor=await journal.max_client_order_id())
            runners: dict[str, BotRunner] = {}
            unclean: list[str] = []  # bots the previous process left running
            for bot in config.bots.bots:
                await journal.register_bot(
                    bot.name, bot.exchange, bot.symbol, bot.mode.value, clock()
                )
                persisted = dict(await journal.load_bot_row(bot.name) or {})
                if await _note_unclean_end(journal, bot.name, persisted, clock()):
                    unclean.append(bot.name)
                parts = await build_bot_parts(bot, journal, public, accounts, safety, clock)
                parts.observer = metrics
                metrics.add_bot(parts.identity)
                runners[bot.name] = BotRunner(
                    parts,
                    journal,
                    ids,
                    config.recovery,
                    _decode_row(persisted),
                    clock,
                    start_guard=_start_refusal(safety, bot.name),
                )
                parts.on_execution = _count_execution(safety.throttle, bot.name)
                if isinstance(parts.adapter, PaperExchange):
                    await _resolve_orders_left_live(runners[bot.name])  # in memory: at once
                else:
                    runners[bot.name].hold_for_resolution()
                await journal.save_bot_state(bot.name, clock(), state=BotState.STOPPED.value)
        except BaseException:
            await accounts.close()
            await public.close()
            await store.close()
            raise
        supervisor = Supervisor(runners, config.recovery)
        coordinator = cls(config, store, journal, supervisor, public, clock, safety, metrics)
        coordinator.config_gate = gate
        coordinator.left_running = unclean
        coordinator.reloader = ConfigReloader(coordinator)
        coordinator.evidence = EvidencePaths(data_dir)
        coordinator.accounts = accounts
        metrics.register(CoordinatorCollector(coordinator))
        coordinator.health = HealthMonitor(
            config.endpoints.health_check_config,
            exchange_probes(runners.values(), public),
            clock,
            on_failure=safety.board.record_transient_failure,
            failovers=coordinator.endpoint_failovers(runners.values()),
        )
        coordinator.health.start()
        # After the accounts exist: the venue cancels a live account's orders by itself if
        # the heartbeat stops (api-endpoints.json dead_mans_switch; coordinator/safety).
        coordinator.dead_mans_switch = DeadMansSwitch(
            config.endpoints,
            runners.values(),
            clock,
            on_failure=safety.board.record_transient_failure,
        )
        coordinator.dead_mans_switch.start()
        # A venue's orders are resolved in the background, so a slow or dead exchange does not
        # keep the control plane (and the kill switch) from answering; each such bot refuses to
        # start until its orders are resolved.
        coordinator._resolving = asyncio.create_task(
            coordinator._resolve_left_live(), name="resolve-left-live"
        )
        if backup_dir is not None:  # scheduled and on-demand backups of config and journal
            journal_source = store.path if database is None else PostgresDatabase(database)
            coordinator.backups = BackupService(
                config.recovery.backups, config.source_dir, backup_dir, journal_source, clock,
                journal,
            )
            await coordinator.backups.start()
        coordinator._start_reconcile_schedule()
        notifier, notifications_off = notifier_from_config(
            config.alerts.notifications, "bot-coordinator", clock
        )
        coordinator.alerts = AlertService(
            coordinator, config.alerts, window, data_dir, metrics, notifier, notifications_off
        )
        await coordinator.alerts.start()
        safety.start_watch(lambda: supervisor.runners.values(), coordinator.on_trigger)
        coordinator.refusal_audit = RefusalAudit(
            lambda: supervisor.runners.values(), store, clock
        )
        coordinator.refusal_audit.start()
        # Everything built so far (ccxt's exchange classes alone are ~85 MiB of objects) lives
        # as long as the process: move it out of the collector's reach, or each full collection
        # walks it all and stalls the loop for 50-70 ms (docs/benchmarks.md).
        gc.freeze()
        await journal.audit(
            actor="coordinator",
            action="coordinator.start",
            result="ok",
            at=clock(),
            details={
                "version": __version__,
                "bots": list(runners),
                "config": str(config.source_dir),
                "code_version": gate.code.label,
                "config_sha256": {bot: f.sha256 for bot, f in gate.fingerprints.items()},
            },
        )
        # A bot with no approval at all (a fresh data dir, a bot new in bots.json) has its
        # config approved as "(first start)", audited; a changed config is never approved here.
        await gate.bootstrap()
        gate.start_watch()  # config files changed on disk since this start: /status shows them
        return coordinator

    # -- control actions (audited) ---------------------------------------------------------------

    async def start_bot(
        self,
        name: str,
        safe_mode: bool,
        actor: str,
        accept_config_change: bool = False,
        approved_by: str | None = None,
    ) -> dict[str, Any]:
        """Start one bot. Its effective config must be the approved one (the config gate,
        `ConfigNotApproved` 409, counted), or the request accepts the change and names who
        approved it: the approval is recorded and audited before the start."""

        async def start() -> dict[str, Any]:
            approver = check_accept(accept_config_change, approved_by)
            self.supervisor.runner(name)  # an unknown bot is a 404 before anything else
            await self.config_gate.clear_to_start(name, actor, approver, "accept_config_change")
            return self.bot_status(await self.supervisor.start(name, safe_mode))

        details: dict[str, Any] = {"safe_mode": safe_mode}
        if accept_config_change or approved_by is not None:
            details.update(accept_config_change=accept_config_change, approved_by=approved_by)
        result: dict[str, Any] = await self._audited(actor, "bot.start", name, start, details)
        return result

    async def stop_bot(self, name: str, actor: str, reason: str) -> dict[str, Any]:
        async def stop() -> dict[str, Any]:
            errors = await self.supervisor.stop(name, reason)
            return {**self.bot_status(self.supervisor.runner(name)), "cancel_errors": errors}

        result: dict[str, Any] = await self._audited(
            actor, "bot.stop", name, stop, {"reason": reason}
        )
        return result

    async def start_sequential(
        self, actor: str, accept_config_change: bool = False, approved_by: str | None = None
    ) -> dict[str, Any]:
        """Start the stopped bots in config order. A bot whose effective config is not the
        approved one is refused (under "refused", counted, audited) and the sequence goes on,
        unless the request accepts the changes with an approver (each approval audited)."""

        async def run() -> dict[str, Any]:
            approver = check_accept(accept_config_change, approved_by)
            if self.kill_switch.active:  # nothing may start: refuse the sequence as a whole
                state = self.kill_switch.state
                raise Conflict(f"the kill switch is active ({state.reason}); override it first")

            async def refuse(runner: BotRunner) -> str | None:
                # A halted scope or the throttle keeps this bot stopped, not the others.
                held = runner.start_guard() if runner.start_guard is not None else None
                if held is not None:
                    return held
                return await self.config_gate.sequence_refusal(runner.name, actor, approver)

            return await self.supervisor.start_sequential(refuse)

        details: dict[str, Any] = {}
        if accept_config_change or approved_by is not None:
            details.update(accept_config_change=accept_config_change, approved_by=approved_by)
        result: dict[str, Any] = await self._audited(
            actor,
            "bots.start_sequential",
            None,
            run,
            details,
            outcome_details=lambda outcome: {"outcome": outcome},
        )
        return result

    async def paper_drill(self, name: str, drill: dict[str, Any], actor: str) -> dict[str, Any]:
        """Make a paper bot's exchange reject, fail or partially fill orders (an operator drill)."""

        async def apply() -> dict[str, Any]:
            parts = self.supervisor.runner(name).parts
            adapter = parts.adapter
            if not isinstance(adapter, PaperExchange):
                raise WrongState(f"bot {name!r} does not trade on a paper exchange: no drills")
            if "market_trend_pct_per_tick" in drill:
                if not isinstance(parts.feed, SimulatedFeed):
                    raise WrongState(
                        f"market_trend_pct_per_tick: bot {name!r} is not on the offline feed"
                    )
                parts.feed.set_trend(float(drill["market_trend_pct_per_tick"]))
            if "reject_next" in drill:
                adapter.reject_next(drill["reject_next"])
            if "fail_next" in drill:
                adapter.fail_next(drill["fail_next"])
            if "partial_fill_ratio" in drill:
                adapter.set_partial_fill_ratio(drill["partial_fill_ratio"])
            if "crash_next" in drill:
                adapter.crash_next(drill["crash_next"])
            return {"bot": name, "drill": {k: str(v) for k, v in drill.items()}}

        result: dict[str, Any] = await self._audited(
            actor, "paper.drill", name, apply, {k: str(v) for k, v in drill.items()}
        )
        log.warning("%s: paper drill set by %s: %s", name, actor, result["drill"])
        return result

    async def activate_kill_switch(
        self,
        reason: str,
        actor: str,
        trigger: Trigger = Trigger.MANUAL,
        wait_for_halt: bool = True,
    ) -> dict[str, Any]:
        """Stop everything. Accepted even while shutting down: stopping is always allowed.
        `wait_for_halt` False (the control plane): answer once the gate is closed and durable;
        the halt goes on, and `GET /kill-switch` says when it completed."""
        details = {"reason": reason, "trigger": trigger.value}

        def audit(result: str) -> Any:
            return audit_entry(
                actor=actor,
                action="kill_switch.activate",
                result=result,
                at=self.clock(),
                reason=reason,
                details=details,
            )

        affected = self.affected_bots()
        try:
            result = await self._audited_with_state(
                audit,
                lambda entry: self.kill_switch.activate(
                    reason, actor, trigger, wait_for_halt, audit=entry
                ),
                lambda _: "ok",
            )
        except StoreError as exc:
            if not self.kill_switch.state.active:
                raise
            self.metrics.kill_switch_activations.labels(trigger.value).inc()
            raise NotDurable(
                f"the kill switch is ACTIVE in this process and every bot is being halted, but "
                f"the journal could not record it ({exc}): a restart would not know; fix the "
                f"disk, then check GET /kill-switch"
            ) from exc
        if not result["already_active"]:
            self.metrics.kill_switch_activations.labels(trigger.value).inc()
            if reason.strip() and reason != NO_REASON:
                result["incident"] = await self._open_incident(reason, actor, trigger, affected)
        return result

    def affected_bots(self) -> list[str]:
        """The bots an incident now takes down: those running, starting or crashed (else, when
        none is, every bot): the recovery ends when they are all back."""
        down = (BotState.STOPPED, BotState.STOPPING)
        runners = self.supervisor.runners.values()
        return [r.name for r in runners if r.state not in down] or [r.name for r in runners]

    async def _open_incident(
        self, reason: str, actor: str, trigger: Trigger, bots: list[str]
    ) -> int | None:
        """Open (or note) the incident record of an activation. After the switch is on and
        durable, so it never holds the switch up; a failure is logged, never raised."""
        try:
            record = await asyncio.wait_for(
                self.incidents.on_kill_switch(
                    reason=reason, actor=actor, at=self.kill_switch.state.at or self.clock(),
                    bots=bots, trigger=trigger.value,
                ),
                INCIDENT_WRITE_TIMEOUT_SECONDS,
            )  # fmt: skip
        except Exception:
            log.exception("the kill switch is active, but its incident record was not written")
            return None
        incident_id: int = record["id"]
        log.warning("incident #%d records this activation: bot-coordinator incident show %d",
                    incident_id, incident_id)  # fmt: skip
        return incident_id

    async def _audited_with_state(
        self,
        audit: Callable[[str], Write],
        act: Callable[[Write], Awaitable[dict[str, Any]]],
        outcome_of: Callable[[dict[str, Any]], str],
    ) -> dict[str, Any]:
        """Run a stopping action whose audit entry commits with the state it records (one
        safety write before the answer, not two). When nothing was written (no change, or the
        write failed) the entry is written on its own, saying so."""
        outcome = "cancelled before it finished"
        result: dict[str, Any] | None = None
        try:
            result = await act(audit("ok"))
            outcome = outcome_of(result)
        except Exception as exc:
            outcome = f"error: {exc!r}"
            raise
        finally:
            if result is None or not result["audited"]:
                await self.store.write([audit(outcome)], Priority.SAFETY)
        return result

    async def override_kill_switch(self, reason: str, actor: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._audited(
            actor,
            "kill_switch.override",
            None,
            lambda: self.kill_switch.override(reason, actor),
            {"reason": reason},
        )
        self._forget_failure_streaks()
        return result

    def _forget_failure_streaks(self) -> None:
        """After a lift the operator has looked: old failure streaks must not re-fire at once."""
        for runner in self.supervisor.runners.values():
            runner.parts.book.consecutive_failures = 0

    async def force_override_kill_switch(
        self, reason: str, actor: str, approved_by: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._audited(
            actor,
            "kill_switch.force_override",
            None,
            lambda: self.kill_switch.force_override(reason, actor, approved_by),
            {"reason": reason, "approved_by": approved_by},
        )
        self._forget_failure_streaks()
        return result

    # -- scoped switches, reduce-only, the execution throttle ------------------------------------

    async def on_trigger(self, reason: str, trigger: Trigger) -> Any:
        """An automatic trigger fired: halt everything (the kill switch) or, when
        kill-switch.json's `trigger_actions` says so, make every bot reduce-only."""
        action = self.config.kill_switch.trigger_actions.for_trigger(trigger.value)
        if action == "reducing":
            return await self.set_trading_state(
                GLOBAL_SCOPE, TradingState.REDUCING, reason, "safety-watch", trigger.value
            )
        return await self.activate_kill_switch(reason, "safety-watch", trigger)

    def scope_of(self, exchange: str | None, bot: str | None) -> Scope:
        """The scope a request names (NotFound for an exchange or bot no bot trades on)."""
        return self.scopes.scope(exchange=exchange, bot=bot)

    async def set_trading_state(
        self,
        scope: Scope,
        state: TradingState,
        reason: str,
        actor: str,
        trigger: str = Trigger.MANUAL.value,
    ) -> dict[str, Any]:
        """Halt a scope or make it reduce-only. Like the kill switch: accepted even while
        shutting down, in memory before the first await, durable (with its audit entry, one
        write) before the answer, then enforced on the scope's bots."""
        action = "trading.halt" if state is TradingState.HALTED else "trading.reduce_only"
        details = {"reason": reason, "scope": scope.key, "trigger": trigger}

        def audit(result: str) -> Any:
            return audit_entry(actor=actor, action=action, subject=scope.key, result=result,
                               at=self.clock(), reason=reason, details=details)

        result = await self._audited_with_state(
            audit,
            lambda entry: self.scopes.set(scope, state, reason, actor, trigger, entry),
            lambda done: "ok" if done["changed"] else (
                f"unchanged: {scope.describe()} is {done['switch']['state']} already"
            ),
        )
        if result["changed"]:
            self.metrics.trading_switch_changes.labels(scope.kind, state.value).inc()
        return {**result, **self.trading_controls_status()}

    async def lift_trading_switch(
        self, scope: Scope, reason: str, actor: str, approved_by: str | None = None
    ) -> dict[str, Any]:
        """Lift one scope's switch: override (its cooldown applies) or, with an approver and
        the admin token, force_override."""
        action = "trading.force_override" if approved_by else "trading.override"
        result: dict[str, Any] = await self._audited(
            actor,
            action,
            scope.key,
            lambda: self.scopes.lift(scope, actor, reason, approved_by),
            {"reason": reason, "approved_by": approved_by, "scope": scope.key},
        )
        self._forget_failure_streaks()
        return {**result, **self.trading_controls_status()}

    async def enable_bot(
        self, name: str, actor: str, approved_by: str, reason: str
    ) -> dict[str, Any]:
        """Lift the execution throttle's disablement of a bot (audited). It stays stopped."""
        runner = self.supervisor.runner(name)

        async def enable() -> dict[str, Any]:
            result = await self.throttle.enable(name, actor, approved_by, reason)
            return {**result, "state": runner.state.value}

        result: dict[str, Any] = await self._audited(
            actor, "bot.enable", name, enable, {"approved_by": approved_by, "reason": reason}
        )
        return result

    async def _enforce_scope(self, scope: Scope, state: TradingState, reason: str) -> None:
        """A scope was halted (its bots are halted) or made reduce-only (its bots' resting
        orders that would grow their position are cancelled; the bots go on)."""
        runners = [r for r in self.supervisor.runners.values() if self.scopes.covers(scope, r.name)]
        why = f"{scope.describe()} {state.value}: {reason}"
        if state is TradingState.HALTED:
            await self._halt(runners, why)
            return
        await asyncio.gather(*(self._cancel_growing(r, why) for r in runners))

    async def _cancel_growing(self, runner: BotRunner, reason: str) -> None:
        gateway = runner.gateway()
        if gateway.read_only:
            return
        for client_order_id in orders_that_grow(runner.parts.book):
            try:
                await gateway.cancel(client_order_id, f"reduce-only: {reason}")
            except Exception as exc:  # one order's failure must not keep the rest
                log.error("%s: reduce-only could not cancel order %d: %r",
                          runner.name, client_order_id, exc)

    def _halt_disabled_bot(self, name: str, reason: str) -> None:
        """The throttle disabled a bot (its gate is closed already): halt it."""
        runner = self.supervisor.runners.get(name)
        if runner is None:
            return
        self.metrics.execution_throttle_trips.labels(name).inc()
        task = asyncio.ensure_future(self._halt([runner], f"disabled: {reason}"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def trading_controls_status(self) -> dict[str, Any]:
        return {
            "trading_controls": {
                **self.scopes.status(),
                "execution_throttle": self.throttle.summary(),
                "trigger_actions": self.config.kill_switch.trigger_actions.model_dump(),
            }
        }

    def bot_trading_state(self, runner: BotRunner) -> dict[str, Any]:
        """A bot's effective trading state and why: the kill switch wins over every scope."""
        if self.kill_switch.active:
            state = self.kill_switch.state
            since = iso(state.at) if state.at else "an unknown time"
            return {"state": TradingState.HALTED.value, "scope": "kill_switch",
                    "why": f"halted by the kill switch since {since}: {state.reason}",
                    "disabled": runner.name in self.throttle.disabled}
        effective = self.scopes.effective(runner.name)
        disabled = self.throttle.refusal(runner.name)
        if disabled is not None and effective.state is not TradingState.HALTED:
            return {"state": TradingState.HALTED.value, "scope": f"bot:{runner.name}",
                    "why": disabled, "disabled": True}
        return {
            "state": effective.state.value,
            "scope": effective.switch.scope.key if effective.switch else None,
            "why": effective.why(),
            "disabled": disabled is not None,
        }

    async def reset_breaker(
        self, name: str, actor: str, approved_by: str, reason: str
    ) -> dict[str, Any]:
        async def reset() -> dict[str, Any]:
            return self.safety.reset_breaker(name, f"{actor} (approved by {approved_by})", reason)

        result: dict[str, Any] = await self._audited(
            actor,
            "breaker.reset",
            name,
            reset,
            {"approved_by": approved_by, "reason": reason},
        )
        await self.safety.flush()  # the reset is on disk before the answer
        return result

    def endpoint_failovers(self, runners: Iterable[BotRunner]) -> dict[str, EndpointFailover]:
        """Failover for each exchange a live account trades on that api-endpoints.json lists."""
        failovers: dict[str, EndpointFailover] = {}
        for runner in runners:
            adapter, exchange = runner.parts.adapter, runner.parts.config.exchange
            endpoints = self.config.endpoints.exchanges.get(exchange)
            if exchange in failovers or endpoints is None or not isinstance(adapter, CcxtExchange):
                continue
            primary_client = self.public.get(exchange)  # keyless: only probes the primary

            async def probe_primary(client: Any = primary_client, exchange: str = exchange) -> Any:
                # The primary as configured now: a config reload may have moved it.
                point_client_at(client, failovers[exchange].endpoints.primary)
                return await client.fetch_status()

            failovers[exchange] = EndpointFailover(
                exchange,
                adapter.client,
                endpoints,
                self.config.endpoints.health_check_config.failure_threshold,
                probe_primary,
                self.clock,
                on_switch=self._audit_switch,
            )
        return failovers

    def _audit_switch(self, exchange: str, to: str, why: str) -> None:
        task = asyncio.ensure_future(
            self.journal.audit(
                actor="health-check",
                action=f"endpoint.{to}",
                subject=exchange,
                result="ok",
                reason=why,
                at=self.clock(),
            )
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- orders left in flight by the previous run -----------------------------------------------

    async def _resolve_left_live(self) -> None:
        waiting = [r for r in self.supervisor.runners.values() if r.unresolved_orders]
        results = await asyncio.gather(
            *(_resolve_orders_left_live(r) for r in waiting), return_exceptions=True
        )
        for runner, result in zip(waiting, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("%s: resolving its orders failed: %r", runner.name, result)

    async def orders_resolved(self) -> None:
        """Wait for the start-up resolution of orders left in flight (tests, the CLI)."""
        if self._resolving is not None:
            await asyncio.shield(self._resolving)

    # -- reconciliation --------------------------------------------------------------------------

    async def reconcile(
        self, bot: str | None, apply: bool, actor: str, trigger: str = "request"
    ) -> dict[str, Any]:
        """Compare the journal with the exchanges (and, with apply, correct the journal)."""

        async def run() -> dict[str, Any]:
            return (await self.reconciler.run(bot, apply, actor, trigger)).as_dict()

        result: dict[str, Any] = await self._audited(
            actor,
            "reconcile.apply" if apply else "reconcile.report",
            bot or "all bots",
            run,
            {"bot": bot, "apply": apply, "trigger": trigger},
            outcome_details=lambda report: {"run_id": report["run_id"], **report["summary"]},
        )
        return result

    async def scheduled_reconciliation(self) -> dict[str, Any]:
        """What the schedule runs: orders a previous run left unresolved are asked about again
        (a bot kept stopped by them may then be started), then every bot is reconciled."""
        for runner in self.supervisor.runners.values():
            if runner.unresolved_orders and runner.state in (BotState.STOPPED, BotState.CRASHED):
                await runner.resolve_orders_left_live("resolved by a scheduled reconciliation")
                if not runner.unresolved_orders:
                    runner.last_error = None
                    log.info("%s: orders from the previous run are resolved", runner.name)
        settings = self.config.recovery.reconciliation
        return await self.reconcile(None, settings.apply_on_schedule, "schedule", "schedule")

    def restart_reconcile_schedule(self) -> None:
        """A config reload moved the interval: the schedule starts again from now."""
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
            self._reconcile_task = None
        self.next_reconciliation_at = None
        self._start_reconcile_schedule()

    def forget_status_documents(self) -> None:
        """Every bot's status document is built again at the next /status (a config reload)."""
        self._bot_documents.clear()

    def _start_reconcile_schedule(self) -> None:
        minutes = self.config.recovery.reconciliation.interval_minutes
        if minutes > 0:
            self._reconcile_task = asyncio.create_task(
                self._reconcile_every(minutes * 60), name="reconcile-schedule"
            )

    async def _reconcile_every(self, seconds: float) -> None:
        while True:
            self.next_reconciliation_at = self.clock() + timedelta(seconds=seconds)
            await asyncio.sleep(seconds)
            try:
                await self.scheduled_reconciliation()
            except CoordinatorError as exc:
                log.warning("scheduled reconciliation refused: %s", exc.message)
            except Exception:
                # The schedule must outlive one bad run; the error is in the log and the audit.
                log.exception("scheduled reconciliation failed")

    def _reconciliation_status(self) -> dict[str, Any]:
        last = self.reconciler.last
        settings = self.config.recovery.reconciliation
        status: dict[str, Any] = {
            "interval_minutes": settings.interval_minutes,
            "apply_on_schedule": settings.apply_on_schedule,
            "next_at": iso(self.next_reconciliation_at) if self.next_reconciliation_at else None,
            "last": None,
        }
        if last is not None:
            status["last"] = {
                "run_id": last.run_id,
                "at": iso(last.finished_at),
                "trigger": last.trigger,
                "applied": last.applied,
                "clean": last.clean,
                "differences": last.differences,
                "corrections": last.corrections,
                "remaining": last.remaining,
                "errors": last.errors,
            }
        return status

    async def halt_all(self, reason: str) -> None:
        """Halt every bot at once: ticks cancelled, then every open order cancelled. Waits up to
        HALT_WAIT_SECONDS; cancellations still running then go on in the background."""
        await self._halt(
            list(self.supervisor.runners.values()), reason, self.kill_switch.note_halt_completed
        )

    async def _halt(
        self,
        runners: list[BotRunner],
        reason: str,
        completed: Callable[[], None] | None = None,
    ) -> None:
        halts = [
            asyncio.create_task(runner.halt(reason), name=f"halt:{runner.name}")
            for runner in runners
        ]
        if not halts:
            if completed is not None:
                completed()
            return
        everything = asyncio.gather(*halts, return_exceptions=True)
        if completed is not None:
            everything.add_done_callback(lambda _: completed())
        _, pending = await asyncio.wait(halts, timeout=HALT_WAIT_SECONDS)
        for task in halts:
            task.add_done_callback(_log_halt_failure)
        for task in pending:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            log.warning(
                "%s still running after %.0fs; it goes on", task.get_name(), HALT_WAIT_SECONDS
            )

    def _halt_progress(self) -> dict[str, int]:
        runners = self.supervisor.runners.values()
        return {
            "bots_not_stopped": sum(r.state is not BotState.STOPPED for r in runners),
            "orders_open": sum(len(r.parts.book.live_orders) for r in runners),
        }

    async def _audited(
        self,
        actor: str,
        action: str,
        subject: str | None,
        operation: Callable[[], Awaitable[Any]],
        details: dict[str, Any],
        always: bool = False,
        outcome_details: Callable[[Any], dict[str, Any]] | None = None,
    ) -> Any:
        """Run a control action and audit it, refused or not, before the answer returns.
        `always`: taken even while shutting down (the kill switch). `outcome_details`: what of
        a successful outcome goes into the audit entry's details."""
        result = "cancelled before it finished"
        try:
            if not self.accepting and not always:
                raise ShuttingDown("the coordinator is shutting down; no new actions are taken")
            outcome = await operation()
        except CoordinatorError as exc:
            result = f"refused: {exc.message}"
            raise
        except Exception as exc:
            result = f"error: {exc!r}"
            raise
        else:
            result = "ok"
            if outcome_details is not None:
                details = {**details, **outcome_details(outcome)}
        finally:
            await self.journal.audit(
                actor=actor,
                action=action,
                subject=subject,
                result=result,
                at=self.clock(),
                reason=details.get("reason"),
                details=details,
            )
        return outcome

    # -- status ----------------------------------------------------------------------------------

    def uptime_seconds(self) -> float:
        return round(time.monotonic() - self._started_monotonic, 1)

    def status(self, bot: str | None = None) -> dict[str, Any]:
        """Everything an operator assesses; with `bot`, the same document holding that one bot
        (UnknownBot when there is none)."""
        return self._status(self._runners(bot), lambda rs: [self.bot_status(r) for r in rs])

    def status_json(self, bot: str | None = None) -> bytes:
        """`status()` as JSON, each bot's part serialised once per change of its document."""

        def bots(runners: list[BotRunner]) -> orjson.Fragment:
            parts = b",".join(self.bot_status_json(r) for r in runners)
            return orjson.Fragment(b"[" + parts + b"]")

        document = self._status(self._runners(bot), bots)
        return orjson.dumps(document, default=str, option=orjson.OPT_NON_STR_KEYS)

    def _runners(self, bot: str | None) -> list[BotRunner]:
        if bot is not None:
            return [self.supervisor.runner(bot)]
        return list(self.supervisor.runners.values())

    def _status(
        self, runners: list[BotRunner], bots: Callable[[list[BotRunner]], Any]
    ) -> dict[str, Any]:
        return {
            "kill_switch_active": self.kill_switch.active,
            "kill_switch": self.kill_switch.status(),
            **self.trading_controls_status(),
            "bots": bots(runners),
            "circuit_breaker": self.safety.status(),
            "exchanges": self.health.status() if self.health is not None else {},
            "dead_mans_switch": (
                self.dead_mans_switch.status() if self.dead_mans_switch is not None else {}
            ),
            "backups": self.backups.status() if self.backups is not None else None,
            "reconciliation": self._reconciliation_status(),
            "config": self.config_gate.status(),
            "coordinator": {
                "version": __version__,
                "started_at": iso(self.started_at),
                "uptime_seconds": self.uptime_seconds(),
                "accepting_actions": self.accepting,
                "config_dir": str(self.config.source_dir),
                # On PostgreSQL: "leader", this node's name and term (coordinator/leadership.py)
                "role": self.role,
            },
            "store": {
                "engine": self.store.engine,
                "path": str(self.store.path),
                "backlog": self.store.backlog,
                **self.store.stats.as_dict(),
            },
        }

    def status_summary(self) -> dict[str, Any]:
        """A dashboard's view: the safety state, how many bots are in each state, and a few
        figures per bot (the full documents are `status()`)."""
        bots = [self.bot_status(r) for r in self.supervisor.runners.values()]
        states: dict[str, int] = {}
        for document in bots:
            states[document["state"]] = states.get(document["state"], 0) + 1
        return {
            "kill_switch_active": self.kill_switch.active,
            "circuit_breaker_tripped": self.safety.status()["global"]["state"] != "closed",
            "accepting_actions": self.accepting,
            "bot_states": states,
            "bots": [{key: d[key] for key in SUMMARY_FIELDS} for d in bots],
        }

    def bot_status(self, runner: BotRunner) -> dict[str, Any]:
        """One bot's status document. Shared and cached: do not change it.

        Rebuilt only when something it shows moved (the book's revision, the runner's fields,
        the tick counters), so /status at 100 bots costs a key comparison per bot rather than
        100 documents built per request (docs/benchmarks.md)."""
        book, stats, config = runner.parts.book, runner.stats, runner.parts.config
        key = (
            book.revision,
            runner.state,
            runner.safe_mode,
            stats.ticks,
            stats.skipped_ticks,
            stats.last_tick_at,
            runner.restarts,
            runner.consecutive_crashes,
            runner.next_restart_at,
            runner.last_error,
            runner.unresolved_orders,
            self.kill_switch.active,
            self.scopes.revision,
            self.throttle.revision,
            self.config_gate.revision(runner.name),
        )
        cached = self._bot_documents.get(runner.name)
        if (
            cached is not None
            and cached.book is book
            and cached.stats is stats
            and cached.config is config
            and cached.key == key
        ):
            return cached.document
        document = self._build_bot_status(runner)
        self._bot_documents[runner.name] = _BotDocument(book, stats, config, key, document)
        return document

    def bot_status_json(self, runner: BotRunner) -> bytes:
        """`bot_status` as JSON, serialised once per change of the document."""
        document = self.bot_status(runner)
        cached = self._bot_documents[runner.name]
        if cached.json is None:
            cached.json = orjson.dumps(document, default=str, option=orjson.OPT_NON_STR_KEYS)
        return cached.json

    def _build_bot_status(self, runner: BotRunner) -> dict[str, Any]:
        book = runner.parts.book
        config = runner.parts.config
        last_price = book.last_price
        position = book.position
        unrealized = position.unrealized_pnl(last_price) if last_price is not None else Decimal(0)
        return {
            "name": runner.name,
            "exchange": config.exchange,
            "symbol": config.symbol,
            "mode": config.mode.value,
            "safe_mode": runner.safe_mode,
            "market_data": config.market_data.value,
            "strategy": config.strategy.name,
            "state": runner.state.value,
            "trading": self.bot_trading_state(runner),
            "orders": book.orders_count,
            "fills": book.fills_count,
            "open_orders": len(book.live_orders),
            "position": {
                "base": float(position.base),
                "avg_entry_price": float(position.avg_entry_price),
                "notional": float(position.base * last_price) if last_price is not None else None,
            },
            "pnl": {
                "currency": config.quote_asset,
                "realized": float(position.realized_pnl),
                "unrealized": float(unrealized),
                "fees": float(position.fees_paid),
                "total": float(position.realized_pnl + unrealized - position.fees_paid),
            },
            "balances": {asset: float(total) for asset, total in sorted(book.balances.items())},
            "last_price": float(last_price) if last_price is not None else None,
            "last_tick": iso(runner.stats.last_tick_at) if runner.stats.last_tick_at else None,
            "ticks": runner.stats.ticks,
            "skipped_ticks": runner.stats.skipped_ticks,
            "restarts": runner.restarts,
            "consecutive_crashes": runner.consecutive_crashes,
            "next_restart_at": iso(runner.next_restart_at) if runner.next_restart_at else None,
            "error": redact(runner.last_error) if runner.last_error else None,
            "unresolved_orders": list(runner.unresolved_orders),
            "refusals": dict(book.refusals),
            "last_refusal": redact(book.last_refusal) if book.last_refusal else None,
            "order_errors": dict(book.errors),
            "config": self.config_gate.status_entry(runner.name),  # the config gate
            "partial_fills": dict(book.partial_fill_outcomes),
            # When the last price reached us (the stale market data guard measures from it),
            # and the account self-trade prevention groups the bot by, with who shares it.
            "last_price_at": iso(book.last_price_at) if book.last_price_at else None,
            "account": {
                "name": self.safety.self_trade.account_of(runner.name),
                "self_trade_siblings": self.safety.self_trade.siblings(runner.name),
            },
        }

    # -- shutdown --------------------------------------------------------------------------------

    async def close(
        self, reason: str = "coordinator shutdown", grace_seconds: float | None = None
    ) -> None:
        """Stop taking actions, stop every bot (cancelling open orders), then close everything."""
        self.accepting = False
        for task in (self._resolving, self._reconcile_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.safety.stop_watch()
        await self.scopes.settled()
        await self.config_gate.stop_watch()  # before the store closes: a change is audited
        if self.alerts is not None:  # before the store closes: transitions are audited
            await self.alerts.stop()
        if self.health is not None:
            await self.health.stop()
        errors = await self.supervisor.stop_all(reason, grace_seconds)
        if self.alerts is not None:
            await self.alerts.close_notifier()
        if self.backups is not None:  # before the store closes: a backup audits into it
            await self.backups.stop()
        if self._background:
            await asyncio.wait(self._background, timeout=grace_seconds or 1.0)
        # Every bot is stopped and its orders cancelled: stop beating, and disarm the venues'
        # timers where nothing of ours is left live (what is left, the venue cancels).
        switches = await self.dead_mans_switch.close() if self.dead_mans_switch else {}
        await self.safety.flush()
        if self.refusal_audit is not None:
            await self.refusal_audit.stop()
        for runner in self.supervisor.runners.values():
            await _close_quietly(runner.name, runner.parts.feed.close())
            await _close_quietly(runner.name, runner.parts.adapter.close())
        await self.public.close()
        if self.accounts is not None:
            await self.accounts.close()
        await self.journal.audit(
            actor="coordinator",
            action="coordinator.stop",
            result="ok" if not errors else "errors",
            at=self.clock(),
            reason=reason,
            details={"cancel_errors": errors, "dead_mans_switch": switches},
        )
        await self.store.close()


HALT_WAIT_SECONDS = 2.0


def exchange_probes(runners: Iterable[BotRunner], public: PublicExchanges) -> dict[str, Probe]:
    """One status probe per exchange a bot reaches over the network: through the trading
    account's adapter when there is one, else through the public market-data client."""
    probes: dict[str, Probe] = {}
    for runner in runners:
        config = runner.parts.config
        adapter = runner.parts.adapter
        if config.exchange in probes:
            continue
        if isinstance(adapter, CcxtExchange):
            probes[config.exchange] = _venue_probe(adapter)
        elif config.market_data is MarketDataSource.EXCHANGE:
            probes[config.exchange] = public.get(config.exchange).fetch_status
    return probes


def _venue_probe(adapter: CcxtExchange) -> Probe:
    async def probe() -> None:
        status = await adapter.fetch_status()
        if not status.ok:
            raise TransientExchangeError(f"{adapter.name} reports status {status.status!r}")

    return probe


def _start_refusal(safety: SafetyLayer, bot: str) -> Callable[[], str | None]:
    """Asked before every start and crash restart of `bot`: the kill switch, a halted scope
    covering it, or the execution throttle's disablement (none of them lifted by a restart)."""
    kill_switch, scopes, throttle = safety.kill_switch, safety.scopes, safety.throttle

    def guard() -> str | None:
        if kill_switch.active:
            return f"the kill switch is active ({kill_switch.state.reason}); override it first"
        effective = scopes.effective(bot)
        if effective.state is TradingState.HALTED:
            return f"trading is {effective.why()}; override that switch first"
        return throttle.refusal(bot)

    return guard


def _count_execution(throttle: ExecutionThrottle, bot: str) -> Callable[[JournalOrder], None]:
    def executed(order: JournalOrder) -> None:
        throttle.executed(bot, order.symbol, order.side, order.client_order_id)

    return executed


def _log_halt_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed: %r", task.get_name(), task.exception(), exc_info=task.exception())


async def _close_quietly(name: str, closing: Any) -> None:
    try:
        await asyncio.wait_for(closing, timeout=1.0)
    except Exception as exc:  # closing is best effort at shutdown; say so
        log.warning("%s: close failed: %r", name, exc)


async def _note_unclean_end(
    journal: SqliteJournal, name: str, row: dict[str, Any], at: datetime
) -> bool:
    """True (and audited) when the previous process left the bot other than stopped."""
    state = row.get("state")
    if state and state != BotState.STOPPED.value:
        log.warning(
            "%s: was %s when the previous coordinator process ended; it stays stopped "
            "until an operator starts it",
            name,
            state,
        )
        await journal.audit(
            actor="coordinator",
            action="bot.recovered_after_unclean_end",
            subject=name,
            result="stopped",
            at=at,
            details={"was": state},
        )
        return True
    return False


async def _resolve_orders_left_live(runner: BotRunner) -> None:
    """Orders the journal holds live from a previous process are settled with the exchange
    before the bot may start. A paper exchange does not survive its process, so its orders are
    found gone: a pending one is marked failed, an open one cancelled. An order the exchange
    cannot be asked about keeps the bot stopped (`BotRunner.start` asks again)."""
    live = len(runner.parts.book.live_orders)
    if not live:
        return
    log.warning(
        "%s: %d order(s) were live when the previous process ended; resolving them with %s",
        runner.name,
        live,
        runner.parts.adapter.name,
    )
    await runner.resolve_orders_left_live("resolved at start-up")


def _decode_row(row: dict[str, Any]) -> dict[str, Any]:
    decoded = dict(row)
    try:
        decoded["strategy_state"] = json.loads(row.get("strategy_state") or "{}")
    except ValueError:
        log.warning("%s: persisted strategy state is not JSON; starting fresh", row.get("name"))
        decoded["strategy_state"] = {}
    return decoded
