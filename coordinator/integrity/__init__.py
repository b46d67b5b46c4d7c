"""`bot-coordinator --verify-data`: integrity checks over the journal, read-only.

Each check reads its tables and names every row that does not hold, with what the rest of the
journal says it should be:

- `sqlite`, `foreign_keys`: SQLite's own structure and reference checks;
- `books` (`books.py`): each bot's position and balances against a replay of its adjustments
  and fills;
- `orders`, `order_events`, `fills` (`orders.py`): statuses, fill totals, the status history as
  a chain of legal moves, fills against their orders;
- `audit` (`audit.py`): the audit log's hash chain: deleted, edited and inserted entries.
"""

from coordinator.integrity.report import Inconsistency, IntegrityReport
from coordinator.integrity.verify import CHECKS, NoDatabase, verify_database

__all__ = ["CHECKS", "Inconsistency", "IntegrityReport", "NoDatabase", "verify_database"]
