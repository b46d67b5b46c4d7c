"""RetryPolicy: transient errors are retried with capped, jittered backoff; nothing else is.

Sleep and randomness are fakes: no test waits for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from bots.errors import (
    ExchangeError,
    OperatorActionRequired,
    OrderNotFound,
    OrderRejected,
    TransientExchangeError,
)
from bots.retry import RetriesExhausted, RetryPolicy, is_transient
from coordinator.config import load_config
from tests.coordinator.config.conftest import REPO_CONFIG_DIR

MIDDLE = 0.5  # a `random()` of 0.5 means no jitter at all


class FakeSleep:
    """Records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Flaky:
    """An operation that raises the given errors in turn, then returns `value`."""

    def __init__(self, *errors: BaseException, value: str = "ok") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def policy(
    max_retries: int = 3,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    random: Callable[[], float] = lambda: MIDDLE,
    **kwargs: Any,
) -> RetryPolicy:
    options: dict[str, Any] = {"initial_delay": 0.5, "max_delay": 10.0, **kwargs}
    return RetryPolicy(max_retries, sleep=sleep or FakeSleep(), random=random, **options)


def timeouts(n: int) -> Iterator[TransientExchangeError]:
    return (TransientExchangeError(f"kraken: RequestTimeout: slow #{i}") for i in range(1, n + 1))


# --- what is retried -----------------------------------------------------------------------------


async def test_a_transient_error_is_retried_until_the_retries_run_out() -> None:
    sleep = FakeSleep()
    operation = Flaky(*timeouts(10))

    with pytest.raises(RetriesExhausted) as caught:
        await policy(3, sleep=sleep).run(operation, what="kraken fetch_ticker")

    assert operation.calls == 4
    assert len(sleep.waits) == 3  # no wait after the last attempt
    exhausted = caught.value
    assert (exhausted.what, exhausted.attempts) == ("kraken fetch_ticker", 4)
    assert str(exhausted.last_exc) == "kraken: RequestTimeout: slow #4"
    assert exhausted.__cause__ is exhausted.last_exc
    assert str(exhausted) == (
        "kraken fetch_ticker: still failing after 4 attempt(s) (3 retries); "
        "last error: TransientExchangeError: kraken: RequestTimeout: slow #4"
    )


async def test_a_later_attempt_that_succeeds_returns_its_value() -> None:
    sleep = FakeSleep()
    operation = Flaky(*timeouts(2), value="ticker")

    assert await policy(3, sleep=sleep).run(operation) == "ticker"
    assert operation.calls == 3
    assert sleep.waits == [0.5, 1.0]


async def test_a_first_attempt_that_succeeds_does_not_wait() -> None:
    sleep = FakeSleep()
    calls: list[tuple[BaseException, int]] = []

    result = await policy(sleep=sleep).run(Flaky(), on_failure=lambda e, n: calls.append((e, n)))

    assert result == "ok"
    assert (sleep.waits, calls) == ([], [])


