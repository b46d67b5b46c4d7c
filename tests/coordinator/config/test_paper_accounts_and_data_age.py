"""The config of self-trade prevention (`paper.account` in bots.json) and of the stale market
data guard (`max_market_data_age_seconds` in bot-limits.json)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from coordinator.config import ConfigIssue, load_config
from coordinator.config.models import BotLimitsConfig, BotsConfig
from tests.coordinator.config.conftest import REPO_CONFIG_DIR
from tests.coordinator.config.support import Edit, issues_of, lines_of

L = "bot-limits.json"


def a_second_kraken_bot(doc: Any, account: str | None = "desk", exchange: str = "kraken") -> None:
    """bots.json with a copy of the kraken bot named kraken-b; both name `account`."""
    kraken = next(bot for bot in doc["bots"] if bot["name"] == "kraken")
    twin = copy.deepcopy(kraken)
    twin.update(name="kraken-b", exchange=exchange)
    doc["bots"].append(twin)
    if account is not None:
        kraken["paper"]["account"] = account
        twin["paper"]["account"] = account


# --- paper.account -------------------------------------------------------------------------------


def test_paper_bots_on_one_exchange_may_share_a_named_account(config_dir: Path, edit: Edit) -> None:
    edit("bots.json", a_second_kraken_bot)

    bots = load_config(config_dir).bots

    assert [bot.paper.account for bot in bots.bots] == [None, "desk", "desk"]


def test_a_paper_bot_names_no_account_by_default() -> None:
    assert all(bot.paper.account is None for bot in load_config(REPO_CONFIG_DIR).bots.bots)


def test_bots_sharing_a_paper_account_on_two_exchanges_are_reported_at_the_second(
    config_dir: Path, edit: Edit
) -> None:
    edit("bots.json", lambda doc: a_second_kraken_bot(doc, exchange="ndax"))

    assert issues_of(config_dir) == [
        ConfigIssue(
            "bots.json",
            "$.bots[2].paper.account",
            "bot 'kraken-b' on ndax names paper.account 'desk', which 'kraken' uses on kraken: "
            "bots that share a paper account must be on the same exchange",
        )
    ]

    # A configuration built in code is held to the same rule by the model.
    document = json.loads((config_dir / "bots.json").read_text(encoding="utf-8"))
    with pytest.raises(PydanticValidationError, match="must be on the same exchange"):
        BotsConfig.model_validate(document)


@pytest.mark.parametrize("name", ["Desk", "", "a b", "x" * 65])
def test_a_paper_account_name_of_the_wrong_form_is_reported(
    config_dir: Path, edit: Edit, name: str
) -> None:
    edit("bots.json", lambda doc: doc["bots"][0]["paper"].update(account=name))

    [issue] = issues_of(config_dir)

    assert (issue.file, issue.path) == ("bots.json", "$.bots[0].paper.account")
    assert "does not match" in issue.reason


# --- max_market_data_age_seconds -----------------------------------------------------------------


def test_the_shipped_limits_hold_a_market_data_age_of_30_seconds() -> None:
    limits = load_config(REPO_CONFIG_DIR).limits

    assert limits.defaults.max_market_data_age_seconds == 30
    assert limits.limits_for("ndax").max_market_data_age_seconds == 30


def test_limits_that_set_no_market_data_age_get_the_default(config_dir: Path, edit: Edit) -> None:
    def unset(doc: Any) -> None:
        del doc["defaults"]["max_market_data_age_seconds"]

    edit(L, unset)

    limits = load_config(config_dir).limits

    assert limits.defaults.max_market_data_age_seconds == 30


def test_a_bot_may_set_its_own_market_data_age(config_dir: Path, edit: Edit) -> None:
    edit(L, lambda doc: doc["bots"]["ndax"].update(max_market_data_age_seconds=2.5))

    limits = load_config(config_dir).limits

    assert limits.limits_for("ndax").max_market_data_age_seconds == 2.5
    assert limits.limits_for("kraken").max_market_data_age_seconds == 30


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "0 must be greater than 0"),
        (-1, "-1 must be greater than 0"),
        (86401, "86401 is greater than the maximum of 86400"),
        ("30s", "expected number, got string '30s'"),
    ],
)
def test_a_market_data_age_that_is_not_a_positive_number_of_seconds_is_reported(
    config_dir: Path, edit: Edit, value: Any, reason: str
) -> None:
    edit(L, lambda doc: doc["defaults"].update(max_market_data_age_seconds=value))

    assert lines_of(config_dir) == [f"{L}: $.defaults.max_market_data_age_seconds: {reason}"]

    document = json.loads((config_dir / L).read_text(encoding="utf-8"))
    with pytest.raises(PydanticValidationError):
        BotLimitsConfig.model_validate(document)
