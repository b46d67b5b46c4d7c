"""`analyze-logs` output: the report an operator reads, and the same as JSON.

Every list is cut to `top` entries (the newest for events, the most frequent for types); the
totals beside them count everything. The error time windows are listed in full in the JSON and
the newest `top` of them in the text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from coordinator.log_summary import (
    BreakerMove,
    FileRead,
    KillSwitchEvent,
    LogSummary,
    TracebackRecord,
    TypeStats,
    clip,
)

WIDTH: Final = 118
BAR: Final = 40
LEVEL_ORDER: Final = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
OVERRIDES: Final = frozenset({"override", "force_override"})
# (longest span, bucket minutes): a span up to 3 h is shown per 10 minutes, and so on.
BUCKETS: Final = ((3 * 60, 10), (2 * 24 * 60, 60), (14 * 24 * 60, 6 * 60))
DAY_MINUTES: Final = 24 * 60


# --- time windows -----------------------------------------------------------------------------


def _parse(ts: str) -> datetime:
    moment = datetime.fromisoformat(ts)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def bucket_minutes(summary: LogSummary) -> int:
    """The window width for the span the report covers: 10 min up to 3 h, 1 h up to 2 days,
    6 h up to 2 weeks, else a day."""
    if summary.first_ts is None or summary.last_ts is None:
        return BUCKETS[0][1]
    span = (_parse(summary.last_ts) - _parse(summary.first_ts)) / timedelta(minutes=1)
    for longest, minutes in BUCKETS:
        if span <= longest:
            return minutes
    return DAY_MINUTES


def error_windows(summary: LogSummary, minutes: int) -> list[dict[str, Any]]:
    """Errors and criticals per window, oldest first, windows without any left out."""
    errors: Counter[datetime] = Counter()
    criticals: Counter[datetime] = Counter()
    for source, target in ((summary.error_minutes, errors), (summary.critical_minutes, criticals)):
        for minute, count in source.items():
            target[_floor(_parse(minute), minutes)] += count
    return [
        {"start": start.isoformat(), "errors": errors[start], "criticals": criticals[start]}
        for start in sorted(errors.keys() | criticals.keys())
    ]


def _floor(moment: datetime, minutes: int) -> datetime:
    since_midnight = moment.hour * 60 + moment.minute
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(minutes=since_midnight - since_midnight % minutes)


# --- JSON -------------------------------------------------------------------------------------


def summary_json(summary: LogSummary, top: int) -> dict[str, Any]:
    minutes = bucket_minutes(summary)
    return {
        "files": [asdict(read) for read in summary.files],
        "since": summary.since,
        "bot": summary.bot,
        "bot_map": summary.bot_map_source,
        "first_ts": summary.first_ts,
        "last_ts": summary.last_ts,
        "lines": summary.lines,
        "entries": summary.entries,
        "skipped": {"before_since": summary.before_since, "other_bots": summary.other_bots},
        "unparsable": {"count": summary.unparsable, "at": summary.unparsable_at},
        "levels": dict(summary.levels),
        "errors": {
            "total": summary.errors,
            "distinct_types": len(summary.error_types),
            "by_type": _types_json(summary.error_types, top),
            "by_bot": dict(summary.error_bots.most_common()),
            "by_exchange": dict(summary.error_exchanges.most_common()),
            "windows": {"minutes": minutes, "buckets": error_windows(summary, minutes)},
        },
        "warnings": {
            "total": summary.levels["WARNING"],
            "distinct_types": len(summary.warning_types),
            "by_type": _types_json(summary.warning_types, top),
        },
        "tracebacks": {
            "count": summary.tracebacks,
            "recent": [asdict(record) for record in _newest(summary.recent_tracebacks, top)],
        },
        "kill_switch": {
            "activations": summary.kill_switch_counts["activated"],
            "overrides": sum(summary.kill_switch_counts[kind] for kind in OVERRIDES),
            "by_kind": dict(summary.kill_switch_counts),
            "recent": [asdict(event) for event in _newest(summary.kill_switch, top)],
        },
        "circuit_breakers": {
            "moves": sum(sum(states.values()) for states in summary.breaker_states.values()),
            "by_breaker": {name: dict(states) for name, states in summary.breaker_states.items()},
            "recent": [asdict(move) for move in _newest(summary.breaker_moves, top)],
        },
    }


def _types_json(types: dict[str, TypeStats], top: int) -> list[dict[str, Any]]:
    return [{"type": name, **asdict(stats)} for name, stats in _most_common(types, top)]


def _most_common(types: dict[str, TypeStats], top: int) -> list[tuple[str, TypeStats]]:
    return sorted(types.items(), key=lambda item: (-item[1].count, item[0]))[:top]


def _newest(items: Any, top: int) -> list[Any]:
    """The newest `top`, newest first."""
    return list(reversed(list(items)[-top:]))


# --- text -------------------------------------------------------------------------------------


def render_text(summary: LogSummary, top: int) -> str:
    sections = [
        _header(summary),
        _kill_switch_text(summary, top),
        _breakers_text(summary, top),
        _errors_text(summary, top),
        _windows_text(summary, top),
        _tracebacks_text(summary, top),
        _types_text("Warnings by type", summary.warning_types, summary.levels["WARNING"], top),
    ]
    return "\n\n".join(section for section in sections if section)


def when(ts: str | None) -> str:
    """`2026-11-23 09:14:02Z`: the log's UTC time to the second."""
    if not ts:
        return "-"
    return f"{ts[:10]} {ts[11:19]}Z" if len(ts) >= 19 else ts


