"""The scan behind `analyze-logs`: the log files, one line at a time, into a `LogSummary`.

Reads `bot-coordinator.log` and its rotated files (`.5`, the oldest, first), never a file whole.
Most lines are INFO: their time and level sit at fixed places at the start of the line (the
formatter writes `{"ts": "...", "level": "...", "logger": ...` with the same separators every
time), so they are counted without being parsed. Only WARNING and above, everything from
`coordinator.safety` (the kill switch and breaker lines), and with a bot filter the lines naming
that bot are parsed as JSON. A line that is not a complete JSON object (plain text, a last line
cut short by a crash) is counted as unparsable.

With a bot filter, the counts, errors and tracebacks are that bot's; the kill switch events are
all listed (they stop every bot), and the breaker moves of the global breaker and of the bot's
exchange (every breaker when the bot's exchange is not known).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from coordinator.log_summary import (
    ERROR_LEVELS,
    GLOBAL_BREAKER,
    MAX_TYPES,
    OTHER_TYPE,
    Attribution,
    FileRead,
    LogSummary,
    TracebackRecord,
    TypeStats,
    breaker_move,
    clip,
    exception_last_line,
    exception_type,
    kill_switch_event,
    message_template,
)
from coordinator.logging_setup import LOG_FILE

TAIL_BYTES: Final = 64 * 1024  # read from a file's end to find its newest entry
UNPARSABLE_KEPT: Final = 5
READ_BUFFER: Final = 1024 * 1024
MESSAGE_WIDTH: Final = 300

LOUD: Final = frozenset({"WARNING", "ERROR", "CRITICAL"})
_LOUD_BYTES: Final = frozenset(level.encode() for level in LOUD)
_TS_PREFIX: Final = b'{"ts": "'
_LEVEL_AT: Final = b'", "level": "'
_TS_END: Final = 37  # len(_TS_PREFIX) + len("2026-11-23T09:14:02.123+00:00")
_LEVEL_START: Final = _TS_END + len(_LEVEL_AT)
_SAFETY_LOGGER: Final = b'", "logger": "coordinator.safety'  # right after the level


# --- the files --------------------------------------------------------------------------------


def log_files(log_dir: Path) -> list[Path]:
    """The log and its rotated files, oldest first: `.5` ... `.1`, then the current one."""
    rotated: list[tuple[int, Path]] = []
    for path in log_dir.glob(f"{LOG_FILE}.*"):
        suffix = path.name[len(LOG_FILE) + 1 :]
        if suffix.isdigit() and path.is_file():
            rotated.append((int(suffix), path))
    current = log_dir / LOG_FILE
    paths = [path for _, path in sorted(rotated, reverse=True)]
    return [*paths, current] if current.is_file() else paths


def canonical_ts(moment: datetime) -> str:
    """The log's own form (`2026-11-23T09:14:02.123+00:00`): as text, it sorts as time."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds")


def _head(raw: bytes) -> tuple[str, str] | None:
    """Time and level of a complete line as the formatter writes it; None for anything else."""
    if raw.startswith(_TS_PREFIX) and raw.startswith(_LEVEL_AT, _TS_END) and raw.endswith(b"}\n"):
        end = raw.find(b'"', _LEVEL_START)
        if end > 0:
            return raw[8:_TS_END].decode("ascii", "replace"), raw[_LEVEL_START:end].decode()
    return None


def _quiet_level(raw: bytes) -> bytes | None:
    """The level of a complete line below WARNING from outside `coordinator.safety` (whose
    kill switch and breaker lines are always parsed), else None."""
    if not (
        raw.startswith(_TS_PREFIX) and raw.startswith(_LEVEL_AT, _TS_END) and raw.endswith(b"}\n")
    ):
        return None
    end = raw.find(b'"', _LEVEL_START)
    level = raw[_LEVEL_START:end]
    if level in _LOUD_BYTES or raw.startswith(_SAFETY_LOGGER, end):
        return None
    return level


def _from_safety(raw: bytes, level: str) -> bool:
    return raw.startswith(_SAFETY_LOGGER, _LEVEL_START + len(level))


