"""Fixtures shared by the coordinator tests: a real Coordinator on the fast test config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordinator.config import load_config
from coordinator.config.models import CoordinatorConfig
from coordinator.runtime import Coordinator
from tests.support_config import write_fast_config


@pytest.fixture
def config(tmp_path: Path) -> CoordinatorConfig:
    return load_config(write_fast_config(tmp_path / "config"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
async def coordinator(config: CoordinatorConfig, data_dir: Path) -> AsyncIterator[Coordinator]:
    opened = await Coordinator.open(config, data_dir)
    try:
        yield opened
    finally:
        await opened.close(grace_seconds=0.5)
