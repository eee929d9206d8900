"""`f5rt serve`: the HTTP service. A chat reader's /api/tts, OpenAI's /v1/audio/speech, voices, metrics.

Endpoints:
    POST   /api/tts                 JSON -> {request_id, voice_id, engine, sample_rate, audio_base64, ...}
                                    (the contract of an existing live-stream chat reader: field names kept)
    POST   /v1/audio/speech         OpenAI-compatible; mp3/opus/aac/flac/wav/pcm, streamed as chunks finish,
                                    or SSE events
    GET    /v1/models               OpenAI's model list (this model)
    GET    /api/voices              the stored reference voices
    POST   /api/voices/{voice_id}   multipart: `audio` file + `text` transcript; stored atomically, replaces
    DELETE /api/voices/{voice_id}   (voice changes need an admin key once keys are configured)
    GET    /api/health              200 once warm-up finished, 503 before (and if it failed); never keyed
    GET    /metrics                 Prometheus text (keyed with --metrics-auth)

The HTTP adapter of the serving core (f5rt.service: request schema and checks, ServiceError, the
batcher): it reads bodies, hands them to the core, and renders results and refusals. One concept
per module:
    bodies      bounded body reads, content types, multipart voice uploads
    errors      the JSON error shape of a ServiceError, the framework's own errors in that shape
    auth        API keys, scopes, the auth middleware, the bind check
    middleware  request counting and latency
    streaming   waiting on the worker, SSE, the speech response body
    context     ServerContext: the typed state handlers read
    responses   the JSON answer of the non-streaming endpoints
    tts         /api/tts
    speech      /v1/audio/speech
    voices      /api/voices
    models      /v1/models
    monitoring  /api/health, /metrics
    app         create_app: routes, middleware, lifespan
    cli         `f5rt serve` arguments and startup

Every refusal is a 4xx with {"error": {"code", "message"}}; nothing is written outside the voices
folder. Inference runs on the batcher's worker thread (f5rt.service.batcher), never on the event loop.
fastapi / uvicorn / python-multipart / prometheus_client are imported only when an app is created or
served (the `serve` extra), so `import f5rt` and `f5rt --help` work without them.
"""

from __future__ import annotations

from f5rt.server.app import ROUTES, create_app
from f5rt.server.auth import AuthConfig
from f5rt.server.cli import add_arguments, load_limits, main, serve

__all__ = [
    "ROUTES",
    "AuthConfig",
    "add_arguments",
    "create_app",
    "load_limits",
    "main",
    "serve",
]
