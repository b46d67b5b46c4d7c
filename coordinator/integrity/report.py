"""What `--verify-data` found: one row per inconsistency, and how many rows each check read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_COLUMNS = ("CHECK", "TABLE", "ROW", "EXPECTED", "FOUND", "DETAIL")


@dataclass(frozen=True)
class Inconsistency:
    """One thing in the database that does not hold: which check saw it, in which table and
    row (named by its id, e.g. "client_order_id 17", "bot grid-btc asset BTC", "id 12"), what
    the rest of the journal says it should be and what is stored."""

    check: str
    table: str
    row: str
    expected: str
    found: str
    detail: str = ""


@dataclass
class IntegrityReport:
    database: Path
    inconsistencies: list[Inconsistency] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # check -> rows it looked at

    @property
    def ok(self) -> bool:
        return not self.inconsistencies

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": str(self.database),
            "ok": self.ok,
            "checked": dict(self.checked),
            "inconsistencies": [asdict(item) for item in self.inconsistencies],
        }

    def summary(self) -> str:
        counts = (
            f"{self.checked.get('orders', 0)} orders, {self.checked.get('fills', 0)} fills, "
            f"{self.checked.get('audit', 0)} audit entries checked"
        )
        if self.ok:
            return f"clean: {counts}"
        n = len(self.inconsistencies)
        return f"{n} inconsistenc{'y' if n == 1 else 'ies'} ({counts})"

    def render_text(self) -> str:
        """A table an operator can read in a terminal, then the one-line summary."""
        lines = [f"verify-data: {self.database}"]
        if self.inconsistencies:
            rows = [_COLUMNS] + [
                tuple(
                    _one_line(cell)
                    for cell in (i.check, i.table, i.row, i.expected, i.found, i.detail)
                )
                for i in self.inconsistencies
            ]
            widths = [max(len(row[c]) for row in rows) for c in range(len(_COLUMNS))]
            for row in rows:
                # The last column is not padded: no trailing blanks.
                cells = [cell.ljust(widths[c]) for c, cell in enumerate(row[:-1])]
                lines.append("  ".join([*cells, row[-1]]).rstrip())
        lines.append(self.summary())
        return "\n".join(lines)


def _one_line(text: str) -> str:
    """SQLite's integrity messages can span lines; a table cell must not."""
    return " ".join(text.split())
