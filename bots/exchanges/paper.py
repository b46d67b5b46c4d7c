"""An in-memory exchange for one account trading one symbol: paper bots and tests run on it.

Deterministic and free of I/O: the only inputs are the calls made on it and the market snapshots
handed to `on_market`. It models what the order path must cope with on a real venue: refusals,
reservations, fees, slippage, partial fills, and (through the drills) rejections and outages;
with a seat on a shared `PaperAccount`, a venue's self-trade prevention between bots.

Money rules:
- Fees are charged in the quote asset, `notional * fee_rate` rounded DOWN to 8 decimals. Rounding
  down keeps a limit buy's reservation, `amount * price * (1 + fee_rate)` exactly, always enough
  for its fills, partial or not, so free balances never go negative.
- Market fill prices are rounded against the trader (buys up, sells down) to `price_decimals`.
- A request whose amount or price has more decimals than the venue accepts is refused, not
  rounded: the journal must hold exactly what the exchange holds.

Memory is bounded, as a long-running paper bot needs: the newest `KEEP_CLOSED_ORDERS` closed
orders and `KEEP_TRADES` trades are kept (open orders always). A fill is seen by the bot in the
same sync that made it, so an order is long known closed when it is forgotten; forgetting a
trade moves `history_since`, so reconciliation compares only what the venue still knows (as
with a real venue's history limit). Before this a paper bot grew ~1 KB per order for ever.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal

from bots.errors import (
    ExchangeError,
    OrderNotFound,
    OrderRejected,
    RequestRefused,
    TransientExchangeError,
)
from bots.exchanges.paper_account import AccountSeat
from bots.models import (
    AccountTrade,
    Balance,
    ExchangeOrderStatus,
    MarginPosition,
    MarketSnapshot,
    OrderRequest,
    OrderSnapshot,
    OrderType,
    Side,
    Trade,
)

PARTIAL_FILL_REASON = "partial fill: remainder cancelled (immediate-or-cancel)"
CANCEL_REASON = "cancelled on request"
_FEE_QUANTUM = Decimal("1e-8")
_BPS = Decimal(10_000)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _fits_decimals(value: Decimal, decimals: int) -> bool:
    exponent = value.normalize().as_tuple().exponent
    return isinstance(exponent, int) and exponent >= -decimals


KEEP_CLOSED_ORDERS = 200  # closed orders kept for fetch_order, per paper account
KEEP_TRADES = 200  # trades kept for fetch_my_trades, per paper account
_MICROSECOND = timedelta(microseconds=1)

@dataclass(slots=True)
class _Order:
    client_order_id: int
    exchange_order_id: str
    request: OrderRequest
    status: ExchangeOrderStatus
    filled: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)  # still held for this order (quote for buys, base for sells)
    trades: list[Trade] = field(default_factory=list)
    reason: str = ""

    @property
    def remaining(self) -> Decimal:
        return self.request.amount - self.filled

    def snapshot(self) -> OrderSnapshot:
        r = self.request
        return OrderSnapshot(
            client_order_id=self.client_order_id,
            exchange_order_id=self.exchange_order_id,
            symbol=r.symbol,
            side=r.side,
            type=r.type,
            amount=r.amount,
            price=r.price,
            status=self.status,
            filled=self.filled,
            trades=tuple(self.trades),
            reason=self.reason,
        )


class SimulatedBotBug(RuntimeError):
    """A drill's stand-in for a bug in a bot (`PaperExchange.crash_next`)."""


