"""Asking the running coordinator over its control plane, for CLI commands that must go through
it when it holds the data dir (its books and breakers live in its memory)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from coordinator.api.auth import TokenError, load_or_create_token


class ControlPlaneError(Exception):
    """The running coordinator could not be asked, or refused; `message` says which and why."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []  # each problem, when the answer lists several


def post_to_running(
    data_dir: Path, host: str, port: int, path: str, body: dict[str, Any], timeout: float = 10
) -> dict[str, Any]:
    """POST `body` to the coordinator on host:port with the operator token of `data_dir`."""
    return ask_running(data_dir, host, port, "POST", path, body, timeout)


def ask_running(
    data_dir: Path,
    host: str,
    port: int,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: float = 10,
    token: str | None = None,
) -> dict[str, Any]:
    """Ask the coordinator on host:port; a request that is not a GET carries the operator token
    of `data_dir` (or `token`, the admin one for instance). Its JSON answer, or
    ControlPlaneError saying why not."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    elif method != "GET":
        try:
            headers["Authorization"] = f"Bearer {load_or_create_token(data_dir).value}"
        except TokenError as exc:
            raise ControlPlaneError(f"cannot read the control token: {exc}") from exc
    request = urllib.request.Request(
        f"http://{host}:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
        method=method,
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        error = json.loads(exc.read() or b"{}").get("error", {})
        raise ControlPlaneError(
            f"{method} {path} refused ({exc.code}): {error.get('message', exc.reason)}",
            error.get("errors"),
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ControlPlaneError(
            f"a coordinator holds {data_dir} but does not answer on {host}:{port} ({exc}); "
            "pass its --host/--port"
        ) from exc
