"""Orders a person placed by hand on a bot's market (trailing stops, take-profits, stop-limits),
an answer about another order, and a venue's internal error on a send: the real ccxt 4.5.90
code against kraken's and ndax's paths, via aioresponses, with payloads in the venues' shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aioresponses import aioresponses

from bots.errors import TransientExchangeError
from bots.exchanges.ccxt_adapter import CcxtExchange
from bots.models import ExchangeOrderStatus, OrderRequest, OrderType, Side
from tests.bots.exchanges.ccxt_fixtures import (
    KRAKEN_PRIVATE,
    closing,
    form_bodies,
    json_bodies,
    kraken_client,
    kraken_ok,
    kraken_order,
    mock_kraken_markets,
    mock_ndax_account,
    mock_ndax_markets,
    ndax_account_url,
    ndax_client,
    ndax_order,
    ndax_url,
)

FIXED = datetime(2026, 1, 1, tzinfo=UTC)
COID = 1_882_000_000_000_000_001
OURS = "OQCLML-BW3P3-BUCMWZ"


def kraken_trigger(
    ordertype: str, price: str, price2: str = "0", order: str = "", side: str = "sell"
) -> dict[str, Any]:
    """A trigger order as kraken's OpenOrders lists it (descr.price is the trigger, or the
    trailing offset; descr.price2 the limit price of a *-limit order)."""
    raw = kraken_order(side=side, ordertype="limit", price="1")
    raw["descr"] = {
        "pair": "XBTAUD",
        "type": side,
        "ordertype": ordertype,
        "price": price,
        "price2": price2,
        "leverage": "none",
        "order": order or f"{side} 0.01000000 XBTAUD @ {ordertype.replace('-', ' ')} {price}",
        "close": "",
    }
    return raw


@pytest.fixture
def m() -> Iterator[aioresponses]:
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture
async def kraken(m: aioresponses) -> AsyncIterator[CcxtExchange]:
    mock_kraken_markets(m)
    async with closing(kraken_client()) as client:
        yield CcxtExchange("kraken-main", client, clock=lambda: FIXED)


@pytest.fixture
async def ndax(m: aioresponses) -> AsyncIterator[CcxtExchange]:
    mock_ndax_markets(m)
    mock_ndax_account(m)
    async with closing(ndax_client()) as client:
        yield CcxtExchange("ndax-main", client, clock=lambda: FIXED)


KRAKEN_HAND_PLACED = {
    "OTRAIL-1": kraken_trigger("trailing-stop", "+5.0000%"),
    "OTAKE-1": kraken_trigger("take-profit", "160000.0"),
    "OSTOPL-1": kraken_trigger("stop-loss-limit", "140000.0", "139000.0"),
}


async def test_kraken_hand_placed_trigger_orders_are_read_with_their_type_and_trigger(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    ours = kraken_order(client_order_id=COID)
    m.post(
        KRAKEN_PRIVATE + "OpenOrders",
        payload=kraken_ok({"open": {OURS: ours, **KRAKEN_HAND_PLACED}}),
    )

    orders = {o.exchange_order_id: o for o in await kraken.fetch_open_orders("BTC/AUD")}

    assert orders[OURS].client_order_id == COID
    assert orders[OURS].type is OrderType.LIMIT
    trail, take, stop = orders["OTRAIL-1"], orders["OTAKE-1"], orders["OSTOPL-1"]
    assert {o.client_order_id for o in (trail, take, stop)} == {0}
    assert (trail.type, trail.venue_type, trail.trigger_price, trail.price) == (
        OrderType.TRAILING_STOP, "trailing-stop", None, None,
    )
    assert (take.type, take.trigger_price, take.price) == (
        OrderType.TAKE_PROFIT, Decimal("160000.0"), None,
    )
    assert (stop.type, stop.trigger_price, stop.price) == (
        OrderType.STOP_LOSS_LIMIT, Decimal("140000.0"), Decimal("139000.0"),
    )
    assert {o.status for o in orders.values()} == {ExchangeOrderStatus.OPEN}


async def test_kraken_cancel_all_cancels_ours_and_none_of_theirs(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    listed = {OURS: kraken_order(client_order_id=COID), **KRAKEN_HAND_PLACED}
    m.post(KRAKEN_PRIVATE + "OpenOrders", payload=kraken_ok({"open": listed}))
    m.post(KRAKEN_PRIVATE + "CancelOrder", payload=kraken_ok({"count": 1}))
    m.post(
        KRAKEN_PRIVATE + "QueryOrders",
        payload=kraken_ok({OURS: kraken_order(status="canceled", client_order_id=COID)}),
    )

    [done] = await kraken.cancel_all("BTC/AUD")

    assert (done.client_order_id, done.status) == (COID, ExchangeOrderStatus.CANCELED)
    assert form_bodies(m, KRAKEN_PRIVATE + "CancelOrder") == [{"txid": OURS}]


async def test_an_unreadable_foreign_order_is_left_out_not_fatal(
    kraken: CcxtExchange, m: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    garbled = kraken_trigger("stop-loss", "140000.0")
    garbled["vol"] = "0.00000000"  # ccxt reads it; no order of zero size can be trusted
    listed = {OURS: kraken_order(client_order_id=COID), "OBAD-1": garbled}
    m.post(KRAKEN_PRIVATE + "OpenOrders", payload=kraken_ok({"open": listed}))

    orders = await kraken.fetch_open_orders("BTC/AUD")

    assert [o.exchange_order_id for o in orders] == [OURS]
    assert "cannot be read, left out" in caplog.text


async def test_one_of_ours_that_comes_back_as_a_trigger_order_is_not_trusted(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    odd = kraken_trigger("take-profit", "160000.0")
    odd["cl_ord_id"] = f"x{COID:016x}"
    m.post(KRAKEN_PRIVATE + "OpenOrders", payload=kraken_ok({"open": {OURS: odd}}))

    with pytest.raises(TransientExchangeError, match="of ours is a 'take-profit' order"):
        await kraken.fetch_open_orders("BTC/AUD")


# ----- ndax -----------------------------------------------------------------------------------

ORDER_ID = 6_001
STOP_LIMIT_ID = 7_777


def ndax_stop_limit(order_id: int = STOP_LIMIT_ID) -> dict[str, Any]:
    raw = ndax_order(order_id, side="Sell", order_type="StopLimit", price=88000.0)
    raw["Price"] = 88000.0
    raw["StopPrice"] = 89000.0
    return raw


async def test_ndax_a_hand_placed_stop_limit_is_read_and_never_cancelled(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    listed = [ndax_order(ORDER_ID, client_order_id=COID), ndax_stop_limit()]
    m.get(ndax_account_url("GetOpenOrders"), payload=listed, repeat=True)
    m.post(ndax_url("CancelOrder"), payload={"result": True, "errormsg": None, "errorcode": 0})
    m.get(
        ndax_account_url("GetOrderStatus", OrderId=ORDER_ID),
        payload=ndax_order(ORDER_ID, state="Canceled", client_order_id=COID),
    )

    orders = {o.exchange_order_id: o for o in await ndax.fetch_open_orders("BTC/CAD")}
    stop = orders[str(STOP_LIMIT_ID)]
    assert (stop.client_order_id, stop.type, stop.venue_type) == (
        0, OrderType.STOP_LOSS_LIMIT, "StopLimit",
    )
    assert (stop.trigger_price, stop.price) == (Decimal("89000.0"), Decimal("88000.0"))

    [done] = await ndax.cancel_all("BTC/CAD")
    assert done.client_order_id == COID
    assert json_bodies(m, ndax_url("CancelOrder")) == [{"omsId": 1, "OrderId": ORDER_ID}]


async def test_ndax_an_answer_about_another_order_is_refused(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    ndax.remember(COID, str(ORDER_ID))
    other = ndax_order(ORDER_ID + 1, state="FullyExecuted", executed=0.01)  # no client id
    m.get(ndax_account_url("GetOrderStatus", OrderId=ORDER_ID), payload=other)

    with pytest.raises(TransientExchangeError, match=f"asked for order {ORDER_ID}"):
        await ndax.fetch_order(COID, "BTC/CAD")


async def test_ndax_server_error_on_send_is_an_unknown_outcome_not_a_refusal(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    m.post(
        ndax_url("SendOrder"),
        payload={"result": False, "errormsg": "Server Error", "errorcode": 102, "detail": None},
    )
    request = OrderRequest(
        COID, "BTC/CAD", Side.BUY, OrderType.LIMIT, Decimal("0.01"), Decimal("90000")
    )

    with pytest.raises(TransientExchangeError, match="outcome unknown"):
        await ndax.create_order(request)
