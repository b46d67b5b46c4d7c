"""One retry policy for every exchange call: capped exponential backoff with jitter.

`RetryPolicy.run(operation)` awaits `operation()`; when it fails with an error that
`should_retry` accepts (by default `is_transient`: a `TransientExchangeError`), it waits
`delay(attempt)` and tries again, up to `max_retries` retries. Anything else is raised at once.
When the retries run out, `RetriesExhausted` is raised from the last error.

- `on_failure(exc, attempt)` hears every failed attempt, the permanent one included, so the
  caller can feed its circuit breaker (`BreakerBoard.after_send(exchange, "transient" |
  "permanent")`). The policy itself knows nothing of breakers.
- `asyncio.CancelledError`, and any other `BaseException` that is not an `Exception`, is never
  caught: a cancelled task stops at once, during an attempt or during the wait.
- The wait goes through the injected `sleep` (`asyncio.sleep` by default) and the jitter through
  the injected `random`, so tests neither wait nor depend on chance.
- `RetriesExhausted` is an `ExchangeError` but not a `TransientExchangeError`: a policy wrapped
  around another one does not multiply the retries.

Do not wrap a send whose outcome is unknown (a timeout on `create_order`) in a plain retry: the
order may exist. Look it up by client order id inside `operation` before sending again.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bots.errors import ExchangeError, TransientExchangeError

log = logging.getLogger(__name__)

T = TypeVar("T")

ShouldRetry = Callable[[BaseException], bool]
Sleep = Callable[[float], Awaitable[None]]
Random = Callable[[], float]
OnFailure = Callable[[BaseException, int], None]


def is_transient(exc: BaseException) -> bool:
    """Temporary: retrying later may succeed (timeouts, 5xx, rate limits, maintenance)."""
    return isinstance(exc, TransientExchangeError)


class RetriesExhausted(ExchangeError):
    """A transient error outlasted every retry; raised `from` the last error."""

    def __init__(self, what: str, attempts: int, last_exc: BaseException) -> None:
        subject = what or "operation"
        retries = attempts - 1
        super().__init__(
            f"{subject}: still failing after {attempts} attempt(s) ({retries} "
            f"{'retry' if retries == 1 else 'retries'}); last error: "
            f"{type(last_exc).__name__}: {last_exc}"
        )
        self.what = what
        self.attempts = attempts
        self.last_exc = last_exc


class RetrySettingsLike(Protocol):
    """The `retry` section of recovery-settings.json (`coordinator.config.models.RetrySettings`)."""

    @property
    def max_retries(self) -> int: ...

    @property
    def initial_delay_seconds(self) -> float: ...

    @property
    def max_delay_seconds(self) -> float: ...

    @property
    def jitter(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to `max_retries` retries (so `max_retries + 1` attempts) of errors `should_retry`
    accepts. The wait before retry n is `initial_delay * multiplier ** (n - 1)`, capped at
    `max_delay`, then moved by up to +/- `jitter` of itself."""

    max_retries: int
    initial_delay: float
    max_delay: float
    multiplier: float = 2.0
    jitter: float = 0.2
    should_retry: ShouldRetry = is_transient
    sleep: Sleep = asyncio.sleep
    random: Random = _random.random

    def __post_init__(self) -> None:
        # `not (x >= y)` also refuses NaN.
        problems = [
            (self.max_retries >= 0, f"max_retries must be at least 0, not {self.max_retries}"),
            (self.initial_delay >= 0, f"initial_delay must be >= 0, not {self.initial_delay}"),
            (
                self.max_delay >= self.initial_delay,
                f"max_delay ({self.max_delay}) must be at least "
                f"initial_delay ({self.initial_delay})",
            ),
            (self.multiplier >= 1, f"multiplier must be at least 1, not {self.multiplier}"),
            (0 <= self.jitter <= 1, f"jitter must be between 0 and 1, not {self.jitter}"),
        ]
        for ok, message in problems:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_settings(
        cls,
        settings: RetrySettingsLike,
        *,
        should_retry: ShouldRetry = is_transient,
        sleep: Sleep = asyncio.sleep,
        random: Random = _random.random,
    ) -> RetryPolicy:
        """The policy of recovery-settings.json's `retry` section (multiplier 2)."""
        return cls(
            max_retries=settings.max_retries,
            initial_delay=float(settings.initial_delay_seconds),
            max_delay=float(settings.max_delay_seconds),
            jitter=float(settings.jitter),
            should_retry=should_retry,
            sleep=sleep,
            random=random,
        )

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1 = the first attempt): never
        negative, never above `max_delay * (1 + jitter)`."""
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, not {attempt}")
        try:
            base = self.initial_delay * self.multiplier ** (attempt - 1)
        except OverflowError:
            base = self.max_delay
        base = min(base, self.max_delay)
        spread = self.jitter * (2.0 * self.random() - 1.0)  # in [-jitter, +jitter)
        return min(max(0.0, base * (1.0 + spread)), self.max_delay * (1.0 + self.jitter))

    async def run(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        on_failure: OnFailure | None = None,
        what: str = "",
    ) -> T:
        """`await operation()`, retrying what `should_retry` accepts; see the module docstring."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await operation()
            except Exception as exc:  # never BaseException: CancelledError must pass
                if on_failure is not None:
                    on_failure(exc, attempt)
                if not self.should_retry(exc):
                    raise
                if attempt > self.max_retries:
                    raise RetriesExhausted(what, attempt, exc) from exc
                wait = self.delay(attempt)
                log.warning(
                    "%s failed (attempt %d of %d): %s: %s; retrying in %.3fs",
                    what or "operation",
                    attempt,
                    self.max_attempts,
                    type(exc).__name__,
                    exc,
                    wait,
                )
            await self.sleep(wait)  # outside the except block: a cancel here carries no context
