"""A PostgreSQL connection that speaks to the store's code as a sqlite3 connection does.

The store's SQL is written once, in the dialect both engines share, with `?` placeholders (and
`:name` ones bound from a mapping); the writer thread calls `conn.execute(sql, params)` and reads
`rowcount`, `fetchone()` and `lastrowid` from what it returns. `PgConnection` wraps a psycopg 3
connection (synchronous: it lives in the store's threads, as the sqlite3 one does) so that the
same code runs on it:

- `?` becomes `%s`, `:name` becomes `%(name)s`, and a literal `%` becomes `%%` (outside string
  literals and quoted names only);
- `BEGIN IMMEDIATE` becomes `BEGIN` (PostgreSQL's writers do not need to take the lock early);
- rows are `Row`s: a tuple that can also be read by column name and turned into a dict, as
  `sqlite3.Row`;
- `lastrowid` is `lastval()`: the identity just assigned in this session.

Autocommit is on: transactions are the explicit `BEGIN` ... `COMMIT` the store writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from coordinator.store.fence import TransactionFence
from coordinator.store.postgres_dsn import APPLICATION_NAME

_TOKEN = re.compile(
    r"""'(?:[^']|'')*'           # a string literal
      | "(?:[^"]|"")*"           # a quoted name
      | (?<!:):(?P<name>[A-Za-z_][A-Za-z0-9_]*)  # :name (not the second colon of ::type)
      | (?P<mark>\?)             # ?
      | (?P<percent>%)           # a literal %
    """,
    re.VERBOSE,
)


def translate(sql: str, named: bool = False, with_params: bool = True) -> str:
    """SQLite-style placeholders to psycopg's; `named`: `:name` placeholders (else `?`). A
    query sent without parameters is not parsed by psycopg: its `%` stay as they are."""

    def replace(match: re.Match[str]) -> str:
        if match.group("percent"):
            return "%%" if with_params else "%"
        if match.group("mark"):
            return "%s"
        if match.group("name") and named:
            return f"%({match.group('name')})s"
        return match.group(0)

    out = _TOKEN.sub(replace, sql)
    if out.lstrip().upper().startswith("BEGIN IMMEDIATE"):
        out = "BEGIN"
    return out


class Row(tuple[Any, ...]):
    """One result row: by position, by column name, and as a mapping (`dict(row)`)."""

    _names: tuple[str, ...]

    def __new__(cls, values: Sequence[Any], names: tuple[str, ...]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._names.index(key))
            except ValueError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)


def _rows(cursor: psycopg.Cursor[Any]) -> Any:
    names = tuple(column.name for column in cursor.description or ())

    def make(values: Sequence[Any]) -> Row:
        return Row(values, names)

    return make


class PgCursor:
    def __init__(self, cursor: psycopg.Cursor[Any], conn: psycopg.Connection[Any]) -> None:
        self._cursor = cursor
        self._conn = conn

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        row = self._conn.execute("SELECT lastval()").fetchone()
        return int(row[0]) if row is not None else None

    def fetchone(self) -> Row | None:
        if self._cursor.description is None:
            return None
        row: Row | None = self._cursor.fetchone()
        return row

    def fetchall(self) -> list[Row]:
        if self._cursor.description is None:
            return []
        return list(self._cursor.fetchall())


class PgConnection:
    """See the module docstring. One thread uses it at a time (the store's writer or reader)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn
        # The leader's fence: every transaction this connection begins first checks that the
        # lease is still held (a failed check raises, and the transaction writes nothing).
        self.fence: TransactionFence | None = None

    @classmethod
    def connect(cls, dsn: str, read_only: bool = False) -> PgConnection:
        conn = psycopg.connect(
            dsn, autocommit=True, row_factory=_rows, application_name=APPLICATION_NAME
        )
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
        return cls(conn)

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> PgCursor:
        named = isinstance(params, Mapping)
        query = translate(sql, named=named, with_params=bool(params))
        cursor = self.raw.execute(query, params if params else None)
        if query == "BEGIN" and self.fence is not None:
            self.fence.check(self)
        return PgCursor(cursor, self.raw)

    def close(self) -> None:
        self.raw.close()
