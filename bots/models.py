"""Value types that travel along the order path.

Amounts and prices are `Decimal` from the moment an order is formed: the journal must add up to
the exchange's numbers exactly, and binary floats do not. Market data arrives as `Decimal` too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(enum.StrEnum):
    """Market and limit orders are the ones this coordinator places (`PLACEABLE`). The trigger
    types are what a venue may also hold on a bot's market, placed by a person: they are read
    (with their trigger price) for the reconciliation report, never placed or touched."""

    MARKET = "market"
    LIMIT = "limit"
    STOP_LOSS = "stop-loss"  # a market order once the trigger price trades
    STOP_LOSS_LIMIT = "stop-loss-limit"  # a limit order at `price` once the trigger trades
    TAKE_PROFIT = "take-profit"
    TAKE_PROFIT_LIMIT = "take-profit-limit"
    TRAILING_STOP = "trailing-stop"
    TRAILING_STOP_LIMIT = "trailing-stop-limit"
    OTHER = "other"  # a type this code has no name for: the snapshot's `venue_type` says it


PLACEABLE = frozenset({OrderType.MARKET, OrderType.LIMIT})


class ExchangeOrderStatus(enum.StrEnum):
    """What an exchange says about an order (ccxt's vocabulary)."""

    OPEN = "open"
    CLOSED = "closed"  # fully filled
    CANCELED = "canceled"  # cancelled, possibly after a partial fill
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class MarketSnapshot:
    """One observation of a market: last trade price and the top of the book."""

    symbol: str
    last: Decimal
    bid: Decimal
    ask: Decimal
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What a strategy wants to do; the gateway decides whether it leaves the process."""

    symbol: str
    side: Side
    type: OrderType
    amount: Decimal  # base currency
    price: Decimal | None = None  # required for limit orders
    tag: str = ""  # free text for the strategy's own bookkeeping (grid level, ...)

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError(f"order amount must be positive, got {self.amount}")
        if self.type not in PLACEABLE:
            raise ValueError(f"this coordinator places market and limit orders, not {self.type}")
        if self.type is OrderType.LIMIT and (self.price is None or self.price <= 0):
            raise ValueError("a limit order needs a positive price")


@dataclass(frozen=True, slots=True)
class CancelIntent:
    """A strategy asks for one of its open orders to be cancelled."""

    client_order_id: int


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order as sent to an exchange adapter: an intent plus its journaled client order id."""

    client_order_id: int
    symbol: str
    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Trade:
    """One execution of an order, as the exchange reports it."""

    trade_id: str
    amount: Decimal  # base
    price: Decimal
    fee: Decimal  # in fee_currency
    fee_currency: str
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    """An exchange's view of one order, with every trade it has had so far."""

    client_order_id: int
    exchange_order_id: str
    symbol: str
    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None
    status: ExchangeOrderStatus
    filled: Decimal
    trades: tuple[Trade, ...] = field(default_factory=tuple)
    reason: str = ""  # why it was rejected or cancelled, when the exchange says
    trigger_price: Decimal | None = None  # a trigger order's (stop-loss, take-profit) trigger
    venue_type: str = ""  # the type in the venue's own words ("trailing-stop", "StopLimit")

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    free: Decimal
    used: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.used


@dataclass(frozen=True, slots=True)
class AccountTrade:
    """One of the account's trades, with the order it belongs to (for reconciliation)."""

    exchange_order_id: str
    client_order_id: int | None  # None when the venue does not say, or the order is not ours
    symbol: str
    side: Side
    trade: Trade


@dataclass(frozen=True, slots=True)
class MarginPosition:
    symbol: str
    side: str  # "long" or "short"
    amount: Decimal
    unrealized_pnl: Decimal | None
