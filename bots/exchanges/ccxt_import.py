"""ccxt, imported on first use rather than when our modules load.

`import ccxt.async_support` loads every venue's class, sync and async: about 0.7 s of CPU and
20 MB. A coordinator with only paper bots, and most CLI commands (backup, restore, incident,
verify-data, drill), never talk to a venue, so they should not pay for it. Our ccxt modules
call these instead of importing ccxt at the top; an `except ccxt_base_error()` clause is only
evaluated when something was raised, by which time ccxt is loaded anyway.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def ccxt_module() -> ModuleType:
    """`ccxt` (its errors live at the top level)."""
    return importlib.import_module("ccxt")


def ccxt_async_support() -> ModuleType:
    """`ccxt.async_support`: the venues' async classes and the list of exchange ids."""
    return importlib.import_module("ccxt.async_support")


def ccxt_base_error() -> type[Exception]:
    """`ccxt.BaseError`, the root of every error ccxt raises."""
    error: type[Exception] = ccxt_module().BaseError
    return error
