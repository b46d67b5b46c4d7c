"""A drill's world: a throwaway directory with its own config, data, logs and backups, the real
coordinator process started on it (`python -m coordinator`, on a free loopback port), and the
operator's two interfaces to it, the HTTP control plane and the `bot-coordinator` CLI.

Everything is synchronous and polls: a drill is a script an operator could have typed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from coordinator.api.auth import ADMIN_TOKEN_FILE, TOKEN_ENV, TOKEN_FILE
from coordinator.incidents.model import DRILL_ENV

READY_WITHIN = 30.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
T = TypeVar("T")


class DrillFailed(Exception):
    """A step of the drill did not happen as the runbook says it should."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(check: Callable[[], T | None], within: float, what: str, every: float = 0.05) -> T:
    """Poll `check()` until it returns something truthy (returned); DrillFailed after `within`
    seconds, naming `what` was awaited."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise DrillFailed(f"timed out after {within:g} s waiting for {what}")
        time.sleep(every)


def request_json(
    base: str,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    token: str | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """One control-plane request (never via a proxy): its status and JSON answer, an error's
    too (a body that is not JSON comes back as an error message)."""
    data = json.dumps(body).encode() if body is not None else None
    url = base + path  # http://127.0.0.1:PORT/...
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            raw = error.read()
        try:
            return error.code, json.loads(raw)
        except ValueError:
            return error.code, {"error": {"message": raw.decode(errors="replace")}}


@dataclass(frozen=True, slots=True)
class CliResult:
    command: list[str]
    code: int
    output: str

    def expect(self, code: int, what: str) -> CliResult:
        if self.code != code:
            shown = " ".join(self.command[2:])
            raise DrillFailed(
                f"{what}: `bot-coordinator {shown}` exited {self.code}, not {code}:\n"
                f"{self.output.strip()[-2000:]}"
            )
        return self


class DrillWorld:
    """The drill's directories and the coordinator process on them (one at a time)."""

    def __init__(self, root: Path, environ: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.config_dir = root / "config"
        self.data_dir = root / "data"
        self.log_dir = root / "logs"
        self.backup_dir = root / "backups"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.extra_env: dict[str, str] = dict(environ or {})

    # ----- the process ------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The drill's environment: no control token of the operator's (the child uses its own
        token file), its incidents marked as a drill, and the drill's own variables."""
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        env.update(PYTHONUNBUFFERED="1", **{DRILL_ENV: "1"}, **self.extra_env)
        return env

    def where(self) -> list[str]:
        return [
            "--config-dir", str(self.config_dir), "--data-dir", str(self.data_dir),
            "--log-dir", str(self.log_dir), "--backup-dir", str(self.backup_dir),
        ]  # fmt: skip

    @property
    def output_file(self) -> Path:
        return self.root / f"coordinator-{self.starts}.out"

    def start(self, *flags: str) -> None:
        """Start the coordinator (as the README does, with this world's dirs and port)."""
        if self.running():
            raise DrillFailed("the drill started a coordinator while one was running")
        self.starts += 1
        command = [sys.executable, "-m", "coordinator", "--port", str(self.port), *self.where()]
        with self.output_file.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [*command, *flags], stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                cwd=self.root,
            )  # fmt: skip

    def start_ready(self, *flags: str) -> None:
        self.start(*flags)
        self.wait_ready()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, within: float = READY_WITHIN) -> None:
        def answered() -> bool:
            if not self.running():
                raise DrillFailed(f"the coordinator exited before it answered:\n{self.output()}")
            try:
                return self.request("GET", "/status", timeout=1)[0] == 200
            except OSError:
                return False

        wait_for(answered, within, "GET /status to answer", every=0.1)

    def wait_exit(self, within: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise DrillFailed(f"the coordinator did not exit within {within:g} s") from None

    def output(self) -> str:
        try:
            return self.output_file.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return "(no output)"

    def stop(self, within: float = 15.0) -> int:
        """Ctrl-C, as an operator stops it; its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.wait_exit(within)

    def kill(self) -> None:
        """kill -9: nothing more is written. Also the drill's `finally`."""
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # ----- the control plane ------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()

    @property
    def admin_token(self) -> str:
        return (self.data_dir / ADMIN_TOKEN_FILE).read_text(encoding="utf-8").strip()

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        token: str | None = None,
        timeout: float = 10,
    ) -> tuple[int, Any]:
        return request_json(self.base, method, path, body, token, timeout)

    def get(self, path: str) -> Any:
        status, answer = self.request("GET", path)
        if status != 200:
            raise DrillFailed(f"GET {path} answered {status}: {answer}")
        return answer

    def post(
        self, path: str, body: Mapping[str, Any] | None = None, *, admin: bool = False,
        timeout: float = 60,
    ) -> Any:
        """POST with the operator's token (the admin's with `admin`); DrillFailed unless 200.
        The timeout is long: start-sequential waits for each bot's first healthy tick."""
        token = self.admin_token if admin else self.token
        status, answer = self.request("POST", path, body, token=token, timeout=timeout)
        if status != 200:
            raise DrillFailed(f"POST {path} {dict(body or {})} answered {status}: {answer}")
        return answer

    def bots(self) -> dict[str, dict[str, Any]]:
        return {bot["name"]: bot for bot in self.get("/status")["bots"]}

    def firing(self) -> dict[str, dict[str, Any]]:
        """The alerts firing now, by name."""
        return {alert["name"]: alert for alert in self.get("/alerts")["firing"]}

    def audit_actions(self, limit: int = 200) -> list[str]:
        return [event["action"] for event in self.get(f"/audit?limit={limit}")["events"]]

    # ----- the CLI ----------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60) -> CliResult:
        """`bot-coordinator ARGS` on this world's dirs (and port, for the commands that ask the
        running coordinator)."""
        command = [sys.executable, "-m", "coordinator", "--port", str(self.port), *self.where()]
        try:
            done = subprocess.run(  # noqa: S603 (our own interpreter and module)
                [*command, *args], capture_output=True, env=self.env(), cwd=self.root,
                timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            shown = " ".join(args)
            raise DrillFailed(f"`bot-coordinator {shown}` ran past {timeout:g} s") from None
        text = (done.stdout + done.stderr).decode(errors="replace")
        return CliResult(command, done.returncode, text)
