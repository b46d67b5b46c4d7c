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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coordinator.config.alerting import AlertsConfig

BOT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
EXCHANGE_PATTERN = r"^[a-z0-9]+$"
SYMBOL_PATTERN = r"^[A-Z0-9]+/[A-Z0-9]+$"
ASSET_PATTERN = r"^[A-Z0-9]+$"
ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s]*)?$"
PAPER_ACCOUNT_PATTERN = BOT_NAME_PATTERN

DEFAULT_START_PRICE = Decimal(50000)
DEFAULT_QUOTE_BALANCE = Decimal(10000)
# The stale market data guard's limit when bot-limits.json sets none: 30 ticks of the shipped
# bots' 1 s. A bot's data is refreshed at the start of every tick, before its strategy orders,
# so this is how late an order may go after its tick's price arrived (slow syncs, retries).
DEFAULT_MAX_MARKET_DATA_AGE_SECONDS = 30.0


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
    # Paper bots naming the same account (on one exchange) share one simulated venue account
    # for self-trade prevention; balances stay each bot's own. None: an account of its own.
    account: str | None = Field(default=None, pattern=PAPER_ACCOUNT_PATTERN)

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

    @model_validator(mode="after")
    def _paper_accounts_on_one_exchange(self) -> BotsConfig:
        first: dict[str, BotConfig] = {}
        for bot in self.bots:
            if bot.paper.account is None:
                continue
            owner = first.setdefault(bot.paper.account, bot)
            if owner.exchange != bot.exchange:
                raise ValueError(
                    paper_account_conflict(
                        bot.name, bot.exchange, owner.name, owner.exchange, bot.paper.account
                    )
                )
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
    # Seconds since the bot's market data reached us beyond which it may not order. The
    # defaults always hold one (`BotLimitsConfig` fills in DEFAULT_MAX_MARKET_DATA_AGE_SECONDS).
    max_market_data_age_seconds: float | None = Field(default=None, gt=0, le=86400)

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

    @model_validator(mode="before")
    @classmethod
    def _default_market_data_age(cls, data: Any) -> Any:
        """The stale market data guard is never off: defaults that set no age get the default."""
        if not isinstance(data, dict):
            return data
        defaults = data.get("defaults")
        fill = {"max_market_data_age_seconds": DEFAULT_MAX_MARKET_DATA_AGE_SECONDS}
        if isinstance(defaults, dict) and defaults.get("max_market_data_age_seconds") is None:
            return {**data, "defaults": {**defaults, **fill}}
        if isinstance(defaults, LimitSet) and defaults.max_market_data_age_seconds is None:
            return {**data, "defaults": defaults.model_copy(update=fill)}
        return data

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


TriggerAction = Literal["halted", "reducing"]


class TriggerActions(_Frozen):
    """What each automatic trigger does: halt everything (the kill switch) or make every bot
    reduce-only. Keyed by the trigger's name as the audit log and /status show it."""

    daily_loss: TriggerAction = "halted"
    drawdown: TriggerAction = "halted"
    consecutive_order_failures: TriggerAction = "halted"
    exchange_breaker_open: TriggerAction = "halted"
    bot_crash_loop: TriggerAction = "halted"

    def for_trigger(self, trigger: str) -> TriggerAction:
        action: TriggerAction = getattr(self, trigger, "halted")
        return action


class ExecutionLimit(_Frozen):
    max_same_side_executions: int = Field(ge=1, le=100000)
    window_seconds: float = Field(gt=0, le=86400)


class ExecutionThrottleSettings(ExecutionLimit):
    """RTS 6 Article 15(3): more than `max_same_side_executions` of one bot's orders executed on
    one side and symbol within `window_seconds` disable the bot until a person enables it.
    `bots` gives a bot a limit of its own (a DCA buying every 5 s executes 12 buys a minute by
    design; a grid doing so is running down a falling market)."""

    bots: dict[str, ExecutionLimit] = Field(default_factory=dict)

    def for_bot(self, name: str) -> ExecutionLimit:
        return self.bots.get(name, self)


class KillSwitchConfig(_Frozen):
    version: int = Field(ge=1, le=1)
    activation_limit: ActivationLimit
    triggers: KillSwitchTriggers
    trigger_actions: TriggerActions = TriggerActions()
    execution_throttle: ExecutionThrottleSettings | None = None


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


#: Kraken's CancelAllOrdersAfter takes whole seconds, "less than 86400" (its API reference).
MAX_DEAD_MANS_SWITCH_TIMEOUT = 86399


class DeadMansSwitchConfig(_Frozen):
    """The venue's own dead man's switch (`coordinator/safety/dead_mans_switch.py`): every
    `interval_seconds` a live account tells the venue to cancel all its orders unless told
    again within `timeout_seconds`. The timeout is at least twice the interval, so one beat
    may fail without the venue's timer running out (kraken recommends 15 s and 60 s)."""

    enabled: bool
    interval_seconds: float = Field(default=15, gt=0, le=MAX_DEAD_MANS_SWITCH_TIMEOUT / 2)
    timeout_seconds: int = Field(default=60, ge=1, le=MAX_DEAD_MANS_SWITCH_TIMEOUT)

    @model_validator(mode="after")
    def _timeout_outlasts_two_beats(self) -> DeadMansSwitchConfig:
        if self.timeout_seconds < 2 * self.interval_seconds:
            raise ValueError(
                f"timeout_seconds ({self.timeout_seconds}) must be at least twice "
                f"interval_seconds ({self.interval_seconds:g}), so that one failed beat does "
                "not let the venue's timer run out"
            )
        return self


class ExchangeEndpoints(_Frozen):
    primary: str = Field(pattern=URL_PATTERN, max_length=2048)
    backup: str | None = Field(default=None, pattern=URL_PATTERN, max_length=2048)
    dead_mans_switch: DeadMansSwitchConfig | None = None  # absent: off


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


def paper_account_conflict(
    bot: str, exchange: str, first_bot: str, first_exchange: str, account: str
) -> str:
    """Why `bot` may not name paper account `account` (the loader and `BotsConfig` say it so)."""
    return (
        f"bot {bot!r} on {exchange} names paper.account {account!r}, which {first_bot!r} uses "
        f"on {first_exchange}: bots that share a paper account must be on the same exchange"
    )


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None
