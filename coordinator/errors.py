"""Errors the coordinator raises to its callers (the control plane turns them into responses).

Each carries an HTTP status and a stable code, so the API layer has one mapping and the CLI can
print the same message.
"""

from __future__ import annotations


class CoordinatorError(Exception):
    status = 500
    code = "internal_error"
    # Each problem, when there are several to list (an invalid config: file, path, reason).
    errors: list[dict[str, str]] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(CoordinatorError):
    status = 400
    code = "bad_request"


class Unauthorized(CoordinatorError):
    status = 401
    code = "unauthorized"


class Forbidden(CoordinatorError):
    status = 403
    code = "forbidden"


class NotFound(CoordinatorError):
    status = 404
    code = "not_found"


class UnknownBot(NotFound):
    code = "unknown_bot"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no bot named {name!r}; configured bots: {', '.join(known) or 'none'}")


class Conflict(CoordinatorError):
    status = 409
    code = "conflict"


class UnresolvedOrders(Conflict):
    """A bot's orders from a previous run could not be settled with its exchange."""

    code = "unresolved_orders"


class WrongState(Conflict):
    code = "wrong_state"


class ShuttingDown(CoordinatorError):
    status = 503
    code = "shutting_down"


class ExchangeUnavailable(CoordinatorError):
    """An exchange we need right now did not answer (or refused our credentials)."""

    status = 503
    code = "exchange_unavailable"


class NotDurable(CoordinatorError):
    """The action took effect in this process, but the journal could not record it (a full or
    failing disk): it will not survive a restart."""

    status = 503
    code = "not_durable"
