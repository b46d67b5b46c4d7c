"""What a reconciliation finds and does, and how it is shown (JSON and a table)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from bots.models import AccountTrade, OrderSnapshot


class Kind(enum.StrEnum):
    """Every way the journal and an exchange can disagree."""

    MISSING_FILL = "missing_fill"  # the exchange has a trade of our order the journal lacks
    UNKNOWN_TRADE = "unknown_trade"  # a trade of an order this coordinator did not place
    FILL_UNKNOWN_TO_EXCHANGE = "fill_unknown_to_exchange"  # a journal fill the venue lacks
    UNKNOWN_OPEN_ORDER = "unknown_open_order"  # open on the exchange, not placed by us
    ORDER_OPEN_ON_EXCHANGE = "order_open_on_exchange"  # journal: finished; exchange: open
    ORDER_NOT_ACKNOWLEDGED = "order_not_acknowledged"  # journal: pending; exchange: open
    ORDER_CLOSED_ON_EXCHANGE = "order_closed_on_exchange"  # journal: live; exchange: closed
    ORDER_UNKNOWN_TO_EXCHANGE = "order_unknown_to_exchange"  # journal: live; exchange: none
    BALANCE_DRIFT = "balance_drift"
    # The stored balance is the exchange's, but the journal's fills do not add up to it: a fill
    # row is missing whose trade is not in the window compared.
    BOOK_MISMATCH = "book_mismatch"
    POSITION_DRIFT = "position_drift"
    # Placed by this coordinator between a backup and its restore: at the venue under an id of
    # ours issued in that window, and not in the restored journal (coordinator/store/restored.py).
    ORDER_LOST_FROM_JOURNAL = "order_lost_from_journal"


# Differences reconciliation can correct in the journal; the others need an operator: the
# journal is the record of what this coordinator did, and an order or trade someone else made,
# or a fill the venue does not show, is not ours to rewrite.
CORRECTABLE = frozenset(
    {
        Kind.MISSING_FILL,
        Kind.ORDER_OPEN_ON_EXCHANGE,
        Kind.ORDER_NOT_ACKNOWLEDGED,
        Kind.ORDER_CLOSED_ON_EXCHANGE,
        Kind.ORDER_UNKNOWN_TO_EXCHANGE,
        Kind.ORDER_LOST_FROM_JOURNAL,
        Kind.BALANCE_DRIFT,
    }
)


@dataclass(frozen=True, slots=True)
class Difference:
    bot: str
    kind: Kind
    subject: str  # what it is about: "order 17", "trade T-1 of order 17", "balance BTC"
    journal: str  # what the journal says ("-" for nothing)
    exchange: str  # what the exchange says
    difference: Decimal | None = None  # exchange minus journal, where amounts compare
    detail: str = ""
    correctable: bool = True
    # What applying needs; not shown.
    client_order_id: int | None = field(default=None, compare=False)
    asset: str | None = field(default=None, compare=False)
    trade: AccountTrade | None = field(default=None, compare=False, repr=False)
    snapshot: OrderSnapshot | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bot": self.bot,
            "kind": self.kind.value,
            "subject": self.subject,
            "journal": self.journal,
            "exchange": self.exchange,
            "difference": None if self.difference is None else str(self.difference),
            "detail": self.detail,
            "correctable": self.correctable,
        }


@dataclass(frozen=True, slots=True)
class Correction:
    """One change made to the journal, with the correction row that records it."""

    id: int
    bot: str
    kind: str  # a Kind, or "book" for a position and balances recomputed from the fills
    subject: str
    journal: str
    exchange: str
    action: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bot": self.bot,
            "kind": self.kind,
            "subject": self.subject,
            "journal": self.journal,
            "exchange": self.exchange,
            "action": self.action,
        }


@dataclass(slots=True)
class BotReconciliation:
    bot: str
    exchange: str
    account: str
    running: bool
    differences: list[Difference] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    remaining: list[Difference] = field(default_factory=list)  # after applying
    errors: list[str] = field(default_factory=list)
    trades_compared_since: datetime | None = None

    def as_dict(self, applied: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bot": self.bot,
            "exchange": self.exchange,
            "account": self.account,
            "running": self.running,
            "trades_compared_since": (
                self.trades_compared_since.isoformat() if self.trades_compared_since else None
            ),
            "differences": [d.as_dict() for d in self.differences],
            "errors": self.errors,
        }
        if applied:
            out["corrections"] = [c.as_dict() for c in self.corrections]
            out["remaining"] = [d.as_dict() for d in self.remaining]
        return out


@dataclass(slots=True)
class ReconciliationReport:
    run_id: int
    started_at: datetime
    finished_at: datetime
    actor: str
    trigger: str  # "request", "schedule", "cli"
    applied: bool
    bots: list[BotReconciliation]

    @property
    def differences(self) -> int:
        return sum(len(b.differences) for b in self.bots)

    @property
    def corrections(self) -> int:
        return sum(len(b.corrections) for b in self.bots)

    @property
    def remaining(self) -> int:
        if not self.applied:
            return self.differences
        return sum(len(b.remaining) for b in self.bots)

    @property
    def errors(self) -> int:
        return sum(len(b.errors) for b in self.bots)

    @property
    def clean(self) -> bool:
        return self.remaining == 0 and self.errors == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "actor": self.actor,
            "trigger": self.trigger,
            "applied": self.applied,
            "clean": self.clean,
            "summary": {
                "differences": self.differences,
                "corrections": self.corrections,
                "remaining": self.remaining,
                "errors": self.errors,
            },
            "bots": [b.as_dict(self.applied) for b in self.bots],
        }


def render_table(report: dict[str, Any]) -> str:
    """A report (as `ReconciliationReport.as_dict` gives it, so the CLI can render what the
    control plane returned) as text for a terminal."""
    lines = [
        f"reconciliation #{report['run_id']} ({report['trigger']}, by {report['actor']}, "
        f"{'applied' if report['applied'] else 'report only'}) at {report['finished_at']}"
    ]
    for bot in report["bots"]:
        since = bot["trades_compared_since"] or "-"
        state = "running" if bot["running"] else "stopped"
        lines.append("")
        lines.append(f"{bot['bot']} on {bot['account']} ({state}; trades compared since {since})")
        for error in bot["errors"]:
            lines.append(f"  ERROR {error}")
        if not bot["differences"] and not bot["errors"]:
            lines.append("  journal and exchange agree")
        lines.extend(_table(bot["differences"], "differences"))
        if report["applied"]:
            lines.extend(_corrections_table(bot.get("corrections", [])))
            if bot["differences"]:
                remaining = bot.get("remaining", [])
                lines.append(
                    f"  remaining after corrections: {len(remaining)}"
                    + ("" if remaining else " (journal now matches the exchange)")
                )
                lines.extend(_table(remaining, "still different"))
    summary = report["summary"]
    lines.append("")
    lines.append(
        f"{summary['differences']} difference(s), {summary['corrections']} correction(s), "
        f"{summary['remaining']} remaining, {summary['errors']} error(s)"
    )
    if not report["applied"] and summary["differences"]:
        lines.append("to correct the journal: the same command with --apply (needs the token)")
    return "\n".join(lines)


_COLUMNS = ("kind", "subject", "journal", "exchange", "difference", "fix")


def _table(differences: list[dict[str, Any]], title: str) -> list[str]:
    if not differences:
        return []
    rows = [
        (
            d["kind"],
            d["subject"],
            d["journal"],
            d["exchange"],
            d["difference"] or "",
            "auto" if d["correctable"] else "operator",
        )
        for d in differences
    ]
    out = [f"  {title}:"]
    out.extend("    " + line for line in _aligned([_COLUMNS, *rows]))
    out.extend(f"      {d['subject']}: {d['detail']}" for d in differences if d["detail"])
    return out


def _corrections_table(corrections: list[dict[str, Any]]) -> list[str]:
    if not corrections:
        return []
    rows = [(f"#{c['id']}", c["kind"], c["subject"], c["action"]) for c in corrections]
    out = ["  corrections (each a journal entry):"]
    out.extend("    " + line for line in _aligned([("id", "kind", "subject", "action"), *rows]))
    return out


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
