"""`manifest.json`: what a backup archive holds, so a restore can check every byte of it.

```json
{
  "format": 1,
  "archive": "config-20261123-101502.tar.gz",
  "created_at": "2026-11-23T10:15:02.118000+00:00",
  "coordinator_version": "0.1.0",
  "trigger": "schedule",                      // schedule | cli | api
  "config_source": "/srv/bots/config",
  "config_versions": {"bots.json": 1, ...},   // each file's own `version` (its schema version)
  "database": {"path": "database/coordinator.db", "schema_version": 3,
               "integrity_check": "ok",       // null when the backup holds no database
               "engine": "sqlite"},           // or "postgresql": database/coordinator.pgdump
  "files": [{"path": "config/bots.json", "size": 2143, "sha256": "..."}, ...]
}
```

A journal on PostgreSQL is held as a `pg_dump` archive (`backups/postgres_dump.py`); a manifest
without `engine` (written before PostgreSQL) is SQLite's.

`parse_manifest` checks the shape strictly: a manifest that lists a path other than the ones a
backup can hold (the six config files and the database, at its engine's path) is refused, so a
crafted archive cannot make a restore write anywhere else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from coordinator.config import ALERTS_FILE, CONFIG_FILES

FORMAT: Final = 1
MANIFEST_NAME: Final = "manifest.json"
CONFIG_PREFIX: Final = "config/"
DATABASE_MEMBER: Final = "database/coordinator.db"
PG_DUMP_MEMBER: Final = "database/coordinator.pgdump"
DATABASE_MEMBERS: Final = {"sqlite": DATABASE_MEMBER, "postgresql": PG_DUMP_MEMBER}
# Config files a backup taken by an earlier version does not hold: such an archive is still
# whole, and a restore keeps the current file (or the shipped default) for them.
ADDED_LATER: Final = frozenset({ALERTS_FILE})
ALLOWED_MEMBERS: Final = frozenset(
    {*(CONFIG_PREFIX + f for f in CONFIG_FILES), *DATABASE_MEMBERS.values()}
)
TRIGGERS: Final = frozenset({"schedule", "cli", "api"})


class ArchiveError(Exception):
    """The archive cannot be trusted (corrupt, truncated, tampered with, or not ours)."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    schema_version: int
    integrity_check: str
    engine: str = "sqlite"  # or "postgresql"

    @property
    def member(self) -> str:
        return DATABASE_MEMBERS[self.engine]


@dataclass(frozen=True, slots=True)
class Manifest:
    archive: str
    created_at: datetime
    coordinator_version: str
    trigger: str
    config_source: str
    config_versions: dict[str, int | None]
    database: DatabaseInfo | None
    files: tuple[FileEntry, ...]

    def entry(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)

    @property
    def config_files(self) -> tuple[FileEntry, ...]:
        return tuple(f for f in self.files if f.path.startswith(CONFIG_PREFIX))

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "format": FORMAT,
            "archive": self.archive,
            "created_at": self.created_at.isoformat(),
            "coordinator_version": self.coordinator_version,
            "trigger": self.trigger,
            "config_source": self.config_source,
            "config_versions": self.config_versions,
            "database": None
            if self.database is None
            else {
                "path": self.database.member,
                "schema_version": self.database.schema_version,
                "integrity_check": self.database.integrity_check,
                "engine": self.database.engine,
            },
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return (json.dumps(document, indent=2) + "\n").encode()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_version(data: bytes) -> int | None:
    """A config file's `version` field, or None if it has none (the loader has checked it)."""
    try:
        version = json.loads(data).get("version")
    except (ValueError, AttributeError):
        return None
    return version if isinstance(version, int) else None


def parse_manifest(raw: bytes) -> Manifest:
    """The manifest in `raw`; `ArchiveError` naming what is wrong with it."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ArchiveError(f"{MANIFEST_NAME} is not a format-{FORMAT} backup manifest")
    try:
        files = tuple(_file_entry(item) for item in doc["files"])
        manifest = Manifest(
            archive=_text(doc["archive"]),
            created_at=datetime.fromisoformat(_text(doc["created_at"])),
            coordinator_version=_text(doc["coordinator_version"]),
            trigger=_text(doc["trigger"]),
            config_source=_text(doc["config_source"]),
            config_versions=dict(doc["config_versions"]),
            database=_database(doc["database"]),
            files=files,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveError(f"{MANIFEST_NAME} is malformed: {exc!r}") from None
    _check_paths(manifest)
    return manifest


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _file_entry(item: Any) -> FileEntry:
    path, size, digest = item["path"], item["size"], item["sha256"]
    if not isinstance(size, int) or size < 0 or isinstance(size, bool):
        raise ValueError(f"size of {path!r}: {size!r}")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"sha256 of {path!r}: {digest!r}")
    return FileEntry(_text(path), size, digest)


def _database(value: Any) -> DatabaseInfo | None:
    if value is None:
        return None
    version = value["schema_version"]
    if not isinstance(version, int):
        raise ValueError(f"database schema_version: {version!r}")
    engine = value.get("engine", "sqlite")
    if engine not in DATABASE_MEMBERS:
        raise ValueError(f"database engine: {engine!r}")
    info = DatabaseInfo(version, _text(value["integrity_check"]), engine)
    if value["path"] != info.member:
        raise ValueError(f"database path {value['path']!r} for engine {engine!r}")
    return info


def _check_paths(manifest: Manifest) -> None:
    paths = [f.path for f in manifest.files]
    unknown = [p for p in paths if p not in ALLOWED_MEMBERS]
    if unknown:
        raise ArchiveError(f"{MANIFEST_NAME} lists files a backup never holds: {unknown}")
    if len(set(paths)) != len(paths):
        raise ArchiveError(f"{MANIFEST_NAME} lists a file twice")
    missing = [
        f for f in CONFIG_FILES if CONFIG_PREFIX + f not in paths and f not in ADDED_LATER
    ]
    if missing:
        raise ArchiveError(f"{MANIFEST_NAME} lacks config files: {', '.join(missing)}")
    held = [p for p in paths if p in DATABASE_MEMBERS.values()]
    expected = [] if manifest.database is None else [manifest.database.member]
    if held != expected:
        raise ArchiveError(f"{MANIFEST_NAME} disagrees with itself about the database")
