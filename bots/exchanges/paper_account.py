"""One simulated venue account shared by the paper exchanges of the bots that trade on it.

A real venue's self-trade prevention (Kraken's and Coinbase's "cancel newest") rejects an
incoming order that would match a resting order of the same account. Paper bots that name one
`paper.account` (on one exchange) get that here: each bot's `PaperExchange` takes a seat on the
account, tells it which of its limit orders rest and when each stops resting, and asks it before
taking an order. The seats share the resting orders and nothing else: balances, fills and
history stay each bot's own, as the journal accounts for them per bot.

The rule is the one the gateway's `SelfTradeGate` applies (`would_cross`), and like the gate the
venue judges an order against the other bots' resting orders, never its own bot's: the two
refuse the same orders, and the venue stops one that got past the gateway (an order the book
does not show as live, a gate left out) before it could trade against a sibling.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bots.errors import OrderRejected
from bots.models import OrderRequest, OrderType, Side

SELF_TRADE = "self_trade"  # the refusal code of the gateway's gate and the venue's rejection


def would_cross(
    side: Side, price: Decimal | None, resting_side: Side, resting_price: Decimal
) -> bool:
    """Whether an order (`price` None: a market order) would match a resting one: a buy at or
    above a resting sell, a sell at or below a resting buy. A market order matches any resting
    order on the other side (it takes whatever the book offers, and one order is enough)."""
    if side is resting_side:
        return False
    if price is None:
        return True
    return price >= resting_price if side is Side.BUY else price <= resting_price


@dataclass(frozen=True, slots=True)
class RestingOrder:
    bot: str
    client_order_id: int
    side: Side
    price: Decimal


class PaperAccount:
    """The resting limit orders of every bot on one shared paper account, per symbol."""

    def __init__(self, exchange: str, name: str) -> None:
        self.exchange = exchange
        self.name = name
        self._resting: dict[str, dict[tuple[str, int], RestingOrder]] = {}

    def seat(self, bot: str) -> AccountSeat:
        return AccountSeat(self, bot)

    def resting(self, symbol: str) -> list[RestingOrder]:
        return list(self._resting.get(symbol, {}).values())

    def crossing(self, bot: str, request: OrderRequest) -> RestingOrder | None:
        """Another bot's resting order that `request` would match, if any."""
        price = request.price if request.type is OrderType.LIMIT else None
        for order in self._resting.get(request.symbol, {}).values():
            if order.bot != bot and would_cross(request.side, price, order.side, order.price):
                return order
        return None

    def _rest(self, bot: str, request: OrderRequest) -> None:
        assert request.price is not None  # only limit orders rest
        book = self._resting.setdefault(request.symbol, {})
        order = RestingOrder(bot, request.client_order_id, request.side, request.price)
        book[(bot, request.client_order_id)] = order

    def _release(self, bot: str, symbol: str, client_order_id: int) -> None:
        book = self._resting.get(symbol)
        if book is not None:
            book.pop((bot, client_order_id), None)


class AccountSeat:
    """One bot's place on a shared paper account: what its `PaperExchange` calls."""

    def __init__(self, account: PaperAccount, bot: str) -> None:
        self.account = account
        self.bot = bot

    def refuse_self_trade(self, request: OrderRequest) -> None:
        """Raise `OrderRejected(code="self_trade")` if the order would match another bot's
        resting order on the account (the incoming order is the one rejected)."""
        resting = self.account.crossing(self.bot, request)
        if resting is None:
            return
        what = f"at {request.price}" if request.type is OrderType.LIMIT else "at market"
        raise OrderRejected(
            f"self-trade prevention: {request.side.value} {what} would match "
            f"{resting.bot}'s resting {resting.side.value} {resting.client_order_id} at "
            f"{resting.price} on the same account {self.account.name!r} "
            f"({self.account.exchange}, {request.symbol}); the incoming order is rejected",
            code=SELF_TRADE,
        )

    def rest(self, request: OrderRequest) -> None:
        self.account._rest(self.bot, request)

    def release(self, symbol: str, client_order_id: int) -> None:
        self.account._release(self.bot, symbol, client_order_id)
