"""Typed, immutable views of the six configuration files (alerts.json in `alerting.py`).

The JSON Schemas in `config/schemas/` are what an operator's file is checked against first (they
give the best error messages); these models repeat the same constraints so that a configuration
built in code is held to the same rules. Money and quantities are `Decimal` (the loader parses
every JSON number with a fraction as `Decimal`); durations are `float`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coordinator.config.alerting import AlertsConfig

BOT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
EXCHANGE_PATTERN = r"^[a-z0-9]+$"
SYMBOL_PATTERN = r"^[A-Z0-9]+/[A-Z0-9]+$"
ASSET_PATTERN = r"^[A-Z0-9]+$"
ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s]*)?$"

DEFAULT_START_PRICE = Decimal(50000)
DEFAULT_QUOTE_BALANCE = Decimal(10000)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BotMode(StrEnum):
    PAPER = "paper"
    LIVE = "live"
    SAFE = "safe"
    READ_ONLY = "read-only"


class MarketDataSource(StrEnum):
    OFFLINE = "offline"
    EXCHANGE = "exchange"


def split_symbol(symbol: str) -> tuple[str, str]:
    """`"BTC/CAD"` -> `("BTC", "CAD")`."""
    base, _, quote = symbol.partition("/")
    return base, quote


# --- bots.json -----------------------------------------------------------------------------------


class StrategyConfig(_Frozen):
    """A strategy name and its parameters, already validated by the strategy's params model."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    params: Any = None


class FeedConfig(_Frozen):
    """The seeded offline price feed of a bot."""

    start_price: Decimal = Field(default=DEFAULT_START_PRICE, gt=0)
    drift_per_hour: float = Field(default=0.0, ge=-1, le=1)
    volatility_per_hour: float = Field(default=0.02, ge=0, le=1)
    spread_bps: float = Field(default=2.0, ge=0, le=1000)
    seed: int = Field(default=1, ge=0, le=4294967295)
    price_decimals: int = Field(default=2, ge=0, le=12)


class PaperConfig(_Frozen):
    """The simulated account of a paper bot."""

    initial_balances: dict[str, Decimal]
    fee_rate: Decimal = Field(default=Decimal("0.001"), ge=0, le=Decimal("0.1"))
    slippage_bps: Decimal = Field(default=Decimal(5), ge=0, le=1000)
    amount_decimals: int = Field(default=8, ge=0, le=18)

    @model_validator(mode="after")
    def _balances_are_sane(self) -> PaperConfig:
        for asset, amount in self.initial_balances.items():
            if not _matches(ASSET_PATTERN, asset):
                raise ValueError(f"asset {asset!r} must be upper-case letters and digits")
            if amount < 0:
                raise ValueError(f"balance of {asset} must not be negative")
        return self


class CredentialsConfig(_Frozen):
    """Names of the environment variables holding the secrets; never the secrets themselves."""

    api_key_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN, max_length=128)
    secret_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN, max_length=128)
    uid_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN, max_length=128)
    password_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN, max_length=128)
    login_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN, max_length=128)


