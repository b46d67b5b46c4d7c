"""The audit log as a hash chain: each entry carries the hash of the one before it.

An entry's hash covers its id, every field as stored and the previous entry's hash, so editing an
entry breaks its own hash, and deleting or inserting one breaks the link of the entry after it.
The newest entry's id and hash are also kept in `audit_chain_head`, written in the same
transaction, so cutting entries off the end is found too.

The chain is computed inside the writer's transaction (`AuditAppend` is a `TransactionStep`),
not when the write is queued: the safety lane may commit a later audit before an earlier one, and
the chain must follow the order of commit, which is the order of the ids. `append_entry` is
synchronous sqlite3, run in the store's writer thread; `chain_existing_entries`, a migration
step, stays on aiosqlite like the migrations.

This is tamper-evident, not tamper-proof: someone who can write the database file can also
recompute every hash after an edit. It catches edits by hand, by a tool that does not know the
chain, and the silent corruption of a row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from coordinator.store.steps import TransactionStep

GENESIS_HASH = "0" * 64
AUDIT_FIELDS = ("id", "at", "actor", "action", "subject", "reason", "result", "details")


def entry_hash(prev_hash: str, fields: Sequence[Any]) -> str:
    """sha256 over the previous hash and the entry's fields in `AUDIT_FIELDS` order, as stored
    (details is its JSON text, byte for byte)."""
    payload = json.dumps([prev_hash, *fields], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditAppend(TransactionStep):
    """Append one entry to the audit chain, inside the transaction that commits it."""

    at: str
    actor: str
    action: str
    subject: str | None
    reason: str | None
    result: str
    details: str  # JSON text

    def apply(self, conn: sqlite3.Connection) -> None:
        append_entry(
            conn,
            (
                self.at,
                self.actor,
                self.action,
                self.subject,
                self.reason,
                self.result,
                self.details,
            ),
        )


def append_entry(conn: sqlite3.Connection, fields: Sequence[Any]) -> int:
    """Insert `fields` (AUDIT_FIELDS without the id) as the next entry; returns its id.

    Synchronous: runs in the store's writer thread, inside the transaction that commits it."""
    head = conn.execute("SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1").fetchone()
    row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_events").fetchone()
    max_id = int(row[0]) if row else 0
    last_id, prev_hash = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
    # A row someone inserted past the head does not stop the audit (a kill switch activation
    # must still be recorded); the chain carries on from the head and --verify-data names it.
    entry_id = max(last_id, max_id) + 1
    digest = entry_hash(prev_hash, (entry_id, *fields))
    conn.execute(
        "INSERT INTO audit_events (id, at, actor, action, subject, reason, result, details,"
        " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (entry_id, *fields, prev_hash, digest),
    )
    conn.execute(
        "INSERT INTO audit_chain_head (id, last_id, last_hash) VALUES (1, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET last_id = excluded.last_id,"
        " last_hash = excluded.last_hash",
        (entry_id, digest),
    )
    return entry_id


async def chain_existing_entries(conn: aiosqlite.Connection) -> None:
    """Migration step: hash the entries written before the chain existed, in id order."""
    prev_hash = GENESIS_HASH
    last_id = 0
    async with conn.execute(
        "SELECT id, at, actor, action, subject, reason, result, details FROM audit_events"
        " ORDER BY id"
    ) as cursor:
        rows = [tuple(row) for row in await cursor.fetchall()]
    for row in rows:
        digest = entry_hash(prev_hash, row)
        await conn.execute(
            "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE id = ?",
            (prev_hash, digest, row[0]),
        )
        prev_hash, last_id = digest, int(row[0])
    if rows:
        await conn.execute(
            "INSERT INTO audit_chain_head (id, last_id, last_hash) VALUES (1, ?, ?)",
            (last_id, prev_hash),
        )
