"""Helpers shared by the config tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator.config import ConfigError, ConfigIssue, load_config

Edit = Callable[[str, Callable[[Any], Any]], None]


def issues_of(config_dir: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    return caught.value.issues


def lines_of(config_dir: Path) -> list[str]:
    return [str(issue) for issue in issues_of(config_dir)]
