"""PostgreSQL DSNs, without importing the driver (the CLI checks and shows them)."""

from __future__ import annotations

from urllib.parse import urlsplit

# Every connection a coordinator opens says what it is, so that a restore can refuse while one
# is connected (pg_stat_activity.application_name).
APPLICATION_NAME = "bot-coordinator"


def is_postgres_dsn(target: str) -> bool:
    return urlsplit(target).scheme in ("postgresql", "postgres")


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for logs and /status."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
