"""The config models: immutability, defaults, merging, and the invariants they hold alone."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from bots.strategies.params import DcaParams
from coordinator.config import (
    BotConfig,
    BotLimitsConfig,
    BotMode,
    BotsConfig,
    LimitSet,
    MarketDataSource,
    RestartPolicy,
    load_config,
)
from tests.coordinator.config.conftest import REPO_CONFIG_DIR

DEFAULT_LIMITS: dict[str, Any] = {
    "max_order_notional": 1000,
    "max_position_base": 1,
    "max_position_notional": 50000,
    "max_open_orders": 10,
    "max_orders_per_minute": 60,
    "max_daily_loss": 1000,
    "price_collar_pct": 5,
}


def limits(**bots: dict[str, Any]) -> BotLimitsConfig:
    return BotLimitsConfig.model_validate(
        {
            "version": 1,
            "defaults": DEFAULT_LIMITS,
            "bots": bots,
            "global": {
                "max_total_exposure": 100000,
                "max_concurrent_positions": 10,
                "max_orders_per_minute": 600,
            },
            "safe_mode": {"size_factor": "0.1", "max_open_orders": 1},
        }
    )


def bot(**overrides: Any) -> BotConfig:
    fields: dict[str, Any] = {
        "name": "ndax",
        "exchange": "ndax",
        "symbol": "BTC/CAD",
        "mode": "paper",
        "market_data": "offline",
        "tick_interval_seconds": 1,
        "strategy": {
            "name": "dca",
            "params": DcaParams(quote_amount=Decimal(25), interval_seconds=5),
        },
    }
    return BotConfig.model_validate({**fields, **overrides})


def test_frozen_models_cannot_be_mutated() -> None:
    config = load_config(REPO_CONFIG_DIR)
    ndax = config.bots.bots[0]
    with pytest.raises(ValidationError, match="frozen"):
        ndax.mode = BotMode.LIVE
    with pytest.raises(ValidationError, match="frozen"):
        config.limits.defaults.max_open_orders = 99
    with pytest.raises(ValidationError, match="frozen"):
        config.recovery.shutdown.grace_seconds = 1
    with pytest.raises(AttributeError):
        config.bots.bots.append(ndax)  # type: ignore[attr-defined]


def test_limits_for_lays_a_bots_overrides_over_the_defaults() -> None:
    config = limits(ndax={"max_order_notional": 100, "allowed_symbols": ["BTC/CAD"]})

    merged = config.limits_for("ndax")

    assert merged.max_order_notional == Decimal(100)
    assert merged.allowed_symbols == ("BTC/CAD",)
    assert merged.max_open_orders == 10
    assert merged.price_collar_pct == Decimal(5)


def test_limits_for_a_bot_without_overrides_is_the_defaults() -> None:
    config = limits(ndax={"max_order_notional": 100})
    assert config.limits_for("kraken") == config.defaults
    assert config.defaults.allowed_symbols is None


def test_global_limits_are_read_from_the_key_global() -> None:
    config = limits()
    assert config.global_.max_total_exposure == Decimal(100000)
    assert "global" in config.model_dump(by_alias=True)


def test_default_limits_must_set_every_numeric_limit() -> None:
    incomplete = {k: v for k, v in DEFAULT_LIMITS.items() if k != "max_daily_loss"}
    with pytest.raises(ValidationError, match="defaults must set max_daily_loss"):
        BotLimitsConfig.model_validate(
            {**limits().model_dump(by_alias=True), "defaults": incomplete}
        )


def test_allowed_symbols_must_be_symbols() -> None:
    with pytest.raises(ValidationError, match="BASE/QUOTE"):
        LimitSet(allowed_symbols=("btc-cad",))


def test_bot_splits_its_symbol_into_base_and_quote_assets() -> None:
    ndax = bot(symbol="ETH/CAD")
    assert (ndax.base_asset, ndax.quote_asset) == ("ETH", "CAD")


def test_paper_account_defaults_to_ten_thousand_of_the_quote_asset() -> None:
    ndax = bot(symbol="ETH/USDT")
    assert ndax.paper.initial_balances == {"USDT": Decimal(10000), "ETH": Decimal(0)}
    assert ndax.paper.slippage_bps == Decimal(5)
    assert ndax.feed.start_price == Decimal(50000)
    assert ndax.credentials.secret_env is None


def test_paper_account_must_fund_the_quote_asset() -> None:
    with pytest.raises(ValidationError, match="quote asset 'CAD'"):
        bot(paper={"initial_balances": {"BTC": 1}})


def test_enum_fields_accept_their_json_spelling() -> None:
    ndax = bot(mode="read-only", market_data="exchange")
    assert ndax.mode is BotMode.READ_ONLY
    assert ndax.market_data is MarketDataSource.EXCHANGE
    assert str(BotMode.READ_ONLY) == "read-only"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Not Valid"),
        ("exchange", "Kraken"),
        ("symbol", "BTCCAD"),
        ("tick_interval_seconds", 0.01),
        ("credentials", {"api_key_env": "lower_case"}),
        ("credentials", {"api_key": "X"}),
    ],
)
def test_bot_fields_are_checked_by_the_model_too(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        bot(**{field: value})


def test_bots_config_finds_bots_by_name_and_refuses_duplicates() -> None:
    bots = BotsConfig(version=1, bots=(bot(), bot(name="kraken")))
    assert bots.names == ("ndax", "kraken")
    assert bots.get("kraken") is bots.bots[1]
    assert bots.get("nope") is None
    with pytest.raises(ValidationError, match="duplicate bot name 'ndax'"):
        BotsConfig(version=1, bots=(bot(), bot()))


def test_restart_backoff_cannot_shrink() -> None:
    with pytest.raises(ValidationError, match="at least initial_backoff_seconds"):
        RestartPolicy(
            initial_backoff_seconds=10,
            max_backoff_seconds=5,
            multiplier=2,
            max_consecutive_crashes=5,
            healthy_after_seconds=60,
        )
