"""With a coordinator running: `POST /backups`, `GET /backups`, `/status`, and the CLI commands
that go through it (`backup`) or ask it first (`restore`)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api.app import make_app
from coordinator.api.auth import TOKEN_ENV, ControlToken, load_or_create_token
from coordinator.backups.service import BackupService
from coordinator.cli import _lock_data_dir, main
from coordinator.config.models import CoordinatorConfig
from coordinator.runtime import Coordinator
from tests.coordinator.backups.support import archives, manifest_of
from tests.support_config import eventually
from tests.support_process import free_port


@dataclass
class Running:
    coordinator: Coordinator
    backups: BackupService
    client: TestClient
    port: int
    auth: dict[str, str]
    dirs: list[str]


@pytest.fixture
def token(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> ControlToken:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    return load_or_create_token(data_dir, environ={})


@pytest.fixture
async def running(
    config: CoordinatorConfig,
    data_dir: Path,
    backup_dir: Path,
    config_dir: Path,
    tmp_path: Path,
    token: ControlToken,
) -> AsyncIterator[Running]:
    """A coordinator with backups, serving on a real port, holding the data dir's lock."""
    lock: IO[str] = await asyncio.to_thread(_lock_data_dir, data_dir)
    coordinator = await Coordinator.open(config, data_dir, backup_dir=backup_dir)
    assert coordinator.backups is not None
    service = coordinator.backups
    await eventually(lambda: service.state.result == "ok", what="the backup at start")
    port = free_port()
    server = TestServer(make_app(coordinator, token), host="127.0.0.1", port=port)
    dirs = ["--config-dir", str(config_dir), "--backup-dir", str(backup_dir)]
    dirs += ["--data-dir", str(data_dir), "--log-dir", str(tmp_path / "logs"), "--port", str(port)]
    try:
        async with TestClient(server) as client:
            yield Running(
                coordinator, service, client, port, {"Authorization": f"Bearer {token.value}"}, dirs
            )
    finally:
        await coordinator.close(grace_seconds=0.5)
        lock.close()


async def cli(*argv: str) -> int:
    """The CLI in a thread: it blocks, and it talks to the server in this loop."""
    return await asyncio.to_thread(main, list(argv))


async def test_post_backups_needs_the_token_and_is_audited(running: Running) -> None:
    refused = await running.client.post("/backups")
    assert refused.status == 401

    answer = await running.client.post("/backups", headers=running.auth)

    assert answer.status == 200, await answer.text()
    body = await answer.json()
    assert body["trigger"] == "api"
    assert "database/coordinator.db" in body["files"]
    events = await running.coordinator.journal.recent_audit(20)
    mine = [e for e in events if e["action"] == "backup.create" and e["actor"] == "operator-token"]
    assert mine
    assert mine[0]["result"] == "ok"
    assert mine[0]["subject"] == body["name"]


async def test_get_backups_lists_them_newest_first_with_their_verification(
    running: Running, backup_dir: Path, tmp_path: Path
) -> None:
    await running.client.post("/backups", headers=running.auth)
    names = [p.name for p in archives(backup_dir)]
    # An archive this process did not write (copied in), and a damaged one.
    shutil.copy(backup_dir / names[0], backup_dir / "config-20200101-000000.tar.gz")
    damaged = backup_dir / "config-20200101-000001.tar.gz"
    damaged.write_bytes((backup_dir / names[0]).read_bytes()[:-300])

    listed = await (await running.client.get("/backups")).json()

    assert listed["latest"] == names[-1]
    rows = listed["backups"]
    assert [r["name"] for r in rows] == [
        *reversed(names),
        damaged.name,
        "config-20200101-000000.tar.gz",
    ]
    assert rows[0]["latest"] is True
    assert not any(r["latest"] for r in rows[1:])
    assert rows[0]["verified"] is True
    assert rows[0]["size"] > 0
    assert rows[0]["database"] is True
    assert "config/bot-limits.json" in rows[0]["files"]
    assert rows[-1]["verified"] is None  # not checked yet: listing stays cheap
    assert listed["last"]["result"] == "ok"

    checked = await (await running.client.get("/backups?verify=true")).json()
    by_name = {r["name"]: r for r in checked["backups"]}
    assert by_name["config-20200101-000000.tar.gz"]["verified"] is True
    assert by_name[damaged.name]["verified"] is False
    assert "corrupt or truncated" in by_name[damaged.name]["error"]
    bad = await running.client.get("/backups?verify=yes")
    assert bad.status == 400


async def test_status_shows_the_last_backup(running: Running, backup_dir: Path) -> None:
    status = await (await running.client.get("/status")).json()
    backups: dict[str, Any] = status["backups"]
    assert backups["result"] == "ok"
    assert backups["error"] is None
    assert backups["directory"] == str(backup_dir)
    assert 0 <= backups["age_seconds"] < 60
    assert backups["next_at"] > backups["last_at"]


async def test_the_backup_command_asks_the_running_coordinator(
    running: Running, backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(archives(backup_dir))

    assert await cli("backup", *running.dirs) == 0

    new = set(archives(backup_dir)) - before
    assert len(new) == 1
    assert manifest_of(new.pop())["trigger"] == "api"
    assert "backup written by the running coordinator" in capsys.readouterr().err


async def test_restore_is_refused_while_bots_trade_unless_the_kill_switch_is_active(
    running: Running, config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limits = config_dir / "bot-limits.json"
    good = limits.read_bytes()
    limits.write_bytes(b"{broken")
    await running.coordinator.start_bot("ndax", False, "test")

    assert await cli("restore", "--latest", "--config-only", *running.dirs) == 1
    assert "bots are trading (ndax) and the kill switch is not active" in capsys.readouterr().err
    assert await cli("restore", "--latest", *running.dirs) == 1
    assert "the database is never restored under it; stop it first" in capsys.readouterr().err
    assert limits.read_bytes() == b"{broken"

    await running.coordinator.activate_kill_switch("restore drill", "test")

    assert await cli("restore", "--latest", "--config-only", *running.dirs) == 0
    assert limits.read_bytes() == good
    assert "keeps the config it loaded until it is restarted" in capsys.readouterr().err
