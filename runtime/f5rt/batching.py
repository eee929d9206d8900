"""Dynamic batching: one worker thread owns the synthesizer and runs requests together when it can.

Why one thread: the engines (one CUDA graph per bucket, or one ONNX Runtime session) are a single
device resource, so running two requests side by side only makes both slower; batching them into one
engine call (B > 1) is where throughput comes from. The worker takes the oldest request, waits up to
`batch_window_ms` (counted from that request's arrival, so a request that already waited waits no
longer) for others that can share its sampling schedule, and hands the group to
`synth.synthesize_batch`. Streams advance one text chunk per worker call, so a long stream never
blocks short requests for more than one chunk.

Every other thread only enqueues work and waits on a `concurrent.futures.Future`, which asyncio code
awaits with `asyncio.wrap_future`, so the event loop never runs inference and /api/health answers
while a batch is running.

Admission is bounded (`queue_size` requests queued or running, streams included); beyond it
`acquire()` raises Overloaded and the server answers 503 with Retry-After. A request that waited past
its deadline is failed with RequestTimeout instead of being run; a cancelled one is skipped.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from f5rt.limits import Limits
from f5rt.metrics import Metrics

log = logging.getLogger("f5rt.batching")


class Overloaded(Exception):
    """Too many requests admitted; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"server busy: too many requests in flight, retry after {retry_after} s")
        self.retry_after = retry_after


class RequestTimeout(TimeoutError):
    """A request waited longer than the request timeout before it could run."""


class ShuttingDown(Exception):
    """The batcher stopped before the request ran."""


def schedule_key(options: Any) -> tuple[Any, ...]:
    """Requests share one engine call only when they share the sampling schedule (t, dt per step).

    SampleJob holds one (nfe,) schedule for the whole batch; cfg is per row, so it does not split
    batches. Everything that shapes the schedule goes in the key.
    """
    return (
        getattr(options, "nfe", None),
        getattr(options, "sway", None),
        getattr(options, "use_epss", None),
    )


@dataclass(eq=False)
class _Work:
    text: str
    voice: Any
    options: Any
    enqueued: float
    deadline: float
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple[Any, ...]:
        return schedule_key(self.options)


@dataclass(eq=False)
class _Call:
    fn: Callable[[], Any]
    enqueued: float
    deadline: float
    future: Future = field(default_factory=Future)


