"""Streaming responses: waiting on the worker from the event loop, and audio pieces as HTTP bytes or SSE.

A stream's pieces come from the batcher (`StreamJob.next_piece()` futures), go through one
incremental encoder (f5rt.encoders) and leave either as raw container bytes or as OpenAI's SSE
events (`speech.audio.delta` with base64 audio, then `speech.audio.done` with usage). Encoding runs
in a worker thread (asyncio.to_thread), so a FLAC or AAC encode never stalls other requests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from f5rt.encoders import StreamEncoder
from f5rt.service.errors import ServiceError, map_error
from f5rt.service.jobs import StreamJob
from f5rt.service.work import Wave

if TYPE_CHECKING:
    from starlette.requests import Request

T = TypeVar("T")

log = logging.getLogger("f5rt.server")


async def await_future(fut: Future[T], request: Request | None, timeout: float) -> T:
    """Wait for worker output without blocking the loop; cancel the work if the client goes away."""
    loop = asyncio.get_running_loop()
    afut = asyncio.wrap_future(fut)
    deadline = loop.time() + timeout
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ServiceError(504, "timeout", f"request did not finish within {timeout:g} s")
            done, _ = await asyncio.wait({afut}, timeout=min(0.25, remaining))
            if done:
                return afut.result()
            if request is not None and await request.is_disconnected():
                raise ServiceError(499, "client_closed", "client closed the connection")
    finally:
        if not afut.done():
            fut.cancel()  # still queued: the worker skips it; already running: the result is dropped


def sse_event(obj: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n\n"


def encode_sse(audio: bytes) -> bytes:
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode("ascii")})


@dataclass
class SpeechStream:
    """One /v1/audio/speech response body: the first piece (already computed), then the rest.

    job: the batcher's StreamJob; release: frees the admission slot. Both are released exactly once,
    whether the body runs to the end, fails, or is never iterated (the caller adds a finalizer).
    """

    job: StreamJob
    first: Wave | None
    encoder: StreamEncoder
    sse: bool
    text: str
    sample_rate: int
    timeout: float
    request_id: str
    on_done: Callable[[float, float], None]  # (seconds of audio, wall seconds since t0)
    t0: float

    async def _pieces(self) -> AsyncIterator[np.ndarray]:
        piece = self.first
        while piece is not None:
            yield np.asarray(piece, dtype=np.float32).reshape(-1)
            piece = await await_future(self.job.next_piece(), None, self.timeout)

    def _wrap(self, data: bytes) -> bytes:
        return encode_sse(data) if self.sse else data

    async def body(self, release: Callable[[], None]) -> AsyncIterator[bytes]:
        samples = 0
        try:
            async for p in self._pieces():
                samples += len(p)
                data = await asyncio.to_thread(self.encoder.push, p)
                if data:
                    yield self._wrap(data)
            data = await asyncio.to_thread(self.encoder.finish)
            if data:
                yield self._wrap(data)
            if self.sse:
                usage = {"input_tokens": len(self.text), "output_tokens": 0, "total_tokens": len(self.text)}
                yield sse_event({"type": "speech.audio.done", "usage": usage})
            self.on_done(samples / self.sample_rate, time.monotonic() - self.t0)
        except Exception as e:  # mid-stream failure: SSE can say so; raw audio can only stop
            err = map_error(e)
            log.warning("stream %s failed: %s", self.request_id, err.message)
            if not self.sse:
                raise
            yield sse_event({"type": "error", "error": {"code": err.code, "message": err.message}})
        finally:
            self.encoder.close()
            self.job.close()
            release()
