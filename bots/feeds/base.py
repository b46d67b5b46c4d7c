"""The market data seam: bots read prices through a `MarketFeed`, whatever its source."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from bots.models import MarketSnapshot


@runtime_checkable
class MarketFeed(Protocol):
    """A source of market snapshots for one symbol.

    `snapshot()` is called once per bot tick. Implementations must not block the event loop.
    """

    symbol: str

    async def snapshot(self) -> MarketSnapshot: ...

    async def close(self) -> None: ...
