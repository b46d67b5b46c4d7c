"""The audit log's hash chain (`coordinator/store/audit_chain.py`): continuity and tampering.

Walking the entries in id order, the check keeps the hash the next entry of the chain must link
to. Each entry is then one of:

- in the chain: it links (prev_hash is that hash) and its own hash covers its fields;
- **edited**: it links but its hash no longer covers its fields (the entry after it still
  links to its stored hash);
- **inserted**: it has no hash (written without the chain), or it does not link and the entry
  after it (or the head, for the last one) links past it;
- after a **deletion**: a gap in the ids, or an entry that does not link to the one before it
  although its own hash is right (entries removed and the ids renumbered, or the hash of the
  entry before it rewritten).

The head (`audit_chain_head`, written with every entry) must name the last entry of the chain:
pointing past it means entries were cut off the end; pointing before it, entries were added
behind the coordinator's back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import aiosqlite

from coordinator.integrity.report import Inconsistency
from coordinator.integrity.rows import CheckResult, fetch_all
from coordinator.store.audit_chain import AUDIT_FIELDS, GENESIS_HASH, entry_hash

CHECK = "audit"
_SELECT = (
    f"SELECT {', '.join(AUDIT_FIELDS)}, prev_hash, hash"  # noqa: S608 (constant column list)
    " FROM audit_events ORDER BY id"
)


class _Entry(NamedTuple):
    fields: tuple[Any, ...]  # AUDIT_FIELDS, id first
    prev_hash: str | None
    hash: str | None

    @property
    def id(self) -> int:
        return int(self.fields[0])

    @property
    def hash_ok(self) -> bool:
        return (
            self.prev_hash is not None
            and self.hash is not None
            and self.hash == entry_hash(self.prev_hash, self.fields)
        )


class _Chain(NamedTuple):
    """The last entry accepted into the chain: its id (0 before the first) and hash."""

    id: int
    hash: str


async def check_audit_chain(conn: aiosqlite.Connection) -> CheckResult:
    entries = [_Entry(tuple(row[:-2]), row[-2], row[-1]) for row in await fetch_all(conn, _SELECT)]
    heads = await fetch_all(conn, "SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1")
    head = (int(heads[0][0]), str(heads[0][1])) if heads else None
    found: list[Inconsistency] = []
    chain = _Chain(0, GENESIS_HASH)
    previous_id = 0
    for index, entry in enumerate(entries):
        gap = entry.id != previous_id + 1
        if gap:
            found.append(_gap(previous_id, entry.id))
        previous_id = entry.id
        follower = entries[index + 1].prev_hash if index + 1 < len(entries) else None
        if index + 1 == len(entries) and head is not None:
            follower = head[1]  # the head links to the last entry as the next entry would
        problem, chained = _classify(entry, chain, gap, follower)
        if problem is not None:
            found.append(problem)
        if chained:
            chain = _Chain(entry.id, str(entry.hash))
    found.extend(_check_head(head, chain, bool(entries)))
    return CheckResult(len(entries), found)


def _classify(
    entry: _Entry, chain: _Chain, gap: bool, follower: str | None
) -> tuple[Inconsistency | None, bool]:
    """What is wrong with `entry` (None: nothing), and whether it is part of the chain."""
    if entry.prev_hash is None or entry.hash is None:
        return _bad(entry, "inserted: it has no hash (written without the chain)", chain), False
    if entry.prev_hash == chain.hash:
        if entry.hash_ok:
            return None, True
        return _bad(entry, "edited: its fields no longer match its hash", chain), True
    if follower == chain.hash:
        return _bad(entry, "inserted: the entry after it links past it", chain), False
    if gap:
        # The gap is reported already; the entry itself is intact unless its hash says not.
        if entry.hash_ok:
            return None, True
        return _bad(entry, "edited: its fields no longer match its hash", chain), True
    if entry.hash_ok:
        why = (
            f"deleted: it does not link to id {chain.id} before it; entries between were"
            f" deleted (and the ids renumbered) or id {chain.id}'s hash was rewritten"
        )
        return _bad(entry, why, chain), True
    if follower == entry.hash:
        return _bad(entry, "edited: its prev_hash and fields were changed", chain), True
    return _bad(entry, "inserted: it neither links to the chain nor matches its hash", chain), False


def _bad(entry: _Entry, why: str, chain: _Chain) -> Inconsistency:
    """Expected: the link to the chain, and the hash the entry's stored fields give."""
    link = f"prev_hash {_short(chain.hash)} (" + (
        f"id {chain.id}'s hash)" if chain.id else "the genesis hash)"
    )
    recomputed = f", hash {_short(_recomputed(entry))}" if entry.prev_hash is not None else ""
    return Inconsistency(
        CHECK,
        "audit_events",
        f"id {entry.id}",
        link + recomputed,
        f"prev_hash {_short(entry.prev_hash)}, hash {_short(entry.hash)}",
        why,
    )


def _recomputed(entry: _Entry) -> str | None:
    return entry_hash(entry.prev_hash, entry.fields) if entry.prev_hash is not None else None


def _gap(before: int, after: int) -> Inconsistency:
    missing = _ids(before + 1, after - 1)
    where = f"before id {after}" if before == 0 else f"between id {before} and id {after}"
    if after <= before:  # ORDER BY id makes this impossible; say so rather than mislabel it
        missing, where = f"id {after}", f"out of order after id {before}"
    return Inconsistency(
        CHECK,
        "audit_events",
        missing,
        f"id {before + 1} after id {before}" if before else "the log starting at id 1",
        f"id {after}",
        f"deleted: {missing} deleted {where}",
    )


def _check_head(
    head: tuple[int, str] | None, chain: _Chain, any_entries: bool
) -> Iterator[Inconsistency]:
    expected = f"last_id {chain.id}, last_hash {_short(chain.hash)}"
    if head is None:
        if any_entries:
            yield Inconsistency(
                CHECK, "audit_chain_head", "id 1", expected, "no row", "the chain's head is missing"
            )
        return
    last_id, last_hash = head
    found = f"last_id {last_id}, last_hash {_short(last_hash)}"
    table, row = "audit_events", _ids(min(last_id, chain.id) + 1, max(last_id, chain.id))
    if last_id > chain.id:
        why = f"deleted: {row} cut off the end (the head points past the last entry)"
    elif last_id < chain.id:
        why = f"inserted: {row} added after the head without moving it"
    elif last_hash != chain.hash:
        table, row = "audit_chain_head", "id 1"
        why = f"edited: the head's hash is not id {chain.id}'s"
    else:
        return
    yield Inconsistency(CHECK, table, row, expected, found, why)


def _ids(first: int, last: int) -> str:
    return f"id {first}" if first == last else f"ids {first}-{last}"


def _short(digest: str | None) -> str:
    """Enough of a sha256 to tell two apart in a table."""
    return "NULL" if digest is None else digest[:12]
