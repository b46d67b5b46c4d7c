"""Books: every bot's stored position and balances must equal a replay of its journal.

The gateway moves a bot's position and balances by exactly the steps `bots.ledger.replay`
takes (its balance adjustments, then every fill in the order recorded), in the transaction that
records the fill; so a stored book that differs from the replay means a row was changed,
deleted or added outside that path.
"""

from __future__ import annotations

from decimal import Decimal

import aiosqlite

from bots.ledger import LedgerFill, Position, replay
from bots.models import Side
from coordinator.integrity.report import Inconsistency
from coordinator.integrity.rows import CheckResult, fetch_all, parse_decimal, shown

CHECK = "books"
_POSITION_FIELDS = ("base", "avg_entry_price", "realized_pnl", "fees_paid")


class _Unreadable(Exception):
    """A row the replay needs holds something that is not a valid value."""

    def __init__(self, inconsistency: Inconsistency) -> None:
        super().__init__(inconsistency.detail)
        self.inconsistency = inconsistency


async def check_books(conn: aiosqlite.Connection) -> CheckResult:
    bots = await fetch_all(conn, "SELECT name, symbol FROM bots ORDER BY name")
    found: list[Inconsistency] = []
    for name, symbol in bots:
        try:
            found.extend(await _check_bot(conn, str(name), str(symbol)))
        except _Unreadable as exc:
            found.append(exc.inconsistency)
    return CheckResult(len(bots), found)


def split_symbol(symbol: str) -> tuple[str, str] | None:
    """ "BASE/QUOTE" or "BASE/QUOTE:SETTLE" -> (BASE, QUOTE)."""
    base, slash, rest = symbol.partition("/")
    quote = rest.partition(":")[0]
    return (base, quote) if slash and base and quote else None


async def _check_bot(conn: aiosqlite.Connection, bot: str, symbol: str) -> list[Inconsistency]:
    pair = split_symbol(symbol)
    if pair is None:
        raise _Unreadable(
            Inconsistency(
                CHECK, "bots", f"bot {bot}", "a symbol BASE/QUOTE", symbol, "book not replayed"
            )
        )
    position, balances = replay(
        await _fills(conn, bot), await _adjustments(conn, bot), pair[0], pair[1]
    )
    return [
        *_compare_position(bot, position, await _stored_position(conn, bot)),
        *_compare_balances(bot, balances, await _stored_balances(conn, bot)),
    ]


async def _adjustments(conn: aiosqlite.Connection, bot: str) -> list[tuple[str, Decimal]]:
    rows = await fetch_all(
        conn, "SELECT id, asset, amount FROM balance_adjustments WHERE bot = ? ORDER BY id", (bot,)
    )
    return [
        (str(asset), _amount(bot, "balance_adjustments", row_id, "amount", amount))
        for row_id, asset, amount in rows
    ]


async def _fills(conn: aiosqlite.Connection, bot: str) -> list[LedgerFill]:
    rows = await fetch_all(
        conn,
        "SELECT id, side, amount, price, fee, fee_currency FROM fills WHERE bot = ? ORDER BY id",
        (bot,),
    )
    fills: list[LedgerFill] = []
    for row_id, side, amount, price, fee, fee_currency in rows:
        if side not in (Side.BUY.value, Side.SELL.value):
            raise _Unreadable(_bad(bot, "fills", row_id, "side", side))
        fills.append(
            LedgerFill(
                Side(side),
                _amount(bot, "fills", row_id, "amount", amount),
                _amount(bot, "fills", row_id, "price", price),
                _amount(bot, "fills", row_id, "fee", fee),
                str(fee_currency),
            )
        )
    return fills


async def _stored_position(conn: aiosqlite.Connection, bot: str) -> Position | None:
    rows = await fetch_all(
        conn,
        "SELECT base, avg_entry_price, realized_pnl, fees_paid FROM positions WHERE bot = ?",
        (bot,),
    )
    if not rows:
        return None
    values = [
        _amount(bot, "positions", f"bot {bot}", name, value)
        for name, value in zip(_POSITION_FIELDS, rows[0], strict=True)
    ]
    return Position(*values)


async def _stored_balances(conn: aiosqlite.Connection, bot: str) -> dict[str, Decimal]:
    rows = await fetch_all(conn, "SELECT asset, total FROM balances WHERE bot = ?", (bot,))
    return {
        str(asset): _amount(bot, "balances", f"bot {bot} asset {asset}", "total", total)
        for asset, total in rows
    }


def _compare_position(bot: str, replayed: Position, stored: Position | None) -> list[Inconsistency]:
    """A missing row is a flat position (Position()), which is what a bot without fills has."""
    note = " (no positions row)" if stored is None else ""
    stored = stored or Position()
    found: list[Inconsistency] = []
    for name in _POSITION_FIELDS:
        want, have = getattr(replayed, name), getattr(stored, name)
        if want != have:
            found.append(
                Inconsistency(
                    CHECK,
                    "positions",
                    f"bot {bot}",
                    str(want),
                    str(have),
                    f"position {name}{note} differs from the replay of adjustments and fills",
                )
            )
    return found


def _compare_balances(
    bot: str, replayed: dict[str, Decimal], stored: dict[str, Decimal]
) -> list[Inconsistency]:
    found: list[Inconsistency] = []
    for asset in sorted(replayed.keys() | stored.keys()):
        want, have = replayed.get(asset), stored.get(asset)
        if want is not None and have is not None and want == have:
            continue
        found.append(
            Inconsistency(
                CHECK,
                "balances",
                f"bot {bot} asset {asset}",
                "no row" if want is None else str(want),
                "no row" if have is None else str(have),
                "balance total differs from the replay of adjustments and fills",
            )
        )
    return found


def _amount(bot: str, table: str, row: object, column: str, value: object) -> Decimal:
    number = parse_decimal(value)
    if number is None:
        raise _Unreadable(_bad(bot, table, row, column, value))
    return number


def _bad(bot: str, table: str, row: object, column: str, value: object) -> Inconsistency:
    name = row if isinstance(row, str) else f"id {row}"
    return Inconsistency(
        CHECK,
        table,
        name,
        f"a valid {column}",
        shown(value),
        f"bot {bot}'s book is not replayed: unreadable {column}",
    )
