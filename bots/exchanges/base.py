"""The exchange seam: the order gateway talks to every venue through `ExchangeAdapter`.

The paper exchange implements it now; the ccxt adapter implements it in the same shape, so the
gateway, the journal and the safety layer do not know which one they drive.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from bots.models import (
    AccountTrade,
    Balance,
    MarginPosition,
    MarketSnapshot,
    OrderRequest,
    OrderSnapshot,
)


@runtime_checkable
class ExchangeAdapter(Protocol):
    """One trading account on one venue.

    Errors are raised as `bots.errors.ExchangeError` subclasses: `OrderRejected` for a refusal
    the venue made on purpose (funds, size, symbol), `TransientExchangeError` for what may succeed
    when tried again. No venue library's exception class escapes an adapter.
    """

    name: str

    async def create_order(self, request: OrderRequest) -> OrderSnapshot: ...

    async def cancel_order(self, client_order_id: int, symbol: str) -> OrderSnapshot: ...

    async def fetch_order(self, client_order_id: int, symbol: str) -> OrderSnapshot: ...

    async def fetch_open_orders(self, symbol: str) -> list[OrderSnapshot]: ...

    async def fetch_balance(self) -> dict[str, Balance]: ...

    async def on_market(self, snapshot: MarketSnapshot) -> None:
        """Tell the adapter the latest market state (the paper exchange matches against it)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class ReconcilableExchange(Protocol):
    """What reconciliation reads beyond the order path: the account's own trade history and,
    where the venue has them, positions. Both adapters implement it."""

    # Trades before this moment are unknown to the venue (a paper exchange starts empty with
    # its process); None when the venue keeps the account's whole history.
    history_since: datetime | None

    async def fetch_my_trades(
        self, symbol: str, since: datetime | None = None
    ) -> list[AccountTrade]: ...

    async def fetch_positions(self) -> list[MarginPosition]: ...


@runtime_checkable
class VenueIdLookup(Protocol):
    """Reading an order by the venue's own id, with the client order id it carries (0: none of
    ours). Reconciliation asks this about a trade whose order the journal does not know, when
    the venue's trade history does not say the client order id (kraken's does not)."""

    async def fetch_order_by_exchange_id(
        self, exchange_order_id: str, symbol: str
    ) -> OrderSnapshot: ...
