"""What a bot runs, as hashes: its effective config, the code, and the config files as read.

The version and config gate (the Knight Capital lesson: one server ran old code on a repurposed
flag) needs to say, for every bot, exactly which configuration it trades on and which code runs
it, and to notice when either moved without an operator approving it.

- A bot's *effective config* is everything that decides how it trades: its `BotConfig` plus the
  risk limits that apply to it (the defaults with its override laid over them) and the safe-mode
  factors. It is written as canonical JSON (sorted keys, no whitespace, every Decimal as its
  plain string with no trailing zeros, so `100` and `100.0` in a file are the same limit) and
  hashed with sha256. A change to a default limit changes the hash of every bot it applies to.
- The *code version* is `coordinator.__version__` plus a sha256 over the source files of the
  `coordinator` and `bots` packages (sorted relative paths and contents): two processes that
  report the same version but run different code show different hashes. It is computed once
  per process; it reads ~150 files, so call it via `asyncio.to_thread`.
- The config files' own hashes (`file_hashes`) say whether the files on disk still hold what
  the coordinator read at its start.

Everything here is synchronous; `code_version` and `file_hashes` read files.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel

import bots
import coordinator
from coordinator.config.loader import CONFIG_FILES
from coordinator.config.models import BotConfig, CoordinatorConfig

# The packages whose source makes up the code version.
SOURCE_PACKAGES: tuple[Path, ...] = (
    Path(coordinator.__file__).parent,
    Path(bots.__file__).parent,
)


@dataclass(frozen=True, slots=True)
class BotFingerprint:
    """One bot's effective config: the canonical JSON and its sha256."""

    bot: str
    config_json: str
    sha256: str

    def pretty(self) -> str:
        """The effective config for a person to read (and to diff): indented, keys sorted."""
        return pretty_json(self.config_json)


@dataclass(frozen=True, slots=True)
class CodeVersion:
    version: str  # coordinator.__version__
    source_sha256: str  # over the coordinator and bots packages' source files

    @property
    def label(self) -> str:
        """`0.1.0+1a2b3c4d5e6f7a8b`: the version and the start of the source hash."""
        return f"{self.version}+{self.source_sha256[:16]}"


def canonical(value: Any) -> Any:
    """`value` as plain JSON data: models dumped, enums as their value, Decimals as strings in
    one form for one number, tuples as lists, paths as text."""
    if isinstance(value, BaseModel):
        return canonical(value.model_dump(mode="python"))
    if isinstance(value, dict):
        return {str(key): canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, Enum):
        return canonical(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"no canonical JSON for {type(value).__name__}: {value!r}")


def decimal_text(value: Decimal) -> str:
    """One text per number: `Decimal("100.0")` and `Decimal("1E+2")` are both `"100"`,
    `Decimal("0.0010")` is `"0.001"`, and negative zero is `"0"`."""
    if not value.is_finite():
        return str(value)
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, Decimals as strings: the same config gives the same text."""
    return json.dumps(
        canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
        allow_nan=False,
    )  # fmt: skip


def pretty_json(config_json: str) -> str:
    return json.dumps(json.loads(config_json), sort_keys=True, indent=2, ensure_ascii=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def effective_config(config: CoordinatorConfig, bot: BotConfig) -> dict[str, Any]:
    """What decides how `bot` trades: its own config, the limits that apply to it and the
    safe-mode factors (as plain JSON data)."""
    return {
        "bot": canonical(bot),
        "limits": canonical(config.limits.limits_for(bot.name)),
        "safe_mode": canonical(config.limits.safe_mode),
    }


def bot_fingerprint(config: CoordinatorConfig, bot: BotConfig) -> BotFingerprint:
    text = canonical_json(effective_config(config, bot))
    return BotFingerprint(bot.name, text, sha256_text(text))


def bot_fingerprints(config: CoordinatorConfig) -> dict[str, BotFingerprint]:
    """Every configured bot's effective config, in config order."""
    return {bot.name: bot_fingerprint(config, bot) for bot in config.bots.bots}


@functools.cache
def code_version() -> CodeVersion:
    """The running code: computed once per process (blocking: ~150 files are read)."""
    return CodeVersion(coordinator.__version__, source_sha256(SOURCE_PACKAGES))


def source_sha256(packages: tuple[Path, ...]) -> str:
    """sha256 over every `.py` file of `packages`: each file's path relative to the packages'
    parent, its length and its bytes, in sorted path order (a renamed file changes the hash)."""
    files: list[tuple[str, Path]] = []
    for package in packages:
        for path in package.rglob("*.py"):
            if "__pycache__" not in path.parts:
                files.append((path.relative_to(package.parent).as_posix(), path))
    digest = hashlib.sha256()
    for relative, path in sorted(files):
        content = path.read_bytes()
        digest.update(f"{relative}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def file_hashes(directory: Path) -> dict[str, str | None]:
    """sha256 of each config file in `directory` (bots.json ... alerts.json); None for one
    that cannot be read (gone, or not readable). Blocking."""
    hashes: dict[str, str | None] = {}
    for name in CONFIG_FILES:
        try:
            hashes[name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        except OSError:
            hashes[name] = None
    return hashes


def existing_file_hashes(directory: Path) -> dict[str, str]:
    """`file_hashes` of the files that exist: what the coordinator read at its start."""
    return {name: sha for name, sha in file_hashes(directory).items() if sha is not None}
