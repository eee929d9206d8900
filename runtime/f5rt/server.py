"""`f5rt serve`: the HTTP service. A chat reader's /api/tts, OpenAI's /v1/audio/speech, voices, metrics.

Endpoints:
    POST   /api/tts                 JSON -> {request_id, voice_id, engine, sample_rate, audio_base64, ...}
                                    (the contract of an existing live-stream chat reader: field names kept)
    POST   /v1/audio/speech         OpenAI-compatible; audio bytes streamed as chunks finish, or SSE events
    GET    /api/voices              the stored reference voices
    POST   /api/voices/{voice_id}   multipart: `audio` file + `text` transcript; stored atomically, replaces
    DELETE /api/voices/{voice_id}
    GET    /api/health              200 once warm-up finished, 503 before (and if it failed)
    GET    /metrics                 Prometheus text

Every request body is parsed by hand, strictly: the service faces the network, and a lenient parser
is where odd inputs (duplicate keys, NaN, lone surrogates, control characters) slip past checks.
Every refusal is a 4xx with {"error": {"code", "message"}}; nothing is written outside the voices
folder. Inference runs on the batcher's worker thread (f5rt.batching), never on the event loop.

fastapi / uvicorn / python-multipart are imported only by create_app() and serve() (the `serve`
extra), so `import f5rt` works without them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import re
import secrets
import struct
import time
import unicodedata
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from f5rt.audio import encode_audio
from f5rt.batching import Batcher, Overloaded, RequestTimeout, ShuttingDown
from f5rt.errors import AudioError, F5RTError, NoBucketError, TextError
from f5rt.limits import Limits
from f5rt.metrics import Metrics
from f5rt.voices import VOICE_ID

log = logging.getLogger("f5rt.server")

MAX_SEED = 2**63 - 1
# Characters a chat message may legitimately contain among the C0/C1 controls.
_ALLOWED_CONTROLS = frozenset("\n\r\t")


class ApiError(Exception):
    """A refusal with its HTTP status; rendered as {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# ---------------------------------------------------------------------------------------------
# Strict JSON and field checking
# ---------------------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ApiError(400, "duplicate_key", f"duplicate JSON key {key!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise ApiError(400, "non_finite_number", f"{name} is not a valid JSON number")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body: UTF-8 only, one JSON object, no duplicate keys, no NaN/Infinity."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "invalid_utf8", f"request body is not valid UTF-8 (byte {e.start})") from None
    if text.startswith("\ufeff"):
        raise ApiError(400, "invalid_json", "request body starts with a byte-order mark")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except ApiError:
        raise
    except RecursionError:
        raise ApiError(400, "invalid_json", "JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and int() refusing a huge number
        raise ApiError(400, "invalid_json", f"invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "not_an_object", f"JSON body must be an object, got {type(obj).__name__}")
    return obj


@dataclass(frozen=True)
class FieldSpec:
    """One accepted body field. kind: str | int | float | bool; nullable: JSON null means 'default'."""

    kind: str
    required: bool = False
    nullable: bool = False


def check_fields(body: dict[str, Any], schema: dict[str, FieldSpec]) -> dict[str, Any]:
    """Unknown fields, missing required fields and wrong JSON types are refused; returns present fields."""
    unknown = sorted(set(body) - set(schema))
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s) {unknown}; accepted: {sorted(schema)}")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        if name not in body:
            if spec.required:
                raise ApiError(400, "missing_field", f"field {name!r} is required")
            continue
        value = body[name]
        if value is None:
            if spec.required or not spec.nullable:
                raise ApiError(400, "invalid_type", f"field {name!r} may not be null")
            out[name] = None
            continue
        if not _is_kind(value, spec.kind):
            raise ApiError(400, "invalid_type", f"field {name!r} must be {spec.kind}, got {_json_type(value)}")
        if spec.kind == "float" and not math.isfinite(value):
            raise ApiError(400, "non_finite_number", f"field {name!r} must be a finite number")
        out[name] = float(value) if spec.kind == "float" else value
    return out


def _is_kind(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "bool"
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, int | float)
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return False
    raise AssertionError(kind)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "?")


def check_text(text: str, field: str, max_chars: int) -> str:
    """Refuse text that is empty, too long, or holds control characters or lone surrogates."""
    if len(text) > max_chars:
        raise ApiError(400, "text_too_long", f"{field!r} has {len(text)} characters; the limit is {max_chars}")
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat == "Cs":
            raise ApiError(400, "invalid_text", f"{field!r} holds a lone surrogate at index {i}")
        if cat == "Cc" and ch not in _ALLOWED_CONTROLS:
            raise ApiError(400, "invalid_text", f"{field!r} holds control character U+{ord(ch):04X} at index {i}")
    if not text.strip():
        raise ApiError(400, "invalid_text", f"{field!r} is empty")
    return text


def check_range(name: str, value: float, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    if not lo <= value <= hi:
        raise ApiError(400, "out_of_range", f"{name} must be within [{lo}, {hi}], got {value}")


def check_voice_id(voice_id: str) -> str:
    """Voice ids are plain names: they become a folder name, so nothing else may reach the filesystem."""
    if not isinstance(voice_id, str) or not VOICE_ID.fullmatch(voice_id):
        raise ApiError(400, "invalid_voice_id", "voice id must match ^[A-Za-z0-9_-]{1,64}$")
    return voice_id


# ---------------------------------------------------------------------------------------------
# Audio encoding
# ---------------------------------------------------------------------------------------------


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """A 44-byte PCM16 mono WAV header; data_bytes None = unknown length (streaming: 0xFFFFFFFF)."""
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", size)


MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}


# ---------------------------------------------------------------------------------------------
# Request schemas
# ---------------------------------------------------------------------------------------------

TTS_SCHEMA = {
    "text": FieldSpec("str", required=True),
    "voice_id": FieldSpec("str", nullable=True),
    "speed": FieldSpec("float"),
    "target_rms": FieldSpec("float"),
    "cross_fade_duration": FieldSpec("float"),
    "sway_sampling_coef": FieldSpec("float", nullable=True),  # null: plain uniform schedule
    "cfg_strength": FieldSpec("float"),
    "nfe_step": FieldSpec("int"),
    "fix_duration": FieldSpec("float", nullable=True),
    "remove_silence": FieldSpec("bool"),
    "seed": FieldSpec("int", nullable=True),  # null or -1: a random seed (returned in the response)
}

SPEECH_SCHEMA = {
    "model": FieldSpec("str"),
    "input": FieldSpec("str", required=True),
    "voice": FieldSpec("str", nullable=True),  # a string, or OpenAI's {"id": ...} object (handled first)
    "instructions": FieldSpec("str"),  # accepted for client compatibility; F5-TTS has no style prompt
    "response_format": FieldSpec("str"),
    "speed": FieldSpec("float"),
    "stream_format": FieldSpec("str"),
    "seed": FieldSpec("int", nullable=True),  # extension: reproducible output
}


def build_options(defaults: Any, fields: dict[str, Any], limits: Limits) -> Any:
    """SynthesisOptions from /api/tts field names over the server's defaults, checked against the limits."""
    options_cls = type(defaults)
    seed = fields.get("seed")
    if seed is None or seed == -1:
        seed = secrets.randbelow(2**31)  # chosen here, not in the synthesizer, so it can be reported
    elif not 0 <= seed <= MAX_SEED:
        raise ApiError(400, "out_of_range", f"seed must be -1 or within [0, {MAX_SEED}], got {seed}")
    speed = fields.get("speed", defaults.speed)
    nfe = fields.get("nfe_step", defaults.nfe)
    cfg = fields.get("cfg_strength", defaults.cfg)
    sway = fields.get("sway_sampling_coef", defaults.sway)
    target_rms = fields.get("target_rms", defaults.target_rms)
    cross_fade = fields.get("cross_fade_duration", defaults.cross_fade)
    fix_duration = fields.get("fix_duration", defaults.fix_duration)
    check_range("speed", speed, limits.speed_range)
    check_range("nfe_step", nfe, limits.nfe_range)
    check_range("cfg_strength", cfg, limits.cfg_range)
    if sway is not None:
        check_range("sway_sampling_coef", sway, limits.sway_range)
    check_range("target_rms", target_rms, limits.target_rms_range)
    check_range("cross_fade_duration", cross_fade, limits.cross_fade_range)
    if fix_duration is not None:
        check_range("fix_duration", fix_duration, (1e-3, limits.max_fix_duration_s))
    options = options_cls(
        nfe=nfe,
        cfg=cfg,
        sway=sway,
        speed=speed,
        target_rms=target_rms,
        cross_fade=cross_fade,
        fix_duration=fix_duration,
        remove_silence=fields.get("remove_silence", defaults.remove_silence),
        seed=seed,
        use_epss=defaults.use_epss,
    )
    try:
        options.validate()
    except ValueError as e:
        raise ApiError(400, "out_of_range", str(e)) from None
    return options


# ---------------------------------------------------------------------------------------------
# Body reading
# ---------------------------------------------------------------------------------------------


def _media_type(request: Any) -> tuple[str, dict[str, str]]:
    raw = request.headers.get("content-type", "")
    parts = [p.strip() for p in raw.split(";")]
    params = {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            params[k.strip().lower()] = v.strip().strip('"')
    return parts[0].lower(), params


async def read_body(request: Any, limit: int) -> bytes:
    """The whole body, refusing early (413) when it is larger than `limit` and 400 when cut short."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid_content_length", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"request body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, "body_too_large", f"request body exceeds the {limit}-byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "truncated_body", "the client closed the connection before the body was complete") from None
    body = b"".join(chunks)
    if declared is not None and len(body) != int(declared):
        raise ApiError(400, "truncated_body", f"body has {len(body)} bytes, Content-Length said {declared}")
    return body


async def read_json(request: Any, limits: Limits) -> dict[str, Any]:
    media, params = _media_type(request)
    if media != "application/json":
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be application/json, got {media or 'none'!r}")
    if params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", "only the utf-8 charset is accepted")
    return parse_json_object(await read_body(request, limits.max_body_bytes))


@dataclass
class FormPart:
    name: str
    filename: str | None
    data: bytes


def parse_multipart(raw: bytes, boundary: str, max_parts: int = 8) -> list[FormPart]:
    """A complete multipart/form-data body -> its parts, strictly.

    Starlette's form parser decodes undecodable field bytes as latin-1 and python-multipart drops a
    part that is cut short without a word; a voice upload must do neither, so the body (already in
    memory, bounded by max_upload_bytes) is parsed here with python-multipart's low-level parser.
    """
    try:
        from python_multipart.multipart import MultipartParser, parse_options_header
    except ImportError:  # python-multipart < 0.0.13
        from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

    try:
        delimiter = boundary.encode("ascii")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_multipart", "multipart boundary is not ASCII") from None
    if b"--" + delimiter + b"--" not in raw:  # the close delimiter cannot occur inside a part
        raise ApiError(400, "truncated_body", "multipart body is truncated (no closing boundary)")
    parts: list[dict[str, Any]] = []
    field, value = bytearray(), bytearray()

    def begin() -> None:
        parts.append({"headers": {}, "data": bytearray()})

    def header_end() -> None:
        parts[-1]["headers"][bytes(field).strip().lower()] = bytes(value).strip()
        field.clear()
        value.clear()

    callbacks = {
        "on_part_begin": begin,
        "on_header_field": lambda d, s, e: field.extend(d[s:e]),
        "on_header_value": lambda d, s, e: value.extend(d[s:e]),
        "on_header_end": header_end,
        "on_part_data": lambda d, s, e: parts[-1]["data"].extend(d[s:e]),
    }
    try:
        parser = MultipartParser(delimiter, callbacks)  # type: ignore[arg-type]
        parser.write(raw)
        parser.finalize()
    except Exception as e:  # python-multipart's parse errors
        raise ApiError(400, "invalid_multipart", f"invalid multipart body: {e}") from None
    if len(parts) > max_parts:
        raise ApiError(400, "invalid_multipart", f"too many form parts ({len(parts)} > {max_parts})")
    out = []
    for part in parts:
        kind, opts = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if kind != b"form-data" or b"name" not in opts:
            raise ApiError(400, "invalid_multipart", "every part needs 'Content-Disposition: form-data; name=...'")
        try:
            name = opts[b"name"].decode("utf-8")
            filename = opts[b"filename"].decode("utf-8") if b"filename" in opts else None
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_multipart", "a part name is not valid UTF-8") from None
        out.append(FormPart(name, filename, bytes(part["data"])))
    return out


# ---------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------

_ROUTE_LABELS = (
    (re.compile(r"^/api/tts$"), "/api/tts"),
    (re.compile(r"^/api/voices$"), "/api/voices"),
    (re.compile(r"^/api/voices/[^/]*$"), "/api/voices/{voice_id}"),
    (re.compile(r"^/api/health$"), "/api/health"),
    (re.compile(r"^/v1/audio/speech$"), "/v1/audio/speech"),
    (re.compile(r"^/metrics$"), "/metrics"),
)


def route_label(path: str) -> str:
    """A bounded label set: arbitrary 404 paths must not create new metric series."""
    return next((label for rx, label in _ROUTE_LABELS if rx.match(path)), "other")


class _MetricsMiddleware:
    """Counts every response by route and status and times it to its last byte (streams included)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        label = route_label(scope.get("path", ""))
        t0 = time.monotonic()
        state = {"status": 500, "started": False, "done": False}

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                state["done"] = True

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # Not started: an unhandled error (500). Started but unfinished: a stream cut off (499).
            status = state["status"] if state["done"] or not state["started"] else 499
            self.metrics.requests.inc(route=label, status=str(status))
            if status < 400:
                self.metrics.latency.observe(time.monotonic() - t0, route=label)


async def _await_future(fut: Future, request: Any, timeout: float) -> Any:
    """Wait for worker output without blocking the loop; cancel the work if the client goes away."""
    loop = asyncio.get_running_loop()
    afut = asyncio.wrap_future(fut)
    deadline = loop.time() + timeout
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ApiError(504, "timeout", f"request did not finish within {timeout:g} s")
            done, _ = await asyncio.wait({afut}, timeout=min(0.25, remaining))
            if done:
                return afut.result()
            if request is not None and await request.is_disconnected():
                raise ApiError(499, "client_closed", "client closed the connection")
    finally:
        if not afut.done():
            fut.cancel()  # still queued: the worker skips it; already running: the result is dropped


def map_error(e: BaseException) -> ApiError:
    """Synthesis-side exceptions as HTTP answers (user errors 4xx, capacity 503/504, bugs 500)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, Overloaded):
        return ApiError(503, "overloaded", str(e), {"Retry-After": str(e.retry_after)})
    if isinstance(e, ShuttingDown):
        return ApiError(503, "unavailable", str(e), {"Retry-After": "5"})
    if isinstance(e, RequestTimeout | TimeoutError):
        return ApiError(504, "timeout", str(e) or "request timed out")
    if isinstance(e, NoBucketError):
        return ApiError(422, "text_too_long", str(e))
    if isinstance(e, TextError):
        return ApiError(422, "invalid_text", str(e))
    if isinstance(e, AudioError):
        return ApiError(422, "invalid_audio", str(e))
    if isinstance(e, ValueError):
        return ApiError(400, "out_of_range", str(e))
    if isinstance(e, F5RTError):
        return ApiError(500, "engine_error", str(e))
    return ApiError(500, "internal", f"{type(e).__name__}: {e}")


def create_app(
    synth: Any,
    voices: Any,
    limits: Limits | None = None,
    *,
    default_voice: str | None = None,
    warmup: bool = True,
    metrics: Metrics | None = None,
    defaults: Any = None,
) -> Any:
    """The FastAPI app serving `synth` with the voices of `voices` (a VoiceStore).

    defaults: the SynthesisOptions a request's absent fields take (default: f5-tts' own defaults);
    /v1/audio/speech, which has no sampling fields, always uses them (with its speed and seed).

    The batcher starts (and warms the synthesizer up) in the app's lifespan; the app and its batcher
    are reachable as app.state.batcher / app.state.metrics for tests and embedding.
    """
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse

    limits = limits or Limits()
    metrics = metrics or Metrics()
    if defaults is None:
        from f5rt.synthesizer import SynthesisOptions

        defaults = SynthesisOptions()
    batcher = Batcher(synth, limits, metrics)
    sample_rate = int(synth.sample_rate)
    engine = f"f5rt-{synth.backend_name}"
    metrics.gauge("f5rt_queue_depth", "Requests and stream steps waiting for the worker.", lambda: batcher.queue_depth)
    metrics.gauge("f5rt_inflight_requests", "Requests admitted (queued or running).", lambda: batcher.inflight)
    metrics.gauge("f5rt_ready", "1 once warm-up has finished.", lambda: 1.0 if batcher.ready else 0.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        batcher.start(warmup=warmup)
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="f5rt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.limits = limits
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    def error_response(err: ApiError) -> Any:
        return JSONResponse(
            {"error": {"code": err.code, "message": err.message}}, status_code=err.status, headers=err.headers
        )

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

    # ---- helpers ---------------------------------------------------------------------------

    async def voices_call(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)  # VoiceStore reads files and prepares audio: off the loop

    async def resolve_voice(voice_id: str | None) -> tuple[str, Any]:
        ids = await voices_call(voices.list)
        if voice_id is None:
            voice_id = default_voice if default_voice is not None else (sorted(ids)[0] if ids else None)
            if voice_id is None:
                raise ApiError(404, "voice_not_found", "no voices are stored; upload one to /api/voices/{voice_id}")
        check_voice_id(voice_id)
        if voice_id not in ids:
            raise ApiError(404, "voice_not_found", f"unknown voice {voice_id!r}; see GET /api/voices")
        try:
            return voice_id, await voices_call(voices.get, voice_id)
        except F5RTError as e:
            raise ApiError(500, "voice_unusable", f"stored voice {voice_id!r} cannot be used: {e}") from None

    def check_ready() -> None:
        if batcher.warmup_error is not None:
            raise ApiError(503, "unavailable", f"warm-up failed: {batcher.warmup_error}", {"Retry-After": "30"})

    def acquire() -> Any:
        try:
            return batcher.acquire()
        except (Overloaded, ShuttingDown) as e:
            raise map_error(e) from None

    def observe_audio(route: str, seconds: float, compute_s: float) -> None:
        metrics.audio_seconds.inc(seconds, route=route)
        if seconds > 0:
            metrics.rtf.observe(compute_s / seconds, route=route)

    # ---- /api/tts --------------------------------------------------------------------------

    async def api_tts(request: Request) -> Any:
        t0 = time.monotonic()
        fields = check_fields(await read_json(request, limits), TTS_SCHEMA)
        text = check_text(fields["text"], "text", limits.max_text_chars)
        options = build_options(defaults, fields, limits)
        check_ready()
        voice_id, voice = await resolve_voice(fields.get("voice_id"))
        slot = acquire()
        try:
            fut = batcher.submit(text, voice, options)
            try:
                result = await _await_future(fut, request, limits.request_timeout_s)
            except ApiError:
                raise
            except Exception as e:
                raise map_error(e) from None
        finally:
            slot.release()
        audio = np.asarray(result.audio, dtype=np.float32).reshape(-1)
        wav = encode_audio(audio, sample_rate, "wav")
        metrics.ttfa.observe(time.monotonic() - t0, route="/api/tts")
        observe_audio("/api/tts", len(audio) / sample_rate, float(result.timings.get("total", 0.0)))
        return JSONResponse(
            {
                "request_id": uuid.uuid4().hex,
                "voice_id": voice_id,
                "engine": engine,
                "sample_rate": sample_rate,
                "audio_base64": base64.b64encode(wav).decode("ascii"),
                "waveform_len": int(len(audio)),
                "format": "wav",
                "seed": int(result.seed),
            }
        )

    # ---- /v1/audio/speech ------------------------------------------------------------------

    async def speech(request: Request) -> Any:
        t0 = time.monotonic()
        body = await read_json(request, limits)
        if isinstance(body.get("voice"), dict):  # OpenAI's custom-voice form {"id": "..."}
            voice_obj = check_fields(body["voice"], {"id": FieldSpec("str", required=True)})
            body = {**body, "voice": voice_obj["id"]}
        fields = check_fields(body, SPEECH_SCHEMA)
        text = check_text(fields["input"], "input", limits.max_text_chars)
        fmt = fields.get("response_format", "wav")
        if fmt not in MEDIA_TYPES:
            raise ApiError(
                400, "unsupported_format", f"response_format must be one of {sorted(MEDIA_TYPES)}, got {fmt!r}"
            )
        stream_format = fields.get("stream_format", "audio")
        if stream_format not in ("audio", "sse"):
            raise ApiError(400, "invalid_value", f"stream_format must be 'audio' or 'sse', got {stream_format!r}")
        opt_fields: dict[str, Any] = {k: fields[k] for k in ("speed", "seed") if k in fields}
        options = build_options(defaults, opt_fields, limits)
        check_ready()
        voice_id, voice = await resolve_voice(fields.get("voice"))
        slot = acquire()
        request_id = uuid.uuid4().hex
        job = batcher.open_stream(text, voice, options, limits.first_chunk_chars or None)
        try:
            first = await _await_future(job.next_piece(), request, limits.request_timeout_s)
        except Exception as e:
            job.close()
            slot.release()
            raise map_error(e) from None
        except BaseException:
            job.close()
            slot.release()
            raise
        ttfa = time.monotonic() - t0
        metrics.ttfa.observe(ttfa, route="/v1/audio/speech")

        async def pieces() -> AsyncIterator[np.ndarray]:
            piece = first
            while piece is not None:
                yield np.asarray(piece, dtype=np.float32).reshape(-1)
                piece = await _await_future(job.next_piece(), None, limits.request_timeout_s)

        async def audio_body() -> AsyncIterator[bytes]:
            samples = 0
            try:
                if fmt == "flac":  # FLAC's header needs the total length: it comes as one piece
                    collected = [p async for p in pieces()]
                    audio = np.concatenate(collected) if collected else np.zeros(0, np.float32)
                    samples = len(audio)
                    yield (
                        encode_sse(encode_audio(audio, sample_rate, "flac"))
                        if stream_format == "sse"
                        else encode_audio(audio, sample_rate, "flac")
                    )
                else:
                    if fmt == "wav":
                        header = wav_header(sample_rate, None)
                        yield encode_sse(header) if stream_format == "sse" else header
                    async for p in pieces():
                        samples += len(p)
                        pcm = encode_audio(p, sample_rate, "pcm")
                        yield encode_sse(pcm) if stream_format == "sse" else pcm
                if stream_format == "sse":
                    usage = {"input_tokens": len(text), "output_tokens": 0, "total_tokens": len(text)}
                    yield sse_event({"type": "speech.audio.done", "usage": usage})
                seconds = samples / sample_rate
                observe_audio("/v1/audio/speech", seconds, time.monotonic() - t0)
            except Exception as e:  # mid-stream failure: SSE can say so; raw audio can only stop
                err = map_error(e)
                log.warning("stream %s failed: %s", request_id, err.message)
                if stream_format != "sse":
                    raise
                yield sse_event({"type": "error", "error": {"code": err.code, "message": err.message}})
            finally:
                job.close()
                slot.release()

        gen = audio_body()
        weakref.finalize(gen, job.close)  # a response never iterated still frees its slot
        weakref.finalize(gen, slot.release)
        headers = {"X-Request-Id": request_id, "X-Voice-Id": voice_id, "X-Seed": str(options.seed)}
        if stream_format == "sse":
            headers["Cache-Control"] = "no-cache"
            return StreamingResponse(gen, media_type="text/event-stream", headers=headers)
        headers["X-Sample-Rate"] = str(sample_rate)
        return StreamingResponse(gen, media_type=MEDIA_TYPES[fmt], headers=headers)

    # ---- voices ----------------------------------------------------------------------------

    async def list_voices(request: Request) -> Any:
        ids = sorted(await voices_call(voices.list))
        out = []
        for vid in ids:
            try:
                v = await voices_call(voices.get, vid)
                out.append({"voice_id": vid, "ref_text": v.ref_text, "duration_s": round(v.samples / sample_rate, 3)})
            except F5RTError as e:
                out.append({"voice_id": vid, "error": str(e)})
        default = default_voice if default_voice is not None else (ids[0] if ids else None)
        return JSONResponse({"voices": out, "default": default})

    async def put_voice(request: Request) -> Any:
        voice_id = check_voice_id(request.path_params["voice_id"])
        audio, text = await read_voice_upload(request)
        existed = voice_id in await voices_call(voices.list)
        try:
            v = await voices_call(voices.add, voice_id, audio, text)
        except AudioError as e:
            raise ApiError(422, "invalid_audio", str(e)) from None
        except (TextError, ValueError) as e:
            raise ApiError(400, "invalid_voice", str(e)) from None
        return JSONResponse(
            {
                "voice_id": voice_id,
                "ref_text": v.ref_text,
                "duration_s": round(v.samples / sample_rate, 3),
                "sha256": v.sha256,
            },
            status_code=200 if existed else 201,
        )

    async def read_voice_upload(request: Request) -> tuple[bytes, str]:
        media, params = _media_type(request)
        if media != "multipart/form-data":
            raise ApiError(
                415, "unsupported_media_type", f"Content-Type must be multipart/form-data, got {media or 'none'!r}"
            )
        boundary = params.get("boundary", "")
        if not boundary:
            raise ApiError(400, "invalid_multipart", "multipart boundary missing from Content-Type")
        raw = await read_body(request, limits.max_upload_bytes)
        parts = parse_multipart(raw, boundary)
        names = [p.name for p in parts]
        unknown = sorted(set(names) - {"audio", "text"})
        if unknown:
            raise ApiError(400, "unknown_field", f"unknown form field(s) {unknown}; expected 'audio' and 'text'")
        if len(names) != len(set(names)):
            raise ApiError(400, "duplicate_key", "a form field appears more than once")
        by_name = {p.name: p for p in parts}
        audio, text = by_name.get("audio"), by_name.get("text")
        if audio is None or audio.filename is None:
            raise ApiError(400, "missing_field", "form field 'audio' (a file) is required")
        if text is None or text.filename is not None:
            raise ApiError(400, "missing_field", "form field 'text' (the transcript, a plain field) is required")
        if not audio.data:
            raise ApiError(422, "invalid_audio", "the uploaded audio file is empty")
        try:
            transcript = text.data.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_text", "'text' is not valid UTF-8") from None
        return audio.data, check_text(transcript, "text", limits.max_ref_text_chars)

    async def delete_voice(request: Request) -> Any:
        voice_id = check_voice_id(request.path_params["voice_id"])
        if voice_id not in await voices_call(voices.list):
            raise ApiError(404, "voice_not_found", f"unknown voice {voice_id!r}")
        await voices_call(voices.remove, voice_id)
        return JSONResponse({"voice_id": voice_id, "deleted": True})

    # ---- health, metrics -------------------------------------------------------------------

    async def health(request: Request) -> Any:
        body = {
            "status": "ok" if batcher.ready else ("error" if batcher.warmup_error else "warming_up"),
            "ready": batcher.ready,
            "engine": engine,
            "sample_rate": sample_rate,
            "queue_depth": batcher.queue_depth,
            "inflight": batcher.inflight,
        }
        if batcher.warmup_error:
            body["error"] = batcher.warmup_error
        return JSONResponse(body, status_code=200 if batcher.ready else 503)

    async def metrics_endpoint(request: Request) -> Any:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_route("/api/tts", api_tts, methods=["POST"])
    app.add_route("/v1/audio/speech", speech, methods=["POST"])
    app.add_route("/api/voices", list_voices, methods=["GET"])
    app.add_route("/api/voices/{voice_id}", put_voice, methods=["POST", "PUT"])
    app.add_route("/api/voices/{voice_id}", delete_voice, methods=["DELETE"])
    app.add_route("/api/health", health, methods=["GET"])
    app.add_route("/metrics", metrics_endpoint, methods=["GET"])
    return app


def sse_event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n\n"


def encode_sse(audio: bytes) -> bytes:
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode("ascii")})


# ---------------------------------------------------------------------------------------------
# `f5rt serve`
# ---------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `f5rt serve` (the CLI adds them to its `serve` sub-command).

    Engine options the parser already has (the CLI's shared --artifacts/--backend/...) are kept as they are.
    """

    def opt(flag: str, **kw: Any) -> None:
        if flag not in p._option_string_actions:
            p.add_argument(flag, **kw)

    opt("--artifacts", type=Path, required=True, help="artifacts folder (manifest.json + graphs/engines)")
    opt("--backend", default="auto", help="auto | onnxruntime | tensorrt")
    opt("--precision", default="fp32", help="fp32 | fp16 | int8 (a variant the build made)")
    opt("--threads", type=int, help="CPU threads for ONNX Runtime")
    p.add_argument("--voices", type=Path, required=True, help="voices folder: <id>/ref.wav + <id>/ref.txt")
    p.add_argument("--voice-cache", type=Path, help="mel cache folder (default: inside the voices folder)")
    p.add_argument("--default-voice", help="voice used when a request names none (default: first by name)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 to expose)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--limits", type=Path, help="JSON file overriding f5rt.limits.Limits defaults")
    p.add_argument("--batch-window-ms", type=float, help="override limits.batch_window_ms (0 = no batching)")
    p.add_argument("--max-batch", type=int, help="override limits.max_batch")
    p.add_argument("--nfe", type=int, help="default NFE steps for requests that do not set nfe_step (default 32)")
    p.add_argument("--no-warmup", action="store_true", help="skip warm-up (health is ready at once)")
    p.add_argument("--log-level", default="info")


def load_limits(args: argparse.Namespace) -> Limits:
    limits = Limits.from_json(args.limits) if args.limits else Limits()
    changes: dict[str, Any] = {}
    if args.batch_window_ms is not None:
        changes["batch_window_ms"] = args.batch_window_ms
    if args.max_batch is not None:
        changes["max_batch"] = args.max_batch
    return limits.replace(**changes) if changes else limits


def serve(args: argparse.Namespace) -> int:
    """Load the synthesizer and voices, then run uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise SystemExit("f5rt serve needs the 'serve' extra: pip install 'f5rt[serve]'") from None
    from f5rt.synthesizer import SynthesisOptions, Synthesizer
    from f5rt.voices import VoiceStore

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = load_limits(args)
    synth = Synthesizer(args.artifacts, backend=args.backend, precision=args.precision, threads=args.threads)
    store = VoiceStore(args.voices, cache_dir=args.voice_cache)
    if args.default_voice is not None and args.default_voice not in store.list():
        raise SystemExit(f"--default-voice {args.default_voice!r} is not in {args.voices}")
    defaults = SynthesisOptions() if args.nfe is None else SynthesisOptions(nfe=args.nfe)
    defaults.validate()
    app = create_app(
        synth, store, limits, default_voice=args.default_voice, warmup=not args.no_warmup, defaults=defaults
    )
    log.info("serving %s (%s) on http://%s:%d", args.artifacts, synth.backend_name, args.host, args.port)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1)
    finally:
        synth.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m f5rt.server", description="Serve F5-TTS over HTTP.")
    add_arguments(parser)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
