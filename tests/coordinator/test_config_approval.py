"""The config gate's own parts: approvals in the journal, the refusal, the diff, the file watch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.config import load_config
from coordinator.config.models import CoordinatorConfig
from coordinator.config_approval import (
    FIRST_START,
    ConfigGate,
    check_accept,
    latest_approvals,
)
from coordinator.errors import BadRequest, Conflict, UnknownBot
from coordinator.store.journal import SqliteJournal
from coordinator.store.sqlite import SqliteStore
from tests.support_config import FakeClock, eventually, write_fast_config


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    store = await SqliteStore.open(tmp_path / "journal.db")
    try:
        yield SqliteJournal(store)
    finally:
        await store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def change_ndax(documents: dict[str, Any]) -> None:
    """ndax's DCA amount from 25 to 30 (kraken unchanged)."""
    ndax = documents["bots.json"]["bots"][0]
    assert ndax["name"] == "ndax"
    ndax["strategy"]["params"]["quote_amount"] = 30


async def changed_config(tmp_path: Path, name: str = "changed") -> CoordinatorConfig:
    """The fast config with ndax changed, written and loaded off the event loop."""
    return await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / name, change_ndax))
    )


async def audits(journal: SqliteJournal, action: str) -> list[dict[str, Any]]:
    return [e for e in await journal.recent_audit(100) if e["action"] == action]


async def test_a_fresh_journal_has_no_approvals_and_bootstrap_approves_every_bot_once(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock
) -> None:
    gate = await ConfigGate.open(config, journal, clock)
    assert gate.approvals == {}
    assert gate.unapproved() == ["ndax", "kraken"]

    first = await gate.bootstrap()
    again = await ConfigGate.open(config, journal, clock)
    second = await again.bootstrap()

    assert first == ["ndax", "kraken"]
    assert second == []
    stored = await latest_approvals(journal.store)
    assert {bot: a.approved_by for bot, a in stored.items()} == {
        "ndax": FIRST_START, "kraken": FIRST_START,
    }  # fmt: skip
    assert stored["ndax"].config_sha256 == gate.fingerprints["ndax"].sha256
    assert stored["ndax"].previous_sha256 is None
    assert stored["ndax"].code_version == gate.code.label
    assert json.loads(stored["ndax"].config_json) == json.loads(
        gate.fingerprints["ndax"].config_json
    )
    entries = await audits(journal, "config.approve")
    assert sorted(e["subject"] for e in entries) == ["kraken", "ndax"]
    assert all(e["details"]["approved_by"] == FIRST_START for e in entries)
    assert again.unapproved() == []


async def test_bootstrap_never_approves_a_changed_config_only_a_new_bot(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock, tmp_path: Path
) -> None:
    await (await ConfigGate.open(config, journal, clock)).bootstrap()

    def change_ndax_and_add_a_bot(documents: dict[str, Any]) -> None:
        bots = documents["bots.json"]["bots"]
        bots[0]["strategy"]["params"]["quote_amount"] = 30
        bots.append({**json.loads(json.dumps(bots[0])), "name": "ndax-two"})

    grown = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "grown", change_ndax_and_add_a_bot))
    )
    gate = await ConfigGate.open(grown, journal, clock)

    assert await gate.bootstrap() == ["ndax-two"]
    assert gate.unapproved() == ["ndax"]
    assert gate.refusal("ndax-two") is None


async def test_the_refusal_names_both_hashes_the_approver_and_what_to_do(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock, tmp_path: Path
) -> None:
    before = await ConfigGate.open(config, journal, clock)
    await before.bootstrap()
    gate = await ConfigGate.open(await changed_config(tmp_path), journal, clock)

    reason = gate.refusal("ndax")

    assert gate.refusal("kraken") is None
    assert reason is not None
    assert gate.fingerprints["ndax"].sha256 in reason
    assert before.fingerprints["ndax"].sha256 in reason
    assert FIRST_START in reason
    assert "bot-coordinator config approve --approved-by WHO" in reason
    assert '"accept_config_change": true' in reason
    with pytest.raises(UnknownBot):
        gate.refusal("nope")