def _header(summary: LogSummary) -> str:
    read = [f for f in summary.files if f.skipped is None]
    size = sum(f.bytes for f in read) / (1024 * 1024)
    lines = [
        f"log analysis: {len(read)} file(s), {size:.1f} MiB, {summary.lines:,} line(s)",
        f"  covers {when(summary.first_ts)} .. {when(summary.last_ts)}"
        f"{_span(summary.first_ts, summary.last_ts)}",
        f"  since {when(summary.since) if summary.since else 'the start'}; "
        f"bot {summary.bot or 'all'}; bot map {summary.bot_map_source or 'none'}",
    ]
    lines.append(clip("  files: " + ", ".join(_file_text(f) for f in summary.files), WIDTH * 2))
    errors, criticals = summary.levels["ERROR"], summary.levels["CRITICAL"]
    if errors or criticals:
        lines.append(f"ATTENTION: {criticals} CRITICAL, {errors} ERROR")
    else:
        lines.append("no ERROR or CRITICAL entries")
    counted = [f"{level} {summary.levels[level]:,}" for level in LEVEL_ORDER]
    counted += [f"{lvl} {n:,}" for lvl, n in summary.levels.items() if lvl not in LEVEL_ORDER]
    lines.append("levels: " + ", ".join(counted) + _skips(summary))
    return "\n".join(lines)


def _file_text(read: FileRead) -> str:
    if read.skipped is not None:
        return f"{read.path} (not read: {read.skipped})"
    return f"{read.path} ({read.bytes / (1024 * 1024):.1f} MiB)"


def _skips(summary: LogSummary) -> str:
    parts = []
    if summary.unparsable:
        first = f" (first at {summary.unparsable_at[0]})" if summary.unparsable_at else ""
        parts.append(f"unparsable {summary.unparsable:,}{first}")
    if summary.before_since:
        parts.append(f"older than --since {summary.before_since:,}")
    if summary.other_bots:
        parts.append(f"not about {summary.bot} {summary.other_bots:,}")
    return "; " + "; ".join(parts) if parts else ""


