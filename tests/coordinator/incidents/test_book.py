"""Incident records in the journal: opened, noted, ticked, closed, each change audited."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordinator import credentials
from coordinator.errors import BadRequest, Conflict, NotFound
from coordinator.incidents.book import IncidentBook
from coordinator.incidents.model import CHECKLIST_KEYS, IncidentKind, Outcome
from coordinator.integrity.verify import verify_database
from coordinator.store.journal import audit_entry
from coordinator.store.sqlite import Priority, SqliteStore
from tests.support_config import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "coordinator.db")
    yield opened
    await opened.close()


@pytest.fixture
def book(store: SqliteStore, clock: FakeClock) -> IncidentBook:
    return IncidentBook(store, clock)


async def audit(store: SqliteStore, clock: FakeClock, action: str, subject: str | None = None,
                **details: object) -> None:  # fmt: skip
    await store.write([audit_entry(actor="ops", action=action, subject=subject, result="ok",
                                   at=clock(), reason="test", details=details)],
                      Priority.SAFETY)  # fmt: skip


async def actions(store: SqliteStore) -> list[tuple[str, str]]:
    rows = await store.fetch_all(
        "SELECT action, subject FROM audit_events WHERE action LIKE 'incident.%' ORDER BY id"
    )
    return [(row["action"], row["subject"]) for row in rows]


async def test_opening_a_record_stores_it_with_its_audit_entry(
    book: IncidentBook, store: SqliteStore
) -> None:
    record = await book.open(kind=IncidentKind.CRITICAL, issue="kraken crash loop", actor="ops",
                             bots=["kraken"])  # fmt: skip

    assert record["status"] == "open"
    assert record["issue"] == "kraken crash loop"
    assert record["objective_seconds"] == 15 * 60
    assert record["measurement"]["bots_not_back"] == ["kraken"]
    assert await actions(store) == [("incident.open", f"incident #{record['id']}")]


async def test_a_detection_time_in_the_future_is_refused(
    book: IncidentBook, clock: FakeClock
) -> None:
    from datetime import timedelta

    with pytest.raises(BadRequest, match="detected_at"):
        await book.open(kind=IncidentKind.CRITICAL, issue="x", actor="ops", bots=[],
                        detected_at=clock() + timedelta(minutes=1))  # fmt: skip


async def test_notes_are_kept_in_order_and_actions_are_the_actions_taken(
    book: IncidentBook,
) -> None:
    record = await book.open(kind=IncidentKind.CRITICAL, issue="x", actor="ops", bots=[])
    await book.note(record["id"], text="saw 500s from kraken", actor="ops")
    await book.note(record["id"], text="switched to the backup endpoint", actor="ops",
                    action=True)  # fmt: skip

    noted = await book.get(record["id"])
    assert [n["text"] for n in noted["notes"]] == ["saw 500s from kraken",
                                                    "switched to the backup endpoint"]  # fmt: skip
    assert noted["actions_taken"] == ["switched to the backup endpoint"]


async def test_ticking_an_item_marks_it_with_who_and_when(
    book: IncidentBook, clock: FakeClock
) -> None:
    record = await book.open(kind=IncidentKind.CRITICAL, issue="x", actor="ops", bots=[])
    noted = await book.note(record["id"], text=None, actor="alice", tick=["document"])

    [item] = [i for i in noted["checklist_items"] if i["key"] == "document"]
    assert item["ticked"] is True
    assert item["by"] == "alice"
    assert sum(i["ticked"] for i in noted["checklist_items"]) == 1


async def test_an_unknown_checklist_item_is_refused_and_names_the_real_ones(
    book: IncidentBook,
) -> None:
    record = await book.open(kind=IncidentKind.CRITICAL, issue="x", actor="ops", bots=[])

    with pytest.raises(BadRequest, match=r"'paperwork' is not on the checklist.*review_logs"):
        await book.note(record["id"], text="x", actor="ops", tick=["paperwork"])


async def test_an_empty_note_is_refused(book: IncidentBook) -> None:
    record = await book.open(kind=IncidentKind.CRITICAL, issue="x", actor="ops", bots=[])

    with pytest.raises(BadRequest, match="text"):
        await book.note(record["id"], text="", actor="ops")


async def test_an_unknown_record_is_not_found(book: IncidentBook) -> None:
    with pytest.raises(NotFound, match="#42"):
        await book.note(42, text="x", actor="ops")
    with pytest.raises(NotFound):
        await book.get(42)


async def test_closing_freezes_the_measured_timeline_and_lists_what_is_unticked(
    book: IncidentBook, store: SqliteStore, clock: FakeClock
) -> None:
    await audit(store, clock, "kill_switch.activate")
    record = await book.open(kind=IncidentKind.CRITICAL, issue="x", actor="ops", bots=["kraken"])
    clock.advance(seconds=60)
    await audit(store, clock, "kill_switch.override")
    clock.advance(seconds=30)
    await audit(store, clock, "bot.start", "kraken")
    await book.note(record["id"], text=None, actor="ops", tick=["document", "review_logs"])

    closed = await book.close(record["id"], root_cause="a bad key", outcome=Outcome.SUCCESS,
                              actor="ops", lessons_learned="rotate keys")  # fmt: skip

    assert closed["status"] == "closed"
    assert closed["measurement"]["recover_seconds"] == 90
    assert closed["measurement"]["objective_met"] is True
    assert closed["unticked"] == [k for k in CHECKLIST_KEYS if k not in ("document", "review_logs")]
    clock.advance(hours=2)
    await audit(store, clock, "bot.start", "kraken")  # later starts change nothing
    assert (await book.get(record["id"]))["measurement"] == closed["measurement"]
    [row] = await store.fetch_all(
        "SELECT details FROM audit_events WHERE action = 'incident.close'"
    )
    assert json.loads(row["details"])["unticked"] == closed["unticked"]


async def test_a_closed_record_cannot_be_noted_or_closed_again(book: IncidentBook) -> None:
    record = await book.open(kind=IncidentKind.CRITICAL, issue="x", actor="ops", bots=[])
    await book.close(record["id"], root_cause="r", outcome=Outcome.FAILURE, actor="ops")

    with pytest.raises(Conflict, match="closed"):
        await book.note(record["id"], text="late", actor="ops")
    with pytest.raises(Conflict, match="closed"):
        await book.close(record["id"], root_cause="r", outcome=Outcome.SUCCESS, actor="ops")


async def test_a_kill_switch_activation_opens_a_record_or_notes_the_open_one(
    book: IncidentBook, clock: FakeClock
) -> None:
    first = await book.on_kill_switch(reason="kraken 500s", actor="ops", at=clock(),
                                      bots=["kraken"], trigger="manual")  # fmt: skip
    again = await book.on_kill_switch(reason="still bad", actor="ops", at=clock(),
                                      bots=["kraken"], trigger="manual")  # fmt: skip

    assert first["source"] == "kill_switch.activate"
    assert "kraken 500s" in first["issue"]
    assert again["id"] == first["id"]
    assert "still bad" in again["actions_taken"][0]


async def test_a_drill_record_is_not_noted_by_a_real_activation(
    book: IncidentBook, clock: FakeClock
) -> None:
    drill = await book.open(kind=IncidentKind.CRITICAL, issue="drill", actor="drill", bots=[],
                            drill=True)  # fmt: skip
    real = await book.on_kill_switch(reason="real", actor="ops", at=clock(), bots=[],
                                     trigger="manual")  # fmt: skip

    assert real["id"] != drill["id"]


async def test_a_credential_in_any_text_is_stored_redacted(
    book: IncidentBook, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "planted-secret-0123456789"
    monkeypatch.setattr(credentials, "_secrets", frozenset({secret}))
    record = await book.open(kind=IncidentKind.CRITICAL, issue=f"key {secret} leaked",
                             actor="ops", bots=[])  # fmt: skip
    await book.note(record["id"], text=f"revoked {secret}", actor="ops", action=True)
    await book.close(record["id"], root_cause=f"{secret} in a log", outcome=Outcome.SUCCESS,
                     actor="ops", lessons_learned=f"never paste {secret}")  # fmt: skip

    for table in ("incidents", "incident_notes", "audit_events"):
        rows = await store.fetch_all(f"SELECT * FROM {table}")
        assert rows
        assert not any(secret in str(value) for row in rows for value in dict(row).values())
    assert "[redacted]" in (await book.get(record["id"]))["issue"]


async def test_listing_filters_by_status_newest_first(book: IncidentBook) -> None:
    a = await book.open(kind=IncidentKind.CRITICAL, issue="a", actor="ops", bots=[])
    b = await book.open(kind=IncidentKind.PURCHASE_FAILURE, issue="b", actor="ops", bots=[])
    await book.close(a["id"], root_cause="r", outcome=Outcome.SUCCESS, actor="ops")

    assert [r["id"] for r in await book.list()] == [b["id"], a["id"]]
    assert [r["id"] for r in await book.list(status="open")] == [b["id"]]


async def test_every_change_keeps_the_journal_verifying_clean(
    book: IncidentBook, store: SqliteStore, tmp_path: Path
) -> None:
    record = await book.open(kind=IncidentKind.CRITICAL, issue="x", actor="ops", bots=[])
    await book.note(record["id"], text="n", actor="ops", tick=["document"])
    await book.close(record["id"], root_cause="r", outcome=Outcome.SUCCESS, actor="ops")

    report = await verify_database(tmp_path / "coordinator.db")
    assert report.ok, report.as_dict()
    assert await actions(store) == [(a, f"incident #{record['id']}")
                                    for a in ("incident.open", "incident.note", "incident.close")]
