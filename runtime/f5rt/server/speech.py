"""POST /v1/audio/speech: OpenAI's speech endpoint, streamed as pieces are synthesized.

What OpenAI clients send is accepted as they send it: `model` (any name), `input`, `voice` (a name,
OpenAI's {"id": ...} form, or null for the server's default), `response_format` (mp3 by default,
as OpenAI's; also opus, aac, flac, wav, pcm), `speed`, `stream_format` ("audio" or "sse"),
`instructions` (ignored: F5-TTS has no style prompt), and `seed` as an extension.

Everything that can be refused is checked before synthesis starts, the format's encoder included
(a missing one is a 400 naming the extra to install), and the first piece is awaited before the
response starts, so a failing request gets a real status code instead of a truncated 200.
"""

from __future__ import annotations

import time
import uuid
import weakref
from typing import TYPE_CHECKING

from f5rt import encoders
from f5rt.server.bodies import read_json
from f5rt.server.context import ServerContext
from f5rt.server.streaming import SpeechStream, await_future
from f5rt.service.errors import ServiceError, map_error
from f5rt.service.jobs import StreamJob
from f5rt.service.requests import SPEECH_SCHEMA, Fields, FieldSpec, build_options, check_fields, check_text

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

ROUTE = "/v1/audio/speech"
DEFAULT_FORMAT = "mp3"  # OpenAI's default
STREAM_FORMATS = ("audio", "sse")


def _response_format(fields: Fields, sample_rate: int) -> encoders.AudioFormat:
    fmt = fields.get("response_format", DEFAULT_FORMAT)
    if not isinstance(fmt, str) or fmt not in encoders.FORMATS:
        raise ServiceError(
            400, "unsupported_format", f"response_format must be one of {sorted(encoders.FORMATS)}, got {fmt!r}"
        )
    try:
        return encoders.require(fmt, sample_rate)
    except Exception as e:  # EncoderUnavailable: 400 format_unavailable, naming what to install
        raise map_error(e) from None


async def speech(ctx: ServerContext, request: Request) -> Response:
    from starlette.responses import StreamingResponse

    t0 = time.monotonic()
    limits = ctx.limits
    body = await read_json(request, limits)
    voice_field = body.get("voice")
    if isinstance(voice_field, dict):  # OpenAI's custom-voice form {"id": "..."}
        voice_obj = check_fields(voice_field, {"id": FieldSpec("str", required=True)})
        body = {**body, "voice": voice_obj["id"]}
    fields = check_fields(body, SPEECH_SCHEMA)
    text_field, voice_id_field = fields["input"], fields.get("voice")
    assert isinstance(text_field, str) and (voice_id_field is None or isinstance(voice_id_field, str))
    text = check_text(text_field, "input", limits.max_text_chars)
    fmt = _response_format(fields, ctx.sample_rate)
    stream_format = fields.get("stream_format", "audio")
    if stream_format not in STREAM_FORMATS:
        raise ServiceError(400, "invalid_value", f"stream_format must be 'audio' or 'sse', got {stream_format!r}")
    options = build_options(ctx.defaults, {k: fields[k] for k in ("speed", "seed") if k in fields}, limits)
    ctx.check_ready()
    voice_id, voice = await ctx.resolve_voice(voice_id_field)
    slot = ctx.acquire()
    request_id = uuid.uuid4().hex
    job: StreamJob | None = None
    try:
        job = ctx.batcher.open_stream(text, voice, options, limits.first_chunk_chars or None)
        first = await await_future(job.next_piece(), request, limits.request_timeout_s)
        encoder = encoders.open_encoder(fmt.name, ctx.sample_rate)
    except BaseException as e:
        if job is not None:
            job.close()
        slot.release()
        if isinstance(e, Exception):
            raise map_error(e) from None
        raise
    ctx.metrics.ttfa.observe(time.monotonic() - t0, route=ROUTE)

    def done(seconds: float, wall_s: float) -> None:
        ctx.observe_audio(ROUTE, seconds, wall_s)

    stream = SpeechStream(
        job, first, encoder, stream_format == "sse", text, ctx.sample_rate, limits.request_timeout_s,
        request_id, done, t0,
    )  # fmt: skip
    gen = stream.body(slot.release)
    for release in (encoder.close, job.close, slot.release):  # a response never iterated still frees its slot
        weakref.finalize(gen, release)
    headers = {"X-Request-Id": request_id, "X-Voice-Id": voice_id, "X-Seed": str(options.seed)}
    if stream_format == "sse":
        headers["Cache-Control"] = "no-cache"
        return StreamingResponse(gen, media_type="text/event-stream", headers=headers)
    headers["X-Sample-Rate"] = str(ctx.sample_rate)
    return StreamingResponse(gen, media_type=fmt.media_type, headers=headers)
