"""load_config: the shipped default, and every way an operator's copy can be wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from bots.strategies.params import DcaParams, GridParams
from coordinator.config import (
    CONFIG_FILES,
    BotMode,
    ConfigError,
    ConfigIssue,
    MarketDataSource,
    embedded_config_dir,
    load_config,
    schema_dir,
)
from coordinator.config.models import PartialFillSettings, RecoverySettings, RetrySettings
from tests.coordinator.config.conftest import REPO_CONFIG_DIR
from tests.coordinator.config.support import Edit, issues_of, lines_of

# --- the shipped default -------------------------------------------------------------------------


def test_shipped_default_loads_with_the_documented_values() -> None:
    config = load_config(REPO_CONFIG_DIR)

    assert config.bots.names == ("ndax", "kraken")
    ndax, kraken = config.bots.bots
    for bot in (ndax, kraken):
        assert bot.mode is BotMode.PAPER
        assert bot.market_data is MarketDataSource.OFFLINE
        assert bot.tick_interval_seconds == 1
    assert (ndax.exchange, ndax.symbol, ndax.quote_asset) == ("ndax", "BTC/CAD", "CAD")
    assert ndax.strategy.name == "dca"
    assert ndax.strategy.params == DcaParams(quote_amount=Decimal(25), interval_seconds=5)
    assert (ndax.feed.start_price, ndax.feed.seed) == (Decimal(130000), 7)
    assert ndax.paper.initial_balances == {"CAD": Decimal(10000), "BTC": Decimal(0)}
    assert ndax.credentials.uid_env == "NDAX_UID"
    assert kraken.strategy.params == GridParams(
        levels=3, spacing_pct=Decimal("0.4"), order_amount=Decimal("0.001")
    )
    assert kraken.paper.initial_balances == {"AUD": Decimal(10000), "BTC": Decimal("0.05")}
    assert kraken.credentials.uid_env is None

    assert config.limits.limits_for("ndax").max_order_notional == Decimal(250)
    assert config.limits.limits_for("kraken").max_order_notional == Decimal(1000)
    assert config.limits.global_.max_orders_per_minute == 600
    assert config.kill_switch.triggers.bot_crash_loop is True
    assert config.recovery.shutdown.grace_seconds == 4
    assert config.recovery.retry == RetrySettings(
        max_retries=3, initial_delay_seconds=0.5, max_delay_seconds=10, jitter=0.2
    )
    assert config.recovery.partial_fills == PartialFillSettings(
        acceptable_fill_ratio=Decimal("0.95"), partial_fill_timeout_minutes=30
    )
    assert config.endpoints.exchanges["ndax"].primary == "https://api.ndax.io:8443/AP"
    assert config.source_dir == REPO_CONFIG_DIR


def test_fractional_numbers_are_exact_decimals() -> None:
    config = load_config(REPO_CONFIG_DIR)
    kraken = config.bots.get("kraken")
    assert kraken is not None
    assert kraken.paper.fee_rate == Decimal("0.0016")
    assert str(kraken.paper.fee_rate) == "0.0016"
    assert config.limits.safe_mode.size_factor == Decimal("0.1")


def test_embedded_default_is_the_same_as_the_config_directory() -> None:
    embedded = embedded_config_dir()
    for name in CONFIG_FILES:
        assert (embedded / name).read_bytes() == (REPO_CONFIG_DIR / name).read_bytes()
    from_package = load_config(embedded)
    from_tree = load_config(REPO_CONFIG_DIR)
    assert from_package.model_copy(update={"source_dir": Path()}) == from_tree.model_copy(
        update={"source_dir": Path()}
    )


def test_schemas_come_from_the_package_never_from_the_config_directory(
    config_dir: Path, edit: Edit
) -> None:
    loose = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    (config_dir / "schemas").mkdir()
    (config_dir / "schemas" / "bots.schema.json").write_text(json.dumps(loose))
    (config_dir / "bots.schema.json").write_text(json.dumps(loose))
    edit("bots.json", lambda doc: doc["bots"][0].update(mode="turbo"))

    assert schema_dir() != config_dir / "schemas"
    assert "bots.json: $.bots[0].mode: 'turbo' is not one of" in "\n".join(lines_of(config_dir))


def test_importing_the_config_package_does_not_import_the_strategy_registry() -> None:
    code = "import sys, coordinator.config; print('bots.strategies.registry' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_optional_sections_get_their_defaults(config_dir: Path, edit: Edit) -> None:
    def strip(doc: Any) -> None:
        for key in ("feed", "paper", "credentials"):
            del doc["bots"][0][key]

    edit("bots.json", strip)
    ndax = load_config(config_dir).bots.bots[0]

    assert ndax.feed.start_price == Decimal(50000)
    assert ndax.feed.volatility_per_hour == 0.02
    assert ndax.paper.initial_balances == {"CAD": Decimal(10000), "BTC": Decimal(0)}
    assert ndax.paper.fee_rate == Decimal("0.001")
    assert ndax.credentials.api_key_env is None


# --- reporting -----------------------------------------------------------------------------------


def test_every_issue_from_several_broken_files_is_reported_together(
    config_dir: Path, edit: Edit
) -> None:
    edit("bots.json", lambda doc: doc["bots"][0].update(mode="turbo"))
    edit("bots.json", lambda doc: doc["bots"][1].update(tick_interval_seconds=0))
    edit("bot-limits.json", lambda doc: doc["safe_mode"].update(size_factor=1.5))
    (config_dir / "kill-switch.json").write_text("{\n  ,\n}")
    (config_dir / "api-endpoints.json").unlink()
    edit("recovery-settings.json", lambda doc: doc["shutdown"].update(grace_seconds=5))

    assert lines_of(config_dir) == [
        "bots.json: $.bots[0].mode: 'turbo' is not one of ['paper', 'live', 'safe', 'read-only']",
        "bots.json: $.bots[1].tick_interval_seconds: 0 is less than the minimum of 0.05",
        "bot-limits.json: $.safe_mode.size_factor: 1.5 is greater than the maximum of 1",
        "kill-switch.json: $: invalid JSON at line 2, column 3: "
        "Expecting property name enclosed in double quotes",
        "recovery-settings.json: $.shutdown.grace_seconds: 5 is greater than the maximum of 4.5",
        f"api-endpoints.json: $: file is missing (looked for {config_dir / 'api-endpoints.json'})",
    ]


def test_error_text_lists_every_issue_one_per_line(config_dir: Path, edit: Edit) -> None:
    edit("bots.json", lambda doc: doc["bots"][0].update(mode="turbo", foo=1))
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)

    assert str(caught.value).splitlines() == [
        "bots.json: $.bots[0].foo: unknown key 'foo'",
        "bots.json: $.bots[0].mode: 'turbo' is not one of ['paper', 'live', 'safe', 'read-only']",
    ]


def test_unknown_key_is_reported_with_file_and_path(config_dir: Path, edit: Edit) -> None:
    edit("recovery-settings.json", lambda doc: doc["restart"].update(max_backof_seconds=3))
    assert issues_of(config_dir) == [
        ConfigIssue(
            "recovery-settings.json",
            "$.restart.max_backof_seconds",
            "unknown key 'max_backof_seconds'",
        )
    ]


def test_unknown_top_level_key_is_reported(config_dir: Path, edit: Edit) -> None:
    edit("kill-switch.json", lambda doc: doc.update({"$comment": "hi"}))
    assert lines_of(config_dir) == ["kill-switch.json: $[\"$comment\"]: unknown key '$comment'"]


def test_map_key_of_the_wrong_shape_is_reported(config_dir: Path, edit: Edit) -> None:
    edit(
        "api-endpoints.json", lambda doc: doc["exchanges"].update(Kraken=doc["exchanges"]["kraken"])
    )
    assert lines_of(config_dir) == [
        "api-endpoints.json: $.exchanges.Kraken: key 'Kraken' does not match '^[a-z0-9]+$'"
    ]


def test_wrong_type_is_reported(config_dir: Path, edit: Edit) -> None:
    edit("kill-switch.json", lambda doc: doc["triggers"].update(bot_crash_loop="yes"))
    edit("bot-limits.json", lambda doc: doc["defaults"].update(max_open_orders=2.5))
    assert lines_of(config_dir) == [
        "bot-limits.json: $.defaults.max_open_orders: expected integer, got number 2.5",
        "kill-switch.json: $.triggers.bot_crash_loop: expected boolean, got string 'yes'",
    ]


def test_missing_required_keys_are_each_reported(config_dir: Path, edit: Edit) -> None:
    def strip(doc: Any) -> None:
        del doc["bots"][1]["symbol"]
        del doc["bots"][1]["strategy"]

    edit("bots.json", strip)
    assert lines_of(config_dir) == [
        "bots.json: $.bots[1].symbol: missing required key 'symbol'",
        "bots.json: $.bots[1].strategy: missing required key 'strategy'",
    ]


def test_wrong_version_is_reported(config_dir: Path, edit: Edit) -> None:
    edit("api-endpoints.json", lambda doc: doc.update(version=2))
    assert lines_of(config_dir) == ["api-endpoints.json: $.version: must be 1, got 2"]


def test_pattern_mismatch_explains_the_expected_form(config_dir: Path, edit: Edit) -> None:
    edit("bots.json", lambda doc: doc["bots"][0].update(symbol="BTC-CAD"))
    assert lines_of(config_dir) == [
        "bots.json: $.bots[0].symbol: 'BTC-CAD' does not match '^[A-Z0-9]+/[A-Z0-9]+$' "
        "(Market as BASE/QUOTE in upper case, e.g. BTC/CAD.)"
    ]


def test_json_syntax_error_is_reported_with_line_and_column(config_dir: Path) -> None:
    (config_dir / "bot-limits.json").write_text('{\n  "version": 1,\n  "defaults": {\n}}}\n')
    assert lines_of(config_dir) == [
        "bot-limits.json: $: invalid JSON at line 4, column 3: Extra data",
    ]


def test_a_key_given_twice_is_reported(config_dir: Path) -> None:
    text = (config_dir / "kill-switch.json").read_text()
    (config_dir / "kill-switch.json").write_text(
        text.replace('"window_minutes": 60', '"window_minutes": 60, "window_minutes": 5')
    )
    assert lines_of(config_dir) == [
        "kill-switch.json: $.activation_limit.window_minutes: key 'window_minutes' is given twice"
    ]


def test_nan_is_not_a_number_here(config_dir: Path) -> None:
    text = (config_dir / "kill-switch.json").read_text()
    (config_dir / "kill-switch.json").write_text(text.replace("2000", "NaN"))
    assert lines_of(config_dir) == ["kill-switch.json: $: invalid JSON: NaN is not a JSON number"]


def test_missing_file_is_reported(config_dir: Path) -> None:
    (config_dir / "recovery-settings.json").unlink()
    assert issues_of(config_dir) == [
        ConfigIssue(
            "recovery-settings.json",
            "$",
            f"file is missing (looked for {config_dir / 'recovery-settings.json'})",
        )
    ]


def test_a_missing_directory_reports_every_file(tmp_path: Path) -> None:
    issues = issues_of(tmp_path / "nowhere")
    assert [issue.file for issue in issues] == list(CONFIG_FILES)


def test_a_file_that_is_not_utf8_is_reported(config_dir: Path) -> None:
    (config_dir / "bots.json").write_bytes(b'{"version": 1, "bots": [\xff]}')
    [issue] = issues_of(config_dir)
    assert (issue.file, issue.path) == ("bots.json", "$")
    assert issue.reason.startswith("file is not UTF-8 text")


# --- checks beyond the schema --------------------------------------------------------------------


def test_duplicate_bot_names_are_reported_at_the_second_bot(config_dir: Path, edit: Edit) -> None:
    edit("bots.json", lambda doc: doc["bots"][1].update(name="ndax"))
    assert issues_of(config_dir) == [
        ConfigIssue("bots.json", "$.bots[1].name", "duplicate bot name 'ndax'")
    ]


def test_unknown_strategy_is_reported(config_dir: Path, edit: Edit) -> None:
    edit("bots.json", lambda doc: doc["bots"][0]["strategy"].update(name="martingale"))
    assert lines_of(config_dir) == [
        "bots.json: $.bots[0].strategy.name: unknown strategy 'martingale'; known: dca, grid"
    ]


def test_bad_strategy_param_is_reported_at_its_path(config_dir: Path, edit: Edit) -> None:
    def break_params(doc: Any) -> None:
        doc["bots"][0]["strategy"]["params"].update(quote_amount=-5, typo=1)
        del doc["bots"][1]["strategy"]["params"]["levels"]

    edit("bots.json", break_params)
    assert lines_of(config_dir) == [
        "bots.json: $.bots[0].strategy.params.quote_amount: must be greater than 0 (got -5)",
        "bots.json: $.bots[0].strategy.params.typo: unknown key 'typo'",
        "bots.json: $.bots[1].strategy.params.levels: missing required key 'levels'",
    ]


def test_limits_for_an_unknown_bot_are_reported(config_dir: Path, edit: Edit) -> None:
    edit("bot-limits.json", lambda doc: doc["bots"].update(ghost={"max_open_orders": 2}))
    assert lines_of(config_dir) == [
        "bot-limits.json: $.bots.ghost: no bot named 'ghost' in bots.json (bots: ndax, kraken)"
    ]


@pytest.mark.parametrize("mode", ["live", "safe", "read-only"])
def test_a_bot_trading_on_the_exchange_may_not_use_the_offline_feed(
    config_dir: Path, edit: Edit, mode: str
) -> None:
    edit("bots.json", lambda doc: doc["bots"][1].update(mode=mode))
    assert issues_of(config_dir) == [
        ConfigIssue(
            "bots.json",
            "$.bots[1].market_data",
            f"mode '{mode}' trades on the exchange, so market_data must be 'exchange', not "
            "'offline' (an offline price is only for paper bots)",
        )
    ]


@pytest.mark.parametrize("mode", ["live", "safe", "read-only"])
def test_a_bot_trading_on_the_exchange_with_exchange_data_loads(
    config_dir: Path, edit: Edit, mode: str
) -> None:
    edit("bots.json", lambda doc: doc["bots"][1].update(mode=mode, market_data="exchange"))
    assert load_config(config_dir).bots.bots[1].mode == mode


def test_values_of_the_wrong_shape_do_not_break_the_checks(config_dir: Path, edit: Edit) -> None:
    edit("bots.json", lambda doc: doc["bots"][0].update(mode=["live"], name={"x": 1}))
    edit("bots.json", lambda doc: doc["bots"][1]["strategy"].update(name=7, params=[1]))
    assert lines_of(config_dir) == [
        "bots.json: $.bots[0].name: expected string, got an object",
        "bots.json: $.bots[0].mode: an array is not one of ['paper', 'live', 'safe', 'read-only']",
        "bots.json: $.bots[1].strategy.name: expected string, got number 7",
        "bots.json: $.bots[1].strategy.params: expected object, got an array",
    ]


def test_initial_balances_must_hold_the_quote_asset(config_dir: Path, edit: Edit) -> None:
    edit("bots.json", lambda doc: doc["bots"][1]["paper"].update(initial_balances={"BTC": 1}))
    assert lines_of(config_dir) == [
        "bots.json: $.bots[1].paper.initial_balances: must contain BTC/AUD's quote asset 'AUD'"
    ]


def test_default_limits_must_be_complete(config_dir: Path, edit: Edit) -> None:
    def strip(doc: Any) -> None:
        del doc["defaults"]["price_collar_pct"]

    edit("bot-limits.json", strip)
    assert lines_of(config_dir) == [
        "bot-limits.json: $.defaults.price_collar_pct: missing required key 'price_collar_pct'"
    ]


def test_backoff_bounds_are_checked_together(config_dir: Path, edit: Edit) -> None:
    edit("recovery-settings.json", lambda doc: doc["restart"].update(max_backoff_seconds=0.5))
    assert lines_of(config_dir) == [
        "recovery-settings.json: $.restart: "
        "max_backoff_seconds must be at least initial_backoff_seconds"
    ]


# --- recovery-settings.json: retry and partial fills ---------------------------------------------

R = "recovery-settings.json"


@pytest.mark.parametrize(
    ("section", "key", "value", "reason"),
    [
        ("retry", "max_retries", -1, "-1 is less than the minimum of 0"),
        ("retry", "max_retries", 21, "21 is greater than the maximum of 20"),
        ("retry", "max_retries", 1.5, "expected integer, got number 1.5"),
        ("retry", "initial_delay_seconds", 0, "0 must be greater than 0"),
        ("retry", "initial_delay_seconds", 601, "601 is greater than the maximum of 600"),
        ("retry", "max_delay_seconds", 0, "0 must be greater than 0"),
        ("retry", "max_delay_seconds", 601, "601 is greater than the maximum of 600"),
        ("retry", "jitter", -0.1, "-0.1 is less than the minimum of 0"),
        ("retry", "jitter", 1.5, "1.5 is greater than the maximum of 1"),
        ("retry", "jitter", "20%", "expected number, got string '20%'"),
        ("partial_fills", "acceptable_fill_ratio", 0, "0 must be greater than 0"),
        ("partial_fills", "acceptable_fill_ratio", 1.01, "1.01 is greater than the maximum of 1"),
        ("partial_fills", "partial_fill_timeout_minutes", 0, "0 must be greater than 0"),
        (
            "partial_fills",
            "partial_fill_timeout_minutes",
            1441,
            "1441 is greater than the maximum of 1440",
        ),
    ],
)
def test_a_bad_retry_or_partial_fill_value_is_reported_at_its_key(
    config_dir: Path, edit: Edit, section: str, key: str, value: Any, reason: str
) -> None:
    edit(R, lambda doc: doc[section].update({key: value}))
    assert issues_of(config_dir) == [ConfigIssue(R, f"$.{section}.{key}", reason)]

    # A configuration built in code is held to the same bound by the model.
    document = json.loads((config_dir / R).read_text(encoding="utf-8"))
    with pytest.raises(PydanticValidationError):
        RecoverySettings.model_validate(document)


def test_retry_delays_are_checked_together(config_dir: Path, edit: Edit) -> None:
    edit(R, lambda doc: doc["retry"].update(initial_delay_seconds=5, max_delay_seconds=2))
    assert issues_of(config_dir) == [
        ConfigIssue(R, "$.retry", "max_delay_seconds must be at least initial_delay_seconds")
    ]


@pytest.mark.parametrize("section", ["retry", "partial_fills"])
def test_retry_and_partial_fill_sections_are_required(
    config_dir: Path, edit: Edit, section: str
) -> None:
    edit(R, lambda doc: {k: v for k, v in doc.items() if k != section})
    assert issues_of(config_dir) == [
        ConfigIssue(R, f"$.{section}", f"missing required key {section!r}")
    ]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("retry", "max_retries"),
        ("retry", "initial_delay_seconds"),
        ("retry", "max_delay_seconds"),
        ("retry", "jitter"),
        ("partial_fills", "acceptable_fill_ratio"),
        ("partial_fills", "partial_fill_timeout_minutes"),
    ],
)
def test_every_retry_and_partial_fill_key_is_required(
    config_dir: Path, edit: Edit, section: str, key: str
) -> None:
    def strip(doc: Any) -> None:
        del doc[section][key]

    edit(R, strip)
    assert issues_of(config_dir) == [
        ConfigIssue(R, f"$.{section}.{key}", f"missing required key {key!r}")
    ]


def test_an_unknown_retry_key_is_refused(config_dir: Path, edit: Edit) -> None:
    edit(R, lambda doc: doc["retry"].update(multiplier=3))
    assert issues_of(config_dir) == [
        ConfigIssue(R, "$.retry.multiplier", "unknown key 'multiplier'")
    ]


def test_max_retries_zero_and_a_complete_fill_ratio_are_allowed(
    config_dir: Path, edit: Edit
) -> None:
    edit(R, lambda doc: doc["retry"].update(max_retries=0, jitter=0))
    edit(R, lambda doc: doc["partial_fills"].update(acceptable_fill_ratio=1))
    recovery = load_config(config_dir).recovery
    assert (recovery.retry.max_retries, recovery.retry.jitter) == (0, 0)
    assert recovery.partial_fills.acceptable_fill_ratio == 1


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_a_file_that_is_json_null_is_refused_naming_it(
    config_dir: Path, name: str
) -> None:
    (config_dir / name).write_text("null")

    assert lines_of(config_dir) == [f"{name}: $: must be a JSON object, not null"]