async def test_an_approval_records_both_hashes_and_audits_them_and_the_refusal_is_gone(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock, tmp_path: Path
) -> None:
    old = await ConfigGate.open(config, journal, clock)
    await old.bootstrap()
    gate = await ConfigGate.open(await changed_config(tmp_path), journal, clock)

    result = await gate.approve(None, "ops lead", "new DCA amount", "operator-token")

    new_sha, old_sha = gate.fingerprints["ndax"].sha256, old.fingerprints["ndax"].sha256
    [approval] = result["approved"]
    assert approval["bot"] == "ndax"
    assert (approval["previous_sha256"], approval["config_sha256"]) == (old_sha, new_sha)
    assert result["unchanged"] == []  # only changed bots were asked for
    assert gate.refusal("ndax") is None
    [entry] = [e for e in await audits(journal, "config.approve") if e["actor"] == "operator-token"]
    assert entry["subject"] == "ndax"
    assert entry["result"] == "ok"
    assert entry["reason"] == "new DCA amount"
    assert entry["details"]["previous_sha256"] == old_sha
    assert entry["details"]["config_sha256"] == new_sha
    assert entry["details"]["approved_by"] == "ops lead"
    reread = await ConfigGate.open(await changed_config(tmp_path, "again"), journal, clock)
    assert reread.unapproved() == []


async def test_approving_a_bot_already_approved_records_nothing(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock
) -> None:
    gate = await ConfigGate.open(config, journal, clock)
    await gate.bootstrap()

    result = await gate.approve(["kraken"], "ops", None, "cli")

    assert result == {"approved": [], "unchanged": ["kraken"]}
    assert [e["actor"] for e in await audits(journal, "config.approve")] == ["coordinator"] * 2


@pytest.mark.parametrize(
    ("bots", "approved_by", "expected", "error", "message"),
    [
        (None, "  ", None, BadRequest, "approved_by: required"),
        (None, "x" * 101, None, BadRequest, "approved_by: at most 100"),
        (["nope"], "ops", None, UnknownBot, "no bot named 'nope'"),
        (["ndax"], "ops", {"ndax": "0" * 64}, Conflict, "not the " + "0" * 64),
    ],
)
async def test_a_refused_approval_says_why_is_audited_and_records_nothing(
    config: CoordinatorConfig,
    journal: SqliteJournal,
    clock: FakeClock,
    tmp_path: Path,
    bots: list[str] | None,
    approved_by: str,
    expected: dict[str, str] | None,
    error: type[Exception],
    message: str,
) -> None:
    await (await ConfigGate.open(config, journal, clock)).bootstrap()
    gate = await ConfigGate.open(await changed_config(tmp_path), journal, clock)

    with pytest.raises(error, match=message):
        await gate.approve(bots, approved_by, None, "operator-token", expected=expected)

    assert gate.unapproved() == ["ndax"]
    refused = [e for e in await audits(journal, "config.approve") if e["result"] != "ok"]
    assert len(refused) == 1
    assert refused[0]["result"].startswith("refused: ")


async def test_clear_to_start_refuses_and_counts_or_approves_with_an_approver(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock, tmp_path: Path
) -> None:
    await (await ConfigGate.open(config, journal, clock)).bootstrap()
    counted: list[str] = []
    gate = await ConfigGate.open(await changed_config(tmp_path), journal, clock, counted.append)
    revision = gate.revision("ndax")

    with pytest.raises(Conflict, match="bot 'ndax' cannot start: its effective config") as caught:
        await gate.clear_to_start("ndax", "operator-token", None, "accept_config_change")
    assert caught.value.code == "config_not_approved"
    assert (gate.refusals["ndax"], counted, gate.bot_entry("ndax")["refusals"]) == (1, ["ndax"], 1)
    assert gate.revision("ndax") > revision

    await gate.clear_to_start("ndax", "operator-token", "ops lead", "accept_config_change")

    assert gate.approved("ndax")
    assert gate.bot_entry("ndax")["approved_by"] == "ops lead"
    [entry] = [e for e in await audits(journal, "config.approve") if e["actor"] != "coordinator"]
    assert entry["details"]["via"] == "accept_config_change"


