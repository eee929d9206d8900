"""JSON answers of the non-streaming endpoints: a body (JsonBody) rendered with its status code.

Refusals have their own shape and renderer (f5rt.server.errors); streamed audio is f5rt.server.streaming's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.responses import Response

JsonBody = dict[str, object]


def json_response(body: JsonBody, status: int = 200) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status)
