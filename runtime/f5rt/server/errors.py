"""Errors as HTTP answers: one JSON shape, {"error": {"code", "message"}}, for every refusal.

The refusal itself is transport-neutral (f5rt.service.errors: ServiceError carries status, code and
message; map_error turns any exception into one); this module only renders it, and routes the web
framework's own errors (404, 405, crashes) into the same shape.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from f5rt.metrics import Metrics
from f5rt.service.errors import ServiceError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

log = logging.getLogger("f5rt.server")


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(err: ServiceError) -> JSONResponse:
    from starlette.responses import JSONResponse

    return JSONResponse(error_body(err.code, err.message), status_code=err.status, headers=err.headers)


def install_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every error path of the app answers the JSON shape: ours, routing's 404/405, and crashes."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def on_service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        if exc.status in (413, 503):
            metrics.rejected.inc(reason=exc.code)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ServiceError(exc.status_code, code, str(exc.detail), dict(exc.headers or {})))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        return error_response(ServiceError(400, "invalid_request", str(exc)))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return error_response(ServiceError(500, "internal", f"internal error: {type(exc).__name__}"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_crash)
