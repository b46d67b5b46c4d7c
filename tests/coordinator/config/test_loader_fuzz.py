"""The config loader under random mutations of each shipped file: every result is either a
config or a `ConfigError` whose every issue names a file and a JSON path, and the command line
turns the latter into exit 2 with the issues listed; never a traceback, never another exception.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.cli import EXIT_BAD_CONFIG, main
from coordinator.config import CONFIG_FILES, ConfigError, load_config
from coordinator.config.issues import ConfigIssue
from tests.support_config import REPO_CONFIG_DIR

SHIPPED = {name: json.loads((REPO_CONFIG_DIR / name).read_text()) for name in CONFIG_FILES}

# JSON values a person (or a broken tool) could put anywhere.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", " ", "live", "paper", "ndax", "kraken", "BTC/AUD", "-1", "1e400"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(document: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in `document` (the root included)."""
    found = [at]
    if isinstance(document, dict):
        for key, child in document.items():
            found.extend(paths(child, (*at, key)))
    elif isinstance(document, list):
        for index, child in enumerate(document):
            found.extend(paths(child, (*at, index)))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    """(file name, new text): one shipped file with one value replaced, a key removed or added,
    or its text cut short."""
    name = draw(st.sampled_from(CONFIG_FILES))
    document = json.loads(json.dumps(SHIPPED[name]))
    kind = draw(st.sampled_from(["replace", "remove", "add", "truncate"]))
    if kind == "truncate":
        text = json.dumps(document, indent=2)
        return name, text[: draw(st.integers(min_value=0, max_value=len(text) - 1))]
    path = draw(st.sampled_from(paths(document)))
    if not path:
        return name, json.dumps(draw(values))
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if kind == "replace":
        parent[last] = draw(values)
    elif kind == "remove":
        del parent[last]
    else:
        target = parent[last]
        if isinstance(target, dict):
            target[draw(st.text(min_size=1, max_size=12))] = draw(values)
        elif isinstance(target, list):
            target.append(draw(values))
        else:
            parent[last] = [target, draw(values)]
    return name, json.dumps(document, indent=2)


@settings(
    max_examples=int(os.environ.get("CONFIG_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,  # nothing written to the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(change=mutated())
def test_a_mutated_config_loads_or_is_refused_naming_each_file_and_path(
    change: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    name, text = change
    with tempfile.TemporaryDirectory() as scratch:
        config_dir = Path(scratch) / "config"
        config_dir.mkdir()
        for each in CONFIG_FILES:
            (config_dir / each).write_text(json.dumps(SHIPPED[each]))
        (config_dir / name).write_text(text)
        issues = refusal(config_dir)
        if issues is None:
            return  # a mutation the config allows: it loads
        assert issues, "a refusal lists its problems"
        for issue in issues:
            assert issue.file in CONFIG_FILES, issue
            assert issue.path.startswith("$"), issue
            assert issue.reason.strip(), issue
        code = main(["--config-dir", str(config_dir), "--data-dir", str(Path(scratch) / "d"),
                     "--log-dir", str(Path(scratch) / "logs")])
        err = capsys.readouterr().err
        assert code == EXIT_BAD_CONFIG
        assert "Traceback" not in err
        assert str(issues[0]) in err


def refusal(config_dir: Path) -> list[ConfigIssue] | None:
    """The loader's issues, or None when the config loads."""
    try:
        load_config(config_dir)
    except ConfigError as exc:
        return list(exc.issues)
    return None
