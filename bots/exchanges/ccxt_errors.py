"""Translate ccxt exceptions into ours, so no ccxt class escapes an adapter or a feed.

The split follows who must act (see `bots.errors`):

- `ccxt.NetworkError` (RequestTimeout, DDoSProtection, RateLimitExceeded, ExchangeNotAvailable,
  OnMaintenance, InvalidNonce) and `ccxt.BadResponse` (the venue sent something unparseable)
  -> `TransientExchangeError`; of those, rate limits and maintenance (the venue refused to
  process the request) -> `RequestRefused`, the only transient failure after which an order may
  be sent again. Note that ccxt maps HTTP 400/403/404 to ExchangeNotAvailable, so
  those are transient too; the circuit breaker, not this module, stops endless retries.
- `ccxt.AuthenticationError` (PermissionDenied, AccountSuspended, ...) -> `OperatorActionRequired`.
- `ccxt.OrderNotFound` -> `OrderNotFound`; `ccxt.InsufficientFunds` and `ccxt.InvalidOrder`
  -> `OrderRejected` (for the order adapter: a refusal made on purpose, do not retry).
- any other `ccxt.BaseError` -> `ExchangeError`.

Callers raise the result `from` the ccxt exception so the original stays in the traceback.
"""

from __future__ import annotations

from bots.errors import (
    ExchangeError,
    OperatorActionRequired,
    OrderNotFound,
    OrderRejected,
    RequestRefused,
    TransientExchangeError,
)
from bots.exchanges.ccxt_import import ccxt_module


def translate_ccxt_error(exc: BaseException, exchange_id: str) -> ExchangeError:
    """Return our error for a ccxt exception; the message names the exchange and ccxt's class."""
    ccxt = ccxt_module()  # loaded already: `exc` came from it

    message = f"{exchange_id}: {type(exc).__name__}: {exc}"
    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded | ccxt.OnMaintenance):
        return RequestRefused(message)  # refused before processing: safe to send again
    if isinstance(exc, ccxt.NetworkError | ccxt.BadResponse):
        return TransientExchangeError(message)
    if isinstance(exc, ccxt.AuthenticationError):
        return OperatorActionRequired(message)
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderNotFound(message)
    if isinstance(exc, ccxt.InsufficientFunds):
        return OrderRejected(message, code="insufficient_funds")
    if isinstance(exc, ccxt.InvalidOrder):
        return OrderRejected(message, code="invalid_order")
    return ExchangeError(message)
