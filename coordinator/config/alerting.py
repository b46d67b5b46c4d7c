"""alerts.json: the alert rules and their thresholds, notifications, and the outside monitor.

Defaults come from the runbooks: an order failure rate above 5 % over 15 minutes is critical and
above 3 % a warning (runbook 001 "Alert Trigger", "Add Monitoring"); the rest are what an
operator on call needs to hear about (runbook 004 Step 1, runbook 003 "Alerting Thresholds").
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"critical": 2, "warning": 1, "info": 0}[self.value]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuleTiming(_Frozen):
    """When a condition becomes an alert and when the alert ends.

    A condition must hold for `for_seconds` (and at least two evaluations in a row) before the
    alert fires, and be clear for `resolve_after_seconds` (and two evaluations in a row) before
    it resolves: one sample never fires or resolves anything."""

    enabled: bool = True
    for_seconds: float = Field(default=30, ge=0, le=86400)
    resolve_after_seconds: float = Field(default=60, ge=0, le=86400)


class FailureRateRule(RuleTiming):
    window_minutes: float = Field(default=15, gt=0, le=1440)
    critical_above_pct: float = Field(default=5, gt=0, le=100)
    warning_above_pct: float = Field(default=3, gt=0, le=100)
    min_orders: int = Field(default=5, ge=1, le=100000)

    @model_validator(mode="after")
    def _warning_below_critical(self) -> FailureRateRule:
        if self.warning_above_pct > self.critical_above_pct:
            raise ValueError("warning_above_pct must not be above critical_above_pct")
        return self


class HeartbeatRule(RuleTiming):
    stale_after_ticks: float = Field(default=5, gt=0, le=10000)
    min_stale_seconds: float = Field(default=30, gt=0, le=86400)


class BackupAgeRule(RuleTiming):
    # null: twice the backup interval plus ten minutes
    max_age_minutes: float | None = Field(default=None, gt=0, le=100000)


class DiskRule(RuleTiming):
    warning_free_pct: float = Field(default=10, gt=0, le=100)
    critical_free_pct: float = Field(default=5, gt=0, le=100)

    @model_validator(mode="after")
    def _critical_below_warning(self) -> DiskRule:
        if self.critical_free_pct > self.warning_free_pct:
            raise ValueError("critical_free_pct must not be above warning_free_pct")
        return self


class AlertRules(_Frozen):
    order_failure_rate: FailureRateRule = FailureRateRule()
    exchange_breaker_open: RuleTiming = RuleTiming(for_seconds=0, resolve_after_seconds=30)
    kill_switch_active: RuleTiming = RuleTiming(for_seconds=0, resolve_after_seconds=0)
    bot_heartbeat_stale: HeartbeatRule = HeartbeatRule()
    bot_crash_loop: RuleTiming = RuleTiming(for_seconds=0, resolve_after_seconds=0)
    exchange_on_backup_endpoint: RuleTiming = RuleTiming(for_seconds=0)
    reconciliation_differences: RuleTiming = RuleTiming(for_seconds=0, resolve_after_seconds=0)
    backup_stale: BackupAgeRule = BackupAgeRule(for_seconds=0)
    backup_failed: RuleTiming = RuleTiming(for_seconds=0, resolve_after_seconds=0)
    disk_space_low: DiskRule = DiskRule()
    # dead_mans_switch_failing (warning) and dead_mans_switch_expired (critical)
    dead_mans_switch_failing: RuleTiming = RuleTiming(for_seconds=0, resolve_after_seconds=30)
    bot_trading_restricted: RuleTiming = RuleTiming(for_seconds=0, resolve_after_seconds=0)
    bot_disabled: RuleTiming = RuleTiming(for_seconds=0, resolve_after_seconds=0)


class WebhookConfig(_Frozen):
    url_env: str = Field(pattern=ENV_NAME_PATTERN, max_length=128)
    timeout_seconds: float = Field(default=5, gt=0, le=60)
    max_attempts: int = Field(default=5, ge=1, le=20)
    initial_backoff_seconds: float = Field(default=1, gt=0, le=600)
    max_backoff_seconds: float = Field(default=60, gt=0, le=3600)


class NotificationsConfig(_Frozen):
    webhook: WebhookConfig | None = None  # null: no notifications
    min_severity: Severity = Severity.WARNING
    group_wait_seconds: float = Field(default=10, ge=0, le=3600)
    repeat_interval_minutes: float = Field(default=60, gt=0, le=10080)
    send_resolved: bool = True
    max_queued: int = Field(default=1000, ge=10, le=100000)


class MonitorConfig(_Frozen):
    coordinator_url: str = Field(
        default="http://127.0.0.1:8000", pattern=r"^https?://[^\s/?#]+$", max_length=2048
    )
    host: str = Field(default="127.0.0.1", max_length=255)
    port: int = Field(default=8080, ge=1, le=65535)
    poll_interval_seconds: float = Field(default=5, ge=0.1, le=3600)
    timeout_seconds: float = Field(default=2, gt=0, le=60)
    failures_before_down: int = Field(default=1, ge=1, le=100)

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> MonitorConfig:
        if self.timeout_seconds > self.poll_interval_seconds:
            raise ValueError("timeout_seconds must not be longer than poll_interval_seconds")
        return self


class AlertsConfig(_Frozen):
    version: int = Field(ge=1, le=1)
    evaluation_interval_seconds: float = Field(default=5, ge=0.1, le=3600)
    keep_resolved_minutes: float = Field(default=60, ge=0, le=10080)
    rules: AlertRules = AlertRules()
    notifications: NotificationsConfig = NotificationsConfig()
    monitor: MonitorConfig = MonitorConfig()
