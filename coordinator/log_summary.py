"""What `analyze-logs` learns from one log entry, and the summary it adds up to.

A parsed entry is attributed to a bot and an exchange, given a type (its exception class, or
its message with names, numbers and details replaced by placeholders) and checked for the kill
switch and circuit breaker lines. The patterns follow the messages the coordinator and the bots
log (`"<bot>: ..."`, `KILL SWITCH ACTIVATED by ...`, `circuit breaker 'x' is now ...`,
`exchange x is down: ...`); a message they do not know still gets a generic template.
"""

from __future__ import annotations

import importlib
import json
import re
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ERROR_LEVELS: Final = frozenset({"ERROR", "CRITICAL"})
RECENT: Final = 200  # events, moves and tracebacks kept (newest); totals are counted apart
MAX_TYPES: Final = 5_000  # distinct types kept; any further one is counted as OTHER_TYPE
OTHER_TYPE: Final = "<other types>"
TEMPLATE_WIDTH: Final = 110
DEFAULT_CONFIG_DIR: Final = Path("config")
BOTS_FILE: Final = "bots.json"

# Loggers whose "<name>: ..." prefix names a bot, and those where it names an exchange adapter.
BOT_LOGGERS: Final = (
    "bots.",
    "coordinator.supervisor",
    "coordinator.runtime",
    "coordinator.reconcile",
)
EXCHANGE_LOGGERS: Final = ("bots.exchanges",)

_PREFIX = re.compile(r"([A-Za-z0-9][\w.-]*): ")
_IDENTIFIER = re.compile(r"[A-Za-z_][\w.]*")
_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)?")
_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_HEX = re.compile(r"\b(?=[0-9a-fA-F]*\d)(?:0x)?[0-9a-fA-F]{8,}\b")
_TOKEN_ID = re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{6,}\b")  # OX4F2A-91BC7D
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_PLACEHOLDERS: Final = ((_TIME, "<time>"), (_UUID, "<id>"), (_HEX, "<id>"), (_TOKEN_ID, "<id>"))
_ONE_LINE: Final = str.maketrans("\n\r\t", "   ")

# Known messages: (pattern, template). The template is formatted with the match's groups.
_TEMPLATES: Final = (
    (
        re.compile(r"[\w.-]+: order \d+ rejected by [\w.-]+: "),
        "<bot>: order <n> rejected by <x>: ...",
    ),
    (re.compile(r"exchange \S+ is (?P<state>down|degraded): "), "exchange <x> is {state}: ..."),
    (re.compile(r"exchange \S+ is up again"), "exchange <x> is up again"),
    (
        re.compile(r"circuit breaker '[^']+' is now (?P<state>\w+): "),
        "circuit breaker <x> is now {state}: ...",
    ),
    (
        re.compile(r"KILL SWITCH ACTIVATED by .+? \((?P<trigger>[\w-]+)\): "),
        "KILL SWITCH ACTIVATED by <actor> ({trigger}): ...",
    ),
    (re.compile(r"kill switch lifted \((?P<kind>\w+)\) by "), "kill switch lifted ({kind}) by ..."),
    (
        re.compile(r"global circuit breaker tripped"),
        "global circuit breaker tripped (latched): ...",
    ),
    (re.compile(r"\S+ now uses its (?P<to>\w+) endpoint "), "<x> now uses its {to} endpoint ..."),
)

# Where a message names the exchange it is about.
_EXCHANGE_IN_MESSAGE: Final = (
    re.compile(r"exchange (?P<x>[\w.-]+) is "),
    re.compile(r"circuit breaker '(?P<x>[^']+)' is now "),
    re.compile(r"circuit breaker (?P<x>[\w.-]+) is (?:open|half_open|closed) \("),
    re.compile(r"[\w.-]+: order \d+ rejected by (?P<x>[\w.-]+): "),
    re.compile(r"[\w.-]+: reconciliation could not read (?P<x>[\w.-]+): "),
    re.compile(r"(?P<x>[\w.-]+) (?:now uses its \w+ endpoint|primary still down)"),
)

_ACTIVATED = re.compile(
    r"KILL SWITCH ACTIVATED by (?P<actor>.+?) \((?P<trigger>[\w-]+)\): (?P<reason>.*)", re.S
)
_LIFTED = re.compile(
    r"kill switch lifted \((?P<kind>\w+)\) by (?P<actor>.+?)"
    r"(?:, approved by (?P<approved_by>.+?))?: (?P<reason>.*)",
    re.S,
)
_AGAIN = re.compile(
    r"kill switch activation by (?P<actor>.+?) while already active \(.*?\): (?P<reason>.*)", re.S
)
_ACTIVE_AT_START = re.compile(
    r"kill switch is ACTIVE \(since [^,]*, (?P<trigger>[^:]*): (?P<reason>.*)\): no bot may start",
    re.S,
)
_BREAKER_MOVE = re.compile(
    r"circuit breaker '(?P<name>[^']+)' is now (?P<state>\w+): (?P<why>.*)", re.S
)
_BREAKER_AT_START = re.compile(
    r"circuit breaker (?P<name>[\w.-]+) is (?P<state>open|half_open|closed) \((?P<why>.*)\)", re.S
)
GLOBAL_BREAKER: Final = "global"


