"""The book tells who keeps figures about it (the status cache, the risk context) of changes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal

import pytest

from bots.book import BotBook
from bots.ledger import Position


def test_setting_a_field_moves_the_revision() -> None:
    book = BotBook()
    before = book.revision

    book.orders_count += 1
    book.last_refusal = "max_open_orders: 1 order(s) open already"

    assert book.revision == before + 2


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b.errors.__setitem__("timeout", 1),
        lambda b: b.refusals.setdefault("no_price", 1),
        lambda b: b.balances.update(CAD=Decimal(5)),
        lambda b: b.live_orders.pop(7),
        lambda b: b.live_orders.clear(),
        lambda b: b.partial_fill_outcomes.__setitem__("completed", 1),
    ],
    ids=["set", "setdefault", "update", "pop", "clear", "outcomes"],
)
def test_a_change_made_in_place_to_a_dict_status_shows_moves_the_revision(
    change: Callable[[BotBook], object],
) -> None:
    book = BotBook(live_orders={7: None})  # type: ignore[dict-item]
    before = book.revision

    change(book)

    assert book.revision > before


def test_a_dict_assigned_later_is_tracked_too() -> None:
    book = BotBook()
    book.balances = {"CAD": Decimal(1)}
    before = book.revision

    book.balances["CAD"] += 1

    assert book.revision == before + 1
    assert book.balances == {"CAD": Decimal(2)}


def test_the_risk_listener_hears_position_and_price_only() -> None:
    heard: list[str] = []
    book = BotBook()
    book.on_risk_change = lambda: heard.append("changed")

    book.fills_count += 1
    book.position = Position(Decimal(1), Decimal(100))
    book.last_price = Decimal(101)

    assert heard == ["changed", "changed"]


def test_a_copied_book_is_a_tracked_book_of_its_own() -> None:
    book = BotBook(balances={"CAD": Decimal(1)})

    twin = copy.deepcopy(book)
    before = (book.revision, twin.revision)
    twin.balances["CAD"] = Decimal(3)

    assert book.balances == {"CAD": Decimal(1)}
    assert book.revision == before[0]
    assert twin.revision > before[1]
