"""The guards in conftest must actually guard."""

from __future__ import annotations

import time

import pytest
from blockbuster import BlockingError

import bots.models


async def test_blocking_call_from_our_package_fails_the_test() -> None:
    # Run time.sleep through a frame that belongs to the `bots` package.
    code = compile("time.sleep(0)", bots.models.__file__, "exec")
    with pytest.raises(BlockingError):
        exec(code, {"time": time})
