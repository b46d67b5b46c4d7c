"""CcxtExchange on kraken: the real ccxt 4.5.90 code against kraken's paths, via aioresponses."""

from __future__ import annotations

import decimal
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
from bots.exchanges.base import ExchangeAdapter
from bots.exchanges.ccxt_adapter import CcxtExchange, make_private_exchange
from bots.models import Balance, ExchangeOrderStatus, OrderRequest, OrderType, Side
from tests.bots.exchanges.ccxt_fixtures import (
    KRAKEN_ASSETS,
    KRAKEN_CREDENTIALS,
    KRAKEN_PAIRS,
    KRAKEN_PRIVATE,
    KRAKEN_PUBLIC,
    OPENTM,
    closing,
    form_bodies,
    kraken_add_order,
    kraken_balance,
    kraken_cl_ord_id,
    kraken_client,
    kraken_error,
    kraken_ok,
    kraken_order,
    kraken_trade,
    mock_kraken_markets,
    requested_urls,
    requests_to,
    secrets_of,
)

FIXED = datetime(2026, 1, 1, tzinfo=UTC)
SYMBOL = "BTC/AUD"
COID = 1_882_000_000_000_000_001  # 19 digits, and not a float: float(COID) != COID
TXID = "OQCLML-BW3P3-BUCMWZ"
ADD_ORDER = KRAKEN_PRIVATE + "AddOrder"
QUERY_ORDERS = KRAKEN_PRIVATE + "QueryOrders"
QUERY_TRADES = KRAKEN_PRIVATE + "QueryTrades"
OPEN_ORDERS = KRAKEN_PRIVATE + "OpenOrders"
CLOSED_ORDERS = KRAKEN_PRIVATE + "ClosedOrders"
CANCEL_ORDER = KRAKEN_PRIVATE + "CancelOrder"
BALANCE = KRAKEN_PRIVATE + "BalanceEx"

FAILURES: dict[str, dict[str, Any]] = {
    "timeout": {"exception": TimeoutError()},  # asyncio.TimeoutError
    "http 500": {"status": 500, "body": "Internal Server Error"},
    "http 503": {"status": 503, "body": "<html><h1>503 Service Unavailable</h1></html>"},
    "http 429": {"status": 429, "body": "Too Many Requests"},
    "html body": {"status": 200, "body": "<html>down for maintenance</html>"},
    "truncated json": {
        "status": 200,
        "body": '{"error":[],"result":{"OQCLML',
        "content_type": "application/json",
    },
    "rate limit message": {"payload": kraken_error("EAPI:Rate limit exceeded")},
    "cancel-only mode": {"payload": kraken_error("EService:Market in cancel_only mode")},
}


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    async with closing(kraken_client()) as c:
        yield c


@pytest.fixture
def m() -> Iterator[aioresponses]:
    with aioresponses() as mocked:
        mock_kraken_markets(mocked)
        yield mocked


@pytest.fixture
def kraken(client: Any) -> CcxtExchange:
    return CcxtExchange("kraken-main", client, clock=lambda: FIXED)


def limit_buy(amount: str = "0.01", price: str = "100000.0") -> OrderRequest:
    return OrderRequest(COID, SYMBOL, Side.BUY, OrderType.LIMIT, Decimal(amount), Decimal(price))


def market_buy(amount: str = "0.01") -> OrderRequest:
    return OrderRequest(COID, SYMBOL, Side.BUY, OrderType.MARKET, Decimal(amount))


def query(order: dict[str, Any], txid: str = TXID) -> dict[str, Any]:
    return kraken_ok({txid: order})


# ----- the protocol, markets, balance -----------------------------------------------------


async def test_is_an_exchange_adapter_and_leaves_the_client_open(kraken: CcxtExchange) -> None:
    assert isinstance(kraken, ExchangeAdapter)
    await kraken.on_market(None)  # type: ignore[arg-type]
    await kraken.close()
    assert not kraken.client.closed_by_user


