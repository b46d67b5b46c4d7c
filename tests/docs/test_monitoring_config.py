"""The shipped monitoring config (docs/monitoring) against the coordinator it monitors.

Every `bot_coordinator_*` name in the Prometheus rules and the Grafana dashboard must be one a
real coordinator's `/metrics` exposes; the rules must be the in-process rules (names,
severities, runbook sections, timing, thresholds); promtool checks them when it is installed.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from coordinator.alerts.facts import (
    BotFacts,
    BreakerFacts,
    DeadMansSwitchFacts,
    ExchangeFacts,
    Facts,
    TradingFacts,
)
from coordinator.alerts.rules import RULES, TIMING
from coordinator.alerts.window import WindowCount
from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken, load_or_create_token
from coordinator.config import load_config
from coordinator.config.alerting import AlertRules
from coordinator.config.models import CoordinatorConfig
from coordinator.lifecycle import BotState
from coordinator.metrics.registry import FAILED_OUTCOMES
from coordinator.runtime import Coordinator
from tests.support_config import REPO_CONFIG_DIR, eventually, write_fast_config

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
RULES_FILE = MONITORING / "alert-rules.yml"
PROMETHEUS_FILE = MONITORING / "prometheus.yml"
DASHBOARD_FILE = MONITORING / "grafana-dashboard.json"

COORDINATOR_DOWN = "BotCoordinatorDown"  # Prometheus only: a coordinator cannot report itself down
# The only series not from the coordinator's /metrics: Prometheus' own scrape health.
PROMETHEUS_SERIES = frozenset({"up"})

METRIC = re.compile(r"\bbot_coordinator_\w+")
SELECTOR = re.compile(r"\b(bot_coordinator_\w+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
SEVERITIES = {"critical", "warning"}
MIN_FOR_SECONDS = 60  # where the in-process rule fires at once: one scrape gap must not page
DS_UID = "${DS_PROMETHEUS}"
# What in a query is not a series name: strings, label matchers, ranges, grouping label lists.
NOT_SERIES = re.compile(
    r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]'
    r"|\b(?:on|ignoring|by|without|group_left|group_right)\s*\([^)]*\)"
)
IDENTIFIER = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()")
PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
BOT_VARIABLE_QUERY = "label_values(bot_coordinator_bot_state, bot)"


# -- reading the files ---------------------------------------------------------------------------


def rules_document() -> dict[str, Any]:
    document = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "the rules file is a mapping"
    return document


def alert_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rules_document()["groups"] for rule in group["rules"]}


def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def panels(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows too; a row itself holds no query."""
    for panel in document["panels"]:
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_exprs(document: dict[str, Any]) -> list[str]:
    """Every query the dashboard runs: the panels' targets, the annotations, the variables."""
    exprs = [target["expr"] for panel in panels(document) for target in panel["targets"]]
    exprs += [a["expr"] for a in document["annotations"]["list"] if "expr" in a]
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def all_exprs() -> list[str]:
    return [rule["expr"] for rule in alert_rules().values()] + dashboard_exprs(dashboard())


def seconds(duration: str) -> float:
    return sum(int(n) * UNIT_SECONDS[unit] for n, unit in DURATION_PART.findall(duration))


def flat(expr: str) -> str:
    return " ".join(expr.split())


def text(value: object) -> bool:
    """A string with something in it."""
    return isinstance(value, str) and bool(value.strip())


# -- (a) the names against a real coordinator's /metrics -----------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> CoordinatorConfig:
    return load_config(write_fast_config(tmp_path / "config"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def token(data_dir: Path) -> ControlToken:
    return load_or_create_token(data_dir, environ={})


@pytest.fixture
async def coordinator(
    config: CoordinatorConfig, data_dir: Path, tmp_path: Path
) -> AsyncIterator[Coordinator]:
    """A real coordinator on the fast test config, with backups (so their metrics show)."""
    opened = await Coordinator.open(config, data_dir, backup_dir=tmp_path / "backups")
    try:
        yield opened
    finally:
        await opened.close(grace_seconds=0.5)


@pytest.fixture
async def client(coordinator: Coordinator, token: ControlToken) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(coordinator, token))) as test_client:
        yield test_client


