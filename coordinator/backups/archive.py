"""The backup archive: one gzip'd tar, written once, and read back only through a strict check.

Members, in this order: `manifest.json`, `config/<file>` for the six config files, then
`database/coordinator.db` when the backup holds the database. The order matters: the config can
be checked without reading the (large) database behind it.

Writing (`write_archive`) streams each member from a file into a new file opened with O_EXCL, then
fsyncs it; the caller renames it into place. Reading (`read_archive`) never extracts with
tarfile's own extraction: every member must be a regular file whose name is one the manifest
lists (so no `..`, absolute path, link or device can get through), with the listed size and
sha256; the config files are returned as bytes, the database is copied where the caller says.
Anything else (a truncated or corrupt gzip, a missing or malformed manifest, a hash mismatch, an
unexpected or missing member) raises `ArchiveError` with the reason. Two failures say nothing
about the archive and are told apart: the archive's file cannot be read (`ArchiveUnreadable`, an
`ArchiveError`: permissions, an I/O error), and the copy of the database cannot be written
(`ScratchWriteError`, not an `ArchiveError`: a full disk where the copy goes). A complete read
also gives the sha256 of the archive file itself.

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

from coordinator.backups.layout import CHUNK, os_reason, write_all
from coordinator.backups.manifest import (
    CONFIG_PREFIX,
    DATABASE_MEMBERS,
    MANIFEST_NAME,
    ArchiveError,
    FileEntry,
    Manifest,
    parse_manifest,
)

MAX_SMALL_MEMBER: Final = 4 * 1024 * 1024  # the manifest and each config file
COMPRESS_LEVEL: Final = 6


class ArchiveUnreadable(ArchiveError):
    """The archive's file cannot be read (permissions, an I/O error): nothing is known about
    its contents, and it is not called corrupt."""


class ScratchWriteError(Exception):
    """A scratch copy (of the archived database) cannot be written, e.g. on a full disk: the
    archive is not at fault."""


@dataclass(slots=True)
class ArchiveContents:
    manifest: Manifest
    config: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes
    database: Path | None = None  # where the database was copied, when asked for
    sha256: str | None = None  # of the archive file; None when the read stopped early


class _ReadFailed(Exception):
    """Reading the archive's own file failed (not an OSError: gzip and tarfile must not take it
    for one of theirs, which they raise for a damaged stream)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _ArchiveFile:
    """The archive's file as gzip and tarfile read it: every byte read is hashed, and a failure
    to read is told apart from a damaged stream."""

    mode = "rb"

    def __init__(self, archive: Path) -> None:
        self.name = str(archive)
        self.digest = hashlib.sha256()
        try:
            self._handle = archive.open("rb")
        except OSError as exc:
            raise _ReadFailed(exc) from exc

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._handle.read(size)
        except OSError as exc:
            raise _ReadFailed(exc) from exc
        self.digest.update(data)
        return data

    def drain(self) -> str:
        """Read to the end; the file's sha256."""
        while self.read(CHUNK):
            pass
        return self.digest.hexdigest()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> _ArchiveFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        with (
            _ArchiveFile(archive) as raw,
            tarfile.open(fileobj=raw, mode="r|gz") as tar,  # type: ignore[call-overload]
        ):
            first = tar.next()
            if first is None or first.name != MANIFEST_NAME:
                raise ArchiveError(f"{archive.name}: the first member is not {MANIFEST_NAME}")
            return parse_manifest(_read_small(tar, first))
    except ArchiveError:
        raise
    except _ReadFailed as exc:
        raise ArchiveUnreadable(f"cannot read {archive}: {os_reason(exc.error)}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveError(f"{archive.name} is corrupt or truncated: {_describe(exc)}") from None


def read_archive(
    archive: Path, database_to: Path | None = None, config_only: bool = False
) -> ArchiveContents:
    """Check every member of `archive` against its manifest; the config files as bytes.

    `database_to`: a new file to copy the archived database into (after its hash is checked
    the copy is fsync'd; on a mismatch, or any failure, it is removed). `config_only`: stop once
    the config files are checked (for a quick look; a restore always checks the whole archive).
    `ArchiveUnreadable` when the file cannot be read, `ScratchWriteError` when the database's
    copy cannot be written, `ArchiveError` when the archive is damaged or not ours."""
    try:
        return _read(archive, database_to, config_only)
    except BaseException as exc:
        if database_to is not None:
            database_to.unlink(missing_ok=True)
        if isinstance(exc, _ReadFailed):
            raise ArchiveUnreadable(f"cannot read {archive}: {os_reason(exc.error)}") from None
        if isinstance(exc, (tarfile.TarError, EOFError, zlib.error, OSError)):
            raise ArchiveError(
                f"{archive.name} is corrupt or truncated: {_describe(exc)}"
            ) from None
        raise


def _read(archive: Path, database_to: Path | None, config_only: bool) -> ArchiveContents:
    # gzip.GzipFile, not tarfile's own "r|gz": it checks the gzip trailer (CRC and length) at
    # the end, so a cut or damaged tail is caught even after the last member.
    with (
        _ArchiveFile(archive) as raw,
        gzip.GzipFile(fileobj=raw, mode="rb") as gz,  # type: ignore[call-overload]
        tarfile.open(fileobj=gz, mode="r|") as tar,
    ):
        first = tar.next()
        if first is None or first.name != MANIFEST_NAME or not first.isreg():
            raise ArchiveError(f"{archive.name}: the first member is not {MANIFEST_NAME}")
        contents = ArchiveContents(parse_manifest(_read_small(tar, first)))
        expected = {entry.path: entry for entry in contents.manifest.files}
        seen: set[str] = set()
        while (member := tar.next()) is not None:  # not `for`: it starts over at the manifest
            entry = _expected_member(member, expected, seen)
            if entry.path in DATABASE_MEMBERS.values():
                contents.database = _check_database(tar, member, entry, database_to)
            else:
                data = _read_small(tar, member)
                _check_hash(entry, hashlib.sha256(data).hexdigest())
                contents.config[entry.path.removeprefix(CONFIG_PREFIX)] = data
            databases = DATABASE_MEMBERS.values()
            if config_only and all(p in seen for p in expected if p not in databases):
                return contents
        missing = sorted(set(expected) - seen)
        if missing:
            raise ArchiveError(f"{archive.name} is incomplete: {', '.join(missing)} missing")
        while gz.read(CHUNK):  # to the end of the gzip stream, so that its trailer is checked
            pass
        contents.sha256 = raw.drain()
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
        _check_hash(entry, _stream_hash(handle, None, target))
        return None
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise _scratch_failed(target, exc) from exc
    try:
        digest = _stream_hash(handle, fd, target)
        try:
            os.fsync(fd)
        except OSError as exc:
            raise _scratch_failed(target, exc) from exc
    finally:
        os.close(fd)
    _check_hash(entry, digest)
    return target


def _stream_hash(source: IO[bytes], sink: int | None, target: Path | None) -> str:
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        if sink is not None:
            try:
                write_all(sink, chunk)
            except OSError as exc:
                raise _scratch_failed(target, exc) from exc
    return digest.hexdigest()


def _scratch_failed(target: Path | None, exc: OSError) -> ScratchWriteError:
    return ScratchWriteError(
        f"cannot write a scratch copy of the archived database to {target}: {os_reason(exc)}"
        " (the archive itself is not at fault)"
    )


def _check_hash(entry: FileEntry, actual: str) -> None:
    if actual != entry.sha256:
        raise ArchiveError(
            f"{entry.path}: sha256 {actual[:12]}... does not match the manifest's "
            f"{entry.sha256[:12]}...: the archive is corrupt or was altered"
        )


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if not isinstance(exc, EOFError) else f"unexpected end of data ({text})"
