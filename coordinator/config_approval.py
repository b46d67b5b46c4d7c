"""The version and config gate: approved configs, the check before a start, files that moved.

The Knight Capital lesson: a bot must not trade on a configuration nobody approved. Each
approval is a row of `config_approvals` (bot, the sha256 of its effective config and the config
itself, the code version, who approved it, why, when, and the hash it replaced), committed with
its audit entry (`config.approve`, both hashes) in one safety write. `ConfigGate` holds, for one
coordinator process, every bot's effective config (`coordinator/config/fingerprint.py`), its
latest approval and how often a start was refused:

- `refusal(bot)`: why the bot may not start (its effective config is not the approved one), or
  None. `clear_to_start` raises `ConfigNotApproved` (409) and counts it, or, when the request
  accepts the change with an approver, records the approval first.
- `bootstrap()`: a bot that has no approval at all (a fresh data dir, a bot just added to
  bots.json) gets its current config approved by "(first start)", audited; otherwise a fresh
  clone's paper bots could not start. A bot that had an approval never gets one this way.
- `check_files()`: the config files hashed again (in a thread) against what was read at
  start; each change is logged and audited once. The effective config does not change until a
  restart: a file changed on disk is what the *next* start will run, and will refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coordinator.config.fingerprint import (
    BotFingerprint,
    CodeVersion,
    bot_fingerprints,
    code_version,
    existing_file_hashes,
    file_hashes,
    pretty_json,
)
from coordinator.config.models import BotMode, CoordinatorConfig
from coordinator.errors import BadRequest, Conflict, CoordinatorError, UnknownBot
from coordinator.store.journal import SqliteJournal, audit_entry, iso
from coordinator.store.sqlite import Priority, SqliteStore, Write

log = logging.getLogger(__name__)

FIRST_START = "(first start)"
CONFIG_WATCH_SECONDS = 5.0  # how often the config files are hashed again
MAX_APPROVER_LENGTH = 100
APPROVE_HINT = (
    "review it with `bot-coordinator config diff`, approve it with `bot-coordinator config "
    'approve --approved-by WHO`, or start with "accept_config_change": true and "approved_by"'
)

_APPROVAL_COLUMNS = (
    "bot, config_sha256, config_json, code_version, approved_by, reason, at, previous_sha256"
)


class ConfigNotApproved(Conflict):
    """A bot's effective config differs from the last one an operator approved."""

    code = "config_not_approved"


@dataclass(frozen=True, slots=True)
class Approval:
    bot: str
    config_sha256: str
    config_json: str
    code_version: str
    approved_by: str
    reason: str | None
    at: str
    previous_sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "bot": self.bot,
            "config_sha256": self.config_sha256,
            "previous_sha256": self.previous_sha256,
            "approved_by": self.approved_by,
            "reason": self.reason,
            "at": self.at,
            "code_version": self.code_version,
        }


# -- the store -------------------------------------------------------------------------------------


async def latest_approvals(store: SqliteStore) -> dict[str, Approval]:
    """The newest approval of each bot that has one."""
    rows = await store.fetch_all(
        f"SELECT {_APPROVAL_COLUMNS} FROM config_approvals"  # noqa: S608 (constant columns)
        " WHERE id IN (SELECT MAX(id) FROM config_approvals GROUP BY bot)"
    )
    return {row["bot"]: Approval(*tuple(row)) for row in rows}


def approval_writes(approval: Approval, actor: str, via: str) -> list[Write]:
    """The approval's row and its audit entry (both hashes, the approver), to commit together."""
    return [
        (
            f"INSERT INTO config_approvals ({_APPROVAL_COLUMNS})"  # noqa: S608 (constant columns)
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                approval.bot,
                approval.config_sha256,
                approval.config_json,
                approval.code_version,
                approval.approved_by,
                approval.reason,
                approval.at,
                approval.previous_sha256,
            ),
        ),
        audit_entry(
            actor=actor,
            action="config.approve",
            subject=approval.bot,
            result="ok",
            at=datetime.fromisoformat(approval.at),
            reason=approval.reason,
            details={
                "approved_by": approval.approved_by,
                "previous_sha256": approval.previous_sha256,
                "config_sha256": approval.config_sha256,
                "code_version": approval.code_version,
                "via": via,
            },
        ),
    ]


def check_approver(approved_by: str | None) -> str:
    """The approver's name, or BadRequest naming the field."""
    if approved_by is None or not approved_by.strip():
        raise BadRequest("approved_by: required: who approved the config")
    if len(approved_by) > MAX_APPROVER_LENGTH:
        raise BadRequest(f"approved_by: at most {MAX_APPROVER_LENGTH} characters")
    return approved_by.strip()


