"""What the batcher runs: whole requests and streams, each cut into rows of chunk work.

A job is planned on the worker thread (`ChunkEngine.plan_request`) into one row per text chunk. Rows
of any jobs may share one engine call (f5rt.service.batcher decides which); what a job does with its rows'
waves is its own business: a whole request joins them into one SynthesisResult when the last one
arrives, a stream turns them into pieces in chunk order through the same incremental cross-fade as
`Synthesizer.stream`, so its pieces join to exactly the audio of the whole request.

Threads: only the worker plans, runs and delivers. A stream's reader calls `next_piece()` and
`close()` from any thread; those touch only the stream's lock-guarded outlet, and `close()` asks the
batcher (through `on_close`) to drop the stream's queued rows, so nothing more is computed for it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import TypeVar

from f5rt.audio import CrossFader
from f5rt.options import SynthesisOptions
from f5rt.service.engine import ChunkEngine
from f5rt.service.work import ChunkWork, RequestPlan, SynthesisResult, Wave
from f5rt.voices import Voice

T = TypeVar("T")


@dataclass(frozen=True)
class JobRequest:
    """A request as the batcher admitted it: what to synthesize, and its place and deadline in the queue."""

    text: str
    voice: Voice
    options: SynthesisOptions
    first_chunk_chars: int | None  # a stream's short first chunk (None: the engine's chunking alone)
    enqueued: float  # time.monotonic() at submission: the oldest job's rows go first
    deadline: float  # time.monotonic() past which a job none of whose rows has started fails (queue timeout)
    seq: int  # submission order, breaking ties of `enqueued`


@dataclass(eq=False)
class Row:
    """One chunk of one job, waiting for (or in) an engine call."""

    job: Job
    work: ChunkWork

    @property
    def first_piece(self) -> bool:
        """The chunk a stream's first audio waits for: it goes ahead of everything else."""
        return self.job.streaming and self.work.index == 0

    @property
    def priority(self) -> tuple[int, float, int, int]:
        """Smallest first: every stream's first piece, then the oldest job's earliest chunk."""
        req = self.job.request
        return (0 if self.first_piece else 1, req.enqueued, req.seq, self.work.index)


class Job:
    """A request admitted to the batcher: its text, options, deadline and the waves of its rows."""

    streaming = False

    def __init__(self, request: JobRequest) -> None:
        self.request = request
        self.started = False  # a row of it has gone into an engine call (its queue deadline no longer applies)
        self._plan: RequestPlan | None = None
        self.timings: dict[str, float] = {}
        self._engine: ChunkEngine | None = None
        self._waves: dict[int, Wave] = {}
        self._delivered = 0

    @property
    def dead(self) -> bool:
        """Cancelled, closed, failed or finished: its queued rows are dropped unrun."""
        raise NotImplementedError

    @property
    def plan(self) -> RequestPlan:
        """The request's chunk works (set by `prepare` on the worker)."""
        if self._plan is None:
            raise RuntimeError("job not planned yet: the batcher calls prepare() first")
        return self._plan

    @property
    def engine(self) -> ChunkEngine:
        if self._engine is None:
            raise RuntimeError("job not planned yet: the batcher calls prepare() first")
        return self._engine

    def prepare(self, engine: ChunkEngine) -> list[Row]:
        """Plan the request (worker thread); raises what planning raises (bad options, bad text)."""
        t0 = time.perf_counter()
        self._engine = engine
        req = self.request
        self._plan = plan = engine.plan_request(req.text, req.voice, req.options, req.first_chunk_chars)
        self.timings["plan"] = time.perf_counter() - t0
        rows = [Row(self, w) for w in plan.works]
        if not rows:
            self._complete()
        return rows

    def deliver(self, index: int, wave: Wave, timings: dict[str, float]) -> None:
        """The wave of chunk `index`, with the timings of the engine call it was computed in."""
        for key, value in timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + value
        self._waves[index] = wave
        self._delivered += 1
        self._arrived(index)
        if self._delivered == len(self.plan.works):
            self._complete()

    def fail(self, error: BaseException) -> None:
        raise NotImplementedError

    def _arrived(self, index: int) -> None:
        """Hook: a wave arrived (streams emit what is now in order)."""

    def _complete(self) -> None:
        raise NotImplementedError