def _load(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:  # not JSON, cut short, or not UTF-8
        return None
    return entry if isinstance(entry, dict) else None


def _entry_head(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    ts, level = entry.get("ts"), entry.get("level")
    if not isinstance(ts, str) or not isinstance(level, str):
        return None
    try:
        return canonical_ts(datetime.fromisoformat(ts)), level
    except ValueError:
        return None


def last_timestamp(path: Path) -> str | None:
    """The newest entry's time, from the file's last 64 KiB (None when none is found there)."""
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read()
    for raw in reversed(tail.splitlines(keepends=True)):
        head = _head(raw if raw.endswith(b"\n") else raw + b"\n")
        if head is not None:
            return head[0]
    return None


# --- the analysis -----------------------------------------------------------------------------


class _Scan:
    """Adds one line at a time to a `LogSummary`."""

    def __init__(self, summary: LogSummary, attribution: Attribution) -> None:
        self.summary = summary
        self.attribution = attribution
        self.since = summary.since
        self.bot = summary.bot
        self.bot_bytes = summary.bot.encode() if summary.bot else None
        self.bot_exchange = attribution.bot_exchanges.get(summary.bot or "")

    def feed(self, handle: Iterable[bytes], name: str, read: FileRead) -> None:
        """The hot loop. Without --bot, a complete line below WARNING as the formatter writes
        it, from outside `coordinator.safety`, is counted from its time and level alone (at
        fixed places); every other line goes through `line`."""
        since = self.since.encode() if self.since is not None else None
        counted: Counter[bytes] = Counter()
        first = last = b""
        number = 0
        try:
            for number, raw in enumerate(handle, 1):
                level = _quiet_level(raw) if self.bot_bytes is None else None
                if level is None:
                    self.line(raw, name, number)
                    continue
                ts = raw[len(_TS_PREFIX) : _TS_END]
                if since is not None and ts < since:
                    self.summary.before_since += 1
                    continue
                counted[level] += 1
                first = ts if not first or ts < first else first
                last = ts if ts > last else last
        finally:
            read.lines = number
            self._add_counted(counted, first, last)

    def _add_counted(self, counted: Counter[bytes], first: bytes, last: bytes) -> None:
        for level, count in counted.items():
            self.summary.levels[level.decode("ascii", "replace")] += count
            self.summary.entries += count
        if counted:
            self._count(first.decode("ascii", "replace"), None)
            self._count(last.decode("ascii", "replace"), None)

    def line(self, raw: bytes, name: str, number: int) -> None:
        head = _head(raw)
        if head is None:
            self._slow_line(raw, name, number)
            return
        ts, level = head
        if self.since is not None and ts < self.since:
            self.summary.before_since += 1
        elif level in LOUD or _from_safety(raw, level) or self._names_bot(raw):
            entry = _load(raw)
            if entry is None:
                self._unparsable(name, number)
            else:
                self._entry(entry, ts, level)
        elif self.bot is not None:
            self.summary.other_bots += 1
        else:
            self._count(ts, level)

    def _names_bot(self, raw: bytes) -> bool:
        return self.bot_bytes is not None and self.bot_bytes in raw

    def _slow_line(self, raw: bytes, name: str, number: int) -> None:
        entry = _load(raw)
        head = _entry_head(entry) if entry is not None else None
        if entry is None or head is None:
            self._unparsable(name, number)
        elif self.since is not None and head[0] < self.since:
            self.summary.before_since += 1
        else:
            self._entry(entry, *head)

    def _unparsable(self, name: str, number: int) -> None:
        self.summary.unparsable += 1
        if len(self.summary.unparsable_at) < UNPARSABLE_KEPT:
            self.summary.unparsable_at.append(f"{name}:{number}")

    def _count(self, ts: str, level: str | None) -> None:
        """One entry at `level` (None: only its time, counted already)."""
        summary = self.summary
        if level is not None:
            summary.entries += 1
            summary.levels[level] += 1
        if summary.first_ts is None or ts < summary.first_ts:
            summary.first_ts = ts
        if summary.last_ts is None or ts > summary.last_ts:
            summary.last_ts = ts

    def _entry(self, entry: Mapping[str, Any], ts: str, level: str) -> None:
        message = clip(str(entry.get("message", "")), MESSAGE_WIDTH)
        logger = str(entry.get("logger", ""))
        bot, exchange = self.attribution.of(entry, message, logger)
        self._events(message, ts)
        if self.bot is not None and bot != self.bot:
            self.summary.other_bots += 1
            return
        self._count(ts, level)
        trace = entry.get("exception")
        trace = trace if isinstance(trace, str) and trace.strip() else None
        if level in LOUD:
            kind = exception_type(trace) if trace else message_template(message, bot, exchange)
            self._typed(kind, ts, level, message)
        if level in ERROR_LEVELS:
            self._error(ts, level, bot, exchange)
        if trace:
            last = exception_last_line(trace)
            record = TracebackRecord(ts, level, logger, bot, clip(last, MESSAGE_WIDTH), message)
            self.summary.tracebacks += 1
            self.summary.recent_tracebacks.append(record)

    def _events(self, message: str, ts: str) -> None:
        if "circuit breaker" in message:
            move = breaker_move(message, ts)
            if move is not None and self._wanted_breaker(move.breaker):
                self.summary.breaker_states.setdefault(move.breaker, Counter())[move.state] += 1
                self.summary.breaker_moves.append(move)
        elif "ill switch" in message or "KILL SWITCH" in message:
            event = kill_switch_event(message, ts)
            if event is not None:
                self.summary.kill_switch_counts[event.kind] += 1
                self.summary.kill_switch.append(event)

    def _wanted_breaker(self, name: str) -> bool:
        if self.bot is None or self.bot_exchange is None:
            return True
        return name in (GLOBAL_BREAKER, self.bot_exchange)

    def _typed(self, kind: str, ts: str, level: str, message: str) -> None:
        types = self.summary.warning_types if level == "WARNING" else self.summary.error_types
        stats = types.get(kind)
        if stats is None:
            stats = types.setdefault(kind if len(types) < MAX_TYPES else OTHER_TYPE, TypeStats())
        stats.count += 1
        stats.criticals += level == "CRITICAL"
        if ts >= stats.last_ts:
            stats.last_ts, stats.last_message = ts, message

    def _error(self, ts: str, level: str, bot: str | None, exchange: str | None) -> None:
        summary = self.summary
        minutes = summary.critical_minutes if level == "CRITICAL" else summary.error_minutes
        minutes[ts[:16]] += 1
        if bot is not None:
            summary.error_bots[bot] += 1
        if exchange is not None:
            summary.error_exchanges[exchange] += 1


def analyze(
    paths: Sequence[Path],
    since: datetime | None = None,
    bot: str | None = None,
    *,
    bot_exchanges: Mapping[str, str] | None = None,
) -> LogSummary:
    """Summarise the log files `paths` (oldest first): entries before `since` are skipped, and
    with `bot` only that bot's entries are counted (see the module's docstring)."""
    summary = LogSummary(since=canonical_ts(since) if since else None, bot=bot)
    scan = _Scan(summary, Attribution(bot_exchanges or {}))
    for path in paths:
        _read(Path(path), scan)
    return summary


def _read(path: Path, scan: _Scan) -> None:
    summary = scan.summary
    try:
        read = FileRead(str(path), path.stat().st_size)
    except OSError as exc:
        summary.files.append(FileRead(str(path), 0, skipped=_why_unread(exc)))
        return
    summary.files.append(read)
    try:
        if scan.since is not None and _all_before(path, scan.since):
            read.skipped = "every entry is older than --since"
            return
        with path.open("rb", buffering=READ_BUFFER) as handle:
            scan.feed(handle, path.name, read)
    except OSError as exc:
        read.skipped = _why_unread(exc)
    summary.lines += read.lines


def _all_before(path: Path, since: str) -> bool:
    newest = last_timestamp(path)
    return newest is not None and newest < since


def _why_unread(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "gone (rotated while being read?)"
    return f"unreadable: {exc}"
