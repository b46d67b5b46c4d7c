"""The control plane fuzzed against its own OpenAPI document (schemathesis), on the real
coordinator process with the shipped paper bots trading: every operation, with schema-valid and
schema-invalid requests, with the operator token and without any.

No answer may be a server error, carry a traceback or a Python repr, or disagree with the
document (status code, content type, body schema); and the coordinator must still trade after.
Each fuzzed process holds planted exchange credentials (one in its environment, one in its
credentials file): no answer of the run and no line of its log may carry them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from coordinator.credentials import CREDENTIALS_FILE_ENV
from tests.support_config import write_fast_config
from tests.support_process import CoordinatorProcess, wait_for

EXAMPLES = int(os.environ.get("CONTROL_PLANE_FUZZ_EXAMPLES", "20"))
# What an answer must never show: Python's own words for its internals.
PYTHON_INTERNALS = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+| object at 0x[0-9a-f]+"
)


# Credentials the fuzzed processes hold (tests/test_credentials_redacted.py covers a live bot
# whose venue echoes them; here they must not come out of any control-plane answer).
PLANTED_KEY = "PLANTED-fuzz-api-key-4c9e1a7b"
PLANTED_SECRET = "PLANTED-fuzz-secret-8d2f6b0e"


def no_planted_secret(ctx: Any, response: Any, case: Any) -> bool | None:
    text = response.text or ""
    for planted in (PLANTED_KEY, PLANTED_SECRET):
        assert planted not in text, f"{case.method} {case.formatted_path} answered a credential"
    return None


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, but for /health's 503: that is its report, by design (`curl -f` fails exactly
    when a person must act), as its document says."""
    health_report = (
        case.formatted_path == "/health" and response.status_code == 503
        and '"status":"unhealthy"' in (response.text or "").replace(" ", "")
    )  # fmt: skip
    if health_report:
        return None
    return not_a_server_error(ctx, response, case)


def no_python_internals(ctx: Any, response: Any, case: Any) -> bool | None:
    """No traceback, no source path and line, no default repr in any answer."""
    found = PYTHON_INTERNALS.search(response.text or "")
    assert found is None, f"{case.method} {case.formatted_path} answered {found.group(0)!r}"
    return None


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    no_python_internals,
    no_planted_secret,
]


def trading_coordinator(root: Path) -> Iterator[CoordinatorProcess]:
    credentials = root / "credentials.json"
    credentials.write_text(json.dumps({"KRAKEN_API_SECRET": PLANTED_SECRET}), encoding="utf-8")
    credentials.chmod(0o600)
    with pytest.MonkeyPatch.context() as env:  # the child's environment (child_env copies it)
        env.setenv("NDAX_API_KEY", PLANTED_KEY)
        env.setenv(CREDENTIALS_FILE_ENV, str(credentials))
        process = CoordinatorProcess(root, write_fast_config(root / "config")).start()
    try:
        process.wait_ready()
        process.control("/start-sequential")
        yield process
        log = process.log_file.read_text(encoding="utf-8") + process.text()
        assert PLANTED_KEY not in log
        assert PLANTED_SECRET not in log
    finally:
        process.kill()


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinatorProcess]:
    """Fuzzed with the operator token, then brought back to trading."""
    yield from trading_coordinator(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def anonymous_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinatorProcess]:
    """Fuzzed without a token: its wrong guesses soon earn it 429s, by design, for 60 s."""
    yield from trading_coordinator(tmp_path_factory.mktemp("anonymous"))


def operations(process: CoordinatorProcess) -> list[Any]:
    schema = schemathesis.openapi.from_url(process.base + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=10)

    try:
        run()
    except Unsatisfiable:
        # Negative mode for an operation with nothing to break (no parameters, no body).
        assert mode is GenerationMode.NEGATIVE, operation.label


def fuzz_all(process: CoordinatorProcess, headers: dict[str, str]) -> None:
    found = operations(process)
    assert len(found) >= 20, [op.label for op in found]
    for operation in found:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, headers)


def test_every_operation_answers_as_its_document_says_with_the_token(
    coordinator: CoordinatorProcess,
) -> None:
    fuzz_all(coordinator, {"Authorization": f"Bearer {coordinator.token}"})


def test_the_coordinator_still_trades_after_the_fuzzing(coordinator: CoordinatorProcess) -> None:
    """Whatever the fuzz switched, stopped or drilled, an operator can bring it back."""
    admin = (coordinator.data_dir / "admin.token").read_text().strip()
    _, status = coordinator.request("GET", "/status")
    lift: dict[str, Any] = {"action": "force_override", "reason": "fuzz over", "approved_by": "t"}
    for scope in status["trading_controls"]["scopes"]:
        if scope["scope"]:  # an exchange's or a bot's; the global one is lifted below
            code, answer = coordinator.request(
                "POST", "/kill-switch", {**lift, "scope": scope["scope"]}, token=admin
            )
            assert code == 200, answer
    for _ in range(2):  # without a scope: the kill switch first, then a global reduce-only
        _, status = coordinator.request("GET", "/status")
        if status["kill_switch_active"] or status["trading_controls"]["scopes"]:
            code, answer = coordinator.request("POST", "/kill-switch", lift, token=admin)
            assert code == 200, answer
    _, status = coordinator.request("GET", "/status")
    assert not status["kill_switch_active"]
    assert status["trading_controls"]["scopes"] == []
    for name, bot in coordinator.bots().items():
        if bot["trading"]["disabled"]:
            coordinator.control(f"/bots/{name}/enable", {"approved_by": "tests"})
        coordinator.control("/paper/drill", {
            "bot": name, "reject_next": 0, "fail_next": 0, "crash_next": 0,
            "partial_fill_ratio": "1", "market_trend_pct_per_tick": "0",
        })  # fmt: skip
    for breaker in ("global", "ndax", "kraken"):
        coordinator.request(
            "POST",
            "/breakers/reset",
            {"name": breaker, "approved_by": "tests"},
            token=coordinator.token,
        )
    result = coordinator.request(
        "POST",
        "/start-sequential",
        {"accept_config_change": True, "approved_by": "tests"},
        token=coordinator.token,
    )
    assert result[0] == 200, result
    orders = coordinator.bots()["ndax"]["orders"]
    try:
        wait_for(lambda: coordinator.bots()["ndax"]["orders"] > orders + 2, 10, "ndax trading")
    except pytest.fail.Exception:
        # What the fuzz left behind that the recovery above did not undo: the bot's own words.
        _, status = coordinator.request("GET", "/status")
        bot = json.dumps(coordinator.bots()["ndax"])
        log = coordinator.log_file.read_text(encoding="utf-8")[-4000:]
        pytest.fail(f"ndax is not trading after the recovery: {bot}\nstatus: {status}\nlog: {log}")
    assert coordinator.interrupt() == 0


def test_every_operation_answers_as_its_document_says_without_a_token(
    anonymous_target: CoordinatorProcess,
) -> None:
    fuzz_all(anonymous_target, {})
    assert anonymous_target.bots()  # still answering


def test_the_fuzz_checks_catch_what_they_look_for() -> None:
    """The traceback check is not vacuous: it fires on an answer that shows one."""

    class Answer:
        text = 'Traceback (most recent call last):\n  File "x.py", line 3'

    class Case:
        method, formatted_path = "GET", "/status"

    with pytest.raises(AssertionError, match="Traceback"):
        no_python_internals(None, Answer(), Case())

    class Leak:
        text = f'{{"error": "bad key {PLANTED_KEY}"}}'

    with pytest.raises(AssertionError, match="answered a credential"):
        no_planted_secret(None, Leak(), Case())
