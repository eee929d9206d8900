"""create_app: the FastAPI app, its batcher, metrics, auth and routes, wired around one ServerContext."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from f5rt.limits import Limits
from f5rt.metrics import Metrics
from f5rt.options import SynthesisOptions
from f5rt.server.auth import AuthConfig, AuthMiddleware
from f5rt.server.context import MODEL_ID, ServerContext
from f5rt.server.errors import install_handlers
from f5rt.server.middleware import MetricsMiddleware
from f5rt.server.models import get_model, list_models
from f5rt.server.monitoring import health, metrics_endpoint
from f5rt.server.speech import speech
from f5rt.server.tts import api_tts
from f5rt.server.voices import delete_voice, list_voices, put_voice
from f5rt.service.batcher import Batcher
from f5rt.service.engine import ChunkEngine
from f5rt.voices import VoiceStore

if TYPE_CHECKING:
    from fastapi import FastAPI

    from f5rt.synthesizer import Synthesizer

# (path, methods, handler): the whole API surface in one table.
ROUTES = (
    ("/api/tts", ["POST"], api_tts),
    ("/v1/audio/speech", ["POST"], speech),
    ("/v1/models", ["GET"], list_models),
    ("/v1/models/{model_id}", ["GET"], get_model),
    ("/api/voices", ["GET"], list_voices),
    ("/api/voices/{voice_id}", ["POST", "PUT"], put_voice),
    ("/api/voices/{voice_id}", ["DELETE"], delete_voice),
    ("/api/health", ["GET"], health),
    ("/metrics", ["GET"], metrics_endpoint),
)


def create_app(
    synth: Synthesizer | ChunkEngine,
    voices: VoiceStore,
    limits: Limits | None = None,
    *,
    default_voice: str | None = None,
    warmup: bool = True,
    metrics: Metrics | None = None,
    defaults: SynthesisOptions | None = None,
    auth: AuthConfig | None = None,
    model_id: str = MODEL_ID,
) -> FastAPI:
    """The FastAPI app serving `synth` (a Synthesizer, or its engine) with the voices of `voices`.

    defaults: the SynthesisOptions a request's absent fields take (default: f5-tts' own defaults);
    /v1/audio/speech, which has no sampling fields, always uses them (with its speed and seed).
    auth: API keys (default: none, every route open; `serve` allows that on loopback only).

    The batcher starts (and warms the synthesizer up) in the app's lifespan; the app's state holds
    app.state.ctx (the ServerContext) and, for tests and embedding, app.state.batcher / .metrics / .limits.
    """
    from fastapi import FastAPI

    limits = limits or Limits()
    metrics = metrics or Metrics()
    from f5rt.synthesizer import Synthesizer  # the text front-end's imports: only when an app is made

    engine = synth.engine if isinstance(synth, Synthesizer) else synth
    batcher = Batcher(engine, limits, metrics)
    ctx = ServerContext(
        engine=engine,
        voices=voices,
        limits=limits,
        metrics=metrics,
        batcher=batcher,
        defaults=defaults or SynthesisOptions(),
        auth=auth or AuthConfig(),
        default_voice=default_voice,
        model_id=model_id,
    )
    metrics.gauge("f5rt_queue_depth", "Requests and stream steps waiting for the worker.", lambda: batcher.queue_depth)
    metrics.gauge("f5rt_inflight_requests", "Requests admitted (queued or running).", lambda: batcher.inflight)
    metrics.gauge("f5rt_queue_capacity", "Requests admitted at most (limits.queue_size).", lambda: limits.queue_size)
    metrics.gauge("f5rt_ready", "1 once warm-up has finished.", lambda: 1.0 if batcher.ready else 0.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start(warmup=warmup)
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="f5rt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.limits = limits
    # add_middleware wraps: the last added runs first. Metrics outermost, so auth refusals are counted.
    app.add_middleware(AuthMiddleware, auth=ctx.auth)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_handlers(app, metrics)
    for path, methods, handler in ROUTES:
        app.add_route(path, functools.partial(handler, ctx), methods=methods)
    return app
