"""GET /api/health and GET /metrics: what load balancers and Prometheus poll.

Health is 200 once the batcher's warm-up has finished, 503 before (and after a failed warm-up, with
its error); it is never keyed. /metrics is the Prometheus text of f5rt.metrics, keyed only with
--metrics-auth (f5rt.server.auth).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from f5rt.metrics import CONTENT_TYPE
from f5rt.server.context import ServerContext
from f5rt.server.responses import JsonBody, json_response

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


async def health(ctx: ServerContext, request: Request) -> Response:
    batcher = ctx.batcher
    body: JsonBody = {
        "status": "ok" if batcher.ready else ("error" if batcher.warmup_error else "warming_up"),
        "ready": batcher.ready,
        "engine": ctx.engine_label,
        "sample_rate": ctx.sample_rate,
        "queue_depth": batcher.queue_depth,
        "inflight": batcher.inflight,
    }
    if batcher.warmup_error:
        body["error"] = batcher.warmup_error
    return json_response(body, status=200 if batcher.ready else 503)


async def metrics_endpoint(ctx: ServerContext, request: Request) -> Response:
    from starlette.responses import Response

    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)
