"""Credentials come from the environment, are never shown, and accounts are shared per key."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from coordinator.accounts import (
    DRILL_RATE_LIMIT_MS,
    Accounts,
    MissingCredentials,
    drill_rate_limits,
    read_credentials,
)
from coordinator.config import load_config
from coordinator.config.models import BotConfig
from coordinator.incidents.model import DRILL_ENV
from tests.support_config import write_fast_config

SECRET = "c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1iZS1zaG93bg=="


@pytest.fixture
def bots(tmp_path: Path) -> dict[str, BotConfig]:
    config = load_config(write_fast_config(tmp_path / "config"))
    return {bot.name: bot for bot in config.bots.bots}


class FakeClient:
    def __init__(self, exchange: str, credentials: Mapping[str, str]) -> None:
        self.exchange = exchange
        self.credentials = dict(credentials)
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def make(exchange: str, credentials: Mapping[str, str], _: ssl.SSLContext | None) -> Any:
    return FakeClient(exchange, credentials)


def test_credentials_are_read_from_the_variables_bots_json_names(
    bots: dict[str, BotConfig],
) -> None:
    env = {"KRAKEN_API_KEY": "key", "KRAKEN_API_SECRET": SECRET}

    assert read_credentials(bots["kraken"], env) == {"apiKey": "key", "secret": SECRET}


def test_a_missing_variable_is_named_and_no_value_is_shown(bots: dict[str, BotConfig]) -> None:
    env = {
        "NDAX_API_KEY": "key",
        "NDAX_API_SECRET": SECRET,
        "NDAX_LOGIN": "me",
        "NDAX_PASSWORD": SECRET,
    }

    with pytest.raises(MissingCredentials) as caught:
        read_credentials(bots["ndax"], env)

    message = str(caught.value)
    assert "NDAX_UID not set" in message
    assert SECRET not in message
    assert "key" not in message.replace("api_key", "")


async def test_bots_on_one_key_share_a_client_and_every_client_is_closed(
    bots: dict[str, BotConfig],
) -> None:
    env = {
        "KRAKEN_API_KEY": "k",
        "KRAKEN_API_SECRET": SECRET,
        "NDAX_API_KEY": "n",
        "NDAX_API_SECRET": SECRET,
        "NDAX_UID": "7",
        "NDAX_LOGIN": "me",
        "NDAX_PASSWORD": SECRET,
    }
    accounts = Accounts(make, env)
    second_kraken = bots["kraken"].model_copy(update={"name": "kraken-2"})

    first = accounts.client_for(bots["kraken"])
    shared = accounts.client_for(second_kraken)
    other = accounts.client_for(bots["ndax"])

    assert first is shared
    assert other is not first
    assert other.credentials == {
        "apiKey": "n",
        "secret": SECRET,
        "uid": "7",
        "login": "me",
        "password": SECRET,
    }
    await accounts.close()
    assert first.closed
    assert other.closed


def test_a_bot_must_name_every_credential_its_exchange_needs(bots: dict[str, BotConfig]) -> None:
    ndax = bots["ndax"]
    partial = ndax.model_copy(
        update={"credentials": ndax.credentials.model_copy(update={"login_env": None})}
    )

    with pytest.raises(MissingCredentials, match=r"needs credentials\.login_env in bots\.json"):
        read_credentials(partial, {})


def test_only_a_drill_paces_only_an_exchange_whose_endpoints_are_all_local(
    tmp_path: Path,
) -> None:
    def endpoints(primary: str, backup: str | None) -> Any:
        def change(documents: dict[str, Any]) -> None:
            kraken = documents["api-endpoints.json"]["exchanges"]["kraken"]
            kraken.update(primary=primary, backup=backup)

        return load_config(write_fast_config(tmp_path / primary.split(":")[-1], change))

    local = endpoints("http://127.0.0.1:9101", "http://127.0.0.1:9102")
    assert drill_rate_limits(local, {DRILL_ENV: "1"}) == {"kraken": DRILL_RATE_LIMIT_MS}
    assert drill_rate_limits(local, {}) == {}  # not a drill: ccxt's own pacing
    assert drill_rate_limits(local, {DRILL_ENV: "0"}) == {}
    half = endpoints("http://127.0.0.1:9103", "https://kraken-backup.example.com")
    assert drill_rate_limits(half, {DRILL_ENV: "1"}) == {}
    named = endpoints("http://localhost:9104", None)
    assert drill_rate_limits(named, {DRILL_ENV: "1"}) == {}
