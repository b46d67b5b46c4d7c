"""What a fenced store checks at the start of every write transaction (no driver import: the
coordinator names it whatever its engine)."""

from __future__ import annotations

from typing import Any, Protocol


class TransactionFence(Protocol):
    """Checked right after each BEGIN, on the writer's connection; raises to refuse the whole
    transaction (`coordinator.store.lease.Fence`: the leader still holds its lease)."""

    def check(self, conn: Any) -> None: ...


class LeaseLost(Exception):
    """This node stopped leading (its term is gone, or it could not renew in time): it has
    stopped its bots, and its store writes nothing more."""
