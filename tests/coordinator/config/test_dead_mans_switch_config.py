"""api-endpoints.json `exchanges.<id>.dead_mans_switch`: shipped on for kraken, absent means
off, and every bad value is reported at its key (the timeout against the interval by the model,
which a configuration built in code is held to as well)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from coordinator.config import ConfigIssue, load_config
from coordinator.config.models import ApiEndpointsConfig, DeadMansSwitchConfig
from tests.coordinator.config.conftest import REPO_CONFIG_DIR
from tests.coordinator.config.support import Edit, issues_of

E = "api-endpoints.json"
AT = "$.exchanges.kraken.dead_mans_switch"


def switch(**fields: Any) -> Any:
    def change(document: dict[str, Any]) -> None:
        document["exchanges"]["kraken"]["dead_mans_switch"] = fields

    return change


def test_the_shipped_config_arms_kraken_every_15_seconds_for_60() -> None:
    config = load_config(REPO_CONFIG_DIR)

    assert config.endpoints.exchanges["kraken"].dead_mans_switch == DeadMansSwitchConfig(
        enabled=True, interval_seconds=15, timeout_seconds=60
    )
    assert config.endpoints.exchanges["ndax"].dead_mans_switch is None  # ndax has none


def test_absent_means_off_and_the_interval_and_timeout_have_kraken_s_defaults(
    config_dir: Path, edit: Edit
) -> None:
    def absent(document: dict[str, Any]) -> None:
        del document["exchanges"]["kraken"]["dead_mans_switch"]

    edit(E, absent)
    assert load_config(config_dir).endpoints.exchanges["kraken"].dead_mans_switch is None

    edit(E, switch(enabled=False))
    assert load_config(config_dir).endpoints.exchanges["kraken"].dead_mans_switch == (
        DeadMansSwitchConfig(enabled=False, interval_seconds=15, timeout_seconds=60)
    )


def test_a_timeout_shorter_than_two_intervals_is_refused_naming_both_fields(
    config_dir: Path, edit: Edit
) -> None:
    edit(E, switch(enabled=True, interval_seconds=20, timeout_seconds=30))

    assert issues_of(config_dir) == [
        ConfigIssue(
            E,
            AT,
            "timeout_seconds (30) must be at least twice interval_seconds (20), so that one "
            "failed beat does not let the venue's timer run out",
        )
    ]


def test_a_timeout_of_exactly_two_intervals_loads(config_dir: Path, edit: Edit) -> None:
    edit(E, switch(enabled=True, interval_seconds=0.5, timeout_seconds=1))
    settings = load_config(config_dir).endpoints.exchanges["kraken"].dead_mans_switch
    assert settings == DeadMansSwitchConfig(enabled=True, interval_seconds=0.5, timeout_seconds=1)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("timeout_seconds", 60.5, "expected integer, got number 60.5"),
        ("timeout_seconds", 0, "0 is less than the minimum of 1"),
        ("timeout_seconds", 86400, "86400 is greater than the maximum of 86399"),
        ("interval_seconds", 0, "0 must be greater than 0"),
        ("interval_seconds", -1, "-1 must be greater than 0"),
        ("interval_seconds", 50000, "50000 is greater than the maximum of 43199.5"),
    ],
)
def test_a_bad_value_is_reported_at_its_key(
    config_dir: Path, edit: Edit, key: str, value: Any, reason: str
) -> None:
    fields: dict[str, Any] = {"enabled": True, "interval_seconds": 15, "timeout_seconds": 60}
    edit(E, switch(**{**fields, key: value}))

    assert issues_of(config_dir) == [ConfigIssue(E, f"{AT}.{key}", reason)]

    # A configuration built in code is held to the same bound by the model.
    document = json.loads((config_dir / E).read_text(encoding="utf-8"))
    with pytest.raises(PydanticValidationError):
        ApiEndpointsConfig.model_validate(document)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("timeout_seconds", "60", "expected integer, got string '60'"),
        ("enabled", "yes", "expected boolean, got string 'yes'"),
    ],
)
def test_a_value_of_the_wrong_type_is_reported_at_its_key(
    config_dir: Path, edit: Edit, key: str, value: Any, reason: str
) -> None:
    fields: dict[str, Any] = {"enabled": True, "interval_seconds": 15, "timeout_seconds": 60}
    edit(E, switch(**{**fields, key: value}))

    assert issues_of(config_dir) == [ConfigIssue(E, f"{AT}.{key}", reason)]


def test_enabled_is_required_and_unknown_keys_are_refused(config_dir: Path, edit: Edit) -> None:
    edit(E, switch(interval_seconds=15, timeout=60))

    assert set(issues_of(config_dir)) == {
        ConfigIssue(E, f"{AT}.enabled", "missing required key 'enabled'"),
        ConfigIssue(E, f"{AT}.timeout", "unknown key 'timeout'"),
    }


def test_the_model_refuses_a_timeout_that_one_failed_beat_would_let_run_out() -> None:
    with pytest.raises(PydanticValidationError, match="timeout_seconds \\(20\\) must be at least"):
        DeadMansSwitchConfig(enabled=True, interval_seconds=15, timeout_seconds=20)
