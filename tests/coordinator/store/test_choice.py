"""Which journal: SQLite by default, PostgreSQL when --database or the env var names one."""

from __future__ import annotations

import pytest

from coordinator.store.choice import DATABASE_ENV, database_target
from coordinator.store.postgres_dsn import redact_dsn
from coordinator.store.sqlite import StoreError

DSN = "postgresql://bot@127.0.0.1:5432/journal"


def test_without_an_option_or_the_variable_the_journal_is_sqlite() -> None:
    assert database_target(None, {}) is None


def test_the_option_wins_over_the_environment() -> None:
    other = "postgresql://bot@10.0.0.2/other"
    assert database_target(DSN, {DATABASE_ENV: other}) == DSN
    assert database_target(None, {DATABASE_ENV: other}) == other


@pytest.mark.parametrize(
    ("option", "env", "named"),
    [("sqlite:///x.db", {}, "--database"), (None, {DATABASE_ENV: "data/coordinator.db"},
                                            DATABASE_ENV)],
)
def test_a_value_that_is_not_a_postgresql_dsn_is_refused_naming_where_it_came_from(
    option: str | None, env: dict[str, str], named: str
) -> None:
    with pytest.raises(StoreError, match=rf"^{named}: must be a postgresql://"):
        database_target(option, env)


def test_a_dsn_is_shown_without_its_password() -> None:
    assert redact_dsn("postgresql://bot:s3cret@db:5432/j") == "postgresql://bot:***@db:5432/j"
    assert redact_dsn(DSN) == DSN
