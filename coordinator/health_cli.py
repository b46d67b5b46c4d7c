"""`bot-coordinator --health-check [--json]` (runbook 004 Step 5 "Verify System Health").

With a coordinator running on the data dir it asks that one (`GET /health`). Without one it
checks on its own: every config file valid, the journal opens and passes SQLite's
`quick_check` on the current schema, the kill switch state, the data and backup dirs
writable, disk space, and for every bot that trades on its exchange, its credentials present
(the names of missing variables, never a value) and the exchange answering a status call.
Both ways the config gate is checked too (`coordinator/config_cli.py`): config files changed
on disk since the running coordinator started warn; a bot whose effective config is not the
approved one fails (its start is refused until `bot-coordinator config approve`).

One line per check, then a verdict. Exit 0 healthy (warnings allowed), 1 not. The kill switch
being active is a warning here, not a failure: Step 5 runs before Step 6 lifts it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import sqlite3
import ssl
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bots.exchanges.ccxt_adapter import point_client_at
from bots.feeds.ccxt_public import make_public_exchange
from coordinator.accounts import MissingCredentials, read_credentials
from coordinator.alerts.facts import disk_free_pct
from coordinator.config import ConfigError, CoordinatorConfig, load_config
from coordinator.config_cli import offline_gate_checks, running_gate_checks
from coordinator.runtime import DATABASE_FILE
from coordinator.store.migrations import LATEST_VERSION
from coordinator.wiring import trades_on_exchange

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


def run_health_check(args: argparse.Namespace, config_dir: Path) -> int:
    if coordinator_holds(args.data_dir):
        source = f"the running coordinator on {args.host}:{args.port}"
        checks = ask_running(args.host, args.port)
        gate = running_gate_checks(args.data_dir, args.host, args.port)  # GET /config
        checks.extend(Check(*c) for c in gate)
    else:
        source = "offline checks (no coordinator runs on this data dir)"
        checks = offline_checks(config_dir, args.data_dir, args.backup_dir)
    healthy = not any(c.status == FAIL for c in checks)
    if args.json:
        print(json.dumps({
            "verdict": "healthy" if healthy else "unhealthy",
            "source": source,
            "checks": [c.as_dict() for c in checks],
        }, indent=2))
    else:
        print(f"health check: {source}")
        for check in checks:
            print(f"  {check.status.upper():<4}  {check.name:<22} {check.detail}")
        failed = sum(c.status == FAIL for c in checks)
        warned = sum(c.status == WARN for c in checks)
        verdict = "HEALTHY" if healthy else f"UNHEALTHY ({failed} check(s) failed)"
        print(f"verdict: {verdict}" + (f", {warned} warning(s)" if warned else ""))
    return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY


def coordinator_holds(data_dir: Path) -> bool:
    """Whether a coordinator holds the data dir's lock (without creating anything)."""
    try:
        handle = (data_dir / "coordinator.lock").open("r", encoding="utf-8")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


# -- asking the running coordinator --------------------------------------------------------------


