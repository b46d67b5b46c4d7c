"""A planted API key and secret, read from a credentials file of mode 0600, appear in no log
line, no control-plane answer, no audit entry and no backup archive, even when the venue's own
error messages echo them back."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import queue
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aioresponses import CallbackResult

from coordinator.accounts import (
    Accounts,
    MissingCredentials,
    load_credentials_source,
    read_credentials,
)
from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken, load_or_create_token
from coordinator.config import load_config
from coordinator.credentials import CREDENTIALS_FILE_ENV, REDACTED
from coordinator.logging_setup import JsonLinesFormatter, _PreparingQueueHandler
from coordinator.runtime import Coordinator
from tests.support_config import eventually, write_fast_config
from tests.support_kraken import FakeKraken, kraken_client, live_kraken, serving

KEY = "PLANTED-api-key-7f3a9c1e5b"
SECRET_BYTES = b"PLANTED-secret-bytes-0d8e2a6f"
SECRET = base64.b64encode(SECRET_BYTES).decode()


class EchoingKraken(FakeKraken):
    """A venue whose refusals quote the caller's API key back (some do, in error texts)."""

    refuse_balance = True

    def balance_ex(self, url: Any, **kwargs: Any) -> CallbackResult:
        if self.refuse_balance:
            return CallbackResult(payload={"error": [f"EGeneral:Permission denied for {KEY}"]})
        return super().balance_ex(url, **kwargs)

    def add_order(self, url: Any, **kwargs: Any) -> CallbackResult:
        return CallbackResult(
            payload={"error": [f"EOrder:Insufficient funds (key {KEY}, secret {SECRET})"]}
        )


@pytest.fixture
def credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"KRAKEN_API_KEY": KEY, "KRAKEN_API_SECRET": SECRET}))
    path.chmod(0o600)
    monkeypatch.delenv("KRAKEN_API_KEY", raising=False)
    monkeypatch.delenv("KRAKEN_API_SECRET", raising=False)
    monkeypatch.setenv(CREDENTIALS_FILE_ENV, str(path))
    return path


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[str]]]:
    """Every record logged meanwhile, through the coordinator's own log pipeline (the handler
    that redacts), as the JSON lines the log file would hold."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _PreparingQueueHandler(records)
    root = logging.getLogger()
    root.addHandler(handler)
    formatter = JsonLinesFormatter()
    lines: list[str] = []

    def drained() -> list[str]:
        while not records.empty():
            lines.append(formatter.format(records.get()))
        return lines

    try:
        yield drained
    finally:
        root.removeHandler(handler)


def planted_client(exchange: str, credentials: Any, ssl_context: Any) -> Any:
    assert dict(credentials) == {"apiKey": KEY, "secret": SECRET}  # from the file
    client = kraken_client()
    client.apiKey, client.secret = credentials["apiKey"], credentials["secret"]
    return client


def leaks(text: str) -> list[str]:
    return [s for s in (KEY, SECRET, SECRET_BYTES.decode()) if s in text]


@pytest.fixture
def token(tmp_path: Path) -> ControlToken:
    (tmp_path / "data").mkdir()
    return load_or_create_token(tmp_path / "data", environ={})


async def test_a_planted_key_and_secret_appear_nowhere(
    tmp_path: Path, credentials_file: Path, log_lines: Callable[[], list[str]],
    token: ControlToken,
) -> None:
    kraken = EchoingKraken()
    config = await asyncio.to_thread(
        lambda: load_config(write_fast_config(tmp_path / "config", live_kraken))
    )
    data_dir, backup_dir = tmp_path / "data", tmp_path / "backups"
    answers: list[str] = []
    kraken.deposit("AUD", "10000")
    kraken.deposit("BTC", "0.05")
    with serving(kraken, passthrough=["http://127.0.0.1"], account=True):
        source = await asyncio.to_thread(load_credentials_source)  # as Coordinator.open does
        coordinator = await Coordinator.open(
            config, data_dir, accounts=Accounts(planted_client, source), backup_dir=backup_dir
        )
        auth = {"Authorization": f"Bearer {token.value}"}
        try:
            async with TestClient(TestServer(make_app(coordinator, token))) as client:
                refused = await client.post("/start", json={"bot": "kraken"}, headers=auth)
                answers.append(await refused.text())
                assert refused.status == 503  # the venue refused the balance read
                assert "Permission denied for" in answers[-1]
                kraken.refuse_balance = False
                started = await client.post("/start", json={"bot": "kraken"}, headers=auth)
                answers.append(await started.text())
                assert started.status == 200, answers[-1]
                logging.getLogger("coordinator.test").error("an unguarded %s", KEY)
                book = coordinator.supervisor.runner("kraken").parts.book
                await eventually(lambda: book.errors != {}, what="an order refused by the venue")
                for path in ("/status", "/bots/kraken", "/audit?limit=1000", "/alerts",
                             "/metrics", "/health", "/config", "/kill-switch"):
                    answers.append(await (await client.get(path)).text())
                backup = await client.post("/backups", headers=auth)
                answers.append(await backup.text())
                assert backup.status == 200, answers[-1]
        finally:
            await coordinator.close(grace_seconds=0.5)

    logged = log_lines()
    assert kraken.calls, "the venue was asked"
    assert any("Insufficient funds" in line for line in logged), "the venue's echo was logged"
    # Text that no adapter cleaned (a bug's log line, a traceback's locals) is redacted too.
    assert any(f"an unguarded {REDACTED}" in line for line in logged)
    assert [line for line in logged if leaks(line)] == []
    assert [answer for answer in answers if leaks(answer)] == []
    audit = await asyncio.to_thread(_audit_rows, data_dir / "coordinator.db")
    assert [row for row in audit if leaks(row)] == []
    archives = [p for p in backup_dir.rglob("*") if p.is_file()]
    assert archives
    for archive in archives:
        assert leaks(await asyncio.to_thread(_archive_text, archive)) == [], archive


def _audit_rows(database: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(database) as db:
        return [" ".join(str(v) for v in row) for row in db.execute("SELECT * FROM audit_events")]


def _archive_text(path: Path) -> str:
    """Everything an archive holds, as text (bytes decoded leniently), or the file's text."""
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            return "".join(
                archive.extractfile(m).read().decode("utf-8", "replace")  # type: ignore[union-attr]
                for m in archive.getmembers() if m.isfile()
            )  # fmt: skip
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return "".join(archive.read(n).decode("utf-8", "replace") for n in archive.namelist())
    return path.read_bytes().decode("utf-8", "replace")


def test_a_credentials_file_readable_by_others_is_refused_naming_it_and_its_mode(
    tmp_path: Path, credentials_file: Path
) -> None:
    config = load_config(write_fast_config(tmp_path / "config", live_kraken))
    bot = config.bots.get("kraken")
    assert bot is not None
    assert read_credentials(bot, load_credentials_source())["apiKey"] == KEY

    credentials_file.chmod(0o640)

    with pytest.raises(MissingCredentials, match=r"mode 0640; it must be readable by its owner"):
        load_credentials_source()


def test_the_environment_wins_over_the_credentials_file(
    tmp_path: Path, credentials_file: Path
) -> None:
    config = load_config(write_fast_config(tmp_path / "config", live_kraken))
    bot = config.bots.get("kraken")
    assert bot is not None

    environ = {**os.environ, "KRAKEN_API_KEY": "from-the-environment"}
    found = read_credentials(bot, load_credentials_source(environ))

    assert found["apiKey"] == "from-the-environment"
    assert found["secret"] == SECRET
