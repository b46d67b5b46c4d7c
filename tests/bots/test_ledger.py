"""Average-cost position arithmetic and the balance changes a fill causes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bots.ledger import Position, apply_changes, balance_changes
from bots.models import Side

D = Decimal
BUY, SELL = Side.BUY, Side.SELL


def pos(base: str, avg: str = "0", realized: str = "0", fees: str = "0") -> Position:
    return Position(D(base), D(avg), D(realized), D(fees))


@pytest.mark.parametrize(
    ("start", "side", "amount", "price", "expected"),
    [
        pytest.param(pos("0"), BUY, "1", "100", pos("1", "100"), id="open-long"),
        pytest.param(pos("1", "100"), BUY, "1", "110", pos("2", "105"), id="add-to-long"),
        pytest.param(
            pos("2", "105"), SELL, "0.5", "115", pos("1.5", "105", "5"), id="partial-close-long"
        ),
        pytest.param(
            pos("1.5", "105", "5"), SELL, "1.5", "95", pos("0", "0", "-10"), id="full-close-long"
        ),
        pytest.param(
            pos("1", "100"), SELL, "3", "120", pos("-2", "120", "20"), id="long-crosses-to-short"
        ),
        pytest.param(pos("0"), SELL, "2", "50", pos("-2", "50"), id="open-short"),
        pytest.param(pos("-2", "50"), SELL, "2", "60", pos("-4", "55"), id="add-to-short"),
        pytest.param(
            pos("-4", "55"), BUY, "1", "45", pos("-3", "55", "10"), id="partial-cover-short"
        ),
        pytest.param(
            pos("-3", "55", "10"), BUY, "3", "60", pos("0", "0", "-5"), id="full-cover-short"
        ),
        pytest.param(
            pos("-1", "50"), BUY, "3", "40", pos("2", "40", "10"), id="short-crosses-to-long"
        ),
        pytest.param(
            pos("0.3", "100", "7"), SELL, "0.3", "100", pos("0", "0", "7"), id="flat-at-cost"
        ),
    ],
)
@pytest.mark.parametrize("fee", ["0", "0.25"])
def test_average_cost_fill(
    start: Position, side: Side, amount: str, price: str, expected: Position, fee: str
) -> None:
    after = start.apply_fill(side, D(amount), D(price), D(fee))
    assert after.base == expected.base
    assert after.avg_entry_price == expected.avg_entry_price
    # Fees never touch realised PnL: they are accumulated apart.
    assert after.realized_pnl == expected.realized_pnl
    assert after.fees_paid == start.fees_paid + D(fee)


def test_average_entry_price_weights_by_quantity() -> None:
    after = pos("0").apply_fill(BUY, D("0.1"), D("100"), D(0))
    after = after.apply_fill(BUY, D("0.3"), D("200"), D(0))
    assert after.base == D("0.4")
    assert after.avg_entry_price == D("175")


def test_fees_accumulate_apart_from_realised_pnl_over_a_round_trip() -> None:
    after = pos("0").apply_fill(BUY, D("2"), D("100"), D("0.2"))
    after = after.apply_fill(SELL, D("2"), D("110"), D("0.22"))
    assert after == Position(D(0), D(0), D("20"), D("0.42"))


def test_apply_fill_returns_a_new_position_and_leaves_the_old_one_alone() -> None:
    start = pos("1", "100")
    start.apply_fill(SELL, D("1"), D("150"), D("1"))
    assert start == pos("1", "100")


@pytest.mark.parametrize(
    ("position", "last", "expected"),
    [
        (pos("0"), "123", "0"),
        (pos("2", "100"), "110", "20"),
        (pos("-2", "100"), "110", "-20"),
    ],
)
def test_unrealized_pnl(position: Position, last: str, expected: str) -> None:
    assert position.unrealized_pnl(D(last)) == D(expected)


@pytest.mark.parametrize(
    ("side", "fee_currency", "expected"),
    [
        pytest.param(BUY, "AUD", {"BTC": "0.5", "AUD": "-50.05"}, id="buy-fee-in-quote"),
        pytest.param(SELL, "AUD", {"BTC": "-0.5", "AUD": "49.95"}, id="sell-fee-in-quote"),
        pytest.param(BUY, "BTC", {"BTC": "0.45", "AUD": "-50"}, id="buy-fee-in-base"),
        pytest.param(SELL, "BTC", {"BTC": "-0.55", "AUD": "50"}, id="sell-fee-in-base"),
        pytest.param(
            BUY, "BNB", {"BTC": "0.5", "AUD": "-50", "BNB": "-0.05"}, id="fee-in-a-third-asset"
        ),
    ],
)
def test_balance_changes(side: Side, fee_currency: str, expected: dict[str, str]) -> None:
    changes = balance_changes(side, D("0.5"), D("100"), D("0.05"), fee_currency, "BTC", "AUD")
    assert changes == {asset: D(v) for asset, v in expected.items()}


def test_balance_changes_are_exact_decimals() -> None:
    changes = balance_changes(BUY, D("0.1"), D("0.3"), D("0.00003"), "AUD", "BTC", "AUD")
    assert changes == {"BTC": D("0.1"), "AUD": D("-0.03003")}


def test_apply_changes_returns_new_totals_for_the_changed_assets_only() -> None:
    balances = {"AUD": D("1000"), "BTC": D("1"), "ETH": D("3")}
    totals = apply_changes(balances, {"AUD": D("-50.05"), "BTC": D("0.5"), "BNB": D("-0.01")})
    assert totals == {"AUD": D("949.95"), "BTC": D("1.5"), "BNB": D("-0.01")}
    assert balances == {"AUD": D("1000"), "BTC": D("1"), "ETH": D("3")}
