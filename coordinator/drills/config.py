"""A drill's configuration: the embedded default (the README's two paper bots), made fast so a
drill takes seconds, not the hours a real incident gives an operator.

Both bots buy with DCA every 200 ms on ticks of 50 ms (the shipped grid bot rests until the
price moves, and a fill is what proves the order path works again). Restarts back off 50-400
ms and three crashes in a row are a crash loop. Alerts are evaluated every 0.2 s, fire after
0.5 s and resolve 1 s after the cause ends. Live-mode scenarios make the kraken bot a live one
on the drill's fake venue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from coordinator.config import CONFIG_FILES, embedded_config_dir

TICK = 0.05
DCA_INTERVAL = 0.2
Edit = Callable[[dict[str, Any]], None]


class Venue(Protocol):
    @property
    def primary_url(self) -> str: ...

    @property
    def backup_url(self) -> str: ...


def drill_documents(venue: Venue | None = None) -> dict[str, Any]:
    """The drill's config documents, keyed by file name."""
    source = embedded_config_dir()
    docs = {n: json.loads((source / n).read_text(encoding="utf-8")) for n in CONFIG_FILES}
    for bot in docs["bots.json"]["bots"]:
        bot["tick_interval_seconds"] = TICK
        bot["strategy"] = {
            "name": "dca", "params": {"quote_amount": 25, "interval_seconds": DCA_INTERVAL},
        }  # fmt: skip
    recovery = docs["recovery-settings.json"]
    recovery["restart"].update(
        initial_backoff_seconds=0.05, max_backoff_seconds=0.4, multiplier=2,
        max_consecutive_crashes=3, healthy_after_seconds=60,
    )  # fmt: skip
    recovery["sequential_start"].update(health_timeout_seconds=30, delay_between_starts_seconds=0)
    recovery["shutdown"]["grace_seconds"] = 2
    recovery["retry"].update(initial_delay_seconds=0.01, max_delay_seconds=0.05)
    recovery["backups"]["interval_minutes"] = 600  # the drills take their backups by hand
    docs["bot-limits.json"]["defaults"]["max_orders_per_minute"] = 600  # 300 a minute each
    docs["kill-switch.json"]["execution_throttle"] = {
        "max_same_side_executions": 100000, "window_seconds": 1,
    }  # fmt: skip
    _fast_alerts(docs["alerts.json"])
    if venue is not None:
        _live_kraken(docs, venue)
    return docs


def _fast_alerts(alerts: dict[str, Any]) -> None:
    alerts["evaluation_interval_seconds"] = 0.2
    for rule in alerts["rules"].values():
        if rule.get("for_seconds"):
            rule["for_seconds"] = 0.5
        if rule.get("resolve_after_seconds"):
            rule["resolve_after_seconds"] = 1
    alerts["rules"]["order_failure_rate"].update(window_minutes=1, min_orders=5)


def _live_kraken(docs: dict[str, Any], venue: Venue) -> None:
    kraken = next(b for b in docs["bots.json"]["bots"] if b["name"] == "kraken")
    # ccxt paces kraken at a request a second; a drill's coordinator paces a venue on this
    # machine at 50 ms (accounts.drill_rate_limits): a tick every 0.25 s, a purchase every 0.5 s.
    kraken.update(mode="live", market_data="exchange", tick_interval_seconds=0.25)
    kraken["strategy"]["params"]["interval_seconds"] = 0.5
    docs["bot-limits.json"]["bots"].pop("kraken", None)
    endpoints = docs["api-endpoints.json"]
    endpoints["exchanges"]["kraken"].update(primary=venue.primary_url, backup=venue.backup_url)
    endpoints["health_check_config"] = {
        "timeout_seconds": 2, "failure_threshold": 2, "interval_seconds": 0.5,
    }  # fmt: skip


def write_drill_config(target: Path, edit: Edit | None = None, venue: Venue | None = None) -> Path:
    """Write the drill's config into `target` (`edit(documents)` may change it first)."""
    docs = drill_documents(venue)
    if edit is not None:
        edit(docs)
    target.mkdir(parents=True, exist_ok=True)
    for name, document in docs.items():
        (target / name).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return target
