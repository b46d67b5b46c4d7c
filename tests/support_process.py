"""Test support: the real coordinator process, driven over HTTP like an operator would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.api.auth import TOKEN_ENV, TOKEN_FILE
from coordinator.drills.harness import free_port, request_json

READY_WITHIN = 20.0


def child_env() -> dict[str, str]:
    """The test's environment without a control token, so the child uses its token file."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(check: Callable[[], Any], within: float, what: str, interval: float = 0.05) -> Any:
    """Poll `check()` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        time.sleep(interval)


class CoordinatorProcess:
    """One `python -m coordinator` child with its own dirs, port and captured output."""

    def __init__(self, root: Path, config_dir: Path, data_dir: Path | None = None) -> None:
        self.root = root
        self.config_dir = config_dir
        self.data_dir = data_dir or root / "data"
        self.log_dir = root / "logs"
        self.port = free_port()
        self.output = root / f"output-{self.port}.txt"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "bot-coordinator.log"

    def args(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "coordinator",
            "--port",
            str(self.port),
            "--config-dir",
            str(self.config_dir),
            "--data-dir",
            str(self.data_dir),
            "--log-dir",
            str(self.log_dir),
        ]

    def start(self) -> CoordinatorProcess:
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                self.args(), stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=self.root
            )
        return self

    def wait_ready(self) -> None:
        def answered() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"the coordinator exited with {self.proc.returncode}:\n{self.text()}")
            try:
                status, _ = self.request("GET", "/status", timeout=1)
            except OSError:
                return False
            return status == 200

        wait_for(answered, READY_WITHIN, "GET /status to answer", interval=0.1)

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    @property
    def token(self) -> str:
        return (self.data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        token: str | None = None,
        timeout: float = 10,
    ) -> tuple[int, Any]:
        return request_json(self.base, method, path, body, token, timeout)

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        status, answer = self.request("POST", path, body, token=self.token)
        assert status == 200, (path, status, answer)
        return answer

    def bots(self) -> dict[str, dict[str, Any]]:
        status, answer = self.request("GET", "/status")
        assert status == 200, answer
        return {bot["name"]: bot for bot in answer["bots"]}

    def interrupt(self, within: float = 5.0, sig: signal.Signals = signal.SIGINT) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=within)

    def kill(self) -> None:
        """Best effort, for `finally`: never leave a child behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = self.log_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def running_coordinator(root: Path, config_dir: Path) -> Iterator[CoordinatorProcess]:
    """The real coordinator on `config_dir`, ready; killed at the end whatever happened."""
    process = CoordinatorProcess(root, config_dir).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()