def _span(first: str | None, last: str | None) -> str:
    if not first or not last:
        return ""
    seconds = int((_parse(last) - _parse(first)).total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    text = f"{days}d {hours}h" if days else f"{hours}h {rest // 60}m"
    return f" ({text})"


def _kill_switch_text(summary: LogSummary, top: int) -> str:
    counts = summary.kill_switch_counts
    if not counts:
        return "Kill switch: no activation or override logged"
    overrides = sum(counts[kind] for kind in OVERRIDES)
    others = "".join(
        f", {kind} {n}" for kind, n in counts.items() if kind not in OVERRIDES | {"activated"}
    )
    lines = [f"Kill switch: {counts['activated']} activation(s), {overrides} override(s){others}"]
    lines.extend(_kill_switch_line(event) for event in _newest(summary.kill_switch, top))
    return "\n".join(lines)


def _kill_switch_line(event: KillSwitchEvent) -> str:
    who = f" by {event.actor}" if event.actor else ""
    if event.approved_by:
        who += f", approved by {event.approved_by}"
    trigger = f" ({event.trigger})" if event.trigger else ""
    return clip(f"  {when(event.ts)}  {event.kind:<15}{who}{trigger}: {event.reason}", WIDTH)


def _breakers_text(summary: LogSummary, top: int) -> str:
    if not summary.breaker_states:
        return "Circuit breakers: no move logged"
    per_breaker = "; ".join(
        f"{name} " + ", ".join(f"{state} {n}" for state, n in states.most_common())
        for name, states in sorted(summary.breaker_states.items())
    )
    lines = [f"Circuit breakers: {per_breaker}"]
    lines.extend(_breaker_line(move) for move in _newest(summary.breaker_moves, top))
    return "\n".join(lines)


def _breaker_line(move: BreakerMove) -> str:
    arrow = "was" if move.restored else "->"
    return clip(f"  {when(move.ts)}  {move.breaker} {arrow} {move.state}: {move.reason}", WIDTH)


def _errors_text(summary: LogSummary, top: int) -> str:
    if not summary.errors:
        return ""
    lines = [_types_text("Errors and criticals by type", summary.error_types, summary.errors, top)]
    for label, counter in (("bot", summary.error_bots), ("exchange", summary.error_exchanges)):
        named = ", ".join(f"{name} {n:,}" for name, n in counter.most_common(top))
        unattributed = summary.errors - sum(counter.values())
        if unattributed:
            named += f"{', ' if named else ''}no {label} {unattributed:,}"
        lines.append(f"by {label}: {named}")
    return "\n".join(lines)


def _types_text(title: str, types: dict[str, TypeStats], total: int, top: int) -> str:
    if not types:
        return ""
    shown = _most_common(types, top)
    lines = [f"{title} ({total:,} in {len(types)} type(s); top {len(shown)}):"]
    for name, stats in shown:
        crit = f" ({stats.criticals} CRITICAL)" if stats.criticals else ""
        lines.append(clip(f"  {stats.count:>7,}  {name}{crit}", WIDTH))
        lines.append(clip(f"           last {when(stats.last_ts)}: {stats.last_message}", WIDTH))
    return "\n".join(lines)


def _windows_text(summary: LogSummary, top: int) -> str:
    minutes = bucket_minutes(summary)
    windows = error_windows(summary, minutes)
    if not windows:
        return ""
    peak = max(w["errors"] + w["criticals"] for w in windows)
    width = f"{minutes} min" if minutes < 60 else f"{minutes // 60} h"
    lines = [f"Errors per {width} (newest {min(top, len(windows))} of {len(windows)} windows):"]
    for window in windows[-top:]:
        count = window["errors"] + window["criticals"]
        bar = "#" * max(1, round(BAR * count / peak))
        lines.append(
            f"  {when(window['start'])[:-4]}Z  error {window['errors']:>6,}"
            f"  critical {window['criticals']:>5,}  {bar}"
        )
    return "\n".join(lines)


def _tracebacks_text(summary: LogSummary, top: int) -> str:
    if not summary.tracebacks:
        return "Tracebacks: none"
    recent = _newest(summary.recent_tracebacks, top)
    lines = [f"Tracebacks: {summary.tracebacks:,} (newest {len(recent)})"]
    lines.extend(_traceback_lines(record) for record in recent)
    return "\n".join(lines)


def _traceback_lines(record: TracebackRecord) -> str:
    first = clip(f"  {when(record.ts)}  {record.bot or '-'}  {record.last_line}", WIDTH)
    return first + "\n" + clip(f"      {record.level} {record.logger}: {record.message}", WIDTH)