class Slot:
    """One admitted request; release() is idempotent so every exit path may call it."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher: Batcher | None = batcher

    def release(self) -> None:
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher._release()


class StreamJob:
    """A Synthesizer.stream iterator advanced on the worker thread, one chunk per `next_piece()`.

    The iterator is created lazily on the worker and closed there too (a generator cannot be closed
    from another thread while it runs), so `close()` only enqueues the close.
    """

    def __init__(self, batcher: Batcher, make: Callable[[], Iterator[Any]]) -> None:
        self._batcher = batcher
        self._make = make
        self._it: Iterator[Any] | None = None
        self._closed = False

    def _step(self) -> Any:
        if self._closed:
            return None
        if self._it is None:
            self._it = self._make()
        try:
            return next(self._it)
        except StopIteration:
            self._closed = True
            return None

    def _close(self) -> None:
        self._closed = True
        it, self._it = self._it, None
        close = getattr(it, "close", None)
        if close is not None:
            close()

    def next_piece(self) -> Future:
        """A future of the next float32 piece, or None when the stream is finished."""
        return self._batcher.call(self._step)

    def close(self) -> None:
        """Cancel the rest of the stream: no further chunk is synthesized for it."""
        if self._closed and self._it is None:
            return
        self._closed = True
        with contextlib.suppress(ShuttingDown):  # the worker is gone, and the iterator with it
            self._batcher.call(self._close)


class Batcher:
    """The single inference worker (see the module docstring)."""

    def __init__(self, synth: Any, limits: Limits, metrics: Metrics | None = None) -> None:
        self.synth = synth
        self.limits = limits
        self.metrics = metrics
        self._pending: collections.deque[_Work | _Call] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._paused = False
        self._inflight = 0
        self._service_ema = 0.0  # seconds per worker call, for Retry-After
        self.ready = False
        self.warmup_error: str | None = None
        self.batches_run = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, warmup: bool = True) -> None:
        """Start the worker; with warmup its first job is synth.warmup() and `ready` turns true after."""
        if self._thread is not None:
            return
        self._warmup = warmup
        self._thread = threading.Thread(target=self._run, name="f5rt-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current call; everything still queued fails with ShuttingDown."""
        with self._cond:
            self._stopping = True
            pending, self._pending = list(self._pending), collections.deque()
            self._cond.notify_all()
        for item in pending:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(ShuttingDown("server is shutting down"))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def pause(self) -> None:
        """Hold the worker after its current call, so requests pile up (tests use it to force a batch)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    # ---- admission -------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def inflight(self) -> int:
        return self._inflight

    def acquire(self) -> Slot:
        """Admit one request or raise Overloaded (the server's 503 + Retry-After)."""
        with self._cond:
            if self._stopping:
                raise ShuttingDown("server is shutting down")
            if self._inflight >= self.limits.queue_size:
                batch = self.limits.max_batch if self.limits.batching else 1
                wait = self._service_ema * max(1, self._inflight) / batch
                raise Overloaded(max(1, min(60, math.ceil(wait))))
            self._inflight += 1
        return Slot(self)

    def _release(self) -> None:
        with self._cond:
            self._inflight -= 1

    # ---- submission ------------------------------------------------------------------------

    def submit(self, text: str, voice: Any, options: Any, timeout: float | None = None) -> Future:
        """Queue one synthesis; the future resolves to its SynthesisResult (or its error)."""
        now = time.monotonic()
        work = _Work(text, voice, options, now, now + (timeout or self.limits.request_timeout_s))
        self._enqueue(work)
        return work.future

    def call(self, fn: Callable[[], Any], timeout: float | None = None) -> Future:
        """Run `fn` alone on the worker thread (stream steps, anything that touches the engines)."""
        now = time.monotonic()
        job = _Call(fn, now, now + (timeout or self.limits.request_timeout_s))
        self._enqueue(job)
        return job.future

    def open_stream(self, text: str, voice: Any, options: Any, first_chunk_chars: int | None) -> StreamJob:
        return StreamJob(self, lambda: iter(self.synth.stream(text, voice, options, first_chunk_chars)))

    def _enqueue(self, item: _Work | _Call) -> None:
        with self._cond:
            if self._stopping:
                raise ShuttingDown("server is shutting down")
            self._pending.append(item)
            self._cond.notify_all()

    # ---- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        if self._warmup:
            try:
                t0 = time.monotonic()
                self.synth.warmup()
                log.info("warm-up done in %.2f s", time.monotonic() - t0)
            except Exception as e:  # the server reports it on /api/health and refuses requests
                log.exception("warm-up failed")
                self.warmup_error = f"{type(e).__name__}: {e}"
                return self._drain(e)
        self.ready = True
        while True:
            with self._cond:
                while (not self._pending or self._paused) and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                first = self._pending.popleft()
            t0 = time.monotonic()
            if isinstance(first, _Call):
                self._run_call(first)
            else:
                self._run_group(self._collect(first))
            dt = time.monotonic() - t0
            self._service_ema = dt if self._service_ema == 0 else 0.8 * self._service_ema + 0.2 * dt

    def _drain(self, error: Exception) -> None:
        """Warm-up failed: fail whatever is queued now and later (the worker will never run it)."""
        with self._cond:
            self._stopping = True
            pending, self._pending = list(self._pending), collections.deque()
        for item in pending:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(ShuttingDown(f"warm-up failed: {error}"))

    def _collect(self, first: _Work) -> list[_Work]:
        """First plus compatible requests arriving within the window, up to max_batch."""
        group = [first]
        if not self.limits.batching:
            return group
        deadline = first.enqueued + self.limits.batch_window_ms / 1000.0
        with self._cond:
            while len(group) < self.limits.max_batch:
                for item in list(self._pending):
                    if len(group) >= self.limits.max_batch:
                        break
                    if isinstance(item, _Work) and item.key == first.key:
                        self._pending.remove(item)
                        if not item.future.cancelled():
                            group.append(item)
                remaining = deadline - time.monotonic()
                if len(group) >= self.limits.max_batch or remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
        return group

    def _start(self, item: _Work | _Call) -> bool:
        """Mark an item running; False if it was cancelled or its deadline passed (then it is failed)."""
        if not item.future.set_running_or_notify_cancel():
            return False
        if time.monotonic() > item.deadline:
            item.future.set_exception(RequestTimeout("request timed out in the queue"))
            return False
        return True

    def _run_call(self, job: _Call) -> None:
        if not self._start(job):
            return
        try:
            job.future.set_result(job.fn())
        except BaseException as e:
            job.future.set_exception(e)

    def _run_group(self, group: list[_Work]) -> None:
        live = [w for w in group if self._start(w)]
        if not live:
            return
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(live))
        self.batches_run += 1
        if len(live) == 1:
            self._run_alone(live[0])
            return
        try:
            results = self.synth.synthesize_batch([(w.text, w.voice, w.options) for w in live])
            if len(results) != len(live):
                raise RuntimeError(f"synthesize_batch returned {len(results)} results for {len(live)} requests")
        except Exception:
            # One bad request must not fail its neighbours: rerun each alone to pin the error on its owner.
            log.warning("batch of %d failed; running its requests one by one", len(live), exc_info=True)
            for w in live:
                self._run_alone(w)
            return
        for w, r in zip(live, results, strict=True):
            w.future.set_result(r)

    def _run_alone(self, w: _Work) -> None:
        try:
            w.future.set_result(self.synth.synthesize(w.text, w.voice, w.options))
        except BaseException as e:
            w.future.set_exception(e)
