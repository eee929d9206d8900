"""Errors as HTTP answers: one JSON shape, {"error": {"code", "message"}}, for every refusal.

`map_error` reads the status off the exception itself (f5rt.errors: `http_status`, `code`,
`retry_after` on each class) instead of a chain of isinstance checks; the few standard exceptions
the synthesizer can raise (ValueError from option checks, TimeoutError) are the only ones named here.
"""

from __future__ import annotations

import logging
from typing import Any

from f5rt.errors import F5RTError

log = logging.getLogger("f5rt.server")


class ApiError(Exception):
    """A refusal with its HTTP status; rendered as {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# Standard exceptions the engine may raise for a caller's mistake or a wait, by base class.
_STANDARD = ((TimeoutError, 504, "timeout"), (ValueError, 400, "out_of_range"))


def map_error(e: BaseException) -> ApiError:
    """Synthesis-side exceptions as HTTP answers (user errors 4xx, capacity 503/504, bugs 500)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, F5RTError):
        return ApiError(e.http_status, e.code, str(e) or e.code, e.http_headers())
    for base, status, code in _STANDARD:
        if isinstance(e, base):
            return ApiError(status, code, str(e) or code)
    return ApiError(500, "internal", f"{type(e).__name__}: {e}")


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(err: ApiError) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(error_body(err.code, err.message), status_code=err.status, headers=err.headers)


def install_handlers(app: Any, metrics: Any) -> None:
    """Every error path of the app answers the JSON shape: ours, routing's 404/405, and crashes."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def on_api_error(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, ApiError)
        if exc.status in (413, 503):
            metrics.rejected.inc(reason=exc.code)
        return error_response(exc)

    async def on_http_error(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, str(exc.detail), dict(exc.headers or {})))

    async def on_validation_error(request: Any, exc: Exception) -> Any:
        return error_response(ApiError(400, "invalid_request", str(exc)))

    async def on_crash(request: Any, exc: Exception) -> Any:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return error_response(ApiError(500, "internal", f"internal error: {type(exc).__name__}"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_crash)
