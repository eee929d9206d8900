"""POST /api/tts: the chat reader's contract, JSON in, the whole utterance out as base64 WAV.

The request is synthesized whole (Batcher.submit) and answered once it is done; inference runs on
the batcher's worker thread, never here. OpenAI's streamed endpoint is f5rt.server.speech.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import TYPE_CHECKING

import numpy as np

from f5rt.audio import encode_audio
from f5rt.server.bodies import read_json
from f5rt.server.context import ServerContext
from f5rt.server.responses import json_response
from f5rt.server.streaming import await_future
from f5rt.service.errors import ServiceError, map_error
from f5rt.service.requests import parse_tts

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


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
    return json_response(
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
