"""The backup directory's layout, and the few file operations that make a write durable.

```
backups/
  config-20261123-101502.tar.gz     one backup (UTC time; `-2`, `-3`... if two share a second)
  backup-latest.tar.gz              the newest good backup (a hard link to it, else a copy)
  config-latest/                    its config files, plain; `.manifest.json` says which backup
  pre-restore-20261123-113000/      what a restore replaced (never deleted automatically)
  .tmp-...                          work in progress; removed when a backup ends, or by the next
  .backup.lock                      held while a backup or a restore works in this directory
```

Only names that match `ARCHIVE_PATTERN` are ever treated as backups (listed, verified, deleted
by retention): nothing else an operator keeps in the directory is touched.

Everything here blocks (file I/O): call it from a thread, never from the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

ARCHIVE_PATTERN: Final = re.compile(r"^config-(\d{8})-(\d{6})(?:-(\d{1,4}))?\.tar\.gz$")
LATEST_ARCHIVE: Final = "backup-latest.tar.gz"
LATEST_CONFIG_DIR: Final = "config-latest"
LATEST_MANIFEST: Final = ".manifest.json"  # hidden: `cp config-latest/*.json config/` skips it
PRE_RESTORE_PREFIX: Final = "pre-restore-"
TEMP_PREFIX: Final = ".tmp-"
LOCK_FILE: Final = ".backup.lock"
_STAMP: Final = "%Y%m%d-%H%M%S"
CHUNK: Final = 256 * 1024  # copies and hashes: big enough for C to do the work, GIL released


class BackupBusy(Exception):
    """Another backup or restore is working in the same backup directory."""


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime(_STAMP)


def archive_name(at: datetime, taken: set[str]) -> str:
    """`config-YYYYmmdd-HHMMSS.tar.gz` in UTC, with a suffix when that name is taken."""
    base = f"config-{stamp(at)}"
    name, n = f"{base}.tar.gz", 1
    while name in taken:
        n += 1
        name = f"{base}-{n}.tar.gz"
    return name


def archive_sort_key(name: str) -> tuple[str, str, int]:
    match = ARCHIVE_PATTERN.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a backup archive's name")
    return match.group(1), match.group(2), int(match.group(3) or 1)


def archive_time(name: str) -> datetime:
    """The UTC time in an archive's name."""
    day, clock, _ = archive_sort_key(name)
    return datetime.strptime(f"{day}-{clock}", _STAMP).replace(tzinfo=UTC)


def archive_names(backup_dir: Path) -> list[str]:
    """Every backup archive in `backup_dir`, oldest first (by the time in the name)."""
    try:
        names = [p.name for p in backup_dir.iterdir() if ARCHIVE_PATTERN.match(p.name)]
    except FileNotFoundError:
        return []
    return sorted(names, key=archive_sort_key)


def unique_dir_name(parent: Path, prefix: str, at: datetime) -> Path:
    path, n = parent / f"{prefix}{stamp(at)}", 1
    while path.exists():
        n += 1
        path = parent / f"{prefix}{stamp(at)}-{n}"
    return path


# --- durability ---------------------------------------------------------------------------------


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Every byte of `data` to `fd` (`os.write` may write less than asked; the tests make it
    fail as a full disk would)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_file(path: Path, data: bytes) -> None:
    """A new file holding `data`, on disk when this returns (mode 0600; never overwrites)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_file(source: Path, target: Path) -> None:
    """Copy to a new file `target` and fsync it (a copy between file systems is not a rename)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with source.open("rb") as src:
            while chunk := src.read(CHUNK):
                write_all(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(target: Path, data: bytes) -> None:
    """Put `data` at `target` atomically: a temp file beside it, fsync, rename, fsync the dir.
    A reader sees the old file or the new one, never a mix; a failure leaves the old one."""
    temp = target.with_name(f"{TEMP_PREFIX}{target.name}.{os.getpid()}")
    temp.unlink(missing_ok=True)
    try:
        write_file(temp, data)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def os_reason(exc: OSError) -> str:
    """An OSError as an operator reads it: the reason, and the path when it has one."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason} ({exc.filename})" if exc.filename else reason


def remove_tree(path: Path) -> None:
    """Remove a file or a directory tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def directory_lock(backup_dir: Path) -> Iterator[None]:
    """Hold the backup directory's lock: one backup or restore at a time, across processes."""
    backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(backup_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupBusy(
                f"another backup or restore is working in {backup_dir}; try again shortly"
            ) from None
        yield
    finally:
        os.close(fd)


def remove_stale_temp(backup_dir: Path) -> None:
    """Leftovers of a backup that died (power loss, kill -9): only under `directory_lock`."""
    for entry in backup_dir.iterdir():
        if entry.name.startswith(TEMP_PREFIX):
            remove_tree(entry)
