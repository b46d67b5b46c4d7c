"""A write step that must read inside the transaction it writes in (the audit chain's link)."""

from __future__ import annotations

import abc
import sqlite3


class TransactionStep(abc.ABC):
    """Runs on the writer's connection inside the batch's transaction, after the statements
    queued before it in the same job (and the jobs before it in the same batch). A raised
    exception rolls the job back like a failed statement.

    `apply` is synchronous and is called in the store's writer thread, never on the event loop:
    it may block on the database, but must not touch the loop or anything that belongs to it, and
    must not commit, roll back or close the connection."""

    @abc.abstractmethod
    def apply(self, conn: sqlite3.Connection) -> None: ...
