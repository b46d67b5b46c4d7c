"""CcxtExchange on ndax: the real ccxt 4.5.90 code against ndax's paths, via aioresponses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from aioresponses import aioresponses

from bots.errors import (
    ExchangeError,
    OperatorActionRequired,
    OrderNotFound,
    OrderRejected,
    TransientExchangeError,
)
from bots.exchanges.ccxt_adapter import CcxtExchange, make_private_exchange
from bots.models import Balance, ExchangeOrderStatus, OrderRequest, OrderType, Side
from tests.bots.exchanges.ccxt_fixtures import (
    NDAX_CREDENTIALS,
    closing,
    json_bodies,
    mock_ndax_account,
    mock_ndax_markets,
    ndax_account_url,
    ndax_client,
    ndax_order,
    ndax_position,
    ndax_trade,
    ndax_url,
    requested_urls,
    requests_to,
    secrets_of,
)

FIXED = datetime(2026, 1, 1, tzinfo=UTC)
SYMBOL = "BTC/CAD"
COID = 1_882_000_000_000_000_001  # float(COID) == COID - 1: ccxt's own float() would change it
ORDER_ID = 6_001
SEND_ORDER = ndax_url("SendOrder")
CANCEL_ORDER = ndax_url("CancelOrder")
STATUS = ndax_account_url("GetOrderStatus", OrderId=ORDER_ID)
TRADES = ndax_account_url("GetTradesHistory", InstrumentId=1, OrderId=ORDER_ID)
OPEN_ORDERS = ndax_account_url("GetOpenOrders")
HISTORY = ndax_account_url("GetOrdersHistory", InstrumentId=1, ClientOrderId=COID)
ACCEPTED = {"status": "Accepted", "errormsg": "", "OrderId": ORDER_ID}

FAILURES: dict[str, dict[str, Any]] = {
    "timeout": {"exception": TimeoutError()},  # asyncio.TimeoutError
    "http 500": {"status": 500, "body": "Internal Server Error"},
    "http 503": {"status": 503, "body": "<html><h1>503 Service Unavailable</h1></html>"},
    "http 429": {"status": 429, "body": "Too Many Requests"},
    "html body": {"status": 200, "body": "<html>down for maintenance</html>"},
    "truncated json": {
        "status": 200,
        "body": '{"status":"Accepted","errormsg":"","Ord',
        "content_type": "application/json",
    },
}


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    async with closing(ndax_client()) as c:
        yield c


@pytest.fixture
def m() -> Iterator[aioresponses]:
    with aioresponses() as mocked:
        mock_ndax_markets(mocked)
        mock_ndax_account(mocked)
        yield mocked


@pytest.fixture
def ndax(client: Any) -> CcxtExchange:
    return CcxtExchange("ndax-main", client, clock=lambda: FIXED)


def limit_buy(amount: str = "0.01", price: str = "90000") -> OrderRequest:
    return OrderRequest(COID, SYMBOL, Side.BUY, OrderType.LIMIT, Decimal(amount), Decimal(price))


def market_buy(amount: str = "0.01") -> OrderRequest:
    return OrderRequest(COID, SYMBOL, Side.BUY, OrderType.MARKET, Decimal(amount))


def filled_order(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"executed": 0.01, "state": "FullyExecuted", "client_order_id": COID}
    return ndax_order(ORDER_ID, **{**fields, **changes})


# ----- markets, balance -------------------------------------------------------------------


async def test_markets_and_balance(ndax: CcxtExchange, m: aioresponses) -> None:
    positions = [ndax_position(1, "BTC", 1.5, 0.1), ndax_position(3, "CAD", 25000.0, 1000.0)]
    m.get(ndax_account_url("GetAccountPositions"), payload=positions)
    await ndax.load_markets()
    assert await ndax.fetch_balance() == {
        "BTC": Balance("BTC", Decimal("1.4"), Decimal("0.1")),
        "CAD": Balance("CAD", Decimal(24000), Decimal(1000)),
    }
    assert [u.split("?")[0].rsplit("/", 1)[1] for u in requested_urls(m)] == [
        "GetProducts",
        "GetInstruments",
        "GetUserAccounts",
        "GetAccountPositions",
    ]


# ----- orders -----------------------------------------------------------------------------


async def test_market_buy_fills_with_its_trades(ndax: CcxtExchange, m: aioresponses) -> None:
    m.post(SEND_ORDER, payload=ACCEPTED)
    m.get(STATUS, payload=filled_order(order_type="Market", price=90010.0))
    trades = [
        ndax_trade(501, ORDER_ID, 0.004, 90000.0, 0.9, client_order_id=COID),
        ndax_trade(777, ORDER_ID + 1, 1.0, 1.0, 0.0),  # another order's: a filter ignored
        ndax_trade(502, ORDER_ID, 0.006, 90016.5, 1.35, client_order_id=COID),
    ]
    m.get(TRADES, payload=trades)

    snap = await ndax.create_order(market_buy())

    assert (snap.client_order_id, snap.exchange_order_id) == (COID, str(ORDER_ID))
    assert (snap.status, snap.filled, snap.price) == (
        ExchangeOrderStatus.CLOSED,
        Decimal("0.01"),
        None,
    )
    assert [(t.trade_id, t.amount, t.price, t.fee, t.fee_currency) for t in snap.trades] == [
        ("501", Decimal("0.004"), Decimal("90000.0"), Decimal("0.9"), "CAD"),
        ("502", Decimal("0.006"), Decimal("90016.5"), Decimal("1.35"), "CAD"),
    ]
    [body] = json_bodies(m, SEND_ORDER)
    assert type(body["ClientOrderId"]) is int
    assert body == {
        "InstrumentId": 1,
        "omsId": 1,
        "AccountId": 449,
        "TimeInForce": 1,
        "ClientOrderId": COID,
        "Side": 0,
        "Quantity": 0.01,
        "OrderType": 1,
    }


async def test_limit_order_rests_then_is_fetched_filled(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    m.post(SEND_ORDER, payload=ACCEPTED)
    m.get(STATUS, payload=ndax_order(ORDER_ID, client_order_id=COID))
    resting = await ndax.create_order(limit_buy())
    assert resting.status is ExchangeOrderStatus.OPEN
    assert (resting.filled, resting.price, resting.trades) == (Decimal(0), Decimal(90000), ())
    [body] = json_bodies(m, SEND_ORDER)
    assert (body["OrderType"], body["LimitPrice"], body["ClientOrderId"]) == (2, 90000.0, COID)
    assert requests_to(m, "GET", TRADES) == []

    m.get(STATUS, payload=filled_order())
    m.get(TRADES, payload=[ndax_trade(501, ORDER_ID, 0.01, 90000.0, 1.8, client_order_id=COID)])
    snap = await ndax.fetch_order(COID, SYMBOL)
    assert snap.status is ExchangeOrderStatus.CLOSED
    assert [(t.trade_id, t.amount, t.fee) for t in snap.trades] == [
        ("501", Decimal("0.01"), Decimal("1.8"))
    ]
    assert requests_to(m, "GET", OPEN_ORDERS) == []  # the exchange id was remembered


async def test_partial_fill_reports_filled_below_amount(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    ndax._remember(COID, str(ORDER_ID))
    m.get(STATUS, payload=ndax_order(ORDER_ID, executed=0.004, client_order_id=COID))
    m.get(TRADES, payload=[ndax_trade(501, ORDER_ID, 0.004, 90000.0, 0.72)])
    snap = await ndax.fetch_order(COID, SYMBOL)
    assert snap.status is ExchangeOrderStatus.OPEN
    assert (snap.filled, snap.remaining) == (Decimal("0.004"), Decimal("0.006"))
    assert [t.trade_id for t in snap.trades] == ["501"]


async def test_cancel_returns_the_cancelled_snapshot(ndax: CcxtExchange, m: aioresponses) -> None:
    ndax._remember(COID, str(ORDER_ID))
    m.post(CANCEL_ORDER, payload={"result": True, "errormsg": None, "errorcode": 0, "detail": None})
    cancelled = ndax_order(
        ORDER_ID, state="Canceled", client_order_id=COID, cancel_reason="UserModified"
    )
    m.get(STATUS, payload=cancelled)
    snap = await ndax.cancel_order(COID, SYMBOL)
    assert (snap.status, snap.filled, snap.reason) == (
        ExchangeOrderStatus.CANCELED,
        Decimal(0),
        "UserModified",
    )
    assert json_bodies(m, CANCEL_ORDER) == [{"omsId": 1, "OrderId": ORDER_ID}]


@pytest.mark.parametrize(
    "refusal",
    [
        {"result": False, "errormsg": "Resource Not Found", "errorcode": 104, "detail": None},
        {"result": False, "errormsg": "Operation Failed", "errorcode": 101, "detail": None},
    ],
    ids=["not found", "operation failed"],
)
async def test_cancelling_a_filled_order_returns_it_as_filled(
    ndax: CcxtExchange, m: aioresponses, refusal: dict[str, Any]
) -> None:
    ndax._remember(COID, str(ORDER_ID))
    m.post(CANCEL_ORDER, payload=refusal)
    m.get(STATUS, payload=filled_order())
    m.get(TRADES, payload=[ndax_trade(501, ORDER_ID, 0.01, 90000.0, 1.8)])
    snap = await ndax.cancel_order(COID, SYMBOL)
    assert (snap.status, snap.filled) == (ExchangeOrderStatus.CLOSED, Decimal("0.01"))


async def test_a_refused_cancel_of_a_working_order_raises(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    ndax._remember(COID, str(ORDER_ID))
    m.post(
        CANCEL_ORDER, payload={"result": False, "errormsg": "Operation Failed", "errorcode": 101}
    )
    m.get(STATUS, payload=ndax_order(ORDER_ID, client_order_id=COID))
    with pytest.raises(ExchangeError, match="Operation Failed"):
        await ndax.cancel_order(COID, SYMBOL)


async def test_after_a_restart_the_order_is_found_in_history_by_client_order_id(
    client: Any, m: aioresponses
) -> None:
    fresh = CcxtExchange("ndax-main", client, clock=lambda: FIXED)  # never saw the create
    m.get(OPEN_ORDERS, payload=[ndax_order(ORDER_ID + 5, client_order_id=COID + 1)])
    others = [ndax_order(ORDER_ID + 9, state="Canceled", client_order_id=COID - 1)]
    m.get(HISTORY, payload=[*others, filled_order()])  # the filter is matched here too
    m.get(STATUS, payload=filled_order())
    m.get(TRADES, payload=[ndax_trade(501, ORDER_ID, 0.01, 90000.0, 1.8)])

    snap = await fresh.fetch_order(COID, SYMBOL)

    assert (snap.exchange_order_id, snap.status) == (str(ORDER_ID), ExchangeOrderStatus.CLOSED)
    assert [t.trade_id for t in snap.trades] == ["501"]
    assert len(requests_to(m, "GET", HISTORY)) == 1  # asked with ClientOrderId=<our exact id>


async def test_after_a_restart_an_open_order_is_found_and_cancelled(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    m.get(OPEN_ORDERS, payload=[ndax_order(ORDER_ID, client_order_id=COID)])
    m.post(CANCEL_ORDER, payload={"result": True, "errormsg": None, "errorcode": 0})
    m.get(STATUS, payload=ndax_order(ORDER_ID, state="Canceled", client_order_id=COID))
    snap = await ndax.cancel_order(COID, SYMBOL)
    assert snap.status is ExchangeOrderStatus.CANCELED
    assert requests_to(m, "GET", HISTORY) == []
    assert json_bodies(m, CANCEL_ORDER) == [{"omsId": 1, "OrderId": ORDER_ID}]


async def test_unknown_client_order_id_is_order_not_found(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    m.get(OPEN_ORDERS, payload=[], repeat=True)
    m.get(HISTORY, payload=[], repeat=True)
    with pytest.raises(OrderNotFound, match=str(COID)):
        await ndax.fetch_order(COID, SYMBOL)
    with pytest.raises(OrderNotFound):
        await ndax.cancel_order(COID, SYMBOL)
    assert requests_to(m, "POST", CANCEL_ORDER) == []


async def test_two_orders_with_our_client_order_id_need_an_operator(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    m.get(OPEN_ORDERS, payload=[])
    m.get(HISTORY, payload=[filled_order(), ndax_order(ORDER_ID + 1, client_order_id=COID)])
    with pytest.raises(OperatorActionRequired, match="2 orders"):
        await ndax.fetch_order(COID, SYMBOL)


async def test_fetch_open_orders_lists_ours_with_trades_and_others_as_zero(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    ours = ndax_order(ORDER_ID, executed=0.004, client_order_id=COID)
    manual = ndax_order(ORDER_ID + 1, side="Sell", price=120000.0)
    m.get(OPEN_ORDERS, payload=[ours, manual])
    m.get(TRADES, payload=[ndax_trade(501, ORDER_ID, 0.004, 90000.0, 0.72)])
    orders = await ndax.fetch_open_orders(SYMBOL)
    assert [(o.client_order_id, o.exchange_order_id, o.side) for o in orders] == [
        (COID, str(ORDER_ID), Side.BUY),
        (0, str(ORDER_ID + 1), Side.SELL),
    ]
    assert [t.trade_id for t in orders[0].trades] == ["501"]


async def test_cancel_all_cancels_the_symbols_orders_one_by_one(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    m.get(OPEN_ORDERS, payload=[ndax_order(ORDER_ID, client_order_id=COID)])
    m.post(CANCEL_ORDER, payload={"result": True, "errormsg": None, "errorcode": 0})
    m.get(STATUS, payload=ndax_order(ORDER_ID, state="Canceled", client_order_id=COID))
    [done] = await ndax.cancel_all(SYMBOL)
    assert (done.client_order_id, done.status) == (COID, ExchangeOrderStatus.CANCELED)
    # ccxt's cancel_all_orders(symbol) misspells the instrument filter: every market would go
    assert requests_to(m, "POST", ndax_url("CancelAllOrders")) == []


# ----- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
async def test_create_order_failures_are_transient_and_never_resent(
    ndax: CcxtExchange, m: aioresponses, failure: dict[str, Any]
) -> None:
    m.post(SEND_ORDER, **failure)
    with pytest.raises(TransientExchangeError, match="ndax") as info:
        await ndax.create_order(market_buy())
    assert isinstance(info.value.__cause__, ccxt.BaseError)
    assert len(requests_to(m, "POST", SEND_ORDER)) == 1
    assert requests_to(m, "GET", STATUS) == []


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
async def test_lookup_failures_are_transient_never_not_found(
    ndax: CcxtExchange, m: aioresponses, failure: dict[str, Any]
) -> None:
    m.get(OPEN_ORDERS, **failure)
    with pytest.raises(TransientExchangeError):
        await ndax.fetch_order(COID, SYMBOL)
    assert requests_to(m, "GET", HISTORY) == []


async def test_insufficient_funds_is_a_refusal(ndax: CcxtExchange, m: aioresponses) -> None:
    m.post(
        SEND_ORDER, payload={"status": "Rejected", "errormsg": "Not_Enough_Funds", "errorcode": 101}
    )
    with pytest.raises(OrderRejected) as info:
        await ndax.create_order(market_buy())
    assert info.value.code == "insufficient_funds"


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 401, "body": "Unauthorized"},
        {"status": 404, "body": "Not Found"},  # ccxt's ndax reads 404 as bad credentials
        {"payload": {"result": False, "errormsg": "Not Authorized", "errorcode": 20}},
    ],
    ids=["http 401", "http 404", "not authorized"],
)
async def test_bad_credentials_need_an_operator(client: Any, failure: dict[str, Any]) -> None:
    with aioresponses() as m:
        mock_ndax_markets(m)
        m.get(
            ndax_url("GetUserAccounts", omsId=1, UserId="4242", UserName=NDAX_CREDENTIALS["login"]),
            **failure,
        )
        with pytest.raises(OperatorActionRequired, match="ndax"):
            await CcxtExchange("ndax-main", client).fetch_balance()


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"OrderState": "Bogus"}, "unknown status"),
        ({"OrderId": None}, "no id"),
        ({"OrigQuantity": None}, "no amount"),
        ({"ClientOrderId": COID + 7}, "client id"),
        ({"Side": "Short"}, "side"),
    ],
    ids=["unknown state", "no id", "no quantity", "another client id", "short side"],
)
async def test_a_malformed_order_is_not_trusted(
    ndax: CcxtExchange, m: aioresponses, change: dict[str, Any], detail: str
) -> None:
    ndax._remember(COID, str(ORDER_ID))
    m.get(STATUS, payload={**ndax_order(ORDER_ID, client_order_id=COID), **change})
    with pytest.raises(TransientExchangeError, match=f"malformed order from ndax: .*{detail}"):
        await ndax.fetch_order(COID, SYMBOL)


@pytest.mark.parametrize(
    ("trades", "message"),
    [
        ([ndax_trade(501, ORDER_ID, 0.004, 90000.0, 0.7)], r"trades add up to 0\.004"),
        ([ndax_trade(501, ORDER_ID, 0.01, 90000.0, 1.8, fee_product_id=99)], "unknown currency"),
        (
            [
                ndax_trade(501, ORDER_ID, 0.01, 90000.0, 1.8),
                ndax_trade(501, ORDER_ID, 0.02, 1.0, 1),
            ],
            "reported twice",
        ),
    ],
    ids=["lagging trades", "fee in an unknown product", "one trade id twice"],
)
async def test_trades_that_do_not_add_up_are_not_trusted(
    ndax: CcxtExchange, m: aioresponses, trades: list[dict[str, Any]], message: str
) -> None:
    ndax._remember(COID, str(ORDER_ID))
    m.get(STATUS, payload=filled_order())
    m.get(TRADES, payload=trades)
    with pytest.raises(TransientExchangeError, match=message):
        await ndax.fetch_order(COID, SYMBOL)


# ----- reconciliation and health ----------------------------------------------------------


async def test_my_trades_name_their_orders_and_client_ids(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    trade = ndax_trade(501, ORDER_ID, 0.01, 90000.0, 1.8, client_order_id=COID, side="Sell")
    m.get(ndax_account_url("GetTradesHistory", InstrumentId=1), payload=[trade])
    [mine] = await ndax.fetch_my_trades(SYMBOL)
    assert (mine.exchange_order_id, mine.client_order_id, mine.side) == (
        str(ORDER_ID),
        COID,
        Side.SELL,
    )
    assert (mine.trade.trade_id, mine.trade.fee_currency) == ("501", "CAD")


async def test_no_positions_on_ndax_and_status_from_ping(
    ndax: CcxtExchange, m: aioresponses
) -> None:
    m.get(ndax_url("Ping"), payload={"msg": "PONG"})
    assert await ndax.fetch_positions() == []
    assert (await ndax.fetch_status()).ok
    assert not any("Position" in url for url in requested_urls(m))


# ----- building the client ----------------------------------------------------------------


async def test_make_private_exchange_replaces_the_api_url() -> None:
    base = "https://ndax-failover.example.test:8443/AP"
    async with closing(make_private_exchange("ndax", NDAX_CREDENTIALS, base_url=base)) as c:
        c.enableRateLimit = False
        c.timeout_on_exit = 0
        assert c.urls["api"] == {"public": base, "private": base}
        with aioresponses() as m:
            m.get(base + "/Ping", payload={"msg": "PONG"})
            assert (await CcxtExchange("n", c).fetch_status()).ok


async def test_credentials_stay_out_of_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with closing(make_private_exchange("ndax", NDAX_CREDENTIALS)) as c:
        c.enableRateLimit = False
        c.timeout_on_exit = 0
        with aioresponses() as m:
            mock_ndax_markets(m)
            accounts = ndax_url(
                "GetUserAccounts", omsId=1, UserId="4242", UserName=NDAX_CREDENTIALS["login"]
            )
            m.get(accounts, status=500, body="upstream error")  # its URL holds the login
            with pytest.raises(TransientExchangeError) as info:
                await CcxtExchange("ndax-main", c).fetch_balance()
        assert "GetUserAccounts" in str(info.value)
    texts = [str(info.value), str(info.value.__cause__), caplog.text]
    for secret in secrets_of(NDAX_CREDENTIALS):
        assert all(secret not in text for text in texts), secret
