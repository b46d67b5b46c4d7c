"""Test support: a throwaway PostgreSQL server, started by the tests themselves.

Debian's `postgresql` package (`scripts/install-postgres`, which `.ci/run` runs) gives the
binaries; the server runs from a new data directory in a temp dir, on a free loopback port, with
its socket in that dir, and is stopped and removed at the end of the session. PostgreSQL will
not run as root: as root, the data directory is given to the package's `postgres` user and the
server started as that user (`runuser`). Trust authentication, on 127.0.0.1 only.

Each test gets a database of its own (`create_database`), so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg

from coordinator.drills.harness import free_port
from coordinator.store.sqlite import SqliteStore

OpenAnyStore = Callable[[], Awaitable[SqliteStore]]
INSTALL_HINT = "run `bash scripts/install-postgres` (Debian's postgresql package)"
_names = itertools.count(1)


def pg_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


class PostgresServer:
    def __init__(self) -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError(f"PostgreSQL is not installed: {INSTALL_HINT}")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pg-tests-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=120, cwd="/"
        )

    def start(self) -> PostgresServer:
        if self.as_root:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
        done = self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "--username=postgres",
            "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c max_connections=200 "
            "-c shared_buffers=32MB"
        )
        done = self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-t", "60",
            "-l", str(self.root / "server.log"), "start",
        )
        if done.returncode == 0:
            self._watch_owner()
        if done.returncode != 0:
            log = (self.root / "server.log")
            raise RuntimeError(
                f"postgres did not start: {done.stderr or done.stdout}\n"
                f"{log.read_text() if log.exists() else ''}"
            )
        return self

    def _watch_owner(self) -> None:
        """A watchdog in its own session: when this test process ends without stopping the
        server (kill -9, a crash), it stops the server and removes its files."""
        stop = " ".join(
            (["runuser", "-u", "postgres", "--"] if self.as_root else [])
            + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
        )
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
            f"{stop} >/dev/null 2>&1; rm -rf {self.root}"
        )
        # Started through a shell that returns at once (the watchdog is its orphan), so no
        # child of ours is left running for Python to warn about.
        subprocess.run(
            ["bash", "-c", f"setsid bash -c {shlex.quote(script)} </dev/null >/dev/null 2>&1 &"],
            check=True, cwd="/", timeout=10,
        )

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its DSN."""
        name = f"t{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
