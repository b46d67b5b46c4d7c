"""The leader lease: which coordinator trades, when several share one PostgreSQL database.

One row per lease group (`leader_lease`): the holder, its term and when the lease expires, in
the database server's clock (`clock_timestamp()`), so the nodes' own clocks never matter.

- **acquire**: a node takes the row when it is free or expired, raising the term by one. One
  statement (an upsert guarded by `expires_at < clock_timestamp()`): two standbys racing for an
  expired lease cannot both win.
- **renew**: the holder pushes its expiry on, only while it still holds that term and the lease
  has not expired; once that fails the node has lost the lease and must stop trading.
- **fencing**: every write transaction of the leader's store begins by checking, `FOR SHARE`,
  that it still holds its term unexpired (`Fence`, run by `PgConnection` after `BEGIN`). A
  leader paused past its expiry (SIGSTOP, a long GC, a VM migration) that wakes up and writes
  finds the check false and writes nothing; and a takeover cannot land in the middle of a
  leader's transaction, since the takeover's update waits for the share lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from coordinator.store.pg_connection import PgConnection

DEFAULT_GROUP = "coordinator"
DEFAULT_LEASE_SECONDS = 5.0

CREATE_LEASE_TABLE = """
CREATE TABLE IF NOT EXISTS leader_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    term        BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
)
"""


class Fenced(Exception):
    """This node no longer holds the lease it wrote under: the write is refused."""


@dataclass(frozen=True, slots=True)
class LeaseView:
    """The lease as the database has it now."""

    group: str
    holder: str | None
    term: int
    expires_at: datetime | None
    expired: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "holder": self.holder,
            "term": self.term,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "expired": self.expired,
        }


class LeaderLease:
    """One node's dealings with one lease group, on a connection of its own (blocking: call
    it from a thread; `coordinator.leadership` does)."""

    def __init__(
        self,
        conn: PgConnection,
        node: str,
        group: str = DEFAULT_GROUP,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.conn = conn
        self.node = node
        self.group = group
        self.lease_seconds = lease_seconds
        self.term: int | None = None  # the term this node holds, if it leads
        conn.execute(CREATE_LEASE_TABLE)

    def acquire(self) -> int | None:
        """Take the lease if it is free or expired: the new term, else None."""
        row = self.conn.execute(
            "INSERT INTO leader_lease (name, holder, term, acquired_at, expires_at)"
            " VALUES (?, ?, 1, clock_timestamp(),"
            "         clock_timestamp() + make_interval(secs => ?))"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
            "   term = leader_lease.term + 1, acquired_at = excluded.acquired_at,"
            "   expires_at = excluded.expires_at"
            " WHERE leader_lease.expires_at < clock_timestamp()"
            " RETURNING term",
            (self.group, self.node, self.lease_seconds),
        ).fetchone()
        self.term = int(row[0]) if row is not None else None
        return self.term

    def renew(self) -> bool:
        """Push the expiry on; False when this node no longer holds its term (it has lost
        the lease: stop trading)."""
        if self.term is None:
            return False
        row = self.conn.execute(
            "UPDATE leader_lease SET expires_at = clock_timestamp() + make_interval(secs => ?)"
            " WHERE name = ? AND holder = ? AND term = ? AND expires_at > clock_timestamp()"
            " RETURNING term",
            (self.lease_seconds, self.group, self.node, self.term),
        ).fetchone()
        if row is None:
            self.term = None
            return False
        return True

    def release(self) -> None:
        """Give the lease up at once (a clean shutdown): a standby need not wait it out."""
        if self.term is None:
            return
        self.conn.execute(
            "UPDATE leader_lease SET expires_at = clock_timestamp() - interval '1 second'"
            " WHERE name = ? AND holder = ? AND term = ?",
            (self.group, self.node, self.term),
        )
        self.term = None

    def view(self) -> LeaseView:
        row = self.conn.execute(
            "SELECT holder, term, expires_at, expires_at < clock_timestamp() FROM leader_lease"
            " WHERE name = ?",
            (self.group,),
        ).fetchone()
        if row is None:
            return LeaseView(self.group, None, 0, None, True)
        return LeaseView(self.group, str(row[0]), int(row[1]), row[2], bool(row[3]))

    def fence(self) -> Fence:
        """The check the store's writer runs at the start of every transaction."""
        if self.term is None:
            raise Fenced(f"{self.node} does not hold the {self.group!r} lease")
        return Fence(self.group, self.node, self.term)


@dataclass(frozen=True, slots=True)
class Fence:
    group: str
    node: str
    term: int

    def check(self, conn: PgConnection) -> None:
        """Inside the writer's transaction, before its first statement."""
        row = conn.execute(
            "SELECT 1 FROM leader_lease WHERE name = ? AND holder = ? AND term = ?"
            " AND expires_at > clock_timestamp() FOR SHARE",
            (self.group, self.node, self.term),
        ).fetchone()
        if row is None:
            raise Fenced(
                f"{self.node} no longer holds term {self.term} of the {self.group!r} lease: "
                "another coordinator may lead now; nothing was written"
            )