async def test_markets_and_balance(kraken: CcxtExchange, m: aioresponses) -> None:
    m.post(BALANCE, payload=kraken_balance(XXBT=("1.5", "0.1"), ZAUD=("25000.0000", "1000.0")))
    await kraken.load_markets()
    balances = await kraken.fetch_balance()
    assert balances == {
        "BTC": Balance("BTC", Decimal("1.4"), Decimal("0.1")),
        "AUD": Balance("AUD", Decimal("24000"), Decimal("1000")),
    }
    assert requested_urls(m) == [
        f"GET {KRAKEN_PUBLIC}Assets",
        f"GET {KRAKEN_PUBLIC}AssetPairs",
        f"POST {BALANCE}",
    ]


# ----- orders -----------------------------------------------------------------------------


async def test_market_buy_fills_with_its_trades(kraken: CcxtExchange, m: aioresponses) -> None:
    m.post(ADD_ORDER, payload=kraken_add_order(TXID))
    closed = kraken_order(
        ordertype="market",
        status="closed",
        vol_exec="0.01000000",
        client_order_id=COID,
        trades=["TCVBPE-1", "TCVBPE-2"],
    )
    m.post(QUERY_ORDERS, payload=query(closed))
    trades = {
        "TCVBPE-1": kraken_trade(TXID, "0.00400000", "101000.5", "1.61600", time=OPENTM + 1),
        "TCVBPE-2": kraken_trade(TXID, "0.00600000", "101001.0", "2.42402", time=OPENTM + 2),
    }
    m.post(QUERY_TRADES, payload=kraken_ok(trades))

    snap = await kraken.create_order(market_buy())

    assert (snap.client_order_id, snap.exchange_order_id) == (COID, TXID)
    assert (snap.status, snap.filled, snap.amount, snap.price) == (
        ExchangeOrderStatus.CLOSED,
        Decimal("0.01"),
        Decimal("0.01"),
        None,
    )
    assert [(t.trade_id, t.amount, t.price, t.fee, t.fee_currency) for t in snap.trades] == [
        ("TCVBPE-1", Decimal("0.004"), Decimal("101000.5"), Decimal("1.616"), "AUD"),
        ("TCVBPE-2", Decimal("0.006"), Decimal("101001.0"), Decimal("2.42402"), "AUD"),
    ]
    assert snap.trades[0].timestamp == datetime.fromtimestamp(OPENTM + 1, UTC)
    sent = form_bodies(m, ADD_ORDER)
    assert sent == [
        {
            "pair": "XBTAUD",
            "type": "buy",
            "ordertype": "market",
            "volume": "0.01",
            "cl_ord_id": kraken_cl_ord_id(COID),
        }
    ]
    assert len(sent[0]["cl_ord_id"]) <= 18  # kraken's limit for free-text client ids
    assert form_bodies(m, QUERY_ORDERS) == [{"trades": "True", "txid": TXID}]
    assert form_bodies(m, QUERY_TRADES) == [{"txid": "TCVBPE-1,TCVBPE-2"}]


