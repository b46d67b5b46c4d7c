"""Position and balance arithmetic: what a fill does to a bot's book.

Average-cost accounting: buying into a long (or selling into a short) moves the average entry
price; trading against the position realises PnL on the closed quantity; crossing through zero
opens the remainder at the fill price. Fees are kept apart (`fees_paid`, in the quote asset) so
realised PnL is the market's doing and fees are the venue's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from bots.models import Side

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Position:
    base: Decimal = ZERO  # signed: > 0 long, < 0 short
    avg_entry_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO  # quote
    fees_paid: Decimal = ZERO  # quote (fees charged in another asset are in balances only)

    def apply_fill(
        self, side: Side, amount: Decimal, price: Decimal, fee_in_quote: Decimal
    ) -> Position:
        signed = amount if side is Side.BUY else -amount
        fees = self.fees_paid + fee_in_quote
        if self.base == 0 or (self.base > 0) == (signed > 0):
            new_base = self.base + signed
            avg = (abs(self.base) * self.avg_entry_price + amount * price) / abs(new_base)
            return Position(new_base, avg, self.realized_pnl, fees)
        closed = min(abs(self.base), amount)
        direction = 1 if self.base > 0 else -1
        realized = self.realized_pnl + closed * (price - self.avg_entry_price) * direction
        new_base = self.base + signed
        if new_base == 0:
            avg = ZERO
        elif (new_base > 0) == (self.base > 0):
            avg = self.avg_entry_price
        else:
            avg = price  # crossed through zero: the remainder opens at this fill's price
        return Position(new_base, avg, realized, fees)

    def unrealized_pnl(self, last_price: Decimal) -> Decimal:
        return self.base * (last_price - self.avg_entry_price) if self.base else ZERO


def balance_changes(
    side: Side,
    amount: Decimal,
    price: Decimal,
    fee: Decimal,
    fee_currency: str,
    base_asset: str,
    quote_asset: str,
) -> dict[str, Decimal]:
    """The signed change to each asset's balance caused by one fill."""
    notional = amount * price
    changes: dict[str, Decimal] = {
        base_asset: amount if side is Side.BUY else -amount,
        quote_asset: -notional if side is Side.BUY else notional,
    }
    changes[fee_currency] = changes.get(fee_currency, ZERO) - fee
    return changes


def apply_changes(
    balances: Mapping[str, Decimal], changes: Mapping[str, Decimal]
) -> dict[str, Decimal]:
    """New totals for the assets in `changes` (only those)."""
    return {asset: balances.get(asset, ZERO) + delta for asset, delta in changes.items()}


def fee_in_quote(fee: Decimal, currency: str, price: Decimal, base: str, quote: str) -> Decimal:
    """A fee as the position counts it: in the quote asset. A fee in another asset (an exchange
    token) shows in balances only."""
    if currency == quote:
        return fee
    if currency == base:
        return fee * price
    return ZERO


@dataclass(frozen=True, slots=True)
class LedgerFill:
    """What a replay needs of one recorded fill."""

    side: Side
    amount: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str


def replay(
    fills: Iterable[LedgerFill],
    adjustments: Iterable[tuple[str, Decimal]],
    base: str,
    quote: str,
) -> tuple[Position, dict[str, Decimal]]:
    """The position and balances a bot's journal implies: its balance adjustments (opening
    balances, corrections) plus every fill, in the order they were recorded. The gateway moves
    the stored position and balances by exactly these steps, so they must be equal."""
    balances: dict[str, Decimal] = {}
    for asset, amount in adjustments:
        balances[asset] = balances.get(asset, ZERO) + amount
    position = Position()
    for fill in fills:
        position = position.apply_fill(
            fill.side,
            fill.amount,
            fill.price,
            fee_in_quote(fill.fee, fill.fee_currency, fill.price, base, quote),
        )
        changes = balance_changes(
            fill.side, fill.amount, fill.price, fill.fee, fill.fee_currency, base, quote
        )
        balances.update(apply_changes(balances, changes))
    return position, balances
