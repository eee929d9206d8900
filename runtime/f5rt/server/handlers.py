"""The non-streaming endpoints: /api/tts, voices, health, metrics and /v1/models.

Each handler is `async def handler(ctx: ServerContext, request)`; the app binds ctx. Inference runs
on the batcher's worker thread, never here.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import TYPE_CHECKING

import numpy as np

from f5rt.audio import encode_audio
from f5rt.errors import AudioError, F5RTError, TextError
from f5rt.metrics import CONTENT_TYPE
from f5rt.server.bodies import read_json, read_voice_upload
from f5rt.server.context import ServerContext
from f5rt.server.streaming import await_future
from f5rt.service.errors import ServiceError, map_error
from f5rt.service.requests import check_voice_id, parse_tts

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

JsonBody = dict[str, object]


def _json(body: JsonBody, status: int = 200) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status)


async def api_tts(ctx: ServerContext, request: Request) -> Response:
    """The chat reader's contract: JSON in, {"audio_base64": <wav>, ...} out (field names kept as they were)."""
    t0 = time.monotonic()
    req = parse_tts(await read_json(request, ctx.limits), ctx.defaults, ctx.limits)
    ctx.check_ready()
    voice_id, voice = await ctx.resolve_voice(req.voice_id)
    slot = ctx.acquire()
    try:
        fut = ctx.batcher.submit(req.text, voice, req.options)
        try:
            result = await await_future(fut, request, ctx.limits.request_timeout_s)
        except ServiceError:
            raise
        except Exception as e:
            raise map_error(e) from None
    finally:
        slot.release()
    audio = np.asarray(result.audio, dtype=np.float32).reshape(-1)
    wav = encode_audio(audio, ctx.sample_rate, "wav")
    ctx.metrics.ttfa.observe(time.monotonic() - t0, route="/api/tts")
    ctx.observe_audio("/api/tts", len(audio) / ctx.sample_rate, float(result.timings.get("total", 0.0)))
    return _json(
        {
            "request_id": uuid.uuid4().hex,
            "voice_id": voice_id,
            "engine": ctx.engine_label,
            "sample_rate": ctx.sample_rate,
            "audio_base64": base64.b64encode(wav).decode("ascii"),
            "waveform_len": int(len(audio)),
            "format": "wav",
            "seed": int(result.seed),
        }
    )


# ---- voices -------------------------------------------------------------------------------------


async def list_voices(ctx: ServerContext, request: Request) -> Response:
    ids = sorted(await ctx.voices_call(ctx.voices.list))
    out: list[JsonBody] = []
    for vid in ids:
        try:
            v = await ctx.voices_call(ctx.voices.get, vid)
            out.append({"voice_id": vid, "ref_text": v.ref_text, "duration_s": round(v.samples / ctx.sample_rate, 3)})
        except F5RTError as e:
            out.append({"voice_id": vid, "error": str(e)})
    default = ctx.default_voice if ctx.default_voice is not None else (ids[0] if ids else None)
    return _json({"voices": out, "default": default})


async def put_voice(ctx: ServerContext, request: Request) -> Response:
    """Store (201) or replace (200) a voice atomically; a refused upload changes nothing."""
    voice_id = check_voice_id(request.path_params["voice_id"])
    audio, text = await read_voice_upload(request, ctx.limits)
    existed = voice_id in await ctx.voices_call(ctx.voices.list)
    try:
        v = await ctx.voices_call(ctx.voices.add, voice_id, audio, text)
    except AudioError as e:
        raise ServiceError(422, "invalid_audio", str(e)) from None
    except (TextError, ValueError) as e:  # a transcript the voice store refuses is the uploader's to fix
        raise ServiceError(400, "invalid_voice", str(e)) from None
    body = {
        "voice_id": voice_id,
        "ref_text": v.ref_text,
        "duration_s": round(v.samples / ctx.sample_rate, 3),
        "sha256": v.sha256,
    }
    return _json(body, status=200 if existed else 201)


async def delete_voice(ctx: ServerContext, request: Request) -> Response:
    voice_id = check_voice_id(request.path_params["voice_id"])
    if voice_id not in await ctx.voices_call(ctx.voices.list):
        raise ServiceError(404, "voice_not_found", f"unknown voice {voice_id!r}")
    await ctx.voices_call(ctx.voices.remove, voice_id)
    return _json({"voice_id": voice_id, "deleted": True})


# ---- models, health, metrics --------------------------------------------------------------------


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
    return _json({"object": "list", "data": [_model(ctx)]})


async def get_model(ctx: ServerContext, request: Request) -> Response:
    if request.path_params["model_id"] != ctx.model_id:
        raise ServiceError(
            404, "model_not_found", f"unknown model {request.path_params['model_id']!r}; see GET /v1/models"
        )
    return _json(_model(ctx))


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
    return _json(body, status=200 if batcher.ready else 503)


async def metrics_endpoint(ctx: ServerContext, request: Request) -> Response:
    from starlette.responses import Response

    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)
