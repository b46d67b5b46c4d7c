"""Errors raised on the order path, split by who must act.

`TransientExchangeError`: temporary; retrying may succeed, and each one feeds a circuit breaker.
`OrderRejected`: the venue refused this order on purpose (funds, size, symbol); do not retry.
`ExchangeUnavailable`-style permanent failures (bad credentials) need an operator.
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Base of every error an exchange adapter raises."""


class TransientExchangeError(ExchangeError):
    """Timeout, 5xx, rate limit, maintenance: may succeed if tried again later."""


class OrderRejected(ExchangeError):
    """The venue refused the order (insufficient funds, invalid size, unknown symbol)."""

    def __init__(self, reason: str, code: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class OrderNotFound(ExchangeError):
    """The venue does not know an order with that client order id."""


class OperatorActionRequired(ExchangeError):
    """Bad credentials, permissions, suspended account: a human must act."""