async def eventually_async(
    predicate: Callable[[], Awaitable[bool]], what: str, within: float = 10.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


async def scrape_after_activity(
    client: TestClient, coordinator: Coordinator, token: ControlToken
) -> str:
    """/metrics once a bot traded through a paper drill, a reconciliation ran and a backup was
    taken: the labelled counters and the operations' gauges have samples by then."""
    auth = {"Authorization": f"Bearer {token.value}"}
    drill = await client.post("/paper/drill", json={"bot": "ndax", "reject_next": 2}, headers=auth)
    assert drill.status == 200, await drill.text()
    started = await client.post("/start", json={"bot": "ndax"}, headers=auth)
    assert started.status == 200, await started.text()
    seen: dict[str, Any] = {}

    async def two_rejections_then_a_fill() -> bool:
        bots = (await (await client.get("/status")).json())["bots"]
        seen.update(next(b for b in bots if b["name"] == "ndax"))
        return bool(seen["order_errors"].get("drill", 0) == 2 and seen["fills"] >= 1)

    await eventually_async(two_rejections_then_a_fill, "two drill rejections, then a fill")
    reconcile = await client.post("/reconcile", json={})  # a report: the reconciliation gauges
    assert reconcile.status == 200, await reconcile.text()
    backups = coordinator.backups
    assert backups is not None
    await eventually(lambda: backups.state.result == "ok", within=10, what="the backup at start")
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


def exposed_names(text: str) -> tuple[set[str], dict[str, set[str]], dict[str, set[str]]]:
    """The series names a query may use, and for each the label names and the `name=value`
    pairs its samples carry (empty for a family declared without samples yet)."""
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    pairs: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        # No `*_created`: the coordinator turns those off (disable_created_metrics).
        if family.type == "counter":
            series = {f"{family.name}_total"}
        elif family.type in ("histogram", "gaugehistogram"):
            series = {f"{family.name}_{s}" for s in ("bucket", "count", "sum")}
        elif family.type == "summary":
            series = {family.name, *(f"{family.name}_{s}" for s in ("count", "sum"))}
        else:
            series = {family.name}
        series |= {sample.name for sample in family.samples}
        names |= series
        for name in series:
            labels.setdefault(name, set())
            pairs.setdefault(name, set())
        for sample in family.samples:
            for name in series:
                labels[name] |= set(sample.labels) - {"le", "quantile"}
                pairs[name] |= {f"{k}={v}" for k, v in sample.labels.items()}
    return names, labels, pairs


async def test_every_metric_the_rules_and_the_dashboard_use_is_exposed(
    client: TestClient, coordinator: Coordinator, token: ControlToken
) -> None:
    text = await scrape_after_activity(client, coordinator, token)
    exposed, labels, pairs = exposed_names(text)

    used = {name for expr in all_exprs() for name in METRIC.findall(expr)}
    assert used, "the exprs name coordinator metrics"
    assert sorted(used - exposed) == [], "names the coordinator does not expose"

    # The drill and the trade leave samples in the labelled counters the order panels use.
    for name in (
        "bot_coordinator_orders_total",
        "bot_coordinator_order_submits_total",
        "bot_coordinator_order_failures_total",
        "bot_coordinator_order_ack_seconds_bucket",
    ):
        assert labels[name], f"{name} has samples"
    assert "outcome=rejected" in pairs["bot_coordinator_order_submits_total"]
    assert {"reason", "class"} <= labels["bot_coordinator_order_failures_total"]

    # A label a selector matches on is one the series carries; an exact value is one it has.
    problems = []
    for expr in all_exprs():
        for name, matchers in SELECTOR.findall(expr):
            if not labels.get(name):
                continue  # declared, no samples yet (alerts_firing with nothing firing, ...)
            for label, op, value in MATCHER.findall(matchers):
                if label not in labels[name]:
                    problems.append(f"{name} has no label {label!r}: {flat(expr)}")
                elif op == "=" and label != "alertname" and f"{label}={value}" not in pairs[name]:
                    problems.append(f"{name} has no {label}={value!r}: {flat(expr)}")
    assert problems == []


def series_names(expr: str) -> set[str]:
    """The series a PromQL query selects (a bare name not called as a function)."""
    stripped = NOT_SERIES.sub(" ", expr)
    return {
        name
        for name in IDENTIFIER.findall(stripped)
        if name.lower() not in PROMQL_KEYWORDS and not re.fullmatch(r"[\d.e+-]+", name)
    }


def test_series_names_finds_the_series_and_nothing_else() -> None:
    expr = (
        'sum without (outcome) (increase(a_total{outcome=~"x|y", bot=~"$bot"}[15m]))'
        " > on (instance, job, bot) clamp_min(5 * b_seconds, 30)"
        ' and on (instance) c == 1 or up{job="j"} unless d offset 5m'
    )
    assert series_names(expr) == {"a_total", "b_seconds", "c", "up", "d"}


def test_the_queries_use_only_the_coordinators_series() -> None:
    """No other exporter (node_exporter, ...) is needed: every series a rule or a panel reads
    is a bot_coordinator_* one (checked against /metrics above), or Prometheus' `up`."""
    exprs = [e for e in all_exprs() if e != BOT_VARIABLE_QUERY]
    used = {name for expr in exprs for name in series_names(expr)}
    assert used
    assert sorted(n for n in used if not n.startswith("bot_coordinator_")) == sorted(
        PROMETHEUS_SERIES & used
    )
    assert not any("node_" in expr for expr in all_exprs())


def test_the_alert_names_the_rules_match_are_the_coordinators() -> None:
    names = {
        value
        for expr in all_exprs()
        for _, matchers in SELECTOR.findall(expr)
        for label, op, value in MATCHER.findall(matchers)
        if label == "alertname" and op == "="
    }
    assert names <= set(TIMING)  # none at present: no rule leans on an in-process alert


# -- (b) the rules file: structure, and the same rules as in-process -----------------------------


def test_the_rules_file_has_the_prometheus_structure() -> None:
    document = rules_document()
    assert set(document) == {"groups"}
    groups = document["groups"]
    assert isinstance(groups, list)
    assert groups
    group_names = [group["name"] for group in groups]
    assert len(set(group_names)) == len(group_names), "group names are unique"
    alerts: list[str] = []
    for group in groups:
        assert set(group) <= {"name", "interval", "limit", "rules"}, group["name"]
        assert text(group["name"]), group
        assert isinstance(group["rules"], list), group["name"]
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            where = f"{group['name']}/{rule.get('alert')}"
            assert set(rule) <= RULE_KEYS, where
            assert text(rule["alert"]), where
            assert text(rule["expr"]), where
            assert DURATION.match(str(rule["for"])), f"{where}: for {rule['for']!r}"
            assert rule["labels"]["severity"] in SEVERITIES, where
            annotations = rule["annotations"]
            for key in ("summary", "description", "runbook"):
                assert text(annotations.get(key)), f"{where}: annotations.{key}"
            alerts.append(rule["alert"])
    assert len(set(alerts)) == len(alerts), "alert names are unique"


def in_process_alerts() -> dict[str, tuple[str, str]]:
    """Each in-process alert's severity and runbook section, read off the rules themselves:
    every rule judged once on facts with one subject of each kind."""
    bot = BotFacts(
        "ndax",
        "ndax",
        "paper",
        BotState.RUNNING,
        1.0,
        5.0,
        60.0,
        False,
        None,
        WindowCount(10, 1),
    )
    facts = Facts(
        now=datetime(2026, 1, 1, tzinfo=UTC),
        accepting=True,
        kill_switch={"active": False},
        bots=(bot,),
        breakers=(BreakerFacts("ndax", "closed", None, False),),
        exchanges=(ExchangeFacts("ndax", "up", 10.0, None, "primary"),),
        reconciliation={"run_id": 1, "at": "-", "clean": True, "remaining": 0, "errors": 0},
        backups={"interval_minutes": 60, "last_ok_age_seconds": 10.0, "result": "ok"},
        uptime_seconds=60.0,
        disk_free_pct=50.0,
        dead_mans_switches=(DeadMansSwitchFacts("kraken", "armed", "ok", 0, 1.0, 60),),
        trading=(TradingFacts("ndax", "ndax", "active", None, None, False),),
    )
    found: dict[str, tuple[str, str]] = {}
    for rule in RULES:
        for sample in rule(facts, AlertRules()):
            found[sample.name] = (sample.severity.value, sample.runbook)
    assert set(found) == set(TIMING), "every in-process rule reported a sample"
    return found


def test_the_rules_are_the_in_process_rules() -> None:
    rules = alert_rules()
    expected = in_process_alerts()
    assert set(rules) == set(expected) | {COORDINATOR_DOWN}
    for name, (severity, runbook) in expected.items():
        assert rules[name]["labels"]["severity"] == severity, name
        assert rules[name]["annotations"]["runbook"] == runbook, name
    down = rules[COORDINATOR_DOWN]
    assert flat(down["expr"]) == 'up{job="bot-coordinator"} == 0'
    assert down["for"] == "1m"
    assert down["labels"]["severity"] == "critical"


def test_the_for_durations_are_the_shipped_alerts_json() -> None:
    shipped = load_config(REPO_CONFIG_DIR).alerts.rules
    for name, rule in alert_rules().items():
        if name == COORDINATOR_DOWN:
            continue
        for_seconds = TIMING[name](shipped).for_seconds
        expected = for_seconds if for_seconds > 0 else MIN_FOR_SECONDS
        assert seconds(rule["for"]) == expected, f"{name}: for {rule['for']}, want {expected}s"


def test_the_thresholds_are_the_shipped_config() -> None:
    alerting = load_config(REPO_CONFIG_DIR).alerts.rules
    rate, disk = alerting.order_failure_rate, alerting.disk_space_low
    heartbeat = alerting.bot_heartbeat_stale
    max_age = alerting.backup_stale.max_age_minutes
    # The default limit is 2 x interval + 10 min, read off the exposed interval per coordinator.
    backup_limit = (
        "> on (instance, job) 2 * bot_coordinator_backup_interval_seconds + 600"
        if max_age is None
        else f"> {60 * max_age:g}"
    )
    window = f"[{rate.window_minutes:g}m]"
    expected = {
        "order_failure_rate_high": [
            f"* 100 > {rate.critical_above_pct:g}",
            window,
            f">= {rate.min_orders}",
        ],
        "order_failure_rate_warning": [
            f"* 100 > {rate.warning_above_pct:g}",
            window,
            f">= {rate.min_orders}",
        ],
        "bot_heartbeat_stale": [
            "bot_coordinator_bot_heartbeat_age_seconds > on (instance, job, bot) clamp_min("
            f"{heartbeat.stale_after_ticks:g} * bot_coordinator_bot_tick_interval_seconds, "
            f"{heartbeat.min_stale_seconds:g})",
            'bot_coordinator_bot_state{state=~"starting|running"} == 1',
        ],
        "bot_crash_loop": ["bot_coordinator_bot_crash_looped == 1"],
        "backup_stale": [
            "bot_coordinator_backup_last_ok_age_seconds or on (instance, job) "
            "bot_coordinator_uptime_seconds",
            backup_limit,
            "and on (instance, job) bot_coordinator_backup_interval_seconds > 0",
        ],
        "disk_space_low": [
            f"bot_coordinator_data_dir_free_ratio < {disk.warning_free_pct / 100:g}"
        ],
        "disk_space_critical": [
            f"bot_coordinator_data_dir_free_ratio < {disk.critical_free_pct / 100:g}"
        ],
    }
    rules = alert_rules()
    for name, parts in expected.items():
        for part in parts:
            assert part in flat(rules[name]["expr"]), f"{name}: {part!r} in {rules[name]['expr']}"


def test_the_failure_rate_counts_the_outcomes_the_coordinator_counts_as_failed() -> None:
    for name in ("order_failure_rate_high", "order_failure_rate_warning"):
        expr = alert_rules()[name]["expr"]
        outcomes = re.findall(r'outcome=~"([^"]*)"', expr)
        assert outcomes, name
        assert all(set(o.split("|")) == FAILED_OUTCOMES for o in outcomes), name
        assert "bot_coordinator_order_submits_total" in expr


def test_the_prometheus_config_scrapes_the_coordinator_and_loads_the_rules() -> None:
    document = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    assert document["rule_files"] == ["alert-rules.yml"]
    (job,) = [j for j in document["scrape_configs"] if j["job_name"] == "bot-coordinator"]
    assert job["metrics_path"] == "/metrics"
    assert job["scrape_interval"] == "15s"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]


