"""Fixtures for the backup tests: the fast config, a journal, a backup dir, all in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support_config import write_fast_config


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return write_fast_config(tmp_path / "config")


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    return tmp_path / "backups"
