"""The Markdown export of an incident record: the recovery log, timeline, verdict, checklist."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordinator.incidents.book import IncidentBook
from coordinator.incidents.markdown import duration, to_markdown
from coordinator.incidents.model import IncidentKind, Outcome
from coordinator.store.journal import audit_entry
from coordinator.store.sqlite import Priority, SqliteStore
from tests.support_config import FakeClock


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "coordinator.db")
    yield opened
    await opened.close()


async def audit(store: SqliteStore, clock: FakeClock, action: str, subject: str | None = None) -> None:  # noqa: E501
    await store.write([audit_entry(actor="ops", action=action, subject=subject, result="ok",
                                   at=clock(), reason="test")], Priority.SAFETY)  # fmt: skip


def test_durations_read_as_an_operator_would_say_them() -> None:
    assert duration(None) == "not measured"
    assert duration(4.25) == "4.2 s"
    assert duration(95) == "1 min 35 s"
    assert duration(3725) == "1 h 2 min 5 s"


async def test_a_closed_record_exports_its_log_timeline_and_verdict(store: SqliteStore) -> None:
    clock = FakeClock()
    book = IncidentBook(store, clock)
    await audit(store, clock, "kill_switch.activate")
    record = await book.open(kind=IncidentKind.PURCHASE_FAILURE, issue="order rejected",
                             actor="ops", bots=["kraken"])  # fmt: skip
    clock.advance(seconds=200)
    await audit(store, clock, "kill_switch.override")
    clock.advance(seconds=200)
    await audit(store, clock, "bot.start", "kraken")
    await book.note(record["id"], text="topped up the account", actor="ops", action=True,
                    tick=["document"])  # fmt: skip
    closed = await book.close(record["id"], root_cause="insufficient funds",
                              outcome=Outcome.SUCCESS, actor="ops",
                              lessons_learned="alert on low balance")  # fmt: skip

    text = to_markdown(closed)

    assert text.startswith(f"# Incident #{record['id']}: order rejected")
    for expected in (
        "- **Root cause:** insufficient funds",
        "  - topped up the account",
        "- **Outcome:** success",
        "- **Lessons learned:** alert on low balance",
        "| kill switch activated |",
        "| kill switch overridden |",
        "| all bots back |",
        "**Objective:** MISSED: recovered in 6 min 40 s (objective 5 min 0 s)",
        "- [x] Document what happened (`document`), ops at",
        "- [ ] Train team on lessons learned (`train_team`)",
    ):
        assert expected in text, expected


async def test_an_open_record_says_what_it_is_waiting_for(store: SqliteStore) -> None:
    book = IncidentBook(store, FakeClock())
    record = await book.open(kind=IncidentKind.CRITICAL, issue="x", actor="ops",
                             bots=["kraken", "ndax"], drill=True)  # fmt: skip

    text = to_markdown(record)

    assert "(drill)" in text
    waiting = "not measured: not recovered yet (waiting for kraken, ndax); objective 15 min 0 s"
    assert waiting in text
    assert "- **Root cause:** (not yet known)" in text
