"""Every ccxt error class, through our translation, the retry policy and a real circuit breaker.

The classes are found by walking `ccxt.base.errors`, so a class a new ccxt version adds is
covered without touching this file; its expected outcome follows from where it sits in ccxt's
hierarchy:

- `NetworkError` (timeouts, rate limits, DDoS protection, maintenance, bad nonce) and
  `BadResponse` (an unparseable answer): temporary. Retried `max_retries` times, every attempt
  counted by the breaker, which opens once its threshold is reached.
- `ExchangeError` and everything else: permanent. Raised at once after one attempt and never
  counted as a transient failure; who must act decides our class (operator, refused order, ...).
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta

import ccxt
import pytest
from ccxt.base import errors as ccxt_errors

from bots.errors import (
    ExchangeError,
    OperatorActionRequired,
    OrderNotFound,
    OrderRejected,
    RequestRefused,
    TransientExchangeError,
)
from bots.exchanges.ccxt_errors import translate_ccxt_error
from bots.retry import RetriesExhausted, RetryPolicy, is_transient
from coordinator.config.models import CircuitBreakerSettings
from coordinator.safety.breaker import GLOBAL, BreakerBoard, BreakerState

EXCHANGE = "kraken"
MAX_RETRIES = 3
THRESHOLD = 3  # reached on the third of the four attempts
SETTINGS = CircuitBreakerSettings(
    failure_threshold=THRESHOLD, monitoring_window=60, recovery_timeout=30, half_open_max_calls=1
)

CCXT_ERRORS: list[type[Exception]] = sorted(
    (
        cls
        for cls in vars(ccxt_errors).values()
        if inspect.isclass(cls) and issubclass(cls, Exception) and issubclass(cls, ccxt.BaseError)
    ),
    key=lambda cls: cls.__name__,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """The retry policy's wait moves the breaker's clock; nothing waits for real."""
        self.now += timedelta(seconds=seconds)


def expected_error(cls: type[Exception]) -> tuple[type[ExchangeError], str | None]:
    """Our class for a ccxt class (and an `OrderRejected`'s code), by who must act."""
    if issubclass(cls, ccxt.DDoSProtection | ccxt.RateLimitExceeded | ccxt.OnMaintenance):
        return RequestRefused, None  # refused before processing: the one resendable kind
    if issubclass(cls, ccxt.NetworkError | ccxt.BadResponse):
        return TransientExchangeError, None
    if issubclass(cls, ccxt.AuthenticationError):  # PermissionDenied, AccountSuspended, ...
        return OperatorActionRequired, None
    if issubclass(cls, ccxt.OrderNotFound):
        return OrderNotFound, None
    if issubclass(cls, ccxt.InsufficientFunds):
        return OrderRejected, "insufficient_funds"
    if issubclass(cls, ccxt.InvalidOrder):
        return OrderRejected, "invalid_order"
    return ExchangeError, None


def test_the_walk_finds_the_classes_the_field_notes_name() -> None:
    names = {cls.__name__ for cls in CCXT_ERRORS}
    assert {
        "BaseError",
        "NetworkError",
        "DDoSProtection",
        "RateLimitExceeded",
        "RequestTimeout",
        "InvalidNonce",
        "ExchangeNotAvailable",
        "OnMaintenance",
        "ExchangeError",
        "AuthenticationError",
        "PermissionDenied",
        "AccountSuspended",
        "InsufficientFunds",
        "InvalidOrder",
        "OrderNotFound",
        "BadRequest",
        "BadSymbol",
    } <= names


@pytest.mark.parametrize("ccxt_error", CCXT_ERRORS, ids=lambda cls: cls.__name__)
async def test_every_ccxt_error_is_retried_only_when_temporary(
    ccxt_error: type[Exception],
) -> None:
    clock = FakeClock()
    board = BreakerBoard(SETTINGS, clock, [EXCHANGE], global_settings=SETTINGS.for_global())
    policy = RetryPolicy(
        MAX_RETRIES, initial_delay=0.5, max_delay=10, sleep=clock.sleep, random=lambda: 0.5
    )
    raised: list[Exception] = []
    states: list[BreakerState] = []

    async def send() -> None:
        try:
            raised.append(ccxt_error(f"boom {len(raised) + 1}"))
            raise raised[-1]
        except ccxt.BaseError as exc:  # what an adapter does at its boundary
            raise translate_ccxt_error(exc, EXCHANGE) from exc

    def on_failure(exc: BaseException, attempt: int) -> None:
        board.after_send(EXCHANGE, "transient" if is_transient(exc) else "permanent")
        states.append(board.breaker(EXCHANGE).state)

    with pytest.raises(ExchangeError) as caught:
        await policy.run(send, on_failure=on_failure, what=f"{EXCHANGE} create_order")

    ours, code = expected_error(ccxt_error)
    failure: BaseException = caught.value
    exchange = board.breaker(EXCHANGE).snapshot()
    global_ = board.breaker(GLOBAL).snapshot()
    if issubclass(ours, TransientExchangeError):
        attempts = MAX_RETRIES + 1
        assert isinstance(failure, RetriesExhausted)
        assert failure.attempts == attempts
        assert failure.last_exc.__cause__ is raised[-1]
        failure = failure.last_exc
        assert states == [
            BreakerState.OPEN if n >= THRESHOLD else BreakerState.CLOSED
            for n in range(1, attempts + 1)
        ]
        assert exchange["failures_in_window"] == global_["failures_in_window"] == attempts
        assert global_["state"] == BreakerState.CLOSED  # its threshold is twice as high
        assert clock.now - datetime(2025, 1, 6, 9, 0, tzinfo=UTC) == timedelta(seconds=3.5)
    else:
        assert failure.__cause__ is raised[-1]
        assert states == [BreakerState.CLOSED]
        assert (exchange["failures_in_window"], exchange["calls_in_window"]) == (0, 1)
        assert global_["failures_in_window"] == 0
        assert exchange["state"] == global_["state"] == BreakerState.CLOSED
    assert len(raised) == len(states)  # one breaker record per attempt
    assert type(failure) is ours
    assert str(failure) == f"{EXCHANGE}: {ccxt_error.__name__}: boom {len(raised)}"
    if code is not None:
        assert isinstance(failure, OrderRejected)
        assert failure.code == code
