"""Beyond loopback only with both tokens in 0600 files (or the environment); token rotation
without a restart: `token rotate [--admin] [--show]` and SIGHUP, the old token refused."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from coordinator.api.auth import (
    ADMIN_TOKEN_ENV,
    ADMIN_TOKEN_FILE,
    TOKEN_ENV,
    TOKEN_FILE,
    exposure_problems,
    load_or_create_token,
)
from coordinator.cli import EXIT_BAD_CONFIG, main
from coordinator.token_cli import running_coordinator
from tests.support_config import write_fast_config
from tests.support_process import CoordinatorProcess, wait_for


@pytest.fixture(autouse=True)
def no_env_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)


def start_args(tmp_path: Path, *extra: str) -> list[str]:
    config_dir = write_fast_config(tmp_path / "config")
    return [
        "--config-dir", str(config_dir), "--data-dir", str(tmp_path / "data"),
        "--log-dir", str(tmp_path / "logs"), "--backup-dir", str(tmp_path / "backups"), *extra,
    ]


def rotate(tmp_path: Path, *extra: str) -> int:
    return main(["--data-dir", str(tmp_path / "data"), "token", "rotate", *extra])


def test_a_non_loopback_host_without_tokens_is_refused_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(start_args(tmp_path, "--host", "0.0.0.0"))

    err = capsys.readouterr().err
    assert code == EXIT_BAD_CONFIG == 2
    assert "warning: --host '0.0.0.0' is not loopback" in err
    assert "the operator token is not set" in err
    assert TOKEN_ENV in err
    assert "the admin token is not set" in err
    assert ADMIN_TOKEN_ENV in err
    assert not (tmp_path / "data" / TOKEN_FILE).exists()  # none is generated for it


def test_a_non_loopback_host_with_a_loose_token_file_is_refused_and_not_tightened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rotate(tmp_path) == 0
    assert rotate(tmp_path, "--admin") == 0
    admin_file = tmp_path / "data" / ADMIN_TOKEN_FILE
    admin_file.chmod(0o640)
    capsys.readouterr()

    code = main(start_args(tmp_path, "--host", "192.0.2.2"))

    err = capsys.readouterr().err
    assert code == 2
    assert f"{admin_file} has mode 0640, not 0600" in err
    assert "operator" not in err
    assert stat.S_IMODE(admin_file.stat().st_mode) == 0o640


def test_tokens_from_the_environment_are_enough_to_bind_beyond_loopback(tmp_path: Path) -> None:
    env = {TOKEN_ENV: "o" * 32, ADMIN_TOKEN_ENV: "a" * 32}

    assert exposure_problems(tmp_path, env) == []
    assert len(exposure_problems(tmp_path, {TOKEN_ENV: "o" * 32})) == 1


def test_rotation_writes_a_new_0600_token_and_prints_it_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    old = load_or_create_token(data_dir, environ={}).value

    assert rotate(tmp_path) == 0
    quiet = capsys.readouterr()
    new = (data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    assert new != old
    assert len(new) >= 32
    assert stat.S_IMODE((data_dir / TOKEN_FILE).stat().st_mode) == 0o600
    assert new not in quiet.out + quiet.err
    assert f"written to {data_dir / TOKEN_FILE}" in quiet.err
    assert "no coordinator runs on" in quiet.err
    assert sorted(p.name for p in data_dir.iterdir()) == [TOKEN_FILE]  # no temp file left

    assert rotate(tmp_path, "--show") == 0
    shown = capsys.readouterr().out.strip()
    assert shown == (data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()


def test_rotating_a_token_from_the_environment_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "a" * 32)

    assert rotate(tmp_path, "--admin") == 2

    assert f"comes from ${ADMIN_TOKEN_ENV}" in capsys.readouterr().err
    assert not (tmp_path / "data" / ADMIN_TOKEN_FILE).exists()


def test_rotation_reaches_the_running_coordinator_and_the_old_token_is_refused_at_once(
    tmp_path: Path,
) -> None:
    config_dir = write_fast_config(tmp_path / "config")
    process = CoordinatorProcess(tmp_path, config_dir).start()
    try:
        process.wait_ready()
        assert process.proc is not None
        old = process.token
        admin_file = process.data_dir / ADMIN_TOKEN_FILE
        old_admin = admin_file.read_text(encoding="utf-8").strip()
        assert running_coordinator(process.data_dir) == process.proc.pid
        body = {"bot": "kraken", "reason": "rotation"}

        assert rotate(tmp_path) == 0

        new = process.token
        assert new != old

        def old_refused() -> bool:
            return process.request("POST", "/stop", body, token=old)[0] == 401

        wait_for(old_refused, 10, "the coordinator to refuse the old token")
        assert process.request("POST", "/start", {"bot": "kraken"}, token=new)[0] == 200

        # SIGHUP re-reads the admin file too, whoever rewrote it.
        admin_file.write_text("n" * 40 + "\n", encoding="utf-8")
        os.kill(process.proc.pid, signal.SIGHUP)
        lift = {"action": "force_override", "reason": "r", "approved_by": "me"}
        wait_for(
            lambda: process.request("POST", "/kill-switch", lift, token=old_admin)[0] == 401,
            10,
            "the old admin token to be refused",
        )

        def rotations() -> set[tuple[str, str]]:
            _, audit = process.request("GET", "/audit?limit=200")
            events = audit["events"]
            return {(e["actor"], e["subject"]) for e in events if e["action"] == "token.rotated"}

        wait_for(lambda: len(rotations()) == 2, 10, "both re-reads to be audited")
        assert rotations() == {("sighup", "operator"), ("sighup", "admin")}
        assert process.interrupt(within=10) == 0
    finally:
        process.kill()