def check_accept(accept_config_change: bool, approved_by: str | None) -> str | None:
    """The approver a start request names with `accept_config_change`, or None without it."""
    if not accept_config_change:
        if approved_by is not None:
            raise BadRequest(
                "approved_by: only with accept_config_change: true (it names who approved "
                "the changed config)"
            )
        return None
    if approved_by is None or not approved_by.strip():
        raise BadRequest(
            "approved_by: required with accept_config_change: true (who approved the "
            "changed config)"
        )
    return check_approver(approved_by)


# -- the gate --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StartRead:
    fingerprints: dict[str, BotFingerprint]
    code: CodeVersion
    files: dict[str, str]


def _read_at_start(config: CoordinatorConfig) -> _StartRead:
    """Blocking: the source files and the config files are read."""
    return _StartRead(
        bot_fingerprints(config), code_version(), existing_file_hashes(config.source_dir)
    )


STATUS_KEYS = ("sha256", "approved_sha256", "approved", "approved_by", "refusals")


class ConfigGate:
    """One process's view of what every bot runs and what was approved (see the module doc)."""

    def __init__(
        self,
        config: CoordinatorConfig,
        journal: SqliteJournal,
        clock: Callable[[], datetime],
        read: _StartRead,
        approvals: Mapping[str, Approval],
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        self.source_dir = config.source_dir
        # Read-only bots send no order: the gate does not hold them (a --read-only
        # verification run changes every bot's mode, and so its effective config).
        self.read_only = frozenset(b.name for b in config.bots.bots if b.mode is BotMode.READ_ONLY)
        self.journal = journal
        self.clock = clock
        self.fingerprints = read.fingerprints
        self.code = read.code
        self.approvals = dict(approvals)
        self.on_refusal = on_refusal
        self.refusals = dict.fromkeys(self.fingerprints, 0)
        self._revisions = dict.fromkeys(self.fingerprints, 0)
        self.files_at_start = read.files
        self.files_now: dict[str, str | None] = dict(read.files)
        self.files_checked_at: datetime | None = None
        self.watch_seconds = CONFIG_WATCH_SECONDS
        self._approving = asyncio.Lock()  # one approval at a time: `previous_sha256` holds
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        config: CoordinatorConfig,
        journal: SqliteJournal,
        clock: Callable[[], datetime],
        on_refusal: Callable[[str], None] | None = None,
    ) -> ConfigGate:
        """Hash every bot's effective config, the code and the config files (in a thread),
        and read the latest approvals. Records nothing: `bootstrap()` does."""
        read = await asyncio.to_thread(_read_at_start, config)
        approvals = await latest_approvals(journal.store)
        return cls(config, journal, clock, read, approvals, on_refusal)

    @property
    def approving(self) -> asyncio.Lock:
        """Held while approvals are recorded (a config reload records its own under it)."""
        return self._approving

    def adopt(
        self,
        fingerprints: Mapping[str, BotFingerprint],
        approvals: Iterable[Approval],
        files: Mapping[str, str | None],
        pending: Iterable[str],
    ) -> None:
        """A config reload is on disk: the bots' effective configs are `fingerprints`, these
        approvals are the latest, and each config file fully applied is what was read now (one
        with a change left for the next start keeps its hash at start, so it shows as
        changed)."""
        for bot, fingerprint in fingerprints.items():
            if bot in self.fingerprints and self.fingerprints[bot].sha256 != fingerprint.sha256:
                self.fingerprints[bot] = fingerprint
                self._revisions[bot] += 1
        for approval in approvals:
            self.approvals[approval.bot] = approval
            self._revisions[approval.bot] += 1
        waiting = set(pending)
        for name, sha in files.items():
            if name in self.files_at_start and name not in waiting and sha is not None:
                self.files_at_start[name] = sha
                self.files_now[name] = sha

    # -- approvals -------------------------------------------------------------------------------

    def approved(self, bot: str) -> bool:
        approval = self.approvals.get(bot)
        return approval is not None and approval.config_sha256 == self.fingerprints[bot].sha256

    def unapproved(self) -> list[str]:
        return [bot for bot in self.fingerprints if not self.approved(bot)]

    def _known(self, bot: str) -> BotFingerprint:
        try:
            return self.fingerprints[bot]
        except KeyError:
            raise UnknownBot(bot, list(self.fingerprints)) from None

    async def bootstrap(self) -> list[str]:
        """Approve, as "(first start)", the current config of every bot that has no approval at
        all; returns their names. One write for all of them. Not a read-only bot's: its config
        (read-only, perhaps only for this run) is not the one it will trade on."""
        new = [
            bot for bot in self.fingerprints
            if bot not in self.approvals and bot not in self.read_only
        ]  # fmt: skip
        if new:
            await self._record(new, FIRST_START, "no approval recorded yet", "coordinator",
                               "first start")  # fmt: skip
            log.info("config of %s recorded as approved %s", ", ".join(new), FIRST_START)
        return new

    async def approve(
        self,
        bots: Iterable[str] | None,
        approved_by: str | None,
        reason: str | None,
        actor: str,
        via: str = "config approve",
        expected: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Approve the effective config of `bots` (None: every bot whose config is not the
        approved one), audited; a refusal is audited too. `expected`: the sha256 the approver
        reviewed, per bot; a bot whose effective config is another one is refused."""
        asked = list(dict.fromkeys(bots)) if bots is not None else None
        subject = ", ".join(asked) if asked is not None else "every changed bot"
        try:
            approver = check_approver(approved_by)
            names = asked if asked is not None else self.unapproved()
            for bot in names:
                self._check_expected(bot, expected)
            changed = [bot for bot in names if not self.approved(bot)]
            recorded = await self._record(changed, approver, reason, actor, via)
        except CoordinatorError as exc:
            await self.journal.audit(
                actor=actor,
                action="config.approve",
                subject=subject,
                result=f"refused: {exc.message}",
                at=self.clock(),
                reason=reason,
                details={"approved_by": approved_by, "via": via},
            )
            raise
        return {
            "approved": [approval.as_dict() for approval in recorded],
            "unchanged": [bot for bot in names if bot not in changed],
        }

    def _check_expected(self, bot: str, expected: Mapping[str, str] | None) -> None:
        effective = self._known(bot).sha256
        if expected is None or bot not in expected or expected[bot] == effective:
            return
        raise Conflict(
            f"bot {bot!r}: its effective config is sha256 {effective}, not the "
            f"{expected[bot]} that was reviewed; look at the diff again"
        )

    async def _record(
        self, bots: list[str], approved_by: str, reason: str | None, actor: str, via: str
    ) -> list[Approval]:
        async with self._approving:
            at = iso(self.clock())
            approvals: list[Approval] = []
            writes: list[Write] = []
            for bot in bots:
                if self.approved(bot):  # approved meanwhile, by the request before this one
                    continue
                fingerprint = self._known(bot)
                previous = self.approvals.get(bot)
                approval = Approval(
                    bot,
                    fingerprint.sha256,
                    fingerprint.config_json,
                    self.code.label,
                    approved_by,
                    reason,
                    at,
                    previous.config_sha256 if previous is not None else None,
                )
                approvals.append(approval)
                writes.extend(approval_writes(approval, actor, via))
            await self.journal.store.write(writes, Priority.SAFETY)
            for approval in approvals:
                self.approvals[approval.bot] = approval
                self._revisions[approval.bot] += 1
            return approvals

    # -- the check before a start ----------------------------------------------------------------

    def refusal(self, bot: str) -> str | None:
        """Why `bot` may not start on its effective config, or None when it is the approved one."""
        fingerprint = self._known(bot)
        if self.approved(bot):
            return None
        approval = self.approvals.get(bot)
        if approval is None:
            approved = "no approved config"
        else:
            approved = (
                f"the approved one ({approval.config_sha256}, approved by "
                f"{approval.approved_by} at {approval.at})"
            )
        return (
            f"its effective config (sha256 {fingerprint.sha256}) differs from {approved}; "
            f"{APPROVE_HINT}"
        )

    def count_refusal(self, bot: str) -> None:
        self.refusals[bot] += 1
        self._revisions[bot] += 1
        if self.on_refusal is not None:
            self.on_refusal(bot)

    async def clear_to_start(self, bot: str, actor: str, approved_by: str | None, via: str) -> None:
        """Return when `bot` may start on its config. With an approver (the request accepted
        the change), a changed config is approved first; without one it is refused
        (`ConfigNotApproved`, counted)."""
        reason = self.refusal(bot)
        if reason is None:
            return
        if bot in self.read_only:
            log.info("%s: config not approved, started anyway: read-only, it sends no order", bot)
            return
        if approved_by is not None:
            await self._record([bot], approved_by, "accepted with the start", actor, via)
            return
        self.count_refusal(bot)
        log.warning("%s: start refused: %s", bot, reason)
        raise ConfigNotApproved(f"bot {bot!r} cannot start: {reason}")

    async def sequence_refusal(self, bot: str, actor: str, approved_by: str | None) -> str | None:
        """`clear_to_start` for a sequential start: the refusal as a reason (counted and
        audited as a refused `bot.start`), so the sequence lists it and goes on."""
        try:
            await self.clear_to_start(bot, actor, approved_by, "accept_config_change")
        except ConfigNotApproved as exc:
            await self.journal.audit(
                actor=actor,
                action="bot.start",
                subject=bot,
                result=f"refused: {exc.message}",
                at=self.clock(),
                details={"via": "start_sequential"},
            )
            return exc.message
        return None

    # -- what /status and /config show -----------------------------------------------------------

    def revision(self, bot: str) -> int:
        """Moves whenever the bot's `bot_entry` would change (an approval, a refusal)."""
        return self._revisions.get(bot, 0)

    def bot_entry(self, bot: str) -> dict[str, Any]:
        fingerprint = self._known(bot)
        approval = self.approvals.get(bot)
        return {
            "sha256": fingerprint.sha256,
            "approved_sha256": approval.config_sha256 if approval else None,
            "approved": self.approved(bot),
            "approved_by": approval.approved_by if approval else None,
            "approved_at": approval.at if approval else None,
            "approved_code_version": approval.code_version if approval else None,
            "code_version": self.code.label,
            "refusals": self.refusals[bot],
        }

    def status_entry(self, bot: str) -> dict[str, Any]:
        """The part of `bot_entry` each bot's /status document carries: whether its config
        is the approved one, and who approved it. The code version is the same for every bot
        (the status's `config`), and the rest is in GET /config: at 100 bots, /status is
        served ~1,500 times a second and its size is most of its cost (docs/benchmarks.md)."""
        entry = self.bot_entry(bot)
        return {key: entry[key] for key in STATUS_KEYS}

    def changed_since_start(self) -> list[str]:
        return [name for name, sha in self.files_at_start.items() if self.files_now[name] != sha]

    def status(self) -> dict[str, Any]:
        return {
            "dir": str(self.source_dir),
            "code_version": self.code.label,
            "source_sha256": self.code.source_sha256,
            "files": {
                name: {
                    "sha256_at_start": sha,
                    "sha256_now": self.files_now[name],
                    "changed": self.files_now[name] != sha,
                }
                for name, sha in self.files_at_start.items()
            },
            "changed_since_start": self.changed_since_start(),
            "checked_at": iso(self.files_checked_at) if self.files_checked_at else None,
            "unapproved_bots": self.unapproved(),
        }

    def diff(self, bot: str) -> str:
        """A unified diff from the approved config (pretty, keys sorted) to the effective one;
        empty when they are the same."""
        fingerprint = self._known(bot)
        approval = self.approvals.get(bot)
        if approval is not None and approval.config_sha256 == fingerprint.sha256:
            return ""
        before = _lines(pretty_json(approval.config_json)) if approval is not None else []
        source = (
            f"{bot} approved {approval.config_sha256[:12]} by {approval.approved_by} at "
            f"{approval.at}"
            if approval is not None
            else f"{bot} (no approved config)"
        )
        target = f"{bot} effective {fingerprint.sha256[:12]} (code {self.code.label})"
        return "".join(difflib.unified_diff(before, _lines(fingerprint.pretty()), source, target))

    def diff_document(self, bot: str | None = None) -> dict[str, Any]:
        names = [bot] if bot is not None else list(self.fingerprints)
        for name in names:
            self._known(name)
        return {
            "code_version": self.code.label,
            "changed_since_start": self.changed_since_start(),
            "bots": {
                name: {
                    **{k: v for k, v in self.bot_entry(name).items() if k != "refusals"},
                    "diff": self.diff(name),
                }
                for name in names
            },
        }

    # -- config files changed on disk ------------------------------------------------------------

    def start_watch(self) -> None:
        self._watch = asyncio.create_task(self._watch_files(), name="config-watch")

    async def stop_watch(self) -> None:
        task, self._watch = self._watch, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch_files(self) -> None:
        while True:
            await asyncio.sleep(self.watch_seconds)
            try:
                await self.check_files()
            except Exception:  # the watch must outlive one failed pass; it is in the log
                log.exception("checking the config files for changes failed")

    async def check_files(self) -> list[str]:
        """Hash the config files again (in a thread); log and audit each change once. Returns
        the files that differ from what was read at start."""
        now = await asyncio.to_thread(file_hashes, self.source_dir)
        self.files_checked_at = self.clock()
        for name, at_start in self.files_at_start.items():
            sha, before = now.get(name), self.files_now[name]
            if sha == before:
                continue
            self.files_now[name] = sha
            changed = sha != at_start
            if changed:
                log.warning(
                    "config file %s changed on disk since the coordinator started (sha256 %s, "
                    "was %s): the running bots keep the config read at start; the next start "
                    "loads it and refuses each changed bot until `bot-coordinator config "
                    "approve`", self.source_dir / name, sha or "unreadable", at_start,
                )  # fmt: skip
            else:
                log.info("config file %s holds what was read at start again", name)
            await self.journal.audit(
                actor="config-watch",
                action="config.changed_on_disk",
                subject=name,
                result="changed" if changed else "back to its content at start",
                at=self.files_checked_at,
                details={
                    "dir": str(self.source_dir),
                    "sha256_at_start": at_start,
                    "sha256_before": before,
                    "sha256_now": sha,
                },
            )
        return self.changed_since_start()


def _lines(text: str) -> list[str]:
    return (text + "\n").splitlines(keepends=True)
