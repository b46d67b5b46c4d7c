"""Preserve evidence (runbook 004, Scenario 6): one archive of everything an investigation needs.

`take_snapshot` writes `incident-<UTC time>.tar.gz` holding:

- `logs/`: every file of the log dir, rotated ones too;
- `status.json`, `alerts.json`, `reconciliation.json`: what the running coordinator answers
  (`GET /status`, `/alerts`, `/reconcile`); without one, `status.json` says so and the newest
  reconciliation runs are read from the journal;
- `audit.json`: the whole audit log, and `verify-data.json`: the `--verify-data` report, whose
  `audit` check is the audit log's hash chain verified;
- `config/`: the six config files as they are on disk, and `effective-config.json`: each bot's
  effective config and its sha256 (or every problem of a config that does not load);
- `versions.json`: coordinator, code hash, Python, ccxt, aiohttp, SQLite, platform;
- `manifest.json`: the sha256 and size of every other member (`verify_snapshot` checks them).

Every text member goes through `credentials.redact` after every credential value this process
can see is registered (the variables bots.json names, from the environment or the credentials
file, and every value of that file), so a key that reached a log line or an error is not carried
on into the archive. The journal is read read-only in one WAL snapshot and the coordinator is
only asked over HTTP: taking a snapshot never blocks trading or the kill switch. Blocking I/O
throughout: the CLI runs it in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import platform
import sqlite3
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from coordinator import __version__
from coordinator.config import CONFIG_FILES, ConfigError, load_config
from coordinator.config.fingerprint import bot_fingerprints, code_version
from coordinator.credentials import (
    CREDENTIALS_FILE_ENV,
    CredentialsFileError,
    read_credentials_file,
    redact,
    register,
)
from coordinator.integrity import NoDatabase, verify_database

MANIFEST = "manifest.json"
ASK_TIMEOUT_SECONDS = 5.0
RECONCILIATION_RUNS = 20  # the newest runs read from the journal without a coordinator


class SnapshotError(Exception):
    """The snapshot could not be written or does not verify; the message says why."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    path: Path
    members: dict[str, dict[str, Any]]  # name -> sha256, size
    coordinator_running: bool
    notes: list[str]


def register_credentials(config_dir: Path, environ: dict[str, str] | None = None) -> None:
    """Make every credential value this process can see redactable."""
    env = dict(os.environ if environ is None else environ)
    file_values: dict[str, str] = {}
    where = env.get(CREDENTIALS_FILE_ENV)
    if where:
        with contextlib.suppress(CredentialsFileError):
            file_values = read_credentials_file(Path(where))
    register(*file_values.values())
    source = {**file_values, **env}
    try:
        config = load_config(config_dir)
    except ConfigError:
        return
    for bot in config.bots.bots:
        for variable in bot.credentials.model_dump().values():
            if variable and variable in source:
                register(source[variable])


def take_snapshot(
    data_dir: Path,
    config_dir: Path,
    log_dir: Path,
    out_dir: Path,
    base_url: str,
    now: datetime | None = None,
) -> Snapshot:
    """Write the archive into `out_dir` (created 0700) and return what it holds."""
    now = now or datetime.now(UTC)
    register_credentials(config_dir)
    members: dict[str, bytes] = {}
    notes: list[str] = []
    for path in sorted(log_dir.glob("*")) if log_dir.is_dir() else []:
        if path.is_file():
            members[f"logs/{path.name}"] = _redacted(path.read_bytes())
    if not any(name.startswith("logs/") for name in members):
        notes.append(f"no log files in {log_dir}")
    running = True
    asked = (("status", "/status"), ("alerts", "/alerts"), ("reconciliation", "/reconcile"))
    for name, route in asked:
        answer = _ask(base_url + route)
        if isinstance(answer, str):  # why not: the others are not asked
            running = False
            notes.append(f"GET {route}: {answer}")
            break
        members[f"{name}.json"] = _json(answer)
    database = data_dir / "coordinator.db"
    if not running:
        members["status.json"] = _json({"coordinator_running": False, "why": notes[-1]})
        members["reconciliation.json"] = _json({"runs": _journal_rows(
            database, "SELECT * FROM reconciliation_runs ORDER BY id DESC LIMIT ?",
            (RECONCILIATION_RUNS,))})  # fmt: skip
    members["audit.json"] = _json({"events": _journal_rows(
        database, "SELECT * FROM audit_events ORDER BY id", ())})  # fmt: skip
    members["verify-data.json"] = _json(_verify(database))
    for file in CONFIG_FILES:
        with contextlib.suppress(OSError):
            members[f"config/{file}"] = _redacted((config_dir / file).read_bytes())
    members["effective-config.json"] = _json(_effective_config(config_dir))
    members["versions.json"] = _json(_versions())
    listed = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in sorted(members.items())
    }
    manifest = {
        "created_at": now.isoformat(timespec="seconds"),
        "coordinator_version": __version__,
        "data_dir": str(data_dir),
        "config_dir": str(config_dir),
        "coordinator_running": running,
        "notes": notes,
        "members": listed,
    }
    members[MANIFEST] = _json(manifest)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stem = f"incident-{now.strftime('%Y%m%dT%H%M%SZ')}"
    target = _write_atomically(out_dir, stem, members, int(now.timestamp()))
    return Snapshot(target, listed, running, notes)


