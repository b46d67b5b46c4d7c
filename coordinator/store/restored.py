"""The mark a restore leaves in the journal it puts in place: which backup, taken when, restored
when (a `safety_state` row, written in the restore's own transaction on either engine).

A restored journal is older than the exchanges: the orders the coordinator placed between the
backup and the restore are at the venue, under client order ids of ours, and not in it.
Reconciliation adopts those (and only those) because of this mark: an order unknown to the
journal whose id was issued in that window was placed by this coordinator. Without the mark an
unknown order is someone else's, whatever its id looks like (another process on the same key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from coordinator.store.journal import iso, parse_time

RESTORED_KEY: Final = "journal_restored"
# An id issued this long before the backup's time is still taken as possibly lost: the backup's
# time is stamped around, not exactly at, the moment its database copy was taken. Ids from
# before it that the journal holds are found there and never adopted.
BACKUP_CLOCK_SLACK: Final = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class RestoredJournal:
    backup: str
    backup_created_at: datetime
    restored_at: datetime

    def covers(self, issued: datetime) -> bool:
        """Was an id issued at `issued` issued while the journal was not being kept?"""
        return self.backup_created_at - BACKUP_CLOCK_SLACK <= issued <= self.restored_at

    def describe(self) -> str:
        return (
            f"the journal was restored at {iso(self.restored_at)} from backup {self.backup} "
            f"of {iso(self.backup_created_at)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "backup": self.backup,
            "backup_created_at": iso(self.backup_created_at),
            "restored_at": iso(self.restored_at),
        }

    @classmethod
    def from_json(cls, data: Any) -> RestoredJournal | None:
        """The mark, or None when it is absent or unreadable (then nothing is adopted)."""
        if not isinstance(data, dict):
            return None
        try:
            created = parse_time(data["backup_created_at"])
            restored = parse_time(data["restored_at"])
        except (KeyError, TypeError, ValueError):
            return None
        if created is None or restored is None or None in (created.tzinfo, restored.tzinfo):
            return None
        if created > restored:
            return None
        return cls(str(data.get("backup", "?")), created, restored)
