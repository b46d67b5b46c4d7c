"""Which backups to delete: the rule, and applying it.

A backup is deleted only when all three hold: it is not among the `keep_count` newest, it is
older than `keep_days` (by the UTC time in its name), and it is not the newest good backup (the
one `backup-latest.tar.gz` is). Only names matching the archive pattern are considered, so
nothing else in the directory (pre-restore copies, an operator's own files) is ever deleted.
Retention runs after a backup succeeded, never after one failed: a full disk does not eat the
backups that are still good.

Blocking (`apply_retention`): call from a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from coordinator.backups.layout import archive_names, archive_sort_key, archive_time

log = logging.getLogger(__name__)


def expired(
    names: Sequence[str],
    now: datetime,
    keep_count: int,
    keep_days: float,
    protected: Collection[str] = (),
) -> list[str]:
    """The archives the rule deletes, oldest first. `names` are archive names, any order."""
    newest_first = sorted(names, key=archive_sort_key, reverse=True)
    cutoff = now - timedelta(days=keep_days)
    return [
        name
        for name in reversed(newest_first[max(keep_count, 1) :])
        if archive_time(name) < cutoff and name not in protected
    ]


def apply_retention(
    backup_dir: Path,
    now: datetime,
    keep_count: int,
    keep_days: float,
    protected: Collection[str],
) -> list[str]:
    """Delete what `expired` names in `backup_dir`; the names deleted."""
    deleted: list[str] = []
    for name in expired(archive_names(backup_dir), now, keep_count, keep_days, protected):
        try:
            (backup_dir / name).unlink()
        except OSError as exc:
            log.warning("retention: could not delete %s: %s", backup_dir / name, exc)
            continue
        deleted.append(name)
    if deleted:
        log.info("retention: deleted %d old backup(s): %s", len(deleted), ", ".join(deleted))
    return deleted
