"""`bot-coordinator --verify-data`: exit codes, the table and the JSON an operator reads.

`main` runs in-process (it calls asyncio.run itself, so these tests are synchronous); the
journal is built on a loop of its own first.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.cli import main
from coordinator.integrity import verify_database
from coordinator.runtime import DATABASE_FILE
from tests.coordinator.test_integrity import GRID, build_journal, tamper


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    asyncio.run(build_journal(path / DATABASE_FILE))
    return path


def verify(data_dir: Path, *extra: str) -> int:
    return main(["--verify-data", "--data-dir", str(data_dir), *extra])


def test_a_clean_journal_exits_0_with_a_one_line_summary(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify(data_dir) == 0

    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"verify-data: {data_dir / DATABASE_FILE}",
        "clean: 5 orders, 4 fills, 5 audit entries checked",
    ]


def test_a_deleted_fill_exits_1_naming_the_order_the_position_and_the_balances(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(data_dir / DATABASE_FILE, "DELETE FROM fills WHERE trade_id = 't-1'")

    assert verify(data_dir) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["CHECK", "TABLE", "ROW", "EXPECTED", "FOUND", "DETAIL"]
    table = lines[2:-1]
    order = [line for line in table if "client_order_id 101" in line]
    assert len(order) == 1
    assert order[0].split()[:2] == ["orders", "orders"]
    assert "filled 0.5" in order[0]
    assert any(line.split()[:4] == ["books", "positions", "bot", GRID] for line in table)
    for asset in ("AUD", "BTC"):
        assert any(f"bot {GRID} asset {asset}" in line for line in table), asset
    assert lines[-1].startswith(f"{len(table)} inconsistencies")


def test_json_lists_the_same_inconsistencies(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = data_dir / DATABASE_FILE
    tamper(
        path,
        "DELETE FROM fills WHERE trade_id = 't-3'",
        "UPDATE audit_events SET reason = 'edited' WHERE id = 2",
    )

    assert verify(data_dir, "--json") == 1

    answer = json.loads(capsys.readouterr().out)
    expected = asyncio.run(verify_database(path)).as_dict()
    assert answer == expected
    assert answer["ok"] is False
    assert answer["database"] == str(path)
    rows = {(i["check"], i["row"]) for i in answer["inconsistencies"]}
    assert ("orders", "client_order_id 102") in rows
    assert ("audit", "id 2") in rows
    assert answer["checked"]["audit"] == 5


def test_json_of_a_clean_journal_is_ok(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify(data_dir, "--json") == 0

    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is True
    assert answer["inconsistencies"] == []


def test_no_database_exits_2_with_a_clear_message_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "nothing-here"

    assert verify(data_dir) == 2

    err = capsys.readouterr().err
    assert f"no database at {data_dir / DATABASE_FILE}" in err
    assert "--data-dir" in err
    assert not data_dir.exists()


def test_it_runs_before_the_config_is_read_so_a_broken_config_does_not_stop_it(
    data_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "config"
    broken.mkdir()
    (broken / "bots.json").write_text("{ not json", encoding="utf-8")

    assert verify(data_dir, "--config-dir", str(broken), "--log-dir", str(tmp_path / "logs")) == 0
    assert not (tmp_path / "logs").exists()


@pytest.fixture
def locked(data_dir: Path) -> Iterator[None]:
    """The data dir's lock held, as a running coordinator holds it."""
    with (data_dir / "coordinator.lock").open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


@pytest.mark.usefixtures("locked")
def test_it_does_not_need_the_data_dir_lock(data_dir: Path) -> None:
    assert verify(data_dir) == 0


def test_it_does_not_create_the_lock_file(data_dir: Path) -> None:
    assert verify(data_dir) == 0
    assert not (data_dir / "coordinator.lock").exists()


def test_json_without_verify_data_is_an_argument_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--json"])

    assert caught.value.code == 2
    assert "--json needs --verify-data" in capsys.readouterr().err
