"""Exchange credentials: where they may come from, and that they go nowhere else.

They come from the environment variables bots.json names, or from a credentials file named by
`BOT_COORDINATOR_CREDENTIALS_FILE`: a JSON object from variable name to value, readable by its
owner only (mode 0600 or stricter; a group- or world-readable file is refused, naming the file
and its mode). The environment wins over the file.

Every value read is registered here, and `redact` replaces each with `[redacted]`: the log
handler applies it to every record (message and exception text), the audit log to every entry,
and the control plane to every error message and each bot's error in /status. The code never
puts a credential in any of those on purpose; this is the net for the text that is not ours
(an exchange's error message that echoes a key, a traceback's local repr).

The registry is process-wide on purpose: logging is, and a secret read anywhere must be hidden
everywhere.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path

CREDENTIALS_FILE_ENV = "BOT_COORDINATOR_CREDENTIALS_FILE"
REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words; no real key is that short

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()


class CredentialsFileError(Exception):
    """The credentials file cannot be used; the message names the file and why."""


def register(*values: str) -> None:
    """Hide these values from every log line, audit entry and answer from now on."""
    global _secrets
    with _lock:
        _secrets = _secrets | {v for v in values if len(v) >= MIN_SECRET_LENGTH}


def redact(text: str) -> str:
    """`text` with every registered secret replaced by [redacted]."""
    secrets = _secrets
    if not secrets:
        return text
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def credentials_source(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """The variables credentials are read from: the environment laid over the credentials
    file's (when `BOT_COORDINATOR_CREDENTIALS_FILE` names one)."""
    env = os.environ if environ is None else environ
    where = env.get(CREDENTIALS_FILE_ENV)
    if not where:
        return env
    return {**read_credentials_file(Path(where)), **env}


def read_credentials_file(path: Path) -> dict[str, str]:
    """The file's variables; CredentialsFileError when it is missing, readable by others, or
    not a JSON object of strings."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CredentialsFileError(
            f"{path}: cannot read the credentials file: {exc.strerror}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsFileError(
            f"{path}: the credentials file is mode {stat.S_IMODE(mode):04o}; it must be "
            f"readable by its owner only (chmod 600 {path})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CredentialsFileError(f"{path}: not a readable JSON file: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise CredentialsFileError(
            f"{path}: must be a JSON object of variable names to string values"
        )
    return data