def verify_snapshot(path: Path) -> dict[str, Any]:
    """The archive's manifest, once every member is checked against it; SnapshotError naming
    the first member that is missing, extra or altered."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            contents: dict[str, bytes] = {}
            for info in tar.getmembers():
                if not info.isfile():
                    raise SnapshotError(f"{path}: {info.name} is not a regular file")
                extracted = tar.extractfile(info)
                assert extracted is not None
                contents[info.name] = extracted.read()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise SnapshotError(f"{path}: not a readable snapshot archive: {exc}") from exc
    if MANIFEST not in contents:
        raise SnapshotError(f"{path}: no {MANIFEST}")
    manifest: dict[str, Any] = json.loads(contents.pop(MANIFEST))
    listed = manifest["members"]
    for name in sorted(listed.keys() | contents.keys()):
        if name not in contents:
            raise SnapshotError(f"{path}: {name} is in the manifest but not in the archive")
        if name not in listed:
            raise SnapshotError(f"{path}: {name} is in the archive but not in the manifest")
        digest = hashlib.sha256(contents[name]).hexdigest()
        if digest != listed[name]["sha256"]:
            raise SnapshotError(f"{path}: {name} has sha256 {digest}, the manifest says "
                                f"{listed[name]['sha256']}")  # fmt: skip
    return manifest


# -- the pieces ------------------------------------------------------------------------------------


def _redacted(data: bytes) -> bytes:
    return redact(data.decode("utf-8", errors="replace")).encode("utf-8")


def _json(value: Any) -> bytes:
    return _redacted(json.dumps(value, indent=2, default=str).encode("utf-8"))


def _ask(url: str) -> Any:
    """The coordinator's JSON answer, or a string saying why there is none."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=ASK_TIMEOUT_SECONDS) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # an answer all the same (/health's 503, say)
        try:
            return json.loads(exc.read())
        except ValueError:
            return f"answered {exc.code} without JSON"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"no coordinator answers at {url} ({exc})"


def _journal_rows(database: Path, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Rows read read-only (`mode=ro`); none when there is no journal or no such table."""
    if not database.is_file():
        return []
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
        ) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(query, params)]
    except sqlite3.Error as exc:
        return [{"error": f"could not read the journal: {exc}"}]


def _verify(database: Path) -> dict[str, Any]:
    try:
        report = asyncio.run(verify_database(database))
    except NoDatabase as exc:
        return {"ok": None, "error": str(exc)}
    result: dict[str, Any] = report.as_dict()
    return result


def _effective_config(config_dir: Path) -> dict[str, Any]:
    """Each bot's effective config (what the config gate hashes), or every problem of a config
    that does not load."""
    try:
        config = load_config(config_dir)
    except ConfigError as exc:
        return {"valid": False, "errors": [str(issue) for issue in exc.issues]}
    bots = {name: json.loads(f.config_json) for name, f in bot_fingerprints(config).items()}
    sha256 = {name: f.sha256 for name, f in bot_fingerprints(config).items()}
    return {"valid": True, "bots": bots, "sha256": sha256}


def _versions() -> dict[str, Any]:
    def version_of(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {
        "coordinator": __version__,
        "code_version": code_version().label,
        "python": sys.version,
        "ccxt": version_of("ccxt"),
        "aiohttp": version_of("aiohttp"),
        "pydantic": version_of("pydantic"),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }


def _write_atomically(out_dir: Path, stem: str, members: dict[str, bytes], mtime: int) -> Path:
    """Written to a temporary file, synced, then linked under `stem.tar.gz` (or `stem-2`, ...
    when two snapshots share a second: a link never replaces an archive): a crash leaves no
    half archive under a final name. Returns the archive's path."""
    handle, temporary = tempfile.mkstemp(dir=out_dir, prefix=".incident-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                for name, data in _in_order(members):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), mtime, 0o600
                    tar.addfile(info, io.BytesIO(data))
            out.flush()
            os.fsync(out.fileno())
        for n in range(1, 1000):
            target = out_dir / (f"{stem}.tar.gz" if n == 1 else f"{stem}-{n}.tar.gz")
            try:
                os.link(temporary, target)
            except FileExistsError:
                continue
            return target
        raise SnapshotError(f"{out_dir}: 999 snapshots named {stem} already")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _in_order(members: dict[str, bytes]) -> Iterable[tuple[str, bytes]]:
    """The manifest first, so `tar tzf | head` shows it."""
    yield MANIFEST, members[MANIFEST]
    for name in sorted(members):
        if name != MANIFEST:
            yield name, members[name]
