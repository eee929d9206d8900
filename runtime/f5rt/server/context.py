"""The typed state every handler reads: one object per app instead of variables captured in a closure.

Handlers are plain module functions `async def handler(ctx, request)`, bound to their context when
the app registers them (functools.partial), so each can be read, tested and documented on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from f5rt.errors import F5RTError
from f5rt.limits import Limits
from f5rt.metrics import Metrics
from f5rt.options import SynthesisOptions
from f5rt.server.auth import AuthConfig
from f5rt.service.batcher import Batcher, Slot
from f5rt.service.engine import ChunkEngine
from f5rt.service.errors import ServiceError, map_error
from f5rt.service.requests import resolve_voice
from f5rt.voices import Voice, VoiceStore

MODEL_ID = "f5-tts"
T = TypeVar("T")


@dataclass
class ServerContext:
    """engine: the synthesizer's planning/running seam; voices: the VoiceStore; defaults: the
    SynthesisOptions absent request fields take; default_voice: None = the first voice by name."""

    engine: ChunkEngine
    voices: VoiceStore
    limits: Limits
    metrics: Metrics
    batcher: Batcher
    defaults: SynthesisOptions
    auth: AuthConfig
    default_voice: str | None = None
    model_id: str = MODEL_ID

    @property
    def sample_rate(self) -> int:
        return int(self.engine.sample_rate)

    @property
    def engine_label(self) -> str:
        return f"f5rt-{self.engine.backend_name}"

    async def voices_call(self, fn: Callable[..., T], *args: object) -> T:
        """VoiceStore reads files and prepares audio: always off the event loop."""
        return await asyncio.to_thread(fn, *args)

    async def resolve_voice(self, voice_id: str | None) -> tuple[str, Voice]:
        """(id, Voice) of the named voice, or of the default one when None (f5rt.service.requests)."""
        return await self.voices_call(resolve_voice, self.voices, voice_id, self.default_voice)

    def check_ready(self) -> None:
        """Refuse at once when warm-up failed (requests sent during warm-up wait for it instead)."""
        if self.batcher.warmup_error is not None:
            raise ServiceError(
                503, "unavailable", f"warm-up failed: {self.batcher.warmup_error}", {"Retry-After": "30"}
            )

    def acquire(self) -> Slot:
        """Admission: a slot, or the batcher's Overloaded/ShuttingDown as a 503 with Retry-After."""
        try:
            return self.batcher.acquire()
        except F5RTError as e:
            raise map_error(e) from None

    def observe_audio(self, route: str, seconds: float, compute_s: float) -> None:
        self.metrics.audio_seconds.inc(seconds, route=route)
        if seconds > 0:
            self.metrics.rtf.observe(compute_s / seconds, route=route)
