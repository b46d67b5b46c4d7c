"""Refused orders reach the audit log summed: one entry per bot and code per period."""

from __future__ import annotations

from coordinator.refusal_audit import RefusalAudit
from coordinator.runtime import Coordinator


async def test_refused_orders_are_audited_once_per_bot_and_code_with_how_many(
    coordinator: Coordinator,
) -> None:
    audit = RefusalAudit(lambda: coordinator.supervisor.runners.values(), coordinator.store,
                         coordinator.clock)
    book = coordinator.supervisor.runner("kraken").parts.book
    for _ in range(40):
        book.refusals["reduce_only"] = book.refusals.get("reduce_only", 0) + 1
    book.last_refusal = "reduce_only: a buy would grow the position"

    written = await audit.flush()
    again = await audit.flush()
    book.refusals["reduce_only"] += 2
    later = await audit.flush()

    assert (written, again, later) == (1, 0, 1)
    events = [e for e in await coordinator.journal.recent_audit(10)
              if e["action"] == "order.refused"]
    newest, first = events[0], events[1]
    assert first["subject"] == "kraken"
    assert first["reason"] == "a buy would grow the position"
    assert first["details"] == {"code": "reduce_only", "orders": 40, "total": 40}
    assert newest["details"] == {"code": "reduce_only", "orders": 2, "total": 42}
