"""Fixtures for the control-plane tests: a real Coordinator behind a real aiohttp server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken, load_or_create_admin_token, load_or_create_token
from coordinator.runtime import Coordinator


@pytest.fixture
def token(data_dir: Path) -> ControlToken:
    return load_or_create_token(data_dir, environ={})


@pytest.fixture
def admin_token(data_dir: Path) -> ControlToken:
    return load_or_create_admin_token(data_dir, environ={})


@pytest.fixture
async def client(
    coordinator: Coordinator, token: ControlToken, admin_token: ControlToken
) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(coordinator, token, admin_token))) as test_client:
        yield test_client


@pytest.fixture
def auth(token: ControlToken) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.value}"}


@pytest.fixture
def admin(admin_token: ControlToken) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token.value}"}
