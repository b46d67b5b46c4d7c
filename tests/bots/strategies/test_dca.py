from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bots.models import MarketSnapshot, OrderIntent, OrderType, Side
from bots.strategies.base import TickContext
from bots.strategies.dca import DcaStrategy
from bots.strategies.params import DcaParams
from bots.strategies.registry import STRATEGIES

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make(quote_amount: str = "50", interval: float = 60) -> DcaStrategy:
    return DcaStrategy(
        DcaParams(quote_amount=D(quote_amount), interval_seconds=interval), "BTC/AUD"
    )


def ctx(now: datetime, aud: str | None = "1000", ask: str = "100.00") -> TickContext:
    balances = {"AUD": D(aud)} if aud is not None else {}
    market = MarketSnapshot("BTC/AUD", D(ask), D(ask) - D("0.1"), D(ask), now)
    return TickContext(market, now, D(0), balances, (), ())


def test_first_tick_buys_quote_amount_at_the_ask() -> None:
    decisions = make("50").on_tick(ctx(T0, ask="30000"))
    assert decisions == [
        OrderIntent("BTC/AUD", Side.BUY, OrderType.MARKET, D("0.00166666"), None, "dca")
    ]


def test_dca_buys_once_per_interval() -> None:
    dca = make(interval=60)
    bought = [
        bool(dca.on_tick(ctx(T0 + timedelta(seconds=s))))
        for s in (0, 1, 30, 59.9, 60, 61, 119, 120)
    ]
    assert bought == [True, False, False, False, True, False, False, True]


def test_short_balance_skips_and_buys_when_funds_arrive() -> None:
    dca = make("50")
    assert dca.on_tick(ctx(T0, aud="49.99")) == []
    assert dca.on_tick(ctx(T0, aud=None)) == []  # missing quote asset counts as zero
    assert dca.state() == {"last_buy_at": None}
    assert len(dca.on_tick(ctx(T0 + timedelta(seconds=1), aud="50"))) == 1


def test_amount_that_rounds_to_zero_is_skipped() -> None:
    dca = make("0.00000001")
    assert dca.on_tick(ctx(T0, ask="65000")) == []
    assert dca.state() == {"last_buy_at": None}


def test_state_round_trips_through_json_and_keeps_the_interval() -> None:
    dca = make(interval=60)
    dca.on_tick(ctx(T0))
    saved = json.loads(json.dumps(dca.state()))
    assert saved == {"last_buy_at": T0.isoformat()}
    restored = make(interval=60)
    restored.restore(saved)
    assert restored.on_tick(ctx(T0 + timedelta(seconds=30))) == []
    assert restored.on_tick(ctx(T0 + timedelta(seconds=60))) != []


def test_naive_saved_time_is_taken_as_utc() -> None:
    dca = make(interval=60)
    dca.restore({"last_buy_at": "2026-01-01T00:00:00"})
    assert dca.on_tick(ctx(T0 + timedelta(seconds=30))) == []
    assert dca.on_tick(ctx(T0 + timedelta(seconds=60))) != []


@pytest.mark.parametrize(
    "state",
    [{}, {"last_buy_at": None}, {"last_buy_at": "yesterday"}, {"last_buy_at": 12}, {"x": 1}],
)
def test_bad_state_starts_fresh_instead_of_crashing(state: dict[str, Any]) -> None:
    dca = make()
    dca.on_tick(ctx(T0))
    dca.restore(state)
    assert dca.state() == {"last_buy_at": None}
    assert dca.on_tick(ctx(T0)) != []


def test_registry_builds_it_from_params_and_symbol() -> None:
    spec = STRATEGIES["dca"]
    params = spec.params_model.model_validate({"quote_amount": "25", "interval_seconds": 3600})
    strategy = spec.build(params, "ETH/AUD")
    assert isinstance(strategy, DcaStrategy)
    assert strategy.name == "dca"
    assert strategy.quote == "AUD"


def test_symbol_without_a_quote_is_refused() -> None:
    with pytest.raises(ValueError):
        DcaStrategy(DcaParams(quote_amount=D(1), interval_seconds=1), "BTCAUD")
