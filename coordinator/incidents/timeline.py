"""An incident's timeline, read from the audit log, and the times measured from it.

Milestones, each the first audit entry after the one before that says so with result "ok":

- **detected**: the record's `detected_at` (a kill switch activation with a reason opens its
  record at the activation; an operator opening one may say when it was noticed);
- **kill switch activated**: the activation in force at detection (the newest one before it
  that no override lifted before detection), else the first one after;
- **kill switch overridden**: the first override or force override after the activation;
- **first bot back**: the first bot started after the override (or after detection when the
  kill switch was not used): `bot.start`, or a bot a `bots.start_sequential` started;
- **all bots back**: when the last of the record's bots was back.

Time to respond is detected -> kill switch activated (0 when it was already active); time to
recover is detected -> all bots back. The objective of the record's kind is met when the
recovery took no longer than it; not measured while the bots are not all back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from coordinator.incidents.model import OBJECTIVE_SECONDS, IncidentKind
from coordinator.store.journal import iso, parse_time

# How far before detection the audit log is read: an activation before the record was opened.
LOOKBACK: Final = timedelta(hours=1)

ACTIVATE: Final = "kill_switch.activate"
LIFTS: Final = frozenset({"kill_switch.override", "kill_switch.force_override"})
STARTS: Final = frozenset({"bot.start", "bots.start_sequential"})
TIMELINE_ACTIONS: Final = frozenset({ACTIVATE, *LIFTS, *STARTS})


@dataclass(frozen=True, slots=True)
class Milestone:
    name: str
    at: datetime
    audit_id: int | None
    what: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "at": iso(self.at), "audit_id": self.audit_id,
                "what": self.what}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Measurement:
    milestones: list[Milestone]
    respond_seconds: float | None
    recover_seconds: float | None
    objective_seconds: int
    bots_back: dict[str, str] = field(default_factory=dict)  # bot -> when it was back
    bots_not_back: list[str] = field(default_factory=list)

    @property
    def objective_met(self) -> bool | None:
        """None while not recovered."""
        if self.recover_seconds is None:
            return None
        return self.recover_seconds <= self.objective_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "milestones": [m.as_dict() for m in self.milestones],
            "respond_seconds": self.respond_seconds,
            "recover_seconds": self.recover_seconds,
            "objective_seconds": self.objective_seconds,
            "objective_met": self.objective_met,
            "bots_back": self.bots_back,
            "bots_not_back": self.bots_not_back,
        }


@dataclass(frozen=True, slots=True)
class _Entry:
    id: int | None
    at: datetime
    action: str
    subject: str | None
    actor: str
    reason: str | None
    details: Mapping[str, Any]


def measure(
    kind: IncidentKind,
    detected_at: datetime,
    bots: Sequence[str],
    audit: Iterable[Mapping[str, Any]],
) -> Measurement:
    """The timeline of an incident detected at `detected_at`, affecting `bots`, from its audit
    entries (any order; entries that are not "ok" or not about the timeline are ignored)."""
    entries = sorted(_entries(audit), key=lambda e: (e.at, e.id or 0))
    milestones = [Milestone("detected", detected_at, None, "the incident was detected")]
    activation = _activation(entries, detected_at)
    respond: float | None = None
    back_from = detected_at
    if activation is not None:
        milestones.append(Milestone(
            "kill_switch_activated", activation.at, activation.id,
            f"kill switch activated by {activation.actor}: {activation.reason or '(no reason)'}",
        ))  # fmt: skip
        respond = max(0.0, (activation.at - detected_at).total_seconds())
        lift = next((e for e in entries if e.action in LIFTS and e.at >= activation.at), None)
        if lift is None:
            return Measurement(milestones, respond, None, OBJECTIVE_SECONDS[kind], {}, list(bots))
        milestones.append(Milestone(
            "kill_switch_overridden", lift.at, lift.id,
            f"{lift.action.removeprefix('kill_switch.').replace('_', ' ')} by {lift.actor}: "
            f"{lift.reason or '(no reason)'}",
        ))  # fmt: skip
        back_from = lift.at
    back: dict[str, tuple[datetime, _Entry]] = {}
    for entry in entries:
        if entry.action in STARTS and entry.at >= back_from:
            for bot in _started(entry):
                back.setdefault(bot, (entry.at, entry))
    if back:
        first_bot, (first_at, first) = min(back.items(), key=lambda item: item[1][0])
        milestones.append(Milestone(
            "first_bot_back", first_at, first.id, f"{first_bot} started by {first.actor}"
        ))  # fmt: skip
    not_back = [bot for bot in bots if bot not in back]
    recover: float | None = None
    if bots and not not_back:
        last_bot, (last_at, last) = max(
            ((bot, back[bot]) for bot in bots), key=lambda item: item[1][0]
        )
        milestones.append(Milestone(
            "all_bots_back", last_at, last.id,
            f"every bot back ({', '.join(bots)}); the last, {last_bot}, by {last.actor}",
        ))  # fmt: skip
        recover = (last_at - detected_at).total_seconds()
    return Measurement(
        sorted(milestones, key=lambda ms: ms.at),  # an activation in force came before detection
        respond,
        recover,
        OBJECTIVE_SECONDS[kind],
        {bot: iso(at) for bot, (at, _) in sorted(back.items()) if bot in bots or not bots},
        not_back,
    )


def _entries(audit: Iterable[Mapping[str, Any]]) -> Iterable[_Entry]:
    for row in audit:
        if row.get("action") not in TIMELINE_ACTIONS or row.get("result") != "ok":
            continue
        try:
            at = parse_time(row.get("at"))
        except ValueError:
            at = None
        if at is None:  # not written by this coordinator: the chain check reports it
            continue
        details = row.get("details") or {}
        yield _Entry(row.get("id"), at, str(row["action"]), row.get("subject"),
                     str(row.get("actor", "?")), row.get("reason"),
                     details if isinstance(details, Mapping) else {})  # fmt: skip


def _activation(entries: Sequence[_Entry], detected_at: datetime) -> _Entry | None:
    """The activation in force at detection, else the first after it."""
    in_force: _Entry | None = None
    for entry in entries:
        if entry.at > detected_at:
            break
        if entry.action == ACTIVATE and in_force is None:
            in_force = entry
        elif entry.action in LIFTS:
            in_force = None
    if in_force is not None:
        return in_force
    return next((e for e in entries if e.action == ACTIVATE and e.at > detected_at), None)


def _started(entry: _Entry) -> list[str]:
    if entry.action == "bot.start":
        return [entry.subject] if entry.subject else []
    outcome = entry.details.get("outcome")
    started = outcome.get("started") if isinstance(outcome, Mapping) else None
    return [str(bot) for bot in started] if isinstance(started, list) else []
