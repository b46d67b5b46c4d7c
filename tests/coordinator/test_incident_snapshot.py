"""The incident snapshot: one archive of the evidence, its manifest verifying, no secret in it."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path

import pytest

from coordinator.config.models import CoordinatorConfig
from coordinator.credentials import REDACTED
from coordinator.incident_snapshot import (
    MANIFEST,
    SnapshotError,
    take_snapshot,
    verify_snapshot,
)
from coordinator.runtime import Coordinator
from tests.support_config import eventually

PLANTED_KEY = "PLANTED-snapshot-key-5e1d9c3a"
NOBODY = "http://127.0.0.1:9"  # nothing listens on the discard port here


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        out: dict[str, bytes] = {}
        for info in tar.getmembers():
            extracted = tar.extractfile(info)
            assert extracted is not None
            out[info.name] = extracted.read()
        return out


def write_tar(path: Path, content: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
async def traded(config: CoordinatorConfig, data_dir: Path) -> Path:
    """A data dir whose journal has orders, fills and audit entries (the coordinator closed)."""
    coordinator = await Coordinator.open(config, data_dir)
    try:
        await coordinator.start_bot("ndax", safe_mode=False, actor="operator-token")
        ndax = coordinator.supervisor.runner("ndax")
        await eventually(lambda: ndax.parts.book.fills_count > 0, what="a fill")
    finally:
        await coordinator.close(grace_seconds=0.5)
    return data_dir


async def test_a_snapshot_without_a_coordinator_holds_the_evidence_and_no_secret(
    traded: Path, config: CoordinatorConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NDAX_API_KEY", PLANTED_KEY)  # bots.json names it for ndax
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "bot-coordinator.log").write_text(f'{{"msg": "auth failed for {PLANTED_KEY}"}}\n')
    (logs / "bot-coordinator.log.1").write_text('{"msg": "an older, rotated line"}\n')

    snapshot = await asyncio.to_thread(
        take_snapshot, traded, config.source_dir, logs, tmp_path / "out", NOBODY
    )

    assert snapshot.coordinator_running is False
    assert snapshot.path.parent == tmp_path / "out"
    content = await asyncio.to_thread(members, snapshot.path)
    assert next(iter(content)) == MANIFEST  # first, for `tar tzf | head`
    assert {"logs/bot-coordinator.log", "logs/bot-coordinator.log.1", "audit.json",
            "verify-data.json", "status.json", "reconciliation.json", "versions.json",
            "config/bots.json", "config/bot-limits.json"} <= content.keys()  # fmt: skip
    for name, data in content.items():
        assert PLANTED_KEY.encode() not in data, name
    assert REDACTED.encode() in content["logs/bot-coordinator.log"]
    verify = json.loads(content["verify-data.json"])
    assert verify["ok"] is True
    assert verify["checked"]["audit"] > 0  # the audit log's hash chain was verified
    audit = json.loads(content["audit.json"])["events"]
    assert any(event["action"] == "bot.start" for event in audit)
    status = json.loads(content["status.json"])
    assert status["coordinator_running"] is False
    effective = json.loads(content["effective-config.json"])
    assert effective["valid"] is True
    assert effective["bots"]["ndax"]["limits"]["max_order_notional"] == "250"
    versions = json.loads(content["versions.json"])
    assert versions["ccxt"]
    assert versions["sqlite"]
    assert versions["python"]
    manifest = await asyncio.to_thread(verify_snapshot, snapshot.path)
    assert manifest["members"].keys() == content.keys() - {MANIFEST}


async def test_an_altered_member_fails_verification_naming_it(
    traded: Path, config: CoordinatorConfig, tmp_path: Path
) -> None:
    snapshot = await asyncio.to_thread(
        take_snapshot, traded, config.source_dir, tmp_path / "nologs", tmp_path / "out", NOBODY
    )
    content = await asyncio.to_thread(members, snapshot.path)
    content["audit.json"] = content["audit.json"].replace(b"bot.start", b"bot.stop_")
    altered = tmp_path / "altered.tar.gz"
    await asyncio.to_thread(write_tar, altered, content)

    with pytest.raises(SnapshotError, match=r"audit\.json has sha256"):
        await asyncio.to_thread(verify_snapshot, altered)
    assert "no log files" in " ".join(snapshot.notes)


def test_a_file_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip")

    with pytest.raises(SnapshotError, match="not a readable snapshot archive"):
        verify_snapshot(junk)


async def test_two_snapshots_in_one_second_are_both_kept(
    traded: Path, config: CoordinatorConfig, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
    take = lambda: take_snapshot(  # noqa: E731
        traded, config.source_dir, tmp_path / "nologs", tmp_path / "out", NOBODY, at
    )
    first = await asyncio.to_thread(take)
    second = await asyncio.to_thread(take)

    assert first.path.name == "incident-20261204T120000Z.tar.gz"
    assert second.path.name == "incident-20261204T120000Z-2.tar.gz"
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == {first.path.name, second.path.name}  # no temporary file left