def ask_running(host: str, port: int, timeout: float = 10) -> list[Check]:
    url = f"http://{host}:{port}/health"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(url, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: unhealthy, with the same body
        try:
            body = json.loads(exc.read())
        except ValueError:
            return [Check("coordinator", FAIL, f"GET {url} answered {exc.code} without a report")]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return [Check(
            "coordinator", FAIL,
            f"a coordinator holds the data dir but {url} does not answer ({exc}); pass its "
            "--host/--port",
        )]
    return checks_from_report(body)


def checks_from_report(report: dict[str, Any]) -> list[Check]:
    """The /health report as check lines: unhealthy fails, degraded warns (the kill switch
    only warns: it is lifted after the checks pass)."""
    checks: list[Check] = []
    for name, service in report.get("services", {}).items():
        if "status" in service:
            checks.append(_service_check(name, service))
        else:
            checks.extend(_service_check(f"{name}.{item}", s) for item, s in service.items())
    return checks


def _service_check(name: str, service: dict[str, Any]) -> Check:
    status = {"healthy": OK, "degraded": WARN}.get(service.get("status", ""), FAIL)
    if name == "kill_switch" and status == FAIL:
        status = WARN
    detail = ", ".join(
        f"{k}={v}" for k, v in service.items() if k != "status" and v not in (None, [], {}, False)
    )
    return Check(name, status, f"{service.get('status')}" + (f": {detail}" if detail else ""))


# -- on its own ----------------------------------------------------------------------------------


def offline_checks(config_dir: Path, data_dir: Path, backup_dir: Path) -> list[Check]:
    checks: list[Check] = []
    config = _config_check(config_dir, checks)
    checks.extend(_journal_checks(data_dir / DATABASE_FILE))
    checks.append(_writable("data dir", data_dir))
    checks.append(_writable("backup dir", backup_dir))
    checks.append(_disk_check(data_dir, config))
    if config is not None:
        checks.extend(Check(*c) for c in offline_gate_checks(config, data_dir / DATABASE_FILE))
        checks.extend(_exchange_checks(config))
    return checks


def _config_check(config_dir: Path, checks: list[Check]) -> CoordinatorConfig | None:
    try:
        config = load_config(config_dir)
    except ConfigError as exc:
        for issue in exc.issues:
            checks.append(Check("config", FAIL, str(issue)))
        return None
    checks.append(Check("config", OK, f"every file in {config_dir} is valid"))
    return config


def _journal_checks(path: Path) -> list[Check]:
    if not path.exists():
        return [Check("journal", OK, f"none yet at {path}: the first start creates it")]
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [Check("journal", FAIL, f"{path} cannot be opened: {exc}")]
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(20)")]
        version = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        row = conn.execute("SELECT value FROM safety_state WHERE key = 'kill_switch'").fetchone()
    except sqlite3.Error as exc:
        return [Check("journal", FAIL, f"{path} is damaged or not a journal: {exc}")]
    finally:
        conn.close()
    if problems != ["ok"]:
        shown = "; ".join(problems[:5])
        return [Check("journal", FAIL, f"{path} fails SQLite's quick_check: {shown}")]
    checks = [_schema_check(path, version)]
    checks.append(_kill_switch_check(row[0] if row else None))
    return checks


def _schema_check(path: Path, version: int | None) -> Check:
    if version == LATEST_VERSION:
        return Check("journal", OK, f"{path} opens and passes quick_check (schema v{version})")
    if version is not None and version < LATEST_VERSION:
        return Check("journal", WARN, f"{path}: schema v{version}; the next start migrates it "
                     f"to v{LATEST_VERSION}")
    return Check("journal", FAIL, f"{path}: schema v{version} is not one this version knows "
                 f"(v{LATEST_VERSION}); run the coordinator version that wrote it")


def _kill_switch_check(stored: str | None) -> Check:
    if stored is None:
        return Check("kill switch", OK, "never activated")
    try:
        state = json.loads(stored)
        active = bool(state["active"])
    except (ValueError, KeyError, TypeError):
        return Check("kill switch", FAIL, "its stored state is unreadable: it loads as ACTIVE")
    if not active:
        return Check("kill switch", OK, "not active")
    return Check(
        "kill switch", WARN,
        f"ACTIVE since {state.get('at')} by {state.get('by')} ({state.get('trigger')}): "
        f"{state.get('reason')}; lift it (override) once the checks pass",
    )


def _writable(name: str, directory: Path) -> Check:
    target = directory
    while not target.exists() and target != target.parent:
        target = target.parent  # a dir that does not exist yet is made in its first parent
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        return Check(name, FAIL, f"{directory} is not writable: {exc.strerror or exc}")
    made = "" if target == directory else f" (will be created in {target})"
    return Check(name, OK, f"{directory} is writable{made}")


def _disk_check(data_dir: Path, config: CoordinatorConfig | None) -> Check:
    existing = data_dir if data_dir.exists() else Path.cwd()
    free = disk_free_pct(existing)
    if free is None:
        return Check("disk", WARN, f"cannot read the free space of {existing}")
    warning, critical = 10.0, 5.0
    if config is not None:
        rule = config.alerts.rules.disk_space_low
        warning, critical = rule.warning_free_pct, rule.critical_free_pct
    status = FAIL if free < critical else WARN if free < warning else OK
    return Check("disk", status, f"{free:.1f} % free on the file system of {existing}")


def _exchange_checks(config: CoordinatorConfig) -> list[Check]:
    live = [bot for bot in config.bots.bots if trades_on_exchange(bot)]
    checks: list[Check] = []
    for bot in live:
        try:
            read_credentials(bot)
        except MissingCredentials as exc:
            checks.append(Check(f"credentials {bot.name}", FAIL, str(exc)))
        else:
            checks.append(Check(f"credentials {bot.name}", OK, "every variable is set"))
    exchanges = sorted({bot.exchange for bot in live})
    if exchanges:
        timeout = config.endpoints.health_check_config.timeout_seconds
        roots = {e: config.endpoints.exchanges[e].primary
                 for e in exchanges if e in config.endpoints.exchanges}
        checks.extend(asyncio.run(_probe_all(exchanges, roots, timeout)))
    elif not live:
        checks.append(Check("exchanges", OK, "no bot trades on an exchange (paper bots only)"))
    return checks


async def _probe_all(exchanges: list[str], roots: dict[str, str], within: float) -> list[Check]:
    context = ssl.create_default_context()
    return list(
        await asyncio.gather(*(_probe(e, roots.get(e), context, within) for e in exchanges))
    )


async def _probe(exchange: str, root: str | None, context: ssl.SSLContext, within: float) -> Check:
    """A keyless status call to the exchange's primary API root (api-endpoints.json)."""
    client = make_public_exchange(exchange, context)
    if root is not None:
        point_client_at(client, root)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        status = await asyncio.wait_for(client.fetch_status(), timeout=within)
    except TimeoutError:
        return Check(f"exchange {exchange}", FAIL, f"no answer within {within:g}s")
    except Exception as exc:  # any failure of the probe is the exchange's ill health
        return Check(f"exchange {exchange}", FAIL, f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):  # closing a probe's client is best effort
            await client.close()
    took = (loop.time() - began) * 1000
    state = (status or {}).get("status") if isinstance(status, dict) else None
    if state not in (None, "ok"):
        return Check(f"exchange {exchange}", FAIL, f"reports status {state!r} ({took:.0f} ms)")
    return Check(f"exchange {exchange}", OK, f"answers in {took:.0f} ms")
