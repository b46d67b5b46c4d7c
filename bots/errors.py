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


class RequestRefused(TransientExchangeError):
    """The venue refused to process the request at all (rate limit, maintenance): it may be
    sent again. Any other transient failure (a timeout, a 5xx, a lost connection) leaves the
    outcome unknown: an order may exist, so it is looked up, never simply sent again."""


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
