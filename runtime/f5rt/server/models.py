"""GET /v1/models and /v1/models/{model_id}: OpenAI's model list, naming the one model served
(ServerContext.model_id) with its artifacts, engine and sample rate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from f5rt.server.context import ServerContext
from f5rt.server.responses import JsonBody, json_response
from f5rt.service.errors import ServiceError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


def _model(ctx: ServerContext) -> JsonBody:
    return {
        "id": ctx.model_id,
        "object": "model",
        "created": 0,
        "owned_by": "f5rt",
        "artifacts": ctx.engine.manifest.name,
        "engine": ctx.engine_label,
        "sample_rate": ctx.sample_rate,
    }


async def list_models(ctx: ServerContext, request: Request) -> Response:
    """OpenAI's model list; /v1/audio/speech accepts any `model` name (clients hard-code tts-1)."""
    return json_response({"object": "list", "data": [_model(ctx)]})


async def get_model(ctx: ServerContext, request: Request) -> Response:
    if request.path_params["model_id"] != ctx.model_id:
        raise ServiceError(
            404, "model_not_found", f"unknown model {request.path_params['model_id']!r}; see GET /v1/models"
        )
    return json_response(_model(ctx))
