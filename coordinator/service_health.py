"""`GET /health`: is a person needed? In the shape of runbook 003 "Service Health Monitoring".

    {"status": "healthy" | "degraded" | "unhealthy",
     "services": {"database": {...}, "exchanges": {id: {...}}, "bots": {name: {...}},
                  "circuit_breakers": {...}, "backups": {...}, "kill_switch": {...},
                  "disk": {...}, "coordinator": {...}},
     "checked_at": ...}

`unhealthy` (HTTP 503, so `curl -f` fails) means a person must act: the database does not
answer, the kill switch is active, a bot is in a crash loop or has stopped ticking, an exchange
is down, the global breaker is latched, the disk is all but full, the coordinator is shutting
down. `degraded` (200) is worth a look: a breaker open, an exchange failing or on its backup
endpoint, a bot waiting out a restart or for its orders from the previous run to be resolved,
backups late or failing. A stopped bot is healthy: bots come back stopped after a restart on
purpose.

It reads memory plus one real store round trip (`SqliteStore.ping`, shared by concurrent
polls), so it is cheap at one poll a second with a hundred bots (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from coordinator.alerts.facts import BotFacts, Facts, gather
from coordinator.alerts.rules import backup_rules, bot_heartbeat_stale
from coordinator.config.alerting import AlertRules
from coordinator.lifecycle import BotState
from coordinator.store.journal import iso
from coordinator.store.sqlite import StoreError

if TYPE_CHECKING:
    from coordinator.runtime import Coordinator

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
SLOW_STORE_MS = 500.0
STORE_BACKLOG_DEGRADED = 1000
EXCHANGE_STATUS = {"up": HEALTHY, "degraded": DEGRADED, "down": UNHEALTHY, "unknown": HEALTHY}


class HealthCheck:
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self._ping: asyncio.Future[float] | None = None

    async def report(self) -> dict[str, Any]:
        c = self.coordinator
        facts = c.alerts.facts() if c.alerts is not None else gather(c, None)
        rules = c.config.alerts.rules
        services: dict[str, Any] = {
            "database": await self._database(),
            "exchanges": _exchanges(facts),
            "bots": _bots(facts, rules),
            "circuit_breakers": _breakers(facts),
            "backups": _backups(facts, rules),
            "kill_switch": _kill_switch(facts),
            "disk": _disk(facts, rules),
            "coordinator": {
                "status": HEALTHY if facts.accepting else UNHEALTHY,
                "accepting_actions": facts.accepting,
                "uptime_seconds": facts.uptime_seconds,
            },
        }
        return {"status": _worst(services), "services": services, "checked_at": iso(facts.now)}

    async def _database(self) -> dict[str, Any]:
        store = self.coordinator.store
        base: dict[str, Any] = {
            "backlog": store.backlog,
            "last_commit_ms": round(store.last_commit_seconds * 1000, 2)
            if store.last_commit_seconds is not None
            else None,
        }
        if store.broken is not None:
            return {**base, "status": UNHEALTHY, "latency_ms": None,
                    "error": f"the writer failed: {store.broken!r}"}
        try:
            seconds = await self._shared_ping()
        except StoreError as exc:
            return {**base, "status": UNHEALTHY, "latency_ms": None, "error": str(exc)}
        latency = round(seconds * 1000, 2)
        slow = latency > SLOW_STORE_MS or store.backlog > STORE_BACKLOG_DEGRADED
        return {**base, "status": DEGRADED if slow else HEALTHY, "latency_ms": latency}

    async def _shared_ping(self) -> float:
        """One round trip for every poll that arrives while it is under way."""
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(self.coordinator.store.ping())
        return await asyncio.shield(self._ping)


def _worst(services: dict[str, Any]) -> str:
    statuses: list[str] = []
    for service in services.values():
        if "status" in service:
            statuses.append(service["status"])
        else:  # a group: exchanges, bots
            statuses.extend(item["status"] for item in service.values())
    known = [s for s in statuses if s in _RANK]
    return max(known, key=_RANK.__getitem__, default=HEALTHY)


def _exchanges(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for exchange in facts.exchanges:
        status = EXCHANGE_STATUS.get(exchange.state, DEGRADED)
        if exchange.endpoint == "backup" and status == HEALTHY:
            status = DEGRADED
        out[exchange.name] = {
            "status": status,
            "state": exchange.state,
            "latency_ms": exchange.latency_ms,
            "endpoint": exchange.endpoint,
            "last_error": exchange.last_error,
        }
    return out


def _bots(facts: Facts, rules: AlertRules) -> dict[str, Any]:
    stale = {s.labels["bot"] for s in bot_heartbeat_stale(facts, rules) if s.breached}
    return {bot.name: _bot(bot, bot.name in stale) for bot in facts.bots}


def _bot(bot: BotFacts, stale: bool) -> dict[str, Any]:
    if bot.crash_looped or stale:
        status = UNHEALTHY
    elif bot.state is BotState.CRASHED or bot.unresolved_orders:
        status = DEGRADED  # waiting out its restart backoff, or its orders being resolved
    else:
        status = HEALTHY
    age = bot.heartbeat_age_seconds
    return {
        "status": status,
        "state": bot.state.value,
        "mode": bot.mode,
        "heartbeat_age_s": round(age, 1) if age is not None else None,
        "stale": stale,
        "unresolved_orders": bot.unresolved_orders,
        "error": bot.last_error if status != HEALTHY else None,
    }


def _breakers(facts: Facts) -> dict[str, Any]:
    opened = {b.name: b.state for b in facts.breakers if b.state != "closed"}
    latched_global = any(b.name == "global" and b.latched for b in facts.breakers)
    status = UNHEALTHY if latched_global else DEGRADED if opened else HEALTHY
    return {"status": status, "not_closed": opened}


def _backups(facts: Facts, rules: AlertRules) -> dict[str, Any]:
    status = facts.backups
    if status is None:
        return {"status": HEALTHY, "enabled": False}
    breached = [s.name for s in backup_rules(facts, rules) if s.breached]
    return {
        "status": DEGRADED if breached else HEALTHY,
        "enabled": True,
        "problems": breached,
        "last_ok_at": status.get("last_ok_at"),
        "last_ok_age_seconds": status.get("last_ok_age_seconds"),
        "result": status.get("result"),
        "error": status.get("error"),
    }


def _kill_switch(facts: Facts) -> dict[str, Any]:
    ks = facts.kill_switch
    active = bool(ks.get("active"))
    return {
        "status": UNHEALTHY if active else HEALTHY,
        "active": active,
        "reason": ks.get("reason"),
        "by": ks.get("by"),
        "since": ks.get("at") if active else None,
        "trigger": ks.get("trigger") if active else None,
        "cooldown_seconds_left": ks.get("cooldown_seconds_left"),
    }


def _disk(facts: Facts, rules: AlertRules) -> dict[str, Any]:
    free = facts.disk_free_pct
    rule = rules.disk_space_low
    if free is None:
        return {"status": HEALTHY, "free_pct": None}
    status = (
        UNHEALTHY if free < rule.critical_free_pct
        else DEGRADED if free < rule.warning_free_pct
        else HEALTHY
    )
    return {"status": status, "free_pct": round(free, 2)}