class PaperExchange:
    """`ExchangeAdapter` simulated in memory. See the module docstring for the money rules."""

    def __init__(
        self,
        name: str,
        symbol: str,
        initial_balances: Mapping[str, Decimal],
        *,
        fee_rate: Decimal,
        slippage_bps: Decimal,
        amount_decimals: int = 8,
        price_decimals: int = 2,
        clock: Callable[[], datetime] | None = None,
        account: AccountSeat | None = None,
    ) -> None:
        """`account`: this bot's seat on a paper account it shares with other bots, whose
        resting orders it may not cross (self-trade prevention, `paper_account.py`)."""
        base, sep, quote = symbol.partition("/")
        if not sep or not base or not quote:
            raise ValueError(f"symbol must look like BASE/QUOTE, got {symbol!r}")
        if not Decimal(0) <= fee_rate < Decimal(1):
            raise ValueError(f"fee_rate must be in [0, 1), got {fee_rate}")
        if not Decimal(0) <= slippage_bps < _BPS:
            raise ValueError(f"slippage_bps must be in [0, 10000), got {slippage_bps}")
        if amount_decimals < 0 or price_decimals < 0:
            raise ValueError("amount_decimals and price_decimals must be >= 0")
        if any(v < 0 for v in initial_balances.values()):
            raise ValueError("initial balances must not be negative")
        self.name = name
        self.symbol = symbol
        self.base = base
        self.quote = quote.split(":", 1)[0]
        self.fee_rate = fee_rate
        self.slippage = slippage_bps / _BPS
        self.amount_decimals = amount_decimals
        self.price_decimals = price_decimals
        self._amount_quantum = Decimal(1).scaleb(-amount_decimals)
        self._price_quantum = Decimal(1).scaleb(-price_decimals)
        self._clock = clock or _utc_now
        self.account = account
        self._totals: dict[str, Decimal] = {a: Decimal(v) for a, v in initial_balances.items()}
        self._totals.setdefault(self.base, Decimal(0))
        self._totals.setdefault(self.quote, Decimal(0))
        self._orders: dict[int, _Order] = {}
        self._open: dict[int, _Order] = {}  # the OPEN subset of _orders, in creation order
        self._market: MarketSnapshot | None = None
        self._order_seq = 0
        self._trade_seq = 0
        self._trade_log: deque[AccountTrade] = deque()  # the newest fills, oldest first
        self._closed: deque[int] = deque()  # closed orders still kept, oldest first
        self._reject_next = 0
        self._reject_reason = ""
        self._fail_next = 0
        self._fail_reason = ""
        self._refuse_next = 0
        self._refuse_reason = ""
        self._partial_ratio = Decimal(1)
        self._crash_next = 0
        # The paper account's history starts with this object: trades of an earlier process
        # are known to the journal only.
        self.history_since: datetime | None = self._clock()

    # ----- drills -------------------------------------------------------------------------

    def reject_next(self, count: int, reason: str = "drill: rejected by paper exchange") -> None:
        """The next `count` create_order calls raise OrderRejected(code="drill")."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self._reject_next, self._reject_reason = count, reason

    def fail_next(self, count: int, reason: str = "drill: paper exchange unavailable") -> None:
        """The next `count` create_order calls raise TransientExchangeError; no order is made."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self._fail_next, self._fail_reason = count, reason

    def refuse_next(self, count: int, reason: str = "drill: rate limit exceeded") -> None:
        """The next `count` create_order calls raise RequestRefused (the venue refused to
        process them, like a rate limit); no order is made."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self._refuse_next, self._refuse_reason = count, reason

    def crash_next(self, count: int) -> None:
        """The next `count` market updates raise SimulatedBotBug: each crashes the bot's tick,
        as a bug would (not an exchange error: nothing catches it before the supervisor)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self._crash_next = count

    def set_partial_fill_ratio(self, ratio: Decimal) -> None:
        """Each fill event fills at most `ratio * amount` of an order (1 = fill in full)."""
        if not Decimal(0) < ratio <= Decimal(1):
            raise ValueError(f"partial fill ratio must be in (0, 1], got {ratio}")
        self._partial_ratio = ratio

    # ----- ExchangeAdapter ----------------------------------------------------------------

    def move_funds(self, asset: str, amount: Decimal) -> None:
        """Drill: money moves outside the bots (a deposit, a withdrawal, a fee they did not see),
        so the account no longer matches the journal. Reconciliation must find it."""
        total = self._totals.get(asset, Decimal(0)) + amount
        if total < 0:
            raise ValueError(f"{asset}: a move of {amount} would leave {total}")
        self._totals[asset] = total

    async def create_order(self, request: OrderRequest) -> OrderSnapshot:
        if self._refuse_next:
            self._refuse_next -= 1
            raise RequestRefused(f"{self.name}: {self._refuse_reason}")
        if self._fail_next:
            self._fail_next -= 1
            raise TransientExchangeError(f"{self.name}: {self._fail_reason}")
        if self._reject_next:
            self._reject_next -= 1
            raise OrderRejected(self._reject_reason, code="drill")
        self._validate(request)
        if self.account is not None:
            self.account.refuse_self_trade(request)
        if request.type is OrderType.MARKET:
            return self._create_market(request)
        return self._create_limit(request)

    async def cancel_order(self, client_order_id: int, symbol: str) -> OrderSnapshot:
        order = self._get(client_order_id, symbol)
        if order.status is ExchangeOrderStatus.OPEN:
            self._close(order, ExchangeOrderStatus.CANCELED, CANCEL_REASON)
        return order.snapshot()

    async def fetch_order(self, client_order_id: int, symbol: str) -> OrderSnapshot:
        return self._get(client_order_id, symbol).snapshot()

    async def fetch_open_orders(self, symbol: str) -> list[OrderSnapshot]:
        return [o.snapshot() for o in self._open_orders() if o.request.symbol == symbol]

    async def fetch_balance(self) -> dict[str, Balance]:
        used: dict[str, Decimal] = dict.fromkeys(self._totals, Decimal(0))
        for order in self._open_orders():
            asset = self._reserve_asset(order.request.side)
            used[asset] += order.reserved
        return {
            asset: Balance(asset=asset, free=total - used[asset], used=used[asset])
            for asset, total in self._totals.items()
        }

    async def fetch_my_trades(
        self, symbol: str, since: datetime | None = None
    ) -> list[AccountTrade]:
        """Every trade of this account on `symbol` (since `since`), oldest first."""
        return [
            t
            for t in self._trade_log
            if t.symbol == symbol and (since is None or t.trade.timestamp >= since)
        ]

    async def fetch_positions(self) -> list[MarginPosition]:
        """A spot paper account has no margin positions."""
        return []

    async def on_market(self, snapshot: MarketSnapshot) -> None:
        """Store the snapshot and fill resting limit orders it crosses, at their limit price."""
        if self._crash_next:
            self._crash_next -= 1
            raise SimulatedBotBug(f"{self.name}: drill: a bug in the bot's tick")
        if snapshot.symbol != self.symbol:
            raise ExchangeError(
                f"{self.name} trades {self.symbol}, got a snapshot for {snapshot.symbol}"
            )
        self._market = snapshot
        for order in self._open_orders():
            price = order.request.price
            assert price is not None  # only limit orders rest
            if order.request.side is Side.BUY:
                crossed = snapshot.ask <= price
            else:
                crossed = snapshot.bid >= price
            if crossed:
                self._fill(order, self._fill_amount(order), price)

    async def close(self) -> None:
        """Nothing to release."""

    # ----- internals ----------------------------------------------------------------------

    def _validate(self, request: OrderRequest) -> None:
        if request.symbol != self.symbol:
            raise OrderRejected(
                f"{self.name} trades {self.symbol} only, not {request.symbol}", code="bad_symbol"
            )
        if request.client_order_id in self._orders:
            raise OrderRejected(
                f"client order id {request.client_order_id} already used",
                code="duplicate_client_order_id",
            )
        amount = request.amount
        if not amount.is_finite() or amount <= 0:
            raise OrderRejected(f"amount must be positive, got {amount}", code="invalid_order")
        if not _fits_decimals(amount, self.amount_decimals):
            raise OrderRejected(
                f"amount {amount} has more than {self.amount_decimals} decimals",
                code="invalid_order",
            )
        if request.type is OrderType.LIMIT:
            price = request.price
            if price is None or not price.is_finite() or price <= 0:
                raise OrderRejected(
                    f"a limit order needs a positive price, got {price}", code="invalid_order"
                )
            if not _fits_decimals(price, self.price_decimals):
                raise OrderRejected(
                    f"price {price} has more than {self.price_decimals} decimals",
                    code="invalid_order",
                )

    def _create_market(self, request: OrderRequest) -> OrderSnapshot:
        market = self._market
        if market is None:
            raise OrderRejected(
                f"{self.name} has no market data for {self.symbol} yet", code="no_market_data"
            )
        if request.side is Side.BUY:
            price = (market.ask * (1 + self.slippage)).quantize(self._price_quantum, ROUND_CEILING)
            notional = request.amount * price
            self._require(self.quote, notional + self._fee(notional))
        else:
            price = (market.bid * (1 - self.slippage)).quantize(self._price_quantum, ROUND_FLOOR)
            if price <= 0:
                raise OrderRejected(f"no bid for {self.symbol}", code="no_market_data")
            self._require(self.base, request.amount)
        order = self._new_order(request, reserved=Decimal(0))
        self._fill(order, self._fill_amount(order), price)
        if order.status is ExchangeOrderStatus.OPEN:
            self._close(order, ExchangeOrderStatus.CANCELED, PARTIAL_FILL_REASON)
        return order.snapshot()

    def _create_limit(self, request: OrderRequest) -> OrderSnapshot:
        price = request.price
        assert price is not None  # checked by _validate
        if request.side is Side.BUY:
            reserve = request.amount * price * (1 + self.fee_rate)
            self._require(self.quote, reserve)
        else:
            reserve = request.amount
            self._require(self.base, reserve)
        order = self._new_order(request, reserved=reserve)
        market = self._market
        if market is not None:
            if request.side is Side.BUY and price >= market.ask:
                self._fill(order, self._fill_amount(order), market.ask)
            elif request.side is Side.SELL and price <= market.bid:
                self._fill(order, self._fill_amount(order), market.bid)
        if self.account is not None and order.status is ExchangeOrderStatus.OPEN:
            self.account.rest(request)  # `_close` releases it
        return order.snapshot()

    def _new_order(self, request: OrderRequest, reserved: Decimal) -> _Order:
        self._order_seq += 1
        order = _Order(
            client_order_id=request.client_order_id,
            exchange_order_id=f"{self.name}-o{self._order_seq}",
            request=request,
            status=ExchangeOrderStatus.OPEN,
            reserved=reserved,
        )
        self._orders[request.client_order_id] = order
        self._open[request.client_order_id] = order
        return order

    def _close(self, order: _Order, status: ExchangeOrderStatus, reason: str = "") -> None:
        """Take an order out of the book; whatever it still reserved is released."""
        order.status = status
        order.reason = reason
        order.reserved = Decimal(0)
        if self.account is not None:
            self.account.release(order.request.symbol, order.client_order_id)
        if self._open.pop(order.client_order_id, None) is not None:
            self._closed.append(order.client_order_id)
            while len(self._closed) > KEEP_CLOSED_ORDERS:
                self._orders.pop(self._closed.popleft(), None)

    def _fill_amount(self, order: _Order) -> Decimal:
        if self._partial_ratio == 1:
            return order.remaining
        most = (order.request.amount * self._partial_ratio).quantize(
            self._amount_quantum, ROUND_DOWN
        )
        return min(most, order.remaining)

    def _fill(self, order: _Order, amount: Decimal, price: Decimal) -> None:
        """Execute `amount` of `order` at `price`: move balances, release the reservation."""
        if amount <= 0:
            return
        notional = amount * price
        fee = self._fee(notional)
        limit_price = order.request.price
        if order.request.side is Side.BUY:
            self._totals[self.quote] -= notional + fee
            self._totals[self.base] += amount
            if order.request.type is OrderType.LIMIT and limit_price is not None:
                order.reserved -= amount * limit_price * (1 + self.fee_rate)
        else:
            self._totals[self.base] -= amount
            self._totals[self.quote] += notional - fee
            if order.request.type is OrderType.LIMIT:
                order.reserved -= amount
        self._trade_seq += 1
        trade = Trade(
            trade_id=f"{self.name}-t{self._trade_seq}",
            amount=amount,
            price=price,
            fee=fee,
            fee_currency=self.quote,
            timestamp=self._clock(),
        )
        order.trades.append(trade)
        self._trade_log.append(
            AccountTrade(
                order.exchange_order_id,
                order.client_order_id,
                order.request.symbol,
                order.request.side,
                trade,
            )
        )
        while len(self._trade_log) > KEEP_TRADES:
            forgotten = self._trade_log.popleft().trade.timestamp + _MICROSECOND
            if self.history_since is None or forgotten > self.history_since:
                self.history_since = forgotten  # trades up to the forgotten one are unknown now
        order.filled += amount
        if order.remaining <= 0:
            self._close(order, ExchangeOrderStatus.CLOSED)

    def _fee(self, notional: Decimal) -> Decimal:
        return (notional * self.fee_rate).quantize(_FEE_QUANTUM, ROUND_DOWN)

    def _require(self, asset: str, needed: Decimal) -> None:
        available = self._free(asset)
        if available < needed:
            raise OrderRejected(
                f"insufficient {asset}: need {needed}, available {available}",
                code="insufficient_funds",
            )

    def _free(self, asset: str) -> Decimal:
        used = sum(
            (
                o.reserved
                for o in self._open_orders()
                if self._reserve_asset(o.request.side) == asset
            ),
            Decimal(0),
        )
        return self._totals.get(asset, Decimal(0)) - used

    def _reserve_asset(self, side: Side) -> str:
        return self.quote if side is Side.BUY else self.base

    def _open_orders(self) -> list[_Order]:
        """A copy: filling while iterating takes orders out of `_open`."""
        return list(self._open.values())

    def _get(self, client_order_id: int, symbol: str) -> _Order:
        order = self._orders.get(client_order_id)
        if order is None or order.request.symbol != symbol:
            raise OrderNotFound(f"{self.name}: no order with client order id {client_order_id}")
        return order
