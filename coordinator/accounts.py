"""Trading accounts: one ccxt instance per (exchange, API key), shared by the bots on it.

The nonce is per key, so bots that share a key must share an instance. Credentials are read
from the environment variables bots.json names, or a credentials file of mode 0600
(`coordinator/secrets.py`); their values are never logged, printed or returned (and are
redacted wherever text that is not ours might carry them), and a missing one is reported by the
variable's name only.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from bots.exchanges.ccxt_adapter import required_credentials
from coordinator.config.models import BotConfig, CoordinatorConfig, CredentialsConfig
from coordinator.credentials import CredentialsFileError, credentials_source, register
from coordinator.incidents.model import drill_mode

log = logging.getLogger(__name__)

# ccxt's credential fields and the bots.json key naming the variable that holds each.
_FIELDS = {
    "apiKey": "api_key_env",
    "secret": "secret_env",
    "uid": "uid_env",
    "login": "login_env",
    "password": "password_env",
}


class MissingCredentials(Exception):
    """A bot that trades for real names environment variables that are not set."""


@dataclass(frozen=True, slots=True)
class AccountKey:
    exchange: str
    api_key_env: str  # the variable's name identifies the account, never its value


def read_credentials(bot: BotConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ccxt credential fields for `bot`, from the environment."""
    env = load_credentials_source() if environ is None else environ
    names = _named_variables(bot.credentials)
    unnamed = [field for field in required_credentials(bot.exchange) if field not in names]
    if unnamed:
        keys = ", ".join(f"credentials.{_FIELDS[field]}" for field in unnamed)
        raise MissingCredentials(
            f"bot {bot.name!r} ({bot.mode.value}) on {bot.exchange} needs {keys} in bots.json "
            f"(the names of the environment variables that hold them)"
        )
    missing = [variable for variable in names.values() if not env.get(variable)]
    if missing:
        raise MissingCredentials(
            f"bot {bot.name!r} ({bot.mode.value}): environment variable(s) "
            f"{', '.join(sorted(missing))} not set"
        )
    credentials = {field: env[variable] for field, variable in names.items()}
    register(*credentials.values())  # hidden from every log line, audit entry and answer
    return credentials


def load_credentials_source(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """The environment laid over the credentials file's variables (blocking: it may read the
    file; `Coordinator.open` runs it in a thread). MissingCredentials names a bad file."""
    try:
        return credentials_source(environ)
    except CredentialsFileError as exc:
        raise MissingCredentials(str(exc)) from None


def _named_variables(credentials: CredentialsConfig) -> dict[str, str]:
    named = {field: getattr(credentials, key) for field, key in _FIELDS.items()}
    return {field: variable for field, variable in named.items() if variable}


MakeClient = Callable[[str, Mapping[str, str], ssl.SSLContext | None], Any]


class Accounts:
    """Builds and shares the private ccxt clients; closes them all at shutdown."""

    def __init__(self, make_client: MakeClient, environ: Mapping[str, str] | None = None):
        self._make_client = make_client
        self._environ = environ
        self._clients: dict[AccountKey, Any] = {}
        self._ssl_context: ssl.SSLContext | None = None

    def client_for(self, bot: BotConfig) -> Any:
        credentials = read_credentials(bot, self._environ)
        key = AccountKey(bot.exchange, bot.credentials.api_key_env or "")
        if key not in self._clients:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            self._clients[key] = self._make_client(bot.exchange, credentials, self._ssl_context)
            log.info("%s: trading account opened (key from $%s)", bot.exchange, key.api_key_env)
        return self._clients[key]

    async def close(self) -> None:
        for key, client in self._clients.items():
            try:
                await client.close()
            except Exception as exc:  # best effort at shutdown; say so
                log.warning("closing the %s account failed: %r", key.exchange, exc)
        self._clients.clear()


DRILL_RATE_LIMIT_MS: Final = 50


def drill_rate_limits(config: CoordinatorConfig, environ: Mapping[str, str]) -> dict[str, int]:
    """ccxt's request pacing (milliseconds) for the exchanges of a drill's coordinator whose
    every endpoint is on this machine: the drill's fake venue, which has no rate limit to keep
    to (ccxt's kraken waits 1 s between requests, which made one drill last minutes). Empty
    outside a drill (`DRILL_ENV`), and for any exchange with an endpoint elsewhere: a real venue
    is always paced as ccxt paces it."""
    if not drill_mode(environ):
        return {}
    paced: dict[str, int] = {}
    for exchange, endpoints in config.endpoints.exchanges.items():
        urls = [endpoints.primary, *([endpoints.backup] if endpoints.backup else [])]
        if all(_on_this_machine(url) for url in urls):
            paced[exchange] = DRILL_RATE_LIMIT_MS
    return paced


def _on_this_machine(url: str) -> bool:
    host = urlsplit(url).hostname
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, even "localhost", may resolve elsewhere
