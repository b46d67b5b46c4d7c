"""A writable copy of the shipped configuration, and a way to break it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator.config import CONFIG_FILES
from tests.coordinator.config.support import Edit

REPO_CONFIG_DIR = Path(__file__).resolve().parents[3] / "config"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """The five shipped files (no schemas: those always come from the package)."""
    target = tmp_path / "config"
    target.mkdir()
    for name in CONFIG_FILES:
        shutil.copy(REPO_CONFIG_DIR / name, target / name)
    return target


@pytest.fixture
def edit(config_dir: Path) -> Edit:
    """`edit("bots.json", change)`: change(document) mutates it in place or returns a new one."""

    def _edit(name: str, change: Callable[[Any], Any]) -> None:
        path = config_dir / name
        document = json.loads(path.read_text(encoding="utf-8"))
        changed = change(document)
        document = document if changed is None else changed
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")

    return _edit