class WholeJob(Job):
    """`Batcher.submit`: the future resolves to the SynthesisResult once every chunk is done.

    The future stays pending (so still cancellable) until the result is set; a cancelled one is dead
    and its remaining rows are skipped.
    """

    def __init__(self, request: JobRequest) -> None:
        super().__init__(request)
        self.future: Future[SynthesisResult] = Future()

    @property
    def dead(self) -> bool:
        return self.future.done()

    def fail(self, error: BaseException) -> None:
        _settle(self.future, error=error)

    def _complete(self) -> None:
        waves = [self._waves[w.index] for w in self.plan.works]
        result = self.engine.finish(self.plan, waves, self.timings)
        result.timings["total"] = sum(self.timings.get(k, 0.0) for k in ("plan", "engine"))
        self._waves.clear()
        _settle(self.future, result=result)


class StreamJob(Job):
    """`Batcher.open_stream`: pieces of float32 audio in order, as their chunks finish.

    `next_piece()` gives a Future of the next piece, or of None once the stream is over (finished or
    closed); an error (planning, engine, queue timeout) is raised by the piece that waited for it.
    """

    streaming = True

    def __init__(self, request: JobRequest, *, on_close: Callable[[StreamJob], None]) -> None:
        super().__init__(request)
        self._on_close = on_close
        self._lock = threading.RLock()  # re-entrant: a future's done-callback may call close()
        self._ready: collections.deque[Wave] = collections.deque()
        self._waiters: collections.deque[Future[Wave | None]] = collections.deque()
        self._final: tuple[BaseException | None] | None = None  # (None,) ended, (error,) failed
        self._closed = False
        self._joiner: CrossFader | None = None
        self._next = 0  # the chunk index the joiner needs next

    @property
    def dead(self) -> bool:
        return self._closed or self._final is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def next_piece(self) -> Future[Wave | None]:
        """A future of the next float32 piece, or None when the stream is finished or closed."""
        fut: Future[Wave | None] = Future()
        with self._lock:
            if self._closed:
                fut.set_result(None)
            elif self._ready:
                fut.set_result(self._ready.popleft())
            elif self._final == (None,):
                fut.set_result(None)
            elif self._final is not None:
                fut.set_exception(self._final[0])
            else:
                self._waiters.append(fut)
        return fut

    def close(self) -> None:
        """The reader is gone: drop the queued rows (nothing more is computed) and end the pieces."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ready.clear()
            waiters, self._waiters = list(self._waiters), collections.deque()
        for fut in waiters:
            _settle(fut, result=None)
        self._on_close(self)

    def fail(self, error: BaseException) -> None:
        self._finish((error,))

    def _arrived(self, index: int) -> None:
        if self._joiner is None:
            self._joiner = self.engine.joiner(self.plan.opts)
        while self._next in self._waves:
            piece = self._joiner.push(self._waves.pop(self._next))
            self._next += 1
            if len(piece):
                self._emit(piece)

    def _complete(self) -> None:
        if self._joiner is not None:
            tail = self._joiner.flush()
            if len(tail):
                self._emit(tail)
        self._finish((None,))

    def _emit(self, piece: Wave) -> None:
        with self._lock:
            if self._closed:
                return
            while self._waiters:
                if _settle(self._waiters.popleft(), result=piece):
                    return
            self._ready.append(piece)

    def _finish(self, final: tuple[BaseException | None]) -> None:
        with self._lock:
            if self._final is not None or self._closed:
                return
            self._final = final
            waiters, self._waiters = list(self._waiters), collections.deque()
        for fut in waiters:
            if final[0] is None:
                _settle(fut, result=None)
            else:
                _settle(fut, error=final[0])


def _settle(fut: Future[T], result: T | None = None, error: BaseException | None = None) -> bool:
    """Resolve a future unless its waiter cancelled it first; False if it was cancelled (or done)."""
    try:
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)  # type: ignore[arg-type]  # None ends a stream's Future[Wave | None]
    except InvalidStateError:
        return False
    return True