@pytest.mark.parametrize(
    ("accept", "approved_by", "message"),
    [
        (True, None, "approved_by: required with accept_config_change"),
        (True, " ", "approved_by: required with accept_config_change"),
        (False, "ops", "approved_by: only with accept_config_change"),
    ],
)
def test_an_accepted_change_needs_an_approver_and_an_approver_needs_the_acceptance(
    accept: bool, approved_by: str | None, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        check_accept(accept, approved_by)


def test_an_accepted_change_with_an_approver_names_the_approver() -> None:
    assert check_accept(True, " ops lead ") == "ops lead"
    assert check_accept(False, None) is None


async def test_the_diff_is_empty_when_approved_and_shows_the_changed_line_when_not(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock, tmp_path: Path
) -> None:
    await (await ConfigGate.open(config, journal, clock)).bootstrap()
    gate = await ConfigGate.open(await changed_config(tmp_path), journal, clock)

    diff = gate.diff("ndax")

    assert gate.diff("kraken") == ""
    assert diff.startswith(f"--- ndax approved {gate.approvals['ndax'].config_sha256[:12]} by ")
    assert f"+++ ndax effective {gate.fingerprints['ndax'].sha256[:12]}" in diff
    removed = [line for line in diff.splitlines() if line.startswith("- ")]
    added = [line for line in diff.splitlines() if line.startswith("+ ")]
    assert [line.replace(" ", "") for line in removed] == ['-"quote_amount":"25"']
    assert [line.replace(" ", "") for line in added] == ['+"quote_amount":"30"']
    document = gate.diff_document("ndax")
    assert list(document["bots"]) == ["ndax"]
    assert document["bots"]["ndax"]["approved"] is False
    with pytest.raises(UnknownBot):
        gate.diff_document("nope")


async def test_a_bot_with_no_approval_diffs_against_nothing(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock
) -> None:
    gate = await ConfigGate.open(config, journal, clock)

    diff = gate.diff("ndax")

    assert diff.startswith("--- ndax (no approved config)")
    assert '+  "bot": {' in diff


async def test_a_config_file_changed_on_disk_is_reported_and_audited_once_per_change(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock
) -> None:
    gate = await ConfigGate.open(config, journal, clock)
    await gate.bootstrap()
    path = config.source_dir / "bots.json"
    original = path.read_bytes()

    assert await gate.check_files() == []
    path.write_bytes(original + b"\n")
    assert await gate.check_files() == ["bots.json"]
    assert await gate.check_files() == ["bots.json"]  # the same change: not audited again
    path.write_bytes(original)
    assert await gate.check_files() == []

    files = gate.status()["files"]
    assert set(files) == {
        "bots.json", "bot-limits.json", "kill-switch.json", "recovery-settings.json",
        "api-endpoints.json", "alerts.json",
    }  # fmt: skip
    assert files["bots.json"]["changed"] is False
    entries = await audits(journal, "config.changed_on_disk")
    assert [(e["subject"], e["result"]) for e in reversed(entries)] == [
        ("bots.json", "changed"),
        ("bots.json", "back to its content at start"),
    ]
    assert entries[-1]["details"]["sha256_at_start"] == files["bots.json"]["sha256_at_start"]
    assert gate.refusal("ndax") is None  # the effective config is what was read at start


async def test_a_config_file_removed_from_disk_is_a_change(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock
) -> None:
    gate = await ConfigGate.open(config, journal, clock)
    (config.source_dir / "alerts.json").unlink()

    assert await gate.check_files() == ["alerts.json"]
    assert gate.status()["files"]["alerts.json"]["sha256_now"] is None


async def test_the_watch_finds_a_change_by_itself(
    config: CoordinatorConfig, journal: SqliteJournal, clock: FakeClock
) -> None:
    gate = await ConfigGate.open(config, journal, clock)
    gate.watch_seconds = 0.01
    gate.start_watch()
    try:
        path = config.source_dir / "bot-limits.json"
        path.write_bytes(path.read_bytes() + b" ")
        await eventually(lambda: gate.changed_since_start() == ["bot-limits.json"], what="change")
    finally:
        await gate.stop_watch()
    assert gate.status()["checked_at"] is not None