@dataclass(slots=True)
class FileRead:
    path: str
    bytes: int
    lines: int = 0
    skipped: str | None = None  # why it was not read, when it was not


@dataclass(slots=True)
class TypeStats:
    count: int = 0
    criticals: int = 0
    last_ts: str = ""
    last_message: str = ""


@dataclass(frozen=True, slots=True)
class TracebackRecord:
    ts: str
    level: str
    logger: str
    bot: str | None
    last_line: str
    message: str


@dataclass(frozen=True, slots=True)
class KillSwitchEvent:
    """kind: activated, override, force_override, while active (a repeat), active at start."""

    ts: str
    kind: str
    actor: str | None
    trigger: str | None
    reason: str
    approved_by: str | None = None


@dataclass(frozen=True, slots=True)
class BreakerMove:
    ts: str
    breaker: str
    state: str
    reason: str
    restored: bool = False  # the state read back at start, not a move


def _recent() -> deque[Any]:
    return deque(maxlen=RECENT)


@dataclass
class LogSummary:
    """Everything `analyze` found; timestamps are the log's own ISO strings (UTC)."""

    since: str | None = None
    bot: str | None = None
    bot_map_source: str | None = None
    files: list[FileRead] = field(default_factory=list)
    lines: int = 0
    entries: int = 0
    before_since: int = 0
    other_bots: int = 0
    unparsable: int = 0
    unparsable_at: list[str] = field(default_factory=list)
    first_ts: str | None = None
    last_ts: str | None = None
    levels: Counter[str] = field(default_factory=Counter)
    error_types: dict[str, TypeStats] = field(default_factory=dict)
    warning_types: dict[str, TypeStats] = field(default_factory=dict)
    error_bots: Counter[str] = field(default_factory=Counter)
    error_exchanges: Counter[str] = field(default_factory=Counter)
    error_minutes: Counter[str] = field(default_factory=Counter)  # "YYYY-MM-DDTHH:MM"
    critical_minutes: Counter[str] = field(default_factory=Counter)
    tracebacks: int = 0
    recent_tracebacks: deque[TracebackRecord] = field(default_factory=_recent)
    kill_switch_counts: Counter[str] = field(default_factory=Counter)
    kill_switch: deque[KillSwitchEvent] = field(default_factory=_recent)
    breaker_states: dict[str, Counter[str]] = field(default_factory=dict)
    breaker_moves: deque[BreakerMove] = field(default_factory=_recent)

    @property
    def errors(self) -> int:
        return self.levels["ERROR"] + self.levels["CRITICAL"]


# --- what one message says ---------------------------------------------------------------------


def exception_last_line(text: str) -> str:
    """The traceback's last line: the exception raised last (`ValueError: boom`)."""
    for line in reversed(text.rstrip().splitlines()):
        if line.strip():
            return line.strip()
    return ""


def exception_type(text: str) -> str:
    name = exception_last_line(text).split(":", 1)[0].strip()
    return name if _IDENTIFIER.fullmatch(name) else "exception"


def message_template(message: str, bot: str | None = None, exchange: str | None = None) -> str:
    """The message with what varies replaced: `<bot>: order <n> rejected by <x>: ...`.

    Known messages have a fixed template; any other keeps its text up to its first ": " (the
    detail after it is usually an exception's text), with times, ids and numbers replaced."""
    for pattern, template in _TEMPLATES:
        match = pattern.match(message)
        if match:
            return template.format(**match.groupdict())
    head, rest = "", message
    for name, label in ((bot, "<bot>: "), (exchange, "<exchange>: ")):
        if name and message.startswith(f"{name}: "):
            head, rest = label, message[len(name) + 2 :]
            break
    rest = _QUOTED.sub("<x>", rest)
    for pattern, placeholder in _PLACEHOLDERS:
        rest = pattern.sub(placeholder, rest)
    rest = _NUMBER.sub("<n>", rest)
    cut = rest.find(": ")
    if cut >= 0:
        rest = rest[:cut] + ": ..."
    return clip(head + rest, TEMPLATE_WIDTH)


