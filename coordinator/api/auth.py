"""The control-plane token: from `BOT_COORDINATOR_TOKEN`, else generated once into the data dir.

The generated file is created with mode 0600 in one step (O_EXCL), so it is never readable by
others, not even for an instant; a token file found with looser permissions is tightened and
the fact logged.

Also here, because they judge who is asking: the peer-address check (`is_loopback_address`,
the socket's peer, never a header), what a bind beyond loopback needs (`exposure_problems`) and
the failed-authentication rate limit (`AuthThrottle`). A token is re-read in place
(`ControlToken.reload`, on SIGHUP), so every holder of it sees a rotation at once.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import os
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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


@dataclass(slots=True, eq=False)
class ControlToken:
    """A token and where it came from. Not frozen: `reload` swaps the value in place, so the
    control plane holding this object refuses the old token from the next request on."""

    value: str
    source: str  # "env" or "file"
    path: Path | None = None
    env_name: str = TOKEN_ENV

    def matches(self, presented: str) -> bool:
        """Constant time (hmac.compare_digest): the answer's timing says nothing of how much of
        a guess was right."""
        return hmac.compare_digest(presented.encode(), self.value.encode())

    def where(self) -> str:
        return f"${self.env_name}" if self.source == "env" else str(self.path)

    def reload(self) -> bool:
        """Re-read the token file (blocking file I/O: call it in a thread). True when the token
        changed. An environment token has nothing to re-read. A file that is missing or holds no
        usable token raises TokenError and the current token stays in force."""
        if self.source != "file" or self.path is None:
            return False
        value = _read_token_file(self.path)
        if hmac.compare_digest(value.encode(), self.value.encode()):
            return False
        self.value = value
        return True


def _read_token_file(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TokenError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(value) < MIN_TOKEN_LENGTH:
        raise TokenError(f"{path} holds no usable token: delete it to have a new one made")
    return value


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
        return ControlToken(_read_token_file(path), "file", path, env_name)
    value = new_token_value()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.info("generated a token in %s", path)
    return ControlToken(value, "file", path, env_name)


def write_token_file(path: Path, value: str) -> None:
    """Replace a token file atomically: a new 0600 file beside it (O_EXCL), fsynced, renamed
    over the old one, the directory fsynced. A reader sees the old token or the new, never part
    of one, and the file is never readable by others."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def new_token_value() -> str:
    return secrets.token_urlsafe(32)


def load_or_create_admin_token(
    data_dir: Path, environ: dict[str, str] | None = None
) -> ControlToken:
    return load_or_create_token(data_dir, environ, ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE)


# -- who is asking -------------------------------------------------------------------------------


def is_loopback_address(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and their IPv4-mapped forms. Meant for a socket's peer address
    (`transport.get_extra_info("peername")`), never for a header a client can write."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_loopback_host(host: str) -> bool:
    """A --host value that binds loopback only: a loopback address or "localhost". Any other
    name, and "" or 0.0.0.0 (every interface), is beyond loopback."""
    return host == "localhost" or is_loopback_address(host)


def exposure_problems(data_dir: Path, environ: Mapping[str, str] | None = None) -> list[str]:
    """What keeps the control plane from listening beyond loopback; empty when nothing does.

    Both tokens must exist already (none is generated for an exposed start) and each token
    *file* in use must be mode 0600 exactly: a looser one is not tightened here, because it may
    have been read already (rotate it). A token from its environment variable has no file and
    is accepted (blocking file I/O: call it before the event loop runs)."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    for env_name, file_name, what in (
        (TOKEN_ENV, TOKEN_FILE, "operator"),
        (ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE, "admin"),
    ):
        if env.get(env_name, "").strip():
            continue
        path = data_dir / file_name
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            problems.append(
                f"the {what} token is not set: set ${env_name} or create {path} "
                f"(bot-coordinator token rotate{' --admin' if what == 'admin' else ''})"
            )
            continue
        if mode != 0o600:
            problems.append(
                f"the {what} token file {path} has mode {mode:04o}, not 0600: chmod 600 it "
                f"and rotate the token (it may have been read)"
            )
    return problems


# -- failed authentication -----------------------------------------------------------------------

MAX_FAILURES = 5
FAILURE_WINDOW_SECONDS = 60.0
# Audit entries for failed authentication, across every peer, per window: beyond it one
# "audit_capped" entry, then none until the window passes (the rate limit still applies).
MAX_FAILURE_AUDITS = 100
MAX_TRACKED_PEERS = 10_000


@dataclass(slots=True)
class _Window:
    started: float
    failures: int = 0


@dataclass(frozen=True, slots=True)
class FailureAudit:
    """What to audit about a failed authentication: "refused" (a peer's first failure in its
    window), "rate_limited" (the failure that blocked it) or "audit_capped"."""

    result: str
    failures: int


@dataclass(slots=True)
class AuthThrottle:
    """Failed authentication per peer address, in fixed windows from the peer's first failure:
    after `max_failures` in `window_seconds` the peer is refused (429, `retry_after` seconds)
    until its window passes. One peer's failures or successes never touch another's count.

    What is audited, so that failures cannot flood the store: a peer's first failure in each
    window and the one that blocks it (at most two entries per peer per window), and at most
    `max_audits` such entries across all peers per window."""

    max_failures: int = MAX_FAILURES
    window_seconds: float = FAILURE_WINDOW_SECONDS
    max_audits: int = MAX_FAILURE_AUDITS
    max_peers: int = MAX_TRACKED_PEERS
    clock: Callable[[], float] = time.monotonic
    _peers: dict[str, _Window] = field(default_factory=dict)
    _audit_window: _Window = field(default_factory=lambda: _Window(-math.inf))

    def retry_after(self, peer: str) -> int | None:
        """Whole seconds until `peer` may try again; None when it is not blocked."""
        window = self._current(peer, self.clock())
        if window is None or window.failures < self.max_failures:
            return None
        remaining = window.started + self.window_seconds - self.clock()
        return max(1, math.ceil(remaining))

    def record_failure(self, peer: str) -> FailureAudit | None:
        """Count a failure; what to audit about it, or None."""
        now = self.clock()
        window = self._current(peer, now)
        if window is None:
            self._forget_expired(now)
            window = self._peers[peer] = _Window(now)
        window.failures += 1
        if window.failures == 1:
            return self._budgeted(FailureAudit("refused", 1), now)
        if window.failures == self.max_failures:
            return self._budgeted(FailureAudit("rate_limited", window.failures), now)
        return None

    def _current(self, peer: str, now: float) -> _Window | None:
        window = self._peers.get(peer)
        if window is not None and now >= window.started + self.window_seconds:
            del self._peers[peer]
            return None
        return window

    def _forget_expired(self, now: float) -> None:
        if len(self._peers) < self.max_peers:
            return
        for peer in [p for p, w in self._peers.items() if now >= w.started + self.window_seconds]:
            del self._peers[peer]
        while len(self._peers) >= self.max_peers:  # still full: the oldest window goes first
            del self._peers[next(iter(self._peers))]

    def _budgeted(self, audit: FailureAudit, now: float) -> FailureAudit | None:
        budget = self._audit_window
        if now >= budget.started + self.window_seconds:
            budget = self._audit_window = _Window(now)
        budget.failures += 1
        if budget.failures <= self.max_audits:
            return audit
        if budget.failures == self.max_audits + 1:
            return FailureAudit("audit_capped", audit.failures)
        return None
