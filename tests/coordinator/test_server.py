"""serve(): a start that fails after the coordinator opened closes it again, so the process
ends with the error instead of living on (the store's writer thread kept one alive, deaf to
SIGTERM, when building the app failed)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from coordinator import server
from coordinator.api.auth import ControlToken, load_or_create_token
from coordinator.config.models import CoordinatorConfig
from coordinator.server import ServerOptions, serve


@pytest.fixture
def token(data_dir: Path) -> ControlToken:
    return load_or_create_token(data_dir, environ={})


async def test_a_start_that_fails_building_the_app_closes_the_coordinator_and_raises(
    config: CoordinatorConfig,
    data_dir: Path,
    token: ControlToken,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[Any] = []
    real_open = server.Coordinator.open

    async def recording_open(*args: Any, **kwargs: Any) -> Any:
        coordinator = await real_open(*args, **kwargs)
        opened.append(coordinator)
        return coordinator

    def broken_app(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError("static/index.html")

    monkeypatch.setattr(server.Coordinator, "open", recording_open)
    monkeypatch.setattr(server, "make_app", broken_app)
    threads_before = set(threading.enumerate())

    with pytest.raises(FileNotFoundError, match=r"index\.html"):
        await asyncio.wait_for(
            serve(config, ServerOptions("127.0.0.1", 0, data_dir), token, stop=asyncio.Event()),
            timeout=20,
        )

    assert len(opened) == 1
    assert opened[0].accepting is False  # closed: it takes no more actions
    # The loop's default executor (asyncio_N, ThreadPoolExecutor-N) is joined when the loop
    # ends; any other thread left is the store's or a timer's.
    left = [
        t for t in set(threading.enumerate()) - threads_before
        if not t.daemon and not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))
    ]
    assert left == [], f"threads that would keep the process alive: {left}"
