"""The control-plane token: from `BOT_COORDINATOR_TOKEN`, else generated once into the data dir.

The generated file is created with mode 0600 in one step (O_EXCL), so it is never readable by
others, not even for an instant; a token file found with looser permissions is tightened and
the fact logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TOKEN_ENV = "BOT_COORDINATOR_TOKEN"  # noqa: S105 (the name of a variable, not a secret)
TOKEN_FILE = "control.token"  # noqa: S105 (a file name)
# The admin token: force_override of the kill switch and resets of latched breakers.
ADMIN_TOKEN_ENV = "BOT_COORDINATOR_ADMIN_TOKEN"  # noqa: S105 (the name of a variable)
ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 (a file name)
MIN_TOKEN_LENGTH = 16


class TokenError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ControlToken:
    value: str
    source: str  # "env" or "file"
    path: Path | None = None

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.value.encode())

    env_name: str = TOKEN_ENV

    def where(self) -> str:
        return f"${self.env_name}" if self.source == "env" else str(self.path)


def load_or_create_token(
    data_dir: Path,
    environ: dict[str, str] | None = None,
    env_name: str = TOKEN_ENV,
    file_name: str = TOKEN_FILE,
) -> ControlToken:
    env = os.environ if environ is None else environ
    from_env = env.get(env_name, "").strip()
    if from_env:
        if len(from_env) < MIN_TOKEN_LENGTH:
            raise TokenError(f"{env_name} is too short: use at least {MIN_TOKEN_LENGTH} characters")
        return ControlToken(from_env, "env", env_name=env_name)
    path = data_dir / file_name
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(0o600)
            log.warning("%s was readable by others (mode %o); set to 0600", path, mode)
        value = path.read_text(encoding="utf-8").strip()
        if len(value) < MIN_TOKEN_LENGTH:
            raise TokenError(f"{path} holds no usable token: delete it to have a new one made")
        return ControlToken(value, "file", path, env_name)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.info("generated a token in %s", path)
    return ControlToken(value, "file", path, env_name)


def load_or_create_admin_token(
    data_dir: Path, environ: dict[str, str] | None = None
) -> ControlToken:
    return load_or_create_token(data_dir, environ, ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE)