# -- (c) promtool, when it is there --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["check", "rules", str(RULES_FILE)], id="rules"),
        pytest.param(["check", "config", str(PROMETHEUS_FILE)], id="config"),
    ],
)
def test_promtool_accepts_the_files(argv: list[str]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH")
    done = subprocess.run(
        [promtool, *argv], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- (d) the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_is_importable() -> None:
    document = dashboard()
    assert document["schemaVersion"] >= 36
    assert text(document["uid"])
    assert text(document["title"])
    assert document.get("id") is None, "no instance id: importing must not overwrite by id"
    (source,) = [i for i in document["__inputs"] if i["name"] == "DS_PROMETHEUS"]
    assert source["type"] == "datasource"
    assert source["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    bot = variables["bot"]
    query = bot["query"]["query"] if isinstance(bot["query"], dict) else bot["query"]
    assert bot["type"] == "query"
    assert query == BOT_VARIABLE_QUERY
    assert bot["datasource"]["uid"] == DS_UID


def test_every_panel_has_the_datasource_and_a_query() -> None:
    document = dashboard()
    found = list(panels(document))
    assert found
    ids = [panel["id"] for panel in found]
    assert len(set(ids)) == len(ids), "panel ids are unique"
    for panel in found:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_UID}, title
        assert panel["targets"], f"{title}: no target"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), f"{title}: refIds are unique"
        for target in panel["targets"]:
            assert target["expr"].strip(), title
            assert target.get("datasource", panel["datasource"])["uid"] == DS_UID, title
        grid = panel["gridPos"]
        assert grid["x"] >= 0, title
        assert grid["x"] + grid["w"] <= 24, title
        assert grid["h"] > 0, title


def test_the_dashboard_shows_what_an_operator_asked_for() -> None:
    exprs = " ".join(dashboard_exprs(dashboard()))
    for name in (
        "bot_coordinator_kill_switch_active",
        "bot_coordinator_alerts_firing",
        "bot_coordinator_orders_total",
        "bot_coordinator_order_submits_total",
        "bot_coordinator_order_failures_total",
        "bot_coordinator_order_failure_ratio",
        "bot_coordinator_risk_refusals_total",
        "bot_coordinator_breaker_state",
        "bot_coordinator_order_ack_seconds_bucket",
        "bot_coordinator_bot_pnl",
        "bot_coordinator_bot_position_base",
        "bot_coordinator_bot_tick_lag_seconds",
        "bot_coordinator_bot_heartbeat_age_seconds",
        "bot_coordinator_bot_tick_interval_seconds",
        "bot_coordinator_bot_crash_looped",
        "bot_coordinator_data_dir_free_ratio",
        "bot_coordinator_backup_interval_seconds",
        "bot_coordinator_store_commit_seconds_bucket",
        "bot_coordinator_store_queue_depth",
        "bot_coordinator_backup_last_ok_age_seconds",
        "bot_coordinator_http_request_duration_seconds_bucket",
    ):
        assert name in exprs, name
    for quantile in ("histogram_quantile(0.5,", "histogram_quantile(0.99,"):
        assert quantile in exprs