async def test_limit_order_rests_then_is_fetched_filled(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    m.post(ADD_ORDER, payload=kraken_add_order(TXID, "buy 0.01000000 XBTAUD @ limit 100000.0"))
    m.post(QUERY_ORDERS, payload=query(kraken_order(client_order_id=COID)))
    resting = await kraken.create_order(limit_buy())
    assert resting.status is ExchangeOrderStatus.OPEN
    assert (resting.filled, resting.price, resting.trades) == (Decimal(0), Decimal(100000), ())
    assert form_bodies(m, ADD_ORDER)[0]["price"] == "100000"
    assert requests_to(m, "POST", QUERY_TRADES) == []  # nothing filled: no trades to ask for

    filled = kraken_order(
        status="closed", vol_exec="0.01000000", client_order_id=COID, trades=["TFILL-1"]
    )
    m.post(QUERY_ORDERS, payload=query(filled))
    m.post(
        QUERY_TRADES, payload=kraken_ok({"TFILL-1": kraken_trade(TXID, "0.01", "100000.0", "2.5")})
    )
    snap = await kraken.fetch_order(COID, SYMBOL)
    assert snap.status is ExchangeOrderStatus.CLOSED
    assert [(t.trade_id, t.amount, t.fee) for t in snap.trades] == [
        ("TFILL-1", Decimal("0.01"), Decimal("2.5"))
    ]
    # the exchange id was remembered: no search by client id
    assert requests_to(m, "POST", OPEN_ORDERS) == []
    assert [b["txid"] for b in form_bodies(m, QUERY_ORDERS)] == [TXID, TXID]


async def test_the_callers_decimal_context_is_left_alone(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    """ccxt's decimal_to_precision sets ROUND_HALF_UP and traps Underflow in the context it
    runs in: that must not become the gateway's context."""
    m.post(ADD_ORDER, payload=kraken_add_order(TXID))
    m.post(QUERY_ORDERS, payload=query(kraken_order(client_order_id=COID)))
    with decimal.localcontext(decimal.Context()) as context:  # a known start, whatever ran before
        before = (context.rounding, context.traps[decimal.Underflow], context.prec)
        await kraken.create_order(limit_buy())
        assert decimal.getcontext() is context
        assert (context.rounding, context.traps[decimal.Underflow], context.prec) == before


async def test_partial_fill_reports_filled_below_amount(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    kraken._remember(COID, TXID)
    partial = kraken_order(vol_exec="0.00400000", client_order_id=COID, trades=["TPART-1"])
    m.post(QUERY_ORDERS, payload=query(partial))
    m.post(
        QUERY_TRADES, payload=kraken_ok({"TPART-1": kraken_trade(TXID, "0.004", "100000.0", "1")})
    )
    snap = await kraken.fetch_order(COID, SYMBOL)
    assert snap.status is ExchangeOrderStatus.OPEN
    assert (snap.filled, snap.remaining) == (Decimal("0.004"), Decimal("0.006"))
    assert sum(t.amount for t in snap.trades) == snap.filled


async def test_cancel_returns_the_cancelled_snapshot(kraken: CcxtExchange, m: aioresponses) -> None:
    kraken._remember(COID, TXID)
    m.post(CANCEL_ORDER, payload=kraken_ok({"count": 1}))
    cancelled = kraken_order(
        status="canceled",
        vol_exec="0.00400000",
        client_order_id=COID,
        trades=["TPART-1"],
        reason="User requested",
    )
    m.post(QUERY_ORDERS, payload=query(cancelled))
    m.post(
        QUERY_TRADES, payload=kraken_ok({"TPART-1": kraken_trade(TXID, "0.004", "100000.0", "1")})
    )
    snap = await kraken.cancel_order(COID, SYMBOL)
    assert snap.status is ExchangeOrderStatus.CANCELED
    assert (snap.filled, snap.reason, len(snap.trades)) == (Decimal("0.004"), "User requested", 1)
    assert form_bodies(m, CANCEL_ORDER) == [{"txid": TXID}]


async def test_cancelling_a_filled_order_returns_it_as_filled(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    kraken._remember(COID, TXID)
    m.post(CANCEL_ORDER, payload=kraken_error("EOrder:Unknown order"))
    filled = kraken_order(status="closed", vol_exec="0.01", client_order_id=COID, trades=["T1"])
    m.post(QUERY_ORDERS, payload=query(filled))
    m.post(QUERY_TRADES, payload=kraken_ok({"T1": kraken_trade(TXID, "0.01", "100000.0", "2.5")}))
    snap = await kraken.cancel_order(COID, SYMBOL)
    assert snap.status is ExchangeOrderStatus.CLOSED
    assert snap.filled == Decimal("0.01")


async def test_a_refused_cancel_of_an_open_order_raises(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    kraken._remember(COID, TXID)
    m.post(CANCEL_ORDER, payload=kraken_error("EOrder:Unknown order"))
    m.post(QUERY_ORDERS, payload=query(kraken_order(client_order_id=COID)))
    with pytest.raises(ExchangeError):
        await kraken.cancel_order(COID, SYMBOL)


async def test_after_a_restart_the_order_is_found_by_client_order_id(
    client: Any, m: aioresponses
) -> None:
    fresh = CcxtExchange("kraken-main", client, clock=lambda: FIXED)  # never saw the create
    m.post(OPEN_ORDERS, payload=kraken_ok({"open": {}}))
    closed = kraken_order(status="closed", vol_exec="0.01", client_order_id=COID, trades=["T1"])
    other = kraken_order(status="closed", vol_exec="0.01", client_order_id=COID + 1)
    m.post(CLOSED_ORDERS, payload=kraken_ok({"closed": {"OTHER-1": other, TXID: closed}}))
    m.post(QUERY_ORDERS, payload=query(closed))
    m.post(QUERY_TRADES, payload=kraken_ok({"T1": kraken_trade(TXID, "0.01", "100000.0", "2.5")}))

    snap = await fresh.fetch_order(COID, SYMBOL)

    assert (snap.exchange_order_id, snap.status) == (TXID, ExchangeOrderStatus.CLOSED)
    assert [t.trade_id for t in snap.trades] == ["T1"]
    wanted = kraken_cl_ord_id(COID)
    assert form_bodies(m, OPEN_ORDERS) == [{"cl_ord_id": wanted}]
    assert form_bodies(m, CLOSED_ORDERS) == [{"cl_ord_id": wanted}]


async def test_after_a_restart_an_open_order_is_found_and_cancelled(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    m.post(OPEN_ORDERS, payload=kraken_ok({"open": {TXID: kraken_order(client_order_id=COID)}}))
    m.post(CANCEL_ORDER, payload=kraken_ok({"count": 1}))
    gone = kraken_order(status="canceled", client_order_id=COID, reason="User requested")
    m.post(QUERY_ORDERS, payload=query(gone))
    snap = await kraken.cancel_order(COID, SYMBOL)
    assert snap.status is ExchangeOrderStatus.CANCELED
    assert requests_to(m, "POST", CLOSED_ORDERS) == []
    assert form_bodies(m, CANCEL_ORDER) == [{"txid": TXID}]


async def test_unknown_client_order_id_is_order_not_found(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    m.post(OPEN_ORDERS, payload=kraken_ok({"open": {}}), repeat=True)
    m.post(CLOSED_ORDERS, payload=kraken_ok({"closed": {}, "count": 0}), repeat=True)
    with pytest.raises(OrderNotFound, match=str(COID)):
        await kraken.fetch_order(COID, SYMBOL)
    with pytest.raises(OrderNotFound):
        await kraken.cancel_order(COID, SYMBOL)
    assert requests_to(m, "POST", CANCEL_ORDER) == []


async def test_fetch_open_orders_lists_ours_with_trades_and_others_as_zero(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    ours = kraken_order(vol_exec="0.004", client_order_id=COID, trades=["TPART-1"])
    manual = kraken_order(side="sell", price="120000.0")
    m.post(OPEN_ORDERS, payload=kraken_ok({"open": {TXID: ours, "OMANUAL-1": manual}}))
    m.post(
        QUERY_TRADES, payload=kraken_ok({"TPART-1": kraken_trade(TXID, "0.004", "100000.0", "1")})
    )
    orders = await kraken.fetch_open_orders(SYMBOL)
    assert [(o.client_order_id, o.exchange_order_id, o.side) for o in orders] == [
        (COID, TXID, Side.BUY),
        (0, "OMANUAL-1", Side.SELL),
    ]
    assert [t.trade_id for t in orders[0].trades] == ["TPART-1"]
    assert form_bodies(m, OPEN_ORDERS) == [{"trades": "True"}]


async def test_cancel_all_cancels_the_symbols_orders_one_by_one(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    first = kraken_order(client_order_id=COID)
    second = kraken_order(client_order_id=COID + 1)
    m.post(OPEN_ORDERS, payload=kraken_ok({"open": {TXID: first, "OSECOND-1": second}}))
    m.post(CANCEL_ORDER, payload=kraken_ok({"count": 1}), repeat=True)
    m.post(QUERY_ORDERS, payload=query(kraken_order(status="canceled", client_order_id=COID)))
    gone = kraken_order(status="canceled", client_order_id=COID + 1)
    m.post(QUERY_ORDERS, payload=query(gone, "OSECOND-1"))
    done = await kraken.cancel_all(SYMBOL)
    assert [(o.client_order_id, o.status) for o in done] == [
        (COID, ExchangeOrderStatus.CANCELED),
        (COID + 1, ExchangeOrderStatus.CANCELED),
    ]
    assert form_bodies(m, CANCEL_ORDER) == [{"txid": TXID}, {"txid": "OSECOND-1"}]
    assert requests_to(m, "POST", KRAKEN_PRIVATE + "CancelAll") == []  # would hit every market


# ----- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
async def test_create_order_failures_are_transient_and_never_resent(
    kraken: CcxtExchange, m: aioresponses, failure: dict[str, Any]
) -> None:
    m.post(ADD_ORDER, **failure)
    with pytest.raises(TransientExchangeError, match="kraken") as info:
        await kraken.create_order(market_buy())
    assert isinstance(info.value.__cause__, ccxt.BaseError)  # chained, and not a ccxt class
    assert len(requests_to(m, "POST", ADD_ORDER)) == 1
    assert requests_to(m, "POST", QUERY_ORDERS) == []


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
async def test_fetch_order_failures_are_transient_never_not_found(
    kraken: CcxtExchange, m: aioresponses, failure: dict[str, Any]
) -> None:
    kraken._remember(COID, TXID)
    m.post(QUERY_ORDERS, **failure)
    with pytest.raises(TransientExchangeError):
        await kraken.fetch_order(COID, SYMBOL)


@pytest.mark.parametrize(
    "failure", [FAILURES["html body"], FAILURES["truncated json"]], ids=["html", "truncated"]
)
async def test_a_garbled_lookup_is_transient_not_order_not_found(
    kraken: CcxtExchange, m: aioresponses, failure: dict[str, Any]
) -> None:
    m.post(OPEN_ORDERS, **failure)
    with pytest.raises(TransientExchangeError, match="not JSON"):
        await kraken.fetch_order(COID, SYMBOL)
    assert requests_to(m, "POST", CLOSED_ORDERS) == []


async def test_a_truncated_balance_is_transient_not_empty(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    m.post(BALANCE, **FAILURES["truncated json"])
    with pytest.raises(TransientExchangeError):
        await kraken.fetch_balance()


async def test_insufficient_funds_is_a_refusal(kraken: CcxtExchange, m: aioresponses) -> None:
    m.post(ADD_ORDER, payload=kraken_error("EOrder:Insufficient funds"))
    with pytest.raises(OrderRejected) as info:
        await kraken.create_order(market_buy())
    assert info.value.code == "insufficient_funds"


@pytest.mark.parametrize(
    "failure",
    [
        {"payload": kraken_error("EAPI:Invalid key")},
        {"payload": kraken_error("EAPI:Invalid signature")},
        {"payload": kraken_error("EGeneral:Permission denied")},
        {"status": 401, "body": "Unauthorized"},
    ],
    ids=["invalid key", "invalid signature", "permission denied", "http 401"],
)
async def test_bad_credentials_need_an_operator(
    kraken: CcxtExchange, m: aioresponses, failure: dict[str, Any]
) -> None:
    m.post(BALANCE, **failure)
    with pytest.raises(OperatorActionRequired, match="kraken"):
        await kraken.fetch_balance()


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"status": "pending_cancel_or_so"}, "unknown status"),
        ({"status": None}, "unknown status"),
        ({"vol_exec": None}, "no filled"),
        ({"vol_exec": "0.02"}, "filled 0.02"),
        ({"cl_ord_id": kraken_cl_ord_id(COID + 7)}, "client id"),
    ],
    ids=["unknown status", "no status", "no fill", "overfilled", "another client id"],
)
async def test_a_malformed_order_is_not_trusted(
    kraken: CcxtExchange, m: aioresponses, change: dict[str, Any], detail: str
) -> None:
    kraken._remember(COID, TXID)
    order = {**kraken_order(client_order_id=COID), **change}
    m.post(QUERY_ORDERS, payload=query(order))
    with pytest.raises(TransientExchangeError, match=f"malformed order from kraken: .*{detail}"):
        await kraken.fetch_order(COID, SYMBOL)


async def test_a_finished_order_whose_trades_lag_is_not_reported_finished(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    kraken._remember(COID, TXID)
    closed = kraken_order(status="closed", vol_exec="0.01", client_order_id=COID, trades=["T1"])
    m.post(QUERY_ORDERS, payload=query(closed))
    m.post(QUERY_TRADES, payload=kraken_ok({"T1": kraken_trade(TXID, "0.004", "100000.0", "1")}))
    with pytest.raises(TransientExchangeError, match=r"trades add up to 0\.004"):
        await kraken.fetch_order(COID, SYMBOL)


async def test_an_unreadable_state_after_the_create_still_reports_the_order(
    kraken: CcxtExchange, m: aioresponses
) -> None:
    m.post(ADD_ORDER, payload=kraken_add_order(TXID))
    m.post(QUERY_ORDERS, status=503, body="busy")
    snap = await kraken.create_order(market_buy())
    assert (snap.exchange_order_id, snap.status, snap.filled) == (
        TXID,
        ExchangeOrderStatus.OPEN,
        Decimal(0),
    )
    m.post(QUERY_ORDERS, payload=query(kraken_order(status="canceled", client_order_id=COID)))
    assert (await kraken.fetch_order(COID, SYMBOL)).status is ExchangeOrderStatus.CANCELED


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (market_buy("0.000000001"), "invalid_order"),
        (OrderRequest(COID, "ETH/AUD", Side.BUY, OrderType.MARKET, Decimal(1)), "bad_symbol"),
        (OrderRequest(0, SYMBOL, Side.BUY, OrderType.MARKET, Decimal(1)), "invalid_order"),
    ],
    ids=["rounds to zero", "unlisted symbol", "client id zero"],
)
async def test_orders_the_venue_cannot_take_are_refused_before_sending(
    kraken: CcxtExchange, m: aioresponses, request_: OrderRequest, code: str
) -> None:
    with pytest.raises(OrderRejected) as info:
        await kraken.create_order(request_)
    assert info.value.code == code
    assert requests_to(m, "POST", ADD_ORDER) == []


# ----- reconciliation and health ----------------------------------------------------------


async def test_my_trades_name_their_orders(kraken: CcxtExchange, m: aioresponses) -> None:
    trade = {**kraken_trade(TXID, "0.01", "100000.0", "2.5"), "trade_id": 1, "maker": False}
    m.post(KRAKEN_PRIVATE + "TradesHistory", payload=kraken_ok({"trades": {"T1": trade}}))
    [mine] = await kraken.fetch_my_trades(SYMBOL, since=datetime(2026, 1, 1, tzinfo=UTC))
    assert (mine.exchange_order_id, mine.side, mine.trade.trade_id) == (TXID, Side.BUY, "T1")
    # One page (fewer than kraken's 50 trades a page): the history was read to its start.
    assert form_bodies(m, KRAKEN_PRIVATE + "TradesHistory") == [{"start": "1767225600", "ofs": "0"}]
    assert kraken.trades_complete


async def test_positions_status_and_ticker(kraken: CcxtExchange, m: aioresponses) -> None:
    position = {"pair": "XBTAUD", "positions": "1", "type": "buy", "vol": "0.02", "net": "-1.5"}
    m.post(KRAKEN_PRIVATE + "OpenPositions", payload=kraken_ok([position]))
    m.get(KRAKEN_PUBLIC + "SystemStatus", payload=kraken_ok({"status": "online"}))
    m.get(
        KRAKEN_PUBLIC + "Ticker?pair=XBTAUD",
        payload=kraken_ok(
            {"XBTAUD": {"a": ["101", "1", "1"], "b": ["99", "1", "1"], "c": ["100", "1"]}}
        ),
    )
    [pos] = await kraken.fetch_positions()
    assert (pos.symbol, pos.side, pos.amount, pos.unrealized_pnl) == (
        SYMBOL,
        "long",
        Decimal("0.02"),
        Decimal("-1.5"),
    )
    assert (await kraken.fetch_status()).ok
    ticker = await kraken.fetch_ticker(SYMBOL)
    assert (ticker.last, ticker.bid, ticker.ask, ticker.timestamp) == (
        Decimal(100),
        Decimal(99),
        Decimal(101),
        FIXED,
    )


# ----- building the client ----------------------------------------------------------------


async def test_make_private_exchange_replaces_the_api_url() -> None:
    base = "https://kraken-failover.example.test"
    async with closing(make_private_exchange("kraken", KRAKEN_CREDENTIALS, base_url=base)) as c:
        assert c.enableRateLimit is True
        assert c.apiKey == KRAKEN_CREDENTIALS["apiKey"]
        c.enableRateLimit = False
        c.timeout_on_exit = 0
        with aioresponses() as m:
            m.get(base + "/0/public/Assets", payload=KRAKEN_ASSETS)
            m.get(base + "/0/public/AssetPairs", payload=KRAKEN_PAIRS)
            m.post(base + "/0/private/BalanceEx", payload=kraken_balance(ZAUD=("5", "0")))
            balances = await CcxtExchange("k", c).fetch_balance()
        assert balances["AUD"].free == Decimal(5)
        assert all("api.kraken.com" not in url for url in requested_urls(m))
        assert c.urls["api"]["zendesk"].startswith("https://kraken.zendesk.com")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"credentials": {"apikey": "s3cret-value"}}, "unknown credential fields"),
        ({"credentials": {}, "base_url": "http://api.kraken.com"}, "https"),
        ({"credentials": {}, "exchange_id": "no-such-venue"}, "unknown ccxt exchange"),
    ],
)
def test_make_private_exchange_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    arguments = {"exchange_id": "kraken", **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        make_private_exchange(**arguments)
    assert "s3cret-value" not in str(info.value)  # names, never values


async def test_credentials_stay_out_of_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with closing(make_private_exchange("kraken", KRAKEN_CREDENTIALS)) as c:
        c.enableRateLimit = False
        c.timeout_on_exit = 0
        kraken = CcxtExchange("kraken-main", c)
        with aioresponses() as m:
            mock_kraken_markets(m)
            m.post(BALANCE, payload=kraken_balance(ZAUD=("5", "0")))
            m.post(BALANCE, status=500, body=f"echo {KRAKEN_CREDENTIALS['apiKey']}")
            await kraken.fetch_balance()
            with pytest.raises(TransientExchangeError) as info:
                await kraken.fetch_balance()
        assert requests_to(m, "POST", BALANCE)[0].kwargs["headers"]["API-Key"]  # it was sent
    texts = [str(info.value), str(info.value.__cause__), caplog.text]
    for secret in secrets_of(KRAKEN_CREDENTIALS):
        assert all(secret not in text for text in texts)
