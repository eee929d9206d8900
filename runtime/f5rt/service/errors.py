"""One refusal type for every transport: `ServiceError` carries a status, a code and the message.

The status is HTTP's number because it is the most precise vocabulary the services share: the HTTP
server sends it as is, the Triton models turn it into INVALID_ARG (4xx), UNAVAILABLE (503/504) or
INTERNAL (the rest). `map_error` reads the status off the exception itself (f5rt.errors:
`http_status`, `code`, `retry_after` on each class) instead of a chain of isinstance checks; the few
standard exceptions the synthesizer can raise (ValueError from option checks, TimeoutError) are the
only ones named here.
"""

from __future__ import annotations

from f5rt.errors import F5RTError


class ServiceError(Exception):
    """A refusal with its status and machine-readable code; `message` is what the client is told."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def client_fault(self) -> bool:
        """4xx: the request's own fault; asking again unchanged cannot help."""
        return 400 <= self.status < 500

    @property
    def retryable(self) -> bool:
        """503 / 504: capacity or time, not the request; asking again later may work."""
        return self.status in (503, 504)


# Standard exceptions the engine may raise for a caller's mistake or a wait, by base class.
_STANDARD: tuple[tuple[type[BaseException], int, str], ...] = (
    (TimeoutError, 504, "timeout"),
    (ValueError, 400, "out_of_range"),
)


def map_error(e: BaseException) -> ServiceError:
    """Any exception from checking or synthesis as a ServiceError (user errors 4xx, capacity 503/504, bugs 500)."""
    if isinstance(e, ServiceError):
        return e
    if isinstance(e, F5RTError):
        return ServiceError(e.http_status, e.code, str(e) or e.code, e.http_headers())
    for base, status, code in _STANDARD:
        if isinstance(e, base):
            return ServiceError(status, code, str(e) or code)
    return ServiceError(500, "internal", f"{type(e).__name__}: {e}")


__all__ = ["ServiceError", "map_error"]
