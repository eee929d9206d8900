"""/api/voices: list the stored reference voices, store or replace one (multipart upload), delete one.

The VoiceStore (f5rt.voices) reads files and prepares audio, so every call to it runs off the event
loop (ServerContext.voices_call). A refused upload changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from f5rt.errors import AudioError, F5RTError, TextError
from f5rt.server.bodies import read_voice_upload
from f5rt.server.context import ServerContext
from f5rt.server.responses import JsonBody, json_response
from f5rt.service.errors import ServiceError
from f5rt.service.requests import check_voice_id

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


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
    return json_response({"voices": out, "default": default})


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
    return json_response(body, status=200 if existed else 201)


async def delete_voice(ctx: ServerContext, request: Request) -> Response:
    voice_id = check_voice_id(request.path_params["voice_id"])
    if voice_id not in await ctx.voices_call(ctx.voices.list):
        raise ServiceError(404, "voice_not_found", f"unknown voice {voice_id!r}")
    await ctx.voices_call(ctx.voices.remove, voice_id)
    return json_response({"voice_id": voice_id, "deleted": True})