def clip(text: str, width: int) -> str:
    """One line of at most `width` characters: line breaks and tabs become spaces, and what
    passes the width is cut to `...`."""
    text = text.translate(_ONE_LINE)
    return text if len(text) <= width else text[: width - 3] + "..."


def exchange_in_message(message: str) -> str | None:
    for pattern in _EXCHANGE_IN_MESSAGE:
        match = pattern.match(message)
        if match and match["x"] != GLOBAL_BREAKER:
            return match["x"]
    return None


class Attribution:
    """Which bot and which exchange an entry is about.

    The bot: an explicit `bot` field, else the message's `"<name>: "` prefix when the logger is
    a bot's (supervisor, runtime, reconciliation, bots.*) or the name is a configured bot. The
    exchange: an `exchange` field, else the message (`exchange x is down`, `rejected by x`, a
    breaker's name, an exchange adapter's prefix), else the bot's exchange in the config."""

    def __init__(self, bot_exchanges: Mapping[str, str]) -> None:
        self.bot_exchanges = dict(bot_exchanges)

    def of(
        self, entry: Mapping[str, Any], message: str, logger: str
    ) -> tuple[str | None, str | None]:
        bot, exchange = _text(entry.get("bot")), _text(entry.get("exchange"))
        match = _PREFIX.match(message)
        prefix = match[1] if match else None
        if prefix is not None and logger.startswith(EXCHANGE_LOGGERS):
            exchange = exchange or prefix
        elif bot is None and prefix is not None and self._names_bot(prefix, logger):
            bot = prefix
        if exchange is None:
            exchange = exchange_in_message(message)
        if exchange is None and bot is not None:
            exchange = self.bot_exchanges.get(bot)
        return bot, exchange

    def _names_bot(self, prefix: str, logger: str) -> bool:
        return prefix in self.bot_exchanges or logger.startswith(BOT_LOGGERS)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def kill_switch_event(message: str, ts: str) -> KillSwitchEvent | None:
    if match := _ACTIVATED.match(message):
        return KillSwitchEvent(ts, "activated", match["actor"], match["trigger"], match["reason"])
    if match := _LIFTED.match(message):
        actor, approved_by = match["actor"], match["approved_by"]
        return KillSwitchEvent(ts, match["kind"], actor, None, match["reason"], approved_by)
    if match := _AGAIN.match(message):
        return KillSwitchEvent(ts, "while active", match["actor"], None, match["reason"])
    if match := _ACTIVE_AT_START.match(message):
        return KillSwitchEvent(ts, "active at start", None, match["trigger"], match["reason"])
    return None


def breaker_move(message: str, ts: str) -> BreakerMove | None:
    if match := _BREAKER_MOVE.match(message):
        return BreakerMove(ts, match["name"], match["state"], match["why"])
    if match := _BREAKER_AT_START.match(message):
        return BreakerMove(ts, match["name"], match["state"], match["why"], restored=True)
    return None


# --- the bot map ------------------------------------------------------------------------------


class BotMapError(Exception):
    pass


def bot_map(config_dir: Path | None) -> tuple[dict[str, str], str | None]:
    """Bot name -> exchange id from `bots.json`, and where it was read.

    `config_dir` given: its bots.json, which must be readable (else `BotMapError`). Otherwise
    `./config/bots.json`, else the shipped default, as the coordinator picks them; a broken one
    is then passed over: the analysis works without it (an incident may be a broken config)."""
    if config_dir is not None:
        path = config_dir / BOTS_FILE
        try:
            return _read_bot_map(path), str(path)
        except (OSError, ValueError) as exc:
            raise BotMapError(f"cannot read the bots from {path}: {exc}") from exc
    local = DEFAULT_CONFIG_DIR / BOTS_FILE
    found = local if local.is_file() else _shipped_bots_file()
    if found is None:
        return {}, None
    try:
        return _read_bot_map(found), str(found)
    except (OSError, ValueError):
        return {}, None


def _read_bot_map(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    bots = data.get("bots") if isinstance(data, dict) else None
    if not isinstance(bots, list):
        raise ValueError('no "bots" list')
    return {
        bot["name"]: bot["exchange"]
        for bot in bots
        if isinstance(bot, dict)
        and isinstance(bot.get("name"), str)
        and isinstance(bot.get("exchange"), str)
    }


def _shipped_bots_file() -> Path | None:
    """The embedded default's bots.json (`coordinator_defaults`, a data-only namespace package),
    without importing the config loader and its schema machinery."""
    try:
        package = importlib.import_module("coordinator_defaults")
    except ImportError:
        source = Path(__file__).resolve().parents[1] / "config" / BOTS_FILE
        return source if source.is_file() else None
    for entry in getattr(package, "__path__", ()):
        if (Path(entry) / BOTS_FILE).is_file():
            return Path(entry) / BOTS_FILE
    return None
