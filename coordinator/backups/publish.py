"""Point `backup-latest.tar.gz` and `config-latest/` at a new, already verified backup.

Everything that needs disk space is prepared first, in the backup's work directory (a hard link
to the archive, or a copy where links are not supported; the config files with their manifest);
what follows is renames only, which need no space. `config-latest/` is swapped first: the old
directory is renamed aside, the new one renamed into place, and only then is the old one
removed; if anything fails, the old directory is put back. Then `backup-latest.tar.gz` is
replaced in one rename. So a failure at any step leaves both latests as they were.

(Between the two renames of the swap there is an instant without `config-latest/`; a crash
right there leaves the previous one in the `.tmp-` work directory, and `backup-latest.tar.gz`,
untouched, still holds the same files.)

Blocking: call from a thread.
"""

from __future__ import annotations

import os
from pathlib import Path

from coordinator.backups.archive import read_archive, read_manifest
from coordinator.backups.layout import (
    LATEST_ARCHIVE,
    LATEST_CONFIG_DIR,
    LATEST_MANIFEST,
    copy_file,
    fsync_dir,
    remove_tree,
    write_file,
)
from coordinator.backups.manifest import ArchiveError, Manifest


def publish_latest(
    backup_dir: Path, archive: Path, staged_config: Path, manifest: Manifest, work: Path
) -> None:
    """Make `archive` (in `backup_dir`) and `staged_config` (in `work`) the latest."""
    write_file(staged_config / LATEST_MANIFEST, manifest.to_json())
    fsync_dir(staged_config)
    staged_archive = work / LATEST_ARCHIVE
    try:
        os.link(archive, staged_archive)
    except OSError:
        copy_file(archive, staged_archive)
    _swap_config_dir(backup_dir / LATEST_CONFIG_DIR, staged_config, work / "config-latest.old")
    try:
        os.replace(staged_archive, backup_dir / LATEST_ARCHIVE)
    except BaseException:
        _swap_back(backup_dir / LATEST_CONFIG_DIR, work / "config-latest.old")
        raise
    fsync_dir(backup_dir)
    remove_tree(work / "config-latest.old")


def _swap_config_dir(current: Path, staged: Path, aside: Path) -> None:
    had_one = current.exists()
    if had_one:
        os.rename(current, aside)
    try:
        os.rename(staged, current)
    except BaseException:
        if had_one:
            os.rename(aside, current)
        raise


def _swap_back(current: Path, aside: Path) -> None:
    """Undo `_swap_config_dir`: the new directory out, the old one back."""
    if aside.exists():
        remove_tree(current)
        os.rename(aside, current)
    else:
        remove_tree(current)


def latest_manifest(backup_dir: Path) -> Manifest | None:
    """The manifest of `backup-latest.tar.gz`, or None if there is none or it is unreadable."""
    path = backup_dir / LATEST_ARCHIVE
    if not path.is_file():
        return None
    try:
        return read_manifest(path)
    except ArchiveError:
        return None


def verify_latest(backup_dir: Path) -> tuple[Manifest | None, str | None]:
    """`backup-latest.tar.gz` checked completely (every member's hash, the gzip trailer):
    (its manifest, None) when it verifies, (None, None) when there is none, else (its manifest
    if that much is readable, the reason it does not verify)."""
    path = backup_dir / LATEST_ARCHIVE
    if not path.is_file():
        return None, None
    try:
        return read_archive(path).manifest, None
    except ArchiveError as exc:
        return latest_manifest(backup_dir), str(exc)
