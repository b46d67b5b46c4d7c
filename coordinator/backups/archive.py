"""The backup archive: one gzip'd tar, written once, and read back only through a strict check.

Members, in this order: `manifest.json`, `config/<file>` for the five config files, then
`database/coordinator.db` when the backup holds the database. The order matters: the config can
be checked without reading the (large) database behind it.

Writing (`write_archive`) streams each member from a file into a new file opened with O_EXCL, then
fsyncs it; the caller renames it into place. Reading (`read_archive`) never extracts with
tarfile's own extraction: every member must be a regular file whose name is one the manifest
lists (so no `..`, absolute path, link or device can get through), with the listed size and
sha256; the config files are returned as bytes, the database is copied where the caller says.
Anything else (a truncated or corrupt gzip, a missing or malformed manifest, a hash mismatch, an
unexpected or missing member) raises `ArchiveError` with the reason.

Blocking: call from a thread.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from coordinator.backups.layout import CHUNK
from coordinator.backups.manifest import (
    CONFIG_PREFIX,
    DATABASE_MEMBER,
    MANIFEST_NAME,
    ArchiveError,
    FileEntry,
    Manifest,
    parse_manifest,
)

MAX_SMALL_MEMBER: Final = 4 * 1024 * 1024  # the manifest and each config file
COMPRESS_LEVEL: Final = 6


@dataclass(slots=True)
class ArchiveContents:
    manifest: Manifest
    config: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes
    database: Path | None = None  # where the database was copied, when asked for


# --- writing -------------------------------------------------------------------------------------


def write_archive(target: Path, manifest: Manifest, members: Sequence[tuple[str, Path]]) -> None:
    """Write the archive to the new file `target` (fsync'd before this returns).
    `members` are (name in the archive, file holding it), in archive order."""
    mtime = int(manifest.created_at.timestamp())
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw:
        with (
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=mtime) as gz,
            tarfile.TarFile(
                fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK
            ) as tar,
        ):
            _add_bytes(tar, MANIFEST_NAME, manifest.to_json(), mtime)
            for name, path in members:
                _add_member(tar, name, path, mtime)
        raw.flush()
        os.fsync(raw.fileno())


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o600
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    tar.addfile(_info(name, len(data), mtime), io.BytesIO(data))


def _add_member(tar: tarfile.TarFile, name: str, path: Path, mtime: int) -> None:
    """One member streamed from `path` (the tests make this fail as a full disk would)."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        tar.addfile(_info(name, size, mtime), handle)


# --- reading -------------------------------------------------------------------------------------


def read_manifest(archive: Path) -> Manifest:
    """Only the manifest (the first member): cheap, checks nothing else."""
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST_NAME:
                raise ArchiveError(f"{archive.name}: the first member is not {MANIFEST_NAME}")
            return parse_manifest(_read_small(tar, first))
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveError(f"{archive.name} is corrupt or truncated: {_describe(exc)}") from None


def read_archive(
    archive: Path, database_to: Path | None = None, config_only: bool = False
) -> ArchiveContents:
    """Check every member of `archive` against its manifest; the config files as bytes.

    `database_to`: a new file to copy the archived database into (after its hash is checked
    the copy is fsync'd; on a mismatch it is removed). `config_only`: stop once the config files
    are checked (for a quick look; a restore always checks the whole archive)."""
    try:
        return _read(archive, database_to, config_only)
    except ArchiveError:
        if database_to is not None:
            database_to.unlink(missing_ok=True)
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if database_to is not None:
            database_to.unlink(missing_ok=True)
        raise ArchiveError(f"{archive.name} is corrupt or truncated: {_describe(exc)}") from None


def _read(archive: Path, database_to: Path | None, config_only: bool) -> ArchiveContents:
    # gzip.GzipFile, not tarfile's own "r|gz": it checks the gzip trailer (CRC and length) at
    # the end, so a cut or damaged tail is caught even after the last member.
    with gzip.open(archive, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
        first = tar.next()
        if first is None or first.name != MANIFEST_NAME or not first.isreg():
            raise ArchiveError(f"{archive.name}: the first member is not {MANIFEST_NAME}")
        contents = ArchiveContents(parse_manifest(_read_small(tar, first)))
        expected = {entry.path: entry for entry in contents.manifest.files}
        seen: set[str] = set()
        while (member := tar.next()) is not None:  # not `for`: it starts over at the manifest
            entry = _expected_member(member, expected, seen)
            if entry.path == DATABASE_MEMBER:
                contents.database = _check_database(tar, member, entry, database_to)
            else:
                data = _read_small(tar, member)
                _check_hash(entry, hashlib.sha256(data).hexdigest())
                contents.config[entry.path.removeprefix(CONFIG_PREFIX)] = data
            if config_only and all(p in seen for p in expected if p != DATABASE_MEMBER):
                return contents
        missing = sorted(set(expected) - seen)
        if missing:
            raise ArchiveError(f"{archive.name} is incomplete: {', '.join(missing)} missing")
        while gz.read(CHUNK):  # to the end of the gzip stream, so that its trailer is checked
            pass
    return contents


def _expected_member(
    member: tarfile.TarInfo, expected: dict[str, FileEntry], seen: set[str]
) -> FileEntry:
    entry = expected.get(member.name)
    if entry is None:
        raise ArchiveError(f"unexpected member {member.name!r}: not in the manifest")
    if not member.isreg():
        raise ArchiveError(f"member {member.name!r} is not a regular file")
    if member.name in seen:
        raise ArchiveError(f"member {member.name!r} appears twice")
    if member.size != entry.size:
        raise ArchiveError(
            f"{member.name}: {member.size} bytes in the archive, the manifest says {entry.size}"
        )
    seen.add(member.name)
    return entry


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > MAX_SMALL_MEMBER:
        raise ArchiveError(f"member {member.name!r} is too large ({member.size} bytes)")
    handle = tar.extractfile(member)
    if handle is None:
        raise ArchiveError(f"member {member.name!r} is not a regular file")
    data = handle.read()
    if len(data) != member.size:
        raise ArchiveError(f"member {member.name!r} is truncated")
    return data


def _check_database(
    tar: tarfile.TarFile, member: tarfile.TarInfo, entry: FileEntry, target: Path | None
) -> Path | None:
    handle = tar.extractfile(member)
    if handle is None:
        raise ArchiveError(f"member {member.name!r} is not a regular file")
    if target is None:
        _check_hash(entry, _stream_hash(handle, None))
        return None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        digest = _stream_hash(handle, out)
        out.flush()
        os.fsync(out.fileno())
    _check_hash(entry, digest)
    return target


def _stream_hash(source: IO[bytes], sink: IO[bytes] | None) -> str:
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest()


def _check_hash(entry: FileEntry, actual: str) -> None:
    if actual != entry.sha256:
        raise ArchiveError(
            f"{entry.path}: sha256 {actual[:12]}... does not match the manifest's "
            f"{entry.sha256[:12]}...: the archive is corrupt or was altered"
        )


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if not isinstance(exc, EOFError) else f"unexpected end of data ({text})"