@pytest.mark.parametrize(
    "error",
    [
        OrderRejected("kraken: InsufficientFunds: no money", code="insufficient_funds"),
        OperatorActionRequired("kraken: AuthenticationError: bad key"),
        OrderNotFound("kraken: OrderNotFound: 42"),
        ExchangeError("kraken: ExchangeError: Unknown asset pair"),
        ValueError("a bug, not an exchange problem"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_permanent_error_is_raised_at_once_after_one_attempt(error: Exception) -> None:
    sleep = FakeSleep()
    operation = Flaky(error)
    failures: list[tuple[BaseException, int]] = []

    with pytest.raises(type(error)) as caught:
        await policy(sleep=sleep).run(operation, on_failure=lambda e, n: failures.append((e, n)))

    assert caught.value is error  # raised as it is, not wrapped
    assert operation.calls == 1
    assert sleep.waits == []
    assert failures == [(error, 1)]  # the caller may still count it as permanent


async def test_retries_exhausted_is_not_transient_so_nested_policies_do_not_multiply() -> None:
    inner_operation = Flaky(*timeouts(100))
    inner = policy(2)
    outer = policy(5)

    with pytest.raises(RetriesExhausted):
        await outer.run(lambda: inner.run(inner_operation))

    assert inner_operation.calls == 3
    assert not is_transient(RetriesExhausted("x", 3, TransientExchangeError("t")))
    assert isinstance(RetriesExhausted("x", 3, TransientExchangeError("t")), ExchangeError)


async def test_max_retries_zero_means_one_attempt() -> None:
    sleep = FakeSleep()
    operation = Flaky(*timeouts(3))

    with pytest.raises(RetriesExhausted) as caught:
        await policy(0, sleep=sleep).run(operation, what="ndax fetch_balance")

    assert operation.calls == 1
    assert caught.value.attempts == 1
    assert "after 1 attempt(s) (0 retries)" in str(caught.value)
    assert sleep.waits == []


async def test_a_custom_should_retry_decides_what_is_retried() -> None:
    operation = Flaky(OrderNotFound("not yet visible"), value="found")
    retry_not_found = policy(should_retry=lambda e: isinstance(e, OrderNotFound))

    assert await retry_not_found.run(operation) == "found"
    assert operation.calls == 2


# --- on_failure ----------------------------------------------------------------------------------


async def test_on_failure_hears_each_failed_attempt_with_its_number() -> None:
    errors = list(timeouts(3))
    failures: list[tuple[BaseException, int]] = []

    result = await policy(5).run(Flaky(*errors), on_failure=lambda e, n: failures.append((e, n)))

    assert result == "ok"
    assert failures == [(errors[0], 1), (errors[1], 2), (errors[2], 3)]


async def test_on_failure_hears_every_attempt_when_the_retries_run_out() -> None:
    failures: list[int] = []

    with pytest.raises(RetriesExhausted):
        await policy(2).run(Flaky(*timeouts(5)), on_failure=lambda e, n: failures.append(n))

    assert failures == [1, 2, 3]


# --- the delays ----------------------------------------------------------------------------------


def test_delays_grow_exponentially_up_to_the_cap_without_jitter() -> None:
    p = policy(initial_delay=0.5, max_delay=10.0, multiplier=2.0, jitter=0.2)
    assert [p.delay(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


async def test_run_waits_the_policy_delay_after_each_failed_attempt() -> None:
    sleep = FakeSleep()
    with pytest.raises(RetriesExhausted):
        await policy(6, sleep=sleep, multiplier=3.0).run(Flaky(*timeouts(10)))
    assert sleep.waits == [0.5, 1.5, 4.5, 10.0, 10.0, 10.0]


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.8), (0.25, 0.9), (0.75, 1.1), (1.0, 1.2)])
def test_jitter_moves_each_delay_by_at_most_its_fraction(draw: float, factor: float) -> None:
    p = policy(initial_delay=0.5, max_delay=10.0, jitter=0.2, random=lambda: draw)
    for attempt, base in [(1, 0.5), (3, 2.0), (6, 10.0), (50, 10.0)]:
        assert p.delay(attempt) == pytest.approx(base * factor)


@pytest.mark.parametrize("draw", [-5.0, -0.1, 0.0, 0.3, 0.999, 1.0, 7.0])
@pytest.mark.parametrize("jitter", [0.0, 0.2, 1.0])
def test_a_delay_is_never_negative_nor_above_the_jittered_cap(draw: float, jitter: float) -> None:
    p = policy(initial_delay=0.5, max_delay=10.0, jitter=jitter, random=lambda: draw)
    for attempt in (1, 2, 5, 6, 100, 10_000):  # 10_000 would overflow a float power
        assert 0.0 <= p.delay(attempt) <= 10.0 * (1 + jitter)


def test_delay_counts_attempts_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        policy().delay(0)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"initial_delay": -0.1}, "initial_delay"),
        ({"initial_delay": 5.0, "max_delay": 1.0}, "max_delay"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": float("nan")}, "jitter"),
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(options: dict[str, float], complaint: str) -> None:
    fields: dict[str, Any] = {"max_retries": 3, "initial_delay": 0.5, "max_delay": 10.0}
    fields.update(options)
    with pytest.raises(ValueError, match=complaint):
        RetryPolicy(**fields)


def test_from_settings_uses_the_retry_section_of_recovery_settings() -> None:
    settings = load_config(REPO_CONFIG_DIR).recovery.retry
    sleep = FakeSleep()

    p = RetryPolicy.from_settings(settings, sleep=sleep, random=lambda: MIDDLE)

    assert (p.max_retries, p.initial_delay, p.max_delay, p.jitter) == (3, 0.5, 10.0, 0.2)
    assert (p.multiplier, p.should_retry, p.sleep, p.max_attempts) == (2.0, is_transient, sleep, 4)


# --- cancellation --------------------------------------------------------------------------------


async def test_cancelled_error_raised_by_an_attempt_is_never_retried() -> None:
    operation = Flaky(asyncio.CancelledError(), value="never")
    failures: list[int] = []
    retry_everything = policy(should_retry=lambda e: True)

    with pytest.raises(asyncio.CancelledError):
        await retry_everything.run(operation, on_failure=lambda e, n: failures.append(n))

    assert operation.calls == 1
    assert failures == []


async def test_a_base_exception_that_is_not_an_exception_is_never_caught() -> None:
    class Halt(BaseException):
        pass

    operation = Flaky(Halt(), value="never")
    failures: list[int] = []

    with pytest.raises(Halt):
        await policy(should_retry=lambda e: True).run(
            operation, on_failure=lambda e, n: failures.append(n)
        )

    assert (operation.calls, failures) == (1, [])


async def test_cancelling_the_task_during_an_attempt_stops_at_once() -> None:
    started = asyncio.Event()
    calls = 0
    failures: list[int] = []

    async def hangs() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(policy().run(hangs, on_failure=lambda e, n: failures.append(n)))
    await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert (calls, failures) == (1, [])


async def test_cancelling_the_task_during_the_wait_stops_at_once() -> None:
    waiting = asyncio.Event()

    async def sleeps_forever(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    operation = Flaky(*timeouts(5))
    task = asyncio.create_task(policy(sleep=sleeps_forever).run(operation))
    await waiting.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert operation.calls == 1  # no attempt after the cancel


async def test_cancelled_error_raised_by_the_sleep_propagates() -> None:
    async def cancelled_sleep(seconds: float) -> None:
        raise asyncio.CancelledError

    operation = Flaky(*timeouts(5))
    with pytest.raises(asyncio.CancelledError):
        await policy(sleep=cancelled_sleep).run(operation)
    assert operation.calls == 1
