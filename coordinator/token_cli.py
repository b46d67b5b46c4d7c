"""`bot-coordinator token rotate [--admin] [--show]`, the SIGHUP token re-read, and the refusal
to listen beyond loopback without both tokens.

Rotation writes a new random token over the token file atomically (`write_token_file`) and, when
a coordinator holds the data dir's lock, sends SIGHUP to the pid in `coordinator.lock`; that
coordinator re-reads both token files (`token_reloader`) and refuses the old token from the next
request on. The new token is printed only with `--show` (a terminal's scrollback is no place
for a secret unless asked): it is in the file the command names. A token taken from its
environment variable has no file to rotate, and rotation says so.

Exit codes: 0 rotated; 1 could not write the file or tell the coordinator; 2 the token comes
from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from coordinator.api.auth import (
    ADMIN_TOKEN_ENV,
    ADMIN_TOKEN_FILE,
    TOKEN_ENV,
    TOKEN_FILE,
    ControlToken,
    TokenError,
    exposure_problems,
    is_loopback_host,
    new_token_value,
    write_token_file,
)
from coordinator.runtime import Coordinator

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_ARGUMENTS = 2
LOCK_FILE = "coordinator.lock"
SIGHUP_ACTOR = "sighup"


def add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser("token", help="rotate the control plane's tokens")
    actions = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    rotate = actions.add_parser(
        "rotate",
        help="write a new operator (or --admin) token to its file in --data-dir; a running "
        "coordinator re-reads it at once and refuses the old one",
    )
    rotate.add_argument("--admin", action="store_true", help="rotate the admin token")
    rotate.add_argument(
        "--show", action="store_true", help="also print the new token (it is in the file)"
    )


def run_token_command(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    what, env_name, file_name = (
        ("admin", ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE)
        if args.admin
        else ("operator", TOKEN_ENV, TOKEN_FILE)
    )
    if env.get(env_name, "").strip():
        _say(
            f"bot-coordinator: the {what} token comes from ${env_name}, not from a file: nothing "
            f"was rotated; set a new value in ${env_name} and restart the coordinator"
        )
        return EXIT_BAD_ARGUMENTS
    data_dir: Path = args.data_dir
    path = data_dir / file_name
    value = new_token_value()
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_token_file(path, value)
    except OSError as exc:
        _say(f"bot-coordinator: cannot write {path}: {exc}")
        return EXIT_FAILED
    _say(f"new {what} token written to {path}")
    if args.show:
        print(value)
    pid = running_coordinator(data_dir)
    if pid is None:
        _say(f"no coordinator runs on {data_dir}: its next start uses the new token")
        return EXIT_OK
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        _say(
            f"bot-coordinator: could not tell the coordinator (pid {pid}) to re-read its tokens: "
            f"{exc}; until it does (kill -HUP {pid}, or a restart) it still takes the old token"
        )
        return EXIT_FAILED
    _say(
        f"the coordinator (pid {pid}) was told to re-read its tokens (SIGHUP): the old {what} "
        f"token is refused from then on"
    )
    return EXIT_OK


def running_coordinator(data_dir: Path) -> int | None:
    """The pid of the coordinator holding the data dir's lock; None when none holds it."""
    try:
        handle = (data_dir / LOCK_FILE).open("r", encoding="utf-8")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return None


def token_reloader(
    coordinator: Coordinator, tokens: Mapping[str, ControlToken]
) -> Callable[[], Awaitable[None]]:
    """A SIGHUP re-read hook (coordinator/server.py): each token file is re-read in a thread;
    a change is logged and audited (actor "sighup", action "token.rotated", the token's name as
    subject). A file that is unreadable or holds no usable token leaves that token as it was."""

    async def reload() -> None:
        for name, token in tokens.items():
            try:
                changed = await asyncio.to_thread(token.reload)
            except TokenError as exc:
                log.error("SIGHUP: the %s token was not re-read: %s; it is unchanged", name, exc)
                await _audit(coordinator, name, f"error: {exc}")
                continue
            if changed:
                log.warning("SIGHUP: the %s token changed (%s); the old one is refused",
                            name, token.where())
                await _audit(coordinator, name, "ok")

    return reload


async def _audit(coordinator: Coordinator, name: str, result: str) -> None:
    try:
        await coordinator.journal.audit(
            actor=SIGHUP_ACTOR,
            action="token.rotated",
            result=result,
            at=coordinator.clock(),
            subject=name,
        )
    except Exception as exc:  # the new token is in force whether or not it was audited
        log.error("could not audit the %s token's re-read: %r", name, exc)


def refuse_exposure(host: str, data_dir: Path) -> int | None:
    """None for a loopback --host. Beyond loopback: a warning on stderr, and exit code 2 with
    every missing piece named unless both tokens exist and each token file is mode 0600."""
    if is_loopback_host(host):
        return None
    _say(
        f"bot-coordinator: warning: --host {host!r} is not loopback: the control plane will be "
        f"reachable from other machines (reads need no token; every change does)"
    )
    problems = exposure_problems(data_dir)
    if not problems:
        return None
    _say(f"bot-coordinator: refusing to listen on {host!r}:")
    for problem in problems:
        _say(f"  {problem}")
    _say("nothing was started; fix the above, or leave out --host to listen on 127.0.0.1")
    return EXIT_BAD_ARGUMENTS


def _say(line: str) -> None:
    print(line, file=sys.stderr)