class BotConfig(_Frozen):
    name: str = Field(pattern=BOT_NAME_PATTERN)
    exchange: str = Field(pattern=EXCHANGE_PATTERN, max_length=32)
    symbol: str = Field(pattern=SYMBOL_PATTERN, max_length=32)
    mode: BotMode
    market_data: MarketDataSource
    tick_interval_seconds: float = Field(ge=0.05, le=86400)
    strategy: StrategyConfig
    feed: FeedConfig = Field(default_factory=FeedConfig)
    paper: PaperConfig
    credentials: CredentialsConfig = Field(default_factory=CredentialsConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_paper_account(cls, data: Any) -> Any:
        """The default balances depend on the symbol: 10000 of the quote asset, 0 of the base."""
        if not isinstance(data, dict) or not isinstance(data.get("symbol"), str):
            return data
        paper = data.get("paper")
        if paper is None or (isinstance(paper, dict) and "initial_balances" not in paper):
            base, quote = split_symbol(data["symbol"])
            balances = {quote: DEFAULT_QUOTE_BALANCE, base: Decimal(0)}
            data = {**data, "paper": {**(paper or {}), "initial_balances": balances}}
        return data

    @model_validator(mode="after")
    def _quote_asset_is_funded(self) -> BotConfig:
        if self.quote_asset not in self.paper.initial_balances:
            raise ValueError(
                f"paper.initial_balances must contain the quote asset {self.quote_asset!r} "
                f"of {self.symbol!r}"
            )
        return self

    @property
    def base_asset(self) -> str:
        return split_symbol(self.symbol)[0]

    @property
    def quote_asset(self) -> str:
        return split_symbol(self.symbol)[1]


class BotsConfig(_Frozen):
    version: int = Field(ge=1, le=1)
    bots: tuple[BotConfig, ...]

    @model_validator(mode="after")
    def _names_are_unique(self) -> BotsConfig:
        seen: set[str] = set()
        for bot in self.bots:
            if bot.name in seen:
                raise ValueError(f"duplicate bot name {bot.name!r}")
            seen.add(bot.name)
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(bot.name for bot in self.bots)

    def get(self, name: str) -> BotConfig | None:
        return next((bot for bot in self.bots if bot.name == name), None)


# --- bot-limits.json -----------------------------------------------------------------------------


class LimitSet(_Frozen):
    """Risk limits of a bot. `None` means "not set here" (an override that inherits the default)."""

    max_order_notional: Decimal | None = Field(default=None, gt=0)
    max_position_base: Decimal | None = Field(default=None, gt=0)
    max_position_notional: Decimal | None = Field(default=None, gt=0)
    max_open_orders: int | None = Field(default=None, ge=1, le=1000)
    max_orders_per_minute: int | None = Field(default=None, ge=1, le=10000)
    max_daily_loss: Decimal | None = Field(default=None, gt=0)
    price_collar_pct: Decimal | None = Field(default=None, gt=0, le=100)
    allowed_symbols: tuple[str, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _symbols_are_symbols(self) -> LimitSet:
        for symbol in self.allowed_symbols or ():
            if not _matches(SYMBOL_PATTERN, symbol):
                raise ValueError(f"allowed symbol {symbol!r} is not of the form BASE/QUOTE")
        return self


#: The limits `BotLimitsConfig.defaults` must set (allowed_symbols may stay unset: any symbol).
REQUIRED_DEFAULT_LIMITS = (
    "max_order_notional",
    "max_position_base",
    "max_position_notional",
    "max_open_orders",
    "max_orders_per_minute",
    "max_daily_loss",
    "price_collar_pct",
)


class GlobalLimits(_Frozen):
    max_total_exposure: Decimal = Field(gt=0)
    max_concurrent_positions: int = Field(ge=1, le=1000)
    max_orders_per_minute: int = Field(ge=1, le=100000)


class SafeModeFactors(_Frozen):
    size_factor: Decimal = Field(gt=0, le=1)
    max_open_orders: int = Field(ge=1, le=1000)


class BotLimitsConfig(_Frozen):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    version: int = Field(ge=1, le=1)
    defaults: LimitSet
    bots: dict[str, LimitSet] = Field(default_factory=dict)
    global_: GlobalLimits = Field(alias="global")
    safe_mode: SafeModeFactors

    @model_validator(mode="after")
    def _defaults_are_complete(self) -> BotLimitsConfig:
        unset = [name for name in REQUIRED_DEFAULT_LIMITS if getattr(self.defaults, name) is None]
        if unset:
            raise ValueError(f"defaults must set {', '.join(unset)}")
        return self

    def limits_for(self, bot_name: str) -> LimitSet:
        """The defaults with the limits this bot's override sets laid over them."""
        override = self.bots.get(bot_name)
        if override is None:
            return self.defaults
        merged = {
            name: value
            for source in (self.defaults, override)
            for name in LimitSet.model_fields
            if (value := getattr(source, name)) is not None
        }
        return LimitSet.model_validate(merged)


# --- kill-switch.json ----------------------------------------------------------------------------


class ActivationLimit(_Frozen):
    max_activations: int = Field(ge=1, le=100)
    window_minutes: int = Field(ge=1, le=10080)


class KillSwitchTriggers(_Frozen):
    max_daily_loss: Decimal = Field(gt=0)
    max_drawdown_pct: Decimal = Field(gt=0, le=100)
    max_consecutive_order_failures: int = Field(ge=1, le=1000)
    exchange_breaker_open_minutes: int = Field(ge=1, le=1440)
    bot_crash_loop: bool


class KillSwitchConfig(_Frozen):
    version: int = Field(ge=1, le=1)
    activation_limit: ActivationLimit
    triggers: KillSwitchTriggers


# --- recovery-settings.json ----------------------------------------------------------------------


class RestartPolicy(_Frozen):
    initial_backoff_seconds: float = Field(gt=0, le=3600)
    max_backoff_seconds: float = Field(gt=0, le=86400)
    multiplier: float = Field(ge=1, le=10)
    max_consecutive_crashes: int = Field(ge=1, le=1000)
    healthy_after_seconds: float = Field(gt=0, le=86400)

    @model_validator(mode="after")
    def _backoff_range(self) -> RestartPolicy:
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ValueError("max_backoff_seconds must be at least initial_backoff_seconds")
        return self


class SequentialStart(_Frozen):
    health_timeout_seconds: float = Field(gt=0, le=3600)
    delay_between_starts_seconds: float = Field(ge=0, le=3600)


class RecoveryPolicy(_Frozen):
    cooldown_period_minutes: float = Field(ge=0, le=1440)


class CircuitBreakerSettings(_Frozen):
    failure_threshold: int = Field(ge=1, le=1000)
    monitoring_window: float = Field(gt=0, le=86400, description="seconds")
    recovery_timeout: float = Field(gt=0, le=86400, description="seconds")
    half_open_max_calls: int = Field(ge=1, le=100)
    global_failure_threshold: int | None = Field(default=None, ge=1, le=10000)

    def for_global(self) -> CircuitBreakerSettings:
        """The global breaker's settings: the same, with the global threshold."""
        threshold = self.global_failure_threshold or 2 * self.failure_threshold
        return self.model_copy(update={"failure_threshold": threshold})


class ShutdownSettings(_Frozen):
    grace_seconds: float = Field(gt=0, le=4.5)


class RetrySettings(_Frozen):
    """Retries of a transient exchange error (`bots.retry.RetryPolicy.from_settings`)."""

    max_retries: int = Field(ge=0, le=20)
    initial_delay_seconds: float = Field(gt=0, le=600)
    max_delay_seconds: float = Field(gt=0, le=600)
    jitter: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _delay_range(self) -> RetrySettings:
        if self.max_delay_seconds < self.initial_delay_seconds:
            raise ValueError("max_delay_seconds must be at least initial_delay_seconds")
        return self


class PartialFillSettings(_Frozen):
    """When a partly filled order counts as done, and how long one may stay partly filled."""

    acceptable_fill_ratio: Decimal = Field(gt=0, le=1)
    partial_fill_timeout_minutes: float = Field(gt=0, le=1440)


class ReconciliationSettings(_Frozen):
    """Journal against exchange: scheduled runs and what counts as a balance difference."""

    interval_minutes: float = Field(default=60, ge=0, le=10080)
    apply_on_schedule: bool = False
    trade_lookback_hours: float = Field(default=24, gt=0, le=720)
    balance_tolerance_ratio: Decimal = Field(default=Decimal("0.0001"), ge=0, le=Decimal("0.1"))
    balance_tolerance_absolute: Decimal = Field(default=Decimal("0.00000001"), ge=0, le=1000)

    def tolerance(self, exchange_amount: Decimal) -> Decimal:
        """The largest difference from `exchange_amount` that is not drift."""
        return max(
            self.balance_tolerance_absolute, abs(exchange_amount) * self.balance_tolerance_ratio
        )


class BackupSettings(_Frozen):
    """Scheduled backups of config/ and the database."""

    interval_minutes: float = Field(default=60, ge=0, le=10080)
    keep_count: int = Field(default=48, ge=1, le=10000)
    keep_days: float = Field(default=7, ge=0, le=3650)
    include_database: bool = True


class RecoverySettings(_Frozen):
    version: int = Field(ge=1, le=1)
    restart: RestartPolicy
    sequential_start: SequentialStart
    recovery: RecoveryPolicy
    circuit_breaker: CircuitBreakerSettings
    shutdown: ShutdownSettings
    retry: RetrySettings
    partial_fills: PartialFillSettings
    reconciliation: ReconciliationSettings = ReconciliationSettings()
    backups: BackupSettings = BackupSettings()


# --- api-endpoints.json --------------------------------------------------------------------------


class ExchangeEndpoints(_Frozen):
    primary: str = Field(pattern=URL_PATTERN, max_length=2048)
    backup: str | None = Field(default=None, pattern=URL_PATTERN, max_length=2048)


class HealthCheckConfig(_Frozen):
    timeout_seconds: float = Field(gt=0, le=120)
    failure_threshold: int = Field(ge=1, le=100)
    interval_seconds: float = Field(gt=0, le=86400)


class ApiEndpointsConfig(_Frozen):
    version: int = Field(ge=1, le=1)
    exchanges: dict[str, ExchangeEndpoints]
    health_check_config: HealthCheckConfig

    @model_validator(mode="after")
    def _exchange_ids(self) -> ApiEndpointsConfig:
        for exchange in self.exchanges:
            if not _matches(EXCHANGE_PATTERN, exchange):
                raise ValueError(f"exchange id {exchange!r} must be lower-case letters and digits")
        return self


# --- everything ----------------------------------------------------------------------------------


class CoordinatorConfig(_Frozen):
    """The whole validated configuration and the directory it was read from."""

    bots: BotsConfig
    limits: BotLimitsConfig
    kill_switch: KillSwitchConfig
    recovery: RecoverySettings
    endpoints: ApiEndpointsConfig
    alerts: AlertsConfig
    source_dir: Path


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None
