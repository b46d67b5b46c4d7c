"""A write step that must read inside the transaction it writes in (the audit chain's link)."""

from __future__ import annotations

import abc

import aiosqlite


class TransactionStep(abc.ABC):
    """Runs on the writer's connection inside the batch's transaction, after the statements
    queued before it in the same job. A raised exception rolls the job back like a failed
    statement."""

    @abc.abstractmethod
    async def apply(self, conn: aiosqlite.Connection) -> None: ...
