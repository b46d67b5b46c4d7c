"""Versioned schema migrations for the SQLite store.

Each migration runs in one transaction with its row in `schema_migrations`, so a failed migration
leaves the database at the previous version. A database newer than this code is refused rather
than written to by code that does not know its shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosqlite

from coordinator.store.audit_chain import chain_existing_entries


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    # A step in Python, run after `sql` in the same transaction (e.g. hashing existing rows).
    after: Callable[[aiosqlite.Connection], Awaitable[None]] | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "journal: bots, orders, order events, fills, positions, balances, audit",
        """
        CREATE TABLE bots (
            name            TEXT PRIMARY KEY,
            exchange        TEXT NOT NULL,
            symbol          TEXT NOT NULL,
            mode            TEXT NOT NULL,
            state           TEXT NOT NULL DEFAULT 'stopped',
            safe_mode       INTEGER NOT NULL DEFAULT 0,
            restarts        INTEGER NOT NULL DEFAULT 0,
            last_error      TEXT,
            last_tick_at    TEXT,
            strategy_state  TEXT NOT NULL DEFAULT '{}',
            updated_at      TEXT NOT NULL
        );
        CREATE TABLE orders (
            client_order_id   INTEGER PRIMARY KEY,
            bot               TEXT NOT NULL REFERENCES bots(name),
            exchange          TEXT NOT NULL,
            symbol            TEXT NOT NULL,
            side              TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
            type              TEXT NOT NULL CHECK (type IN ('market', 'limit')),
            amount            TEXT NOT NULL,
            price             TEXT,
            status            TEXT NOT NULL,
            exchange_order_id TEXT,
            filled            TEXT NOT NULL DEFAULT '0',
            tag               TEXT NOT NULL DEFAULT '',
            reason            TEXT,
            created_at        TEXT NOT NULL,
            updated_at        TEXT NOT NULL
        );
        CREATE INDEX orders_by_bot_status ON orders (bot, status);
        CREATE TABLE order_events (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            client_order_id INTEGER NOT NULL REFERENCES orders(client_order_id),
            at              TEXT NOT NULL,
            from_status     TEXT,
            to_status       TEXT NOT NULL,
            detail          TEXT
        );
        CREATE INDEX order_events_by_order ON order_events (client_order_id);
        CREATE TABLE fills (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            client_order_id INTEGER NOT NULL REFERENCES orders(client_order_id),
            bot             TEXT NOT NULL REFERENCES bots(name),
            trade_id        TEXT NOT NULL,
            side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
            amount          TEXT NOT NULL,
            price           TEXT NOT NULL,
            fee             TEXT NOT NULL,
            fee_currency    TEXT NOT NULL,
            executed_at     TEXT NOT NULL,
            recorded_at     TEXT NOT NULL,
            UNIQUE (client_order_id, trade_id)
        );
        CREATE INDEX fills_by_bot ON fills (bot);
        CREATE TABLE positions (
            bot             TEXT PRIMARY KEY REFERENCES bots(name),
            symbol          TEXT NOT NULL,
            base            TEXT NOT NULL,
            avg_entry_price TEXT NOT NULL,
            realized_pnl    TEXT NOT NULL,
            fees_paid       TEXT NOT NULL,
            updated_at      TEXT NOT NULL
        );
        CREATE TABLE balances (
            bot         TEXT NOT NULL REFERENCES bots(name),
            asset       TEXT NOT NULL,
            total       TEXT NOT NULL,
            updated_at  TEXT NOT NULL,
            PRIMARY KEY (bot, asset)
        );
        -- Every change to a balance that is not a fill (a paper account's opening balance, later
        -- a reconciliation correction) is an entry here, so balances always equal
        -- adjustments + fills.
        CREATE TABLE balance_adjustments (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            bot     TEXT NOT NULL REFERENCES bots(name),
            asset   TEXT NOT NULL,
            amount  TEXT NOT NULL,
            reason  TEXT NOT NULL,
            at      TEXT NOT NULL
        );
        CREATE TABLE audit_events (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            at      TEXT NOT NULL,
            actor   TEXT NOT NULL,
            action  TEXT NOT NULL,
            subject TEXT,
            reason  TEXT,
            result  TEXT NOT NULL,
            details TEXT NOT NULL DEFAULT '{}'
        );
        """,
    ),
)

MIGRATIONS += (
    Migration(
        2,
        "safety: kill switch, breakers and risk baselines; kill switch activations",
        """
        -- One row per safety component (the kill switch, each circuit breaker, each bot's daily
        -- risk baseline): its state as JSON, read back before any bot may start.
        CREATE TABLE safety_state (
            key         TEXT PRIMARY KEY,
            value       TEXT NOT NULL,
            updated_at  TEXT NOT NULL
        );
        CREATE TABLE kill_switch_activations (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            at       TEXT NOT NULL,
            trigger  TEXT NOT NULL,
            reason   TEXT NOT NULL,
            actor    TEXT NOT NULL
        );
        CREATE INDEX kill_switch_activations_by_time ON kill_switch_activations (at);
        """,
    ),
)

MIGRATIONS += (
    Migration(
        3,
        "integrity: hash-chained audit log; reconciliation runs and corrections",
        """
        ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
        ALTER TABLE audit_events ADD COLUMN hash TEXT;
        -- The newest audit entry, written with it: cutting entries off the end of the log
        -- leaves the head pointing past the last one.
        CREATE TABLE audit_chain_head (
            id          INTEGER PRIMARY KEY CHECK (id = 1),
            last_id     INTEGER NOT NULL,
            last_hash   TEXT NOT NULL
        );
        -- One row per reconciliation (on demand, scheduled or at start-up).
        CREATE TABLE reconciliation_runs (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at   TEXT NOT NULL,
            finished_at  TEXT NOT NULL,
            actor        TEXT NOT NULL,
            trigger      TEXT NOT NULL,
            applied      INTEGER NOT NULL,
            bots         TEXT NOT NULL,
            differences  INTEGER NOT NULL,
            corrections  INTEGER NOT NULL,
            report       TEXT NOT NULL
        );
        -- Every change a reconciliation made to the journal. The rows it changed point back
        -- here: an order event or balance adjustment says "reconciliation correction #id".
        CREATE TABLE reconciliation_corrections (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id    INTEGER NOT NULL REFERENCES reconciliation_runs(id),
            at        TEXT NOT NULL,
            bot       TEXT NOT NULL REFERENCES bots(name),
            kind      TEXT NOT NULL,
            subject   TEXT NOT NULL,
            journal   TEXT,
            exchange  TEXT,
            action    TEXT NOT NULL
        );
        CREATE INDEX reconciliation_corrections_by_bot ON reconciliation_corrections (bot);
        """,
        after=chain_existing_entries,
    ),
)

MIGRATIONS += (
    Migration(
        4,
        "config gate: approved effective configs",
        """
        -- Every approval of a bot's effective config (coordinator/config_approval.py): the
        -- newest row of a bot is what its start is checked against. No foreign key to bots:
        -- a bot newly added to bots.json is approved before its first start registers it.
        CREATE TABLE config_approvals (
            id               INTEGER PRIMARY KEY AUTOINCREMENT,
            bot              TEXT NOT NULL,
            config_sha256    TEXT NOT NULL,
            config_json      TEXT NOT NULL,
            code_version     TEXT NOT NULL,
            approved_by      TEXT NOT NULL,
            reason           TEXT,
            at               TEXT NOT NULL,
            previous_sha256  TEXT
        );
        CREATE INDEX config_approvals_by_bot ON config_approvals (bot, id);
        """,
    ),
)

MIGRATIONS += (
    Migration(
        5,
        "incident records: the record, its notes and its post-recovery checklist",
        """
        -- One row per incident (coordinator/incidents/): runbook 004 Step 7's recovery log.
        -- `bots`: the bots it took down (JSON list), whose return ends the recovery;
        -- `checklist`: the ticked post-recovery items (JSON: key -> {by, at});
        -- `measurement`: the timeline and times, frozen when it is closed (JSON).
        CREATE TABLE incidents (
            id               INTEGER PRIMARY KEY AUTOINCREMENT,
            kind             TEXT NOT NULL,
            issue            TEXT NOT NULL,
            drill            INTEGER NOT NULL DEFAULT 0,
            status           TEXT NOT NULL CHECK (status IN ('open', 'closed')),
            detected_at      TEXT NOT NULL,
            opened_at        TEXT NOT NULL,
            opened_by        TEXT NOT NULL,
            source           TEXT,
            bots             TEXT NOT NULL DEFAULT '[]',
            root_cause       TEXT,
            outcome          TEXT CHECK (outcome IS NULL OR outcome IN ('success', 'failure')),
            lessons_learned  TEXT,
            closed_at        TEXT,
            closed_by        TEXT,
            checklist        TEXT NOT NULL DEFAULT '{}',
            measurement      TEXT
        );
        CREATE INDEX incidents_by_status ON incidents (status, id);
        -- What was done and seen, in order: `kind` 'action' (the record's "actions taken") or
        -- 'note'.
        CREATE TABLE incident_notes (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            incident_id  INTEGER NOT NULL REFERENCES incidents(id),
            at           TEXT NOT NULL,
            author       TEXT NOT NULL,
            kind         TEXT NOT NULL CHECK (kind IN ('note', 'action')),
            text         TEXT NOT NULL
        );
        CREATE INDEX incident_notes_by_incident ON incident_notes (incident_id, id);
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
