"""alerts.json: the shipped defaults (from the runbooks), and what a wrong value gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coordinator.config import Severity, load_config
from tests.coordinator.config.conftest import REPO_CONFIG_DIR
from tests.coordinator.config.support import Edit, lines_of


def test_the_shipped_alert_thresholds_are_the_runbooks() -> None:
    alerts = load_config(REPO_CONFIG_DIR).alerts

    rate = alerts.rules.order_failure_rate
    assert (rate.window_minutes, rate.critical_above_pct, rate.warning_above_pct) == (15, 5, 3)
    assert alerts.notifications.webhook is not None
    assert alerts.notifications.webhook.url_env == "BOT_COORDINATOR_WEBHOOK_URL"
    assert alerts.notifications.min_severity is Severity.WARNING
    assert (alerts.monitor.host, alerts.monitor.port) == ("127.0.0.1", 8080)
    assert alerts.monitor.coordinator_url == "http://127.0.0.1:8000"


def test_every_key_but_the_version_may_be_left_out(config_dir: Path, edit: Edit) -> None:
    edit("alerts.json", lambda doc: {"version": 1})

    alerts = load_config(config_dir).alerts

    assert alerts.rules.order_failure_rate.critical_above_pct == 5
    assert alerts.evaluation_interval_seconds == 5


def test_a_threshold_of_the_wrong_type_names_the_file_and_path(
    config_dir: Path, edit: Edit
) -> None:
    edit("alerts.json", lambda doc: doc["rules"]["order_failure_rate"].update(
        critical_above_pct="5%"
    ))

    assert lines_of(config_dir) == [
        "alerts.json: $.rules.order_failure_rate.critical_above_pct: expected number, "
        "got string '5%'"
    ]


def test_a_warning_above_the_critical_threshold_is_refused(config_dir: Path, edit: Edit) -> None:
    edit("alerts.json", lambda doc: doc["rules"]["order_failure_rate"].update(
        warning_above_pct=10
    ))

    [line] = lines_of(config_dir)
    assert line.startswith("alerts.json: $.rules.order_failure_rate")
    assert "warning_above_pct must not be above critical_above_pct" in line


def test_an_unknown_rule_is_refused(config_dir: Path, edit: Edit) -> None:
    edit("alerts.json", lambda doc: doc["rules"].update(cpu_hot={"for_seconds": 1}))

    [line] = lines_of(config_dir)
    assert line.startswith("alerts.json: $.rules")
    assert "cpu_hot" in line


def test_the_webhook_is_named_by_its_env_var_never_given_as_a_url(
    config_dir: Path, edit: Edit
) -> None:
    def hook(doc: Any) -> None:
        doc["notifications"]["webhook"] = {"url_env": "https://hooks.slack.com/services/X"}

    edit("alerts.json", hook)

    [line] = lines_of(config_dir)
    assert line.startswith("alerts.json: $.notifications.webhook.url_env")


def test_a_monitor_timeout_longer_than_its_interval_is_refused(
    config_dir: Path, edit: Edit
) -> None:
    edit("alerts.json", lambda doc: doc["monitor"].update(
        poll_interval_seconds=1, timeout_seconds=2
    ))

    [line] = lines_of(config_dir)
    assert line.startswith("alerts.json: $.monitor")
    assert "timeout_seconds must not be longer than poll_interval_seconds" in line
