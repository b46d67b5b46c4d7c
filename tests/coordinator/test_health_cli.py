"""`bot-coordinator --health-check`: on its own without a coordinator (config, journal, kill
switch, dirs, disk, credentials, exchanges), and asking the one that runs.

`main` runs in-process (it calls asyncio.run itself, so these tests are synchronous).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from coordinator.cli import main
from coordinator.config import load_config
from coordinator.runtime import DATABASE_FILE, Coordinator
from tests.bots.exchanges.ccxt_fixtures import kraken_ok
from tests.support_config import write_fast_config
from tests.support_process import CoordinatorProcess

KRAKEN_STATUS = "https://api.kraken.com/0/public/SystemStatus"


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    paths = {
        "config": write_fast_config(tmp_path / "config"),
        "data": tmp_path / "data",
        "backups": tmp_path / "backups",
    }
    return paths


def check(dirs: dict[str, Path], *extra: str) -> int:
    return main([
        "--health-check",
        "--config-dir", str(dirs["config"]),
        "--data-dir", str(dirs["data"]),
        "--backup-dir", str(dirs["backups"]),
        *extra,
    ])


def lines_of(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """Check name -> its line, from the report."""
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("health check: ")
    assert out[-1].startswith("verdict: ")
    found = {"verdict": out[-1]}
    for line in out[1:-1]:
        status, rest = line.split(maxsplit=1)
        found[rest.split("  ")[0].strip()] = f"{status} {rest}"
    return found


def make_journal(data_dir: Path, config_dir: Path, kill_switch: str | None = None) -> None:
    async def build() -> None:
        config = await asyncio.to_thread(load_config, config_dir)
        coordinator = await Coordinator.open(config, data_dir)
        try:
            if kill_switch is not None:
                await coordinator.activate_kill_switch(kill_switch, "test")
        finally:
            await coordinator.close(grace_seconds=0.2)

    data_dir.mkdir(exist_ok=True)
    asyncio.run(build())


def test_a_fresh_machine_is_healthy_and_says_what_it_checked(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(dirs) == 0

    found = lines_of(capsys)
    assert found["verdict"] == "verdict: HEALTHY"
    for name in ("config", "journal", "data dir", "backup dir", "disk", "exchanges"):
        assert found[name].startswith("OK"), found
    assert "the first start creates it" in found["journal"]


def test_a_journal_that_passes_quick_check_is_ok_and_the_kill_switch_state_is_read(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    make_journal(dirs["data"], dirs["config"], kill_switch="disk failure drill")

    assert check(dirs) == 0  # Step 5 comes before the kill switch is lifted: a warning

    found = lines_of(capsys)
    assert found["journal"].startswith("OK")
    assert "passes quick_check" in found["journal"]
    assert found["kill switch"].startswith("WARN")
    assert "ACTIVE" in found["kill switch"]
    assert "disk failure drill" in found["kill switch"]
    assert found["verdict"] == "verdict: HEALTHY, 1 warning(s)"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:100] + b"\x00" * 4096 + data[4196:], id="header"),
        pytest.param(lambda data: b"this is not a database" * 100, id="garbage"),
        pytest.param(
            lambda data: data[:8192] + bytes(range(256)) * 16 + data[8192 + 4096:], id="a-page"
        ),
    ],
)
def test_a_corrupted_journal_exits_1_naming_it(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str], damage: Any
) -> None:
    make_journal(dirs["data"], dirs["config"])
    path = dirs["data"] / DATABASE_FILE
    path.write_bytes(damage(path.read_bytes()))

    assert check(dirs) == 1

    found = lines_of(capsys)
    assert found["journal"].startswith("FAIL")
    assert str(path) in found["journal"]
    assert found["verdict"].startswith("verdict: UNHEALTHY (1 check(s) failed)")


def test_an_invalid_config_file_fails_naming_the_file_and_the_field(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    alerts = dirs["config"] / "alerts.json"
    document = json.loads(alerts.read_text())
    document["rules"]["order_failure_rate"]["critical_above_pct"] = "five"
    alerts.write_text(json.dumps(document))

    assert check(dirs) == 1

    out = capsys.readouterr().out
    assert "FAIL  config" in out
    assert "alerts.json" in out
    assert "rules.order_failure_rate.critical_above_pct" in out


def live_kraken(documents: dict[str, Any]) -> None:
    kraken = next(b for b in documents["bots.json"]["bots"] if b["name"] == "kraken")
    kraken.update(mode="live", market_data="exchange")
    documents["bots.json"]["bots"] = [kraken]
    documents["bot-limits.json"]["bots"] = {}


def test_a_live_bot_without_its_credentials_names_the_variables_never_a_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs = {"config": write_fast_config(tmp_path / "config", live_kraken),
            "data": tmp_path / "data", "backups": tmp_path / "backups"}
    monkeypatch.setenv("KRAKEN_API_KEY", "key-value-that-must-not-show")
    monkeypatch.delenv("KRAKEN_API_SECRET", raising=False)

    with aioresponses() as m:
        m.get(KRAKEN_STATUS, payload=kraken_ok({"status": "online", "timestamp": "t"}))
        assert check(dirs) == 1

    out = capsys.readouterr().out
    assert "FAIL  credentials kraken" in out
    assert "KRAKEN_API_SECRET" in out
    assert "key-value-that-must-not-show" not in out
    assert "OK    exchange kraken" in out


def test_an_exchange_that_does_not_answer_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs = {"config": write_fast_config(tmp_path / "config", live_kraken),
            "data": tmp_path / "data", "backups": tmp_path / "backups"}
    monkeypatch.setenv("KRAKEN_API_KEY", "k")
    monkeypatch.setenv("KRAKEN_API_SECRET", "cw==")

    with aioresponses() as m:
        m.get(KRAKEN_STATUS, exception=aiohttp.ClientConnectionError("connection refused"))
        assert check(dirs, "--json") == 1

    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "unhealthy"
    assert report["source"].startswith("offline")
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["credentials kraken"]["status"] == "ok"
    assert by_name["exchange kraken"]["status"] == "fail"
    assert by_name["exchange kraken"]["detail"]


def test_an_unwritable_backup_dir_fails(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dirs["backups"].write_text("a file where the backup dir should be")
    dirs["backups"] = dirs["backups"] / "inside"

    assert check(dirs) == 1

    assert "FAIL  backup dir" in capsys.readouterr().out


def test_with_a_coordinator_running_it_asks_that_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process = CoordinatorProcess(tmp_path, write_fast_config(tmp_path / "config")).start()
    try:
        process.wait_ready()
        process.request("POST", "/kill-switch", {"action": "activate", "reason": "drill"})

        code = main([
            "--health-check", "--data-dir", str(process.data_dir), "--port", str(process.port),
        ])

        out = capsys.readouterr().out
        assert code == 0, out  # the kill switch is a warning here (Step 5 precedes Step 6)
        assert f"the running coordinator on 127.0.0.1:{process.port}" in out
        assert "OK    database" in out
        assert "WARN  kill_switch" in out
        assert "OK    bots.ndax" in out
    finally:
        process.kill()
