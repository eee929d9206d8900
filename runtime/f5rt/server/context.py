"""The typed state every handler reads: one object per app instead of variables captured in a closure.

Handlers are plain module functions `async def handler(ctx, request)`, bound to their context when
the app registers them (functools.partial), so each can be read, tested and documented on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from f5rt.errors import F5RTError
from f5rt.limits import Limits
from f5rt.metrics import Metrics
from f5rt.server.auth import AuthConfig
from f5rt.server.errors import ApiError, map_error
from f5rt.server.schemas import check_voice_id

if TYPE_CHECKING:
    from f5rt.batching import Batcher, Slot

MODEL_ID = "f5-tts"


@dataclass
class ServerContext:
    """synth: the Synthesizer (or anything with its interface); voices: a VoiceStore; defaults: the
    SynthesisOptions absent request fields take; default_voice: None = the first voice by name."""

    synth: Any
    voices: Any
    limits: Limits
    metrics: Metrics
    batcher: Batcher
    defaults: Any
    auth: AuthConfig
    default_voice: str | None = None
    model_id: str = MODEL_ID

    @property
    def sample_rate(self) -> int:
        return int(self.synth.sample_rate)

    @property
    def engine(self) -> str:
        return f"f5rt-{self.synth.backend_name}"

    async def voices_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """VoiceStore reads files and prepares audio: always off the event loop."""
        return await asyncio.to_thread(fn, *args)

    async def resolve_voice(self, voice_id: str | None) -> tuple[str, Any]:
        """(id, Voice) of the named voice, or of the default one when None; 404 when there is none."""
        ids = await self.voices_call(self.voices.list)
        if voice_id is None:
            voice_id = self.default_voice if self.default_voice is not None else (sorted(ids)[0] if ids else None)
            if voice_id is None:
                raise ApiError(404, "voice_not_found", "no voices are stored; upload one to /api/voices/{voice_id}")
        check_voice_id(voice_id)
        if voice_id not in ids:
            raise ApiError(404, "voice_not_found", f"unknown voice {voice_id!r}; see GET /api/voices")
        try:
            return voice_id, await self.voices_call(self.voices.get, voice_id)
        except F5RTError as e:
            raise ApiError(500, "voice_unusable", f"stored voice {voice_id!r} cannot be used: {e}") from None

    def check_ready(self) -> None:
        """Refuse at once when warm-up failed (requests sent during warm-up wait for it instead)."""
        if self.batcher.warmup_error is not None:
            raise ApiError(503, "unavailable", f"warm-up failed: {self.batcher.warmup_error}", {"Retry-After": "30"})

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
