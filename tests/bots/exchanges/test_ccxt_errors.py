from __future__ import annotations

import ccxt
import pytest

from bots.errors import (
    ExchangeError,
    OperatorActionRequired,
    OrderNotFound,
    OrderRejected,
    RequestRefused,
    TransientExchangeError,
)
from bots.exchanges.ccxt_errors import translate_ccxt_error


@pytest.mark.parametrize(
    ("ccxt_error", "ours"),
    [
        (ccxt.RequestTimeout, TransientExchangeError),
        (ccxt.DDoSProtection, RequestRefused),
        (ccxt.RateLimitExceeded, RequestRefused),
        (ccxt.ExchangeNotAvailable, TransientExchangeError),
        (ccxt.OnMaintenance, RequestRefused),
        (ccxt.InvalidNonce, TransientExchangeError),
        (ccxt.NetworkError, TransientExchangeError),
        (ccxt.BadResponse, TransientExchangeError),
        (ccxt.AuthenticationError, OperatorActionRequired),
        (ccxt.PermissionDenied, OperatorActionRequired),
        (ccxt.AccountSuspended, OperatorActionRequired),
        (ccxt.OrderNotFound, OrderNotFound),
        (ccxt.InsufficientFunds, OrderRejected),
        (ccxt.InvalidOrder, OrderRejected),
        (ccxt.ExchangeError, ExchangeError),
        (ccxt.BadSymbol, ExchangeError),
        (ccxt.NotSupported, ExchangeError),
        (ccxt.BaseError, ExchangeError),
    ],
)
def test_ccxt_errors_map_to_ours_by_who_must_act(
    ccxt_error: type[Exception], ours: type[ExchangeError]
) -> None:
    translated = translate_ccxt_error(ccxt_error("boom"), "kraken")
    assert type(translated) is ours
    assert "kraken" in str(translated)
    assert ccxt_error.__name__ in str(translated)
    assert "boom" in str(translated)


def test_refusals_carry_a_code() -> None:
    funds = translate_ccxt_error(ccxt.InsufficientFunds("no money"), "ndax")
    invalid = translate_ccxt_error(ccxt.InvalidOrder("too small"), "ndax")
    assert isinstance(funds, OrderRejected)
    assert funds.code == "insufficient_funds"
    assert isinstance(invalid, OrderRejected)
    assert invalid.code == "invalid_order"


def test_translation_does_not_chain_by_itself() -> None:
    """The caller raises it `from` the ccxt error; translating alone must not raise or chain."""
    translated = translate_ccxt_error(ccxt.RequestTimeout("slow"), "kraken")
    assert translated.__cause__ is None


def test_non_ccxt_exceptions_become_plain_exchange_errors() -> None:
    translated = translate_ccxt_error(RuntimeError("odd"), "kraken")
    assert type(translated) is ExchangeError
    assert "kraken: RuntimeError: odd" in str(translated)
