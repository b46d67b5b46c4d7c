"""What an incident record is made of: its kinds and their recovery time objectives, the
post-recovery checklist, and the outcomes a close may record.

The objectives are the runbooks' (000 section 7.2): a critical system failure is recovered in
under 15 minutes, a failed purchase in under 5 minutes, a database rollback in under 30 minutes
and a full system recovery in under an hour.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

# Set (to anything but "" or "0") in the environment of a coordinator a drill runs: every
# record its kill switch opens is a drill's (`bot-coordinator drill`, coordinator/drills).
DRILL_ENV: Final = "BOT_COORDINATOR_DRILL"


def drill_mode(environ: Mapping[str, str]) -> bool:
    return environ.get(DRILL_ENV, "") not in ("", "0")


class IncidentKind(enum.StrEnum):
    CRITICAL = "critical"
    PURCHASE_FAILURE = "purchase_failure"
    DATABASE_ROLLBACK = "database_rollback"
    FULL_RECOVERY = "full_recovery"


OBJECTIVE_SECONDS: Final[dict[IncidentKind, int]] = {
    IncidentKind.CRITICAL: 15 * 60,
    IncidentKind.PURCHASE_FAILURE: 5 * 60,
    IncidentKind.DATABASE_ROLLBACK: 30 * 60,
    IncidentKind.FULL_RECOVERY: 60 * 60,
}

KIND_DESCRIPTIONS: Final[dict[IncidentKind, str]] = {
    IncidentKind.CRITICAL: "critical system failure",
    IncidentKind.PURCHASE_FAILURE: "failed purchase",
    IncidentKind.DATABASE_ROLLBACK: "database rollback",
    IncidentKind.FULL_RECOVERY: "full system recovery",
}


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


# Runbook 004, "Post-Recovery Checklist": key (what `--tick` takes) and the runbook's words.
CHECKLIST: Final[tuple[tuple[str, str], ...]] = (
    ("document", "Document what happened"),
    ("update_runbook", "Update runbook if needed"),
    ("review_limits", "Review and adjust limits"),
    ("test_kill_switch", "Test kill switch"),
    ("monitor", "Monitor for 24-48 hours"),
    ("follow_up", "Schedule follow-up review"),
    ("security", "Update security measures"),
    ("backup_config", "Backup current configuration"),
    ("review_logs", "Review logs for patterns"),
    ("train_team", "Train team on lessons learned"),
)
CHECKLIST_KEYS: Final = tuple(key for key, _ in CHECKLIST)
