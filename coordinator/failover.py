"""Endpoint failover: an exchange's primary API root, and a backup (api-endpoints.json).

The health monitor reports each probe of the endpoint in use. After `failure_threshold`
failures in a row on the primary, the account's client is pointed at the backup (logged at ERROR
and audited); from then on the primary is probed on its own at every health round, and the
client goes back to it as soon as it answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from bots.exchanges.ccxt_adapter import point_client_at
from coordinator.config.models import ExchangeEndpoints
from coordinator.store.journal import iso

log = logging.getLogger(__name__)

Switched = Callable[[str, str, str], None]  # (exchange, now using "primary"/"backup", why)


class EndpointFailover:
    def __init__(
        self,
        exchange: str,
        client: Any,
        endpoints: ExchangeEndpoints,
        failure_threshold: int,
        probe_primary: Callable[[], Awaitable[Any]],
        clock: Callable[[], datetime],
        on_switch: Switched | None = None,
    ) -> None:
        self.exchange = exchange
        self.client = client
        self.endpoints = endpoints
        self.failure_threshold = failure_threshold
        self._probe_primary = probe_primary
        self.clock = clock
        self.on_switch = on_switch
        self.active = "primary"
        self.failures = 0
        self.switched_at: datetime | None = None
        self.reason: str | None = None
        point_client_at(client, endpoints.primary)

    def observe(self, ok: bool, detail: str = "") -> None:
        """One health probe of the endpoint in use."""
        if ok:
            self.failures = 0
            return
        self.failures += 1
        if (
            self.active == "primary"
            and self.endpoints.backup is not None
            and self.failures >= self.failure_threshold
        ):
            self._switch("backup", f"{self.failures} failed probes of the primary ({detail})")

    async def check_primary(self) -> None:
        """While on the backup: go back as soon as the primary answers."""
        if self.active != "backup":
            return
        try:
            await self._probe_primary()
        except Exception as exc:  # still down: stay on the backup
            log.info("%s primary still down: %s", self.exchange, exc)
            return
        self._switch("primary", "the primary answers again")

    def _switch(self, to: str, why: str) -> None:
        url = self.endpoints.primary if to == "primary" else self.endpoints.backup
        assert url is not None
        point_client_at(self.client, url)
        self.active, self.failures = to, 0
        self.switched_at, self.reason = self.clock(), why
        level = logging.ERROR if to == "backup" else logging.WARNING
        log.log(level, "%s now uses its %s endpoint %s: %s", self.exchange, to, url, why)
        if self.on_switch is not None:
            self.on_switch(self.exchange, to, why)

    def retarget(self, endpoints: ExchangeEndpoints) -> None:
        """New URLs from a config reload: the client points at the new URL of the endpoint in
        use at once; on the backup with the backup removed, back to the primary."""
        if endpoints == self.endpoints:
            return
        self.endpoints = endpoints
        if self.active == "backup" and endpoints.backup is None:
            self._switch("primary", "the backup endpoint was removed by a config reload")
            return
        url = endpoints.primary if self.active == "primary" else endpoints.backup
        assert url is not None
        point_client_at(self.client, url)
        log.warning("%s now uses %s (%s endpoint, config reload)", self.exchange, url, self.active)

    def status(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "url": self.endpoints.primary if self.active == "primary" else self.endpoints.backup,
            "primary": self.endpoints.primary,
            "backup": self.endpoints.backup,
            "switched_at": iso(self.switched_at) if self.switched_at else None,
            "reason": self.reason,
        }
