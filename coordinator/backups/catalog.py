"""The list of backups in a directory, with each archive's verification remembered.

Listing reads only each archive's manifest (its first member), so it stays cheap however large
the databases inside are. Whether an archive verifies (every member's sha256 against the
manifest) is known for the archives this process wrote, and for those checked on demand
(`verify=True`); the result is kept per archive, keyed by its size and modification time, so an
archive is hashed once, and again only if it changes. Unchecked archives list `verified: null`.

Blocking: call from a thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.backups.archive import read_archive, read_manifest
from coordinator.backups.layout import archive_names
from coordinator.backups.manifest import ArchiveError, Manifest
from coordinator.backups.publish import latest_manifest

_Key = tuple[int, int]  # size, mtime_ns


@dataclass(frozen=True, slots=True)
class _Known:
    key: _Key
    manifest: Manifest | None
    verified: bool | None
    error: str | None


class Catalog:
    def __init__(self) -> None:
        self._known: dict[Path, _Known] = {}
        self._lock = threading.Lock()  # listings may run in two threads at once

    def record(self, archive: Path, manifest: Manifest, verified: bool) -> None:
        """An archive this process has just written and verified."""
        stat = archive.stat()
        with self._lock:
            self._known[archive] = _Known(
                (stat.st_size, stat.st_mtime_ns), manifest, verified, None
            )

    def describe(self, archive: Path, verify: bool) -> dict[str, Any]:
        stat = archive.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._known.get(archive)
        if known is None or known.key != key or (verify and known.verified is None):
            known = self._inspect(archive, key, verify)
            with self._lock:
                self._known[archive] = known
        manifest = known.manifest
        return {
            "name": archive.name,
            "created_at": manifest.created_at.isoformat() if manifest else None,
            "size": stat.st_size,
            "files": [f.path for f in manifest.files] if manifest else [],
            "database": bool(manifest and manifest.database),
            "trigger": manifest.trigger if manifest else None,
            "coordinator_version": manifest.coordinator_version if manifest else None,
            "verified": known.verified,
            "error": known.error,
        }

    def _inspect(self, archive: Path, key: _Key, verify: bool) -> _Known:
        try:
            manifest = read_archive(archive).manifest if verify else read_manifest(archive)
        except ArchiveError as exc:
            return _Known(key, None, False, str(exc))
        return _Known(key, manifest, True if verify else None, None)

    def listing(self, backup_dir: Path, verify: bool = False) -> dict[str, Any]:
        """Every backup in `backup_dir`, newest first, and which one is the latest."""
        latest = latest_manifest(backup_dir)
        latest_name = latest.archive if latest else None
        names = archive_names(backup_dir)
        with self._lock:  # forget archives that are gone (retention)
            for gone in [p for p in self._known if p.parent == backup_dir and p.name not in names]:
                del self._known[gone]
        backups = []
        for name in reversed(names):
            try:
                entry = self.describe(backup_dir / name, verify)
            except FileNotFoundError:  # deleted by retention meanwhile
                continue
            backups.append({**entry, "latest": name == latest_name})
        return {"directory": str(backup_dir), "latest": latest_name, "backups": backups}
