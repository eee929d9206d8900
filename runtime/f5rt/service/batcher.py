"""Dynamic batching: one worker thread owns the synthesizer and runs chunk rows of many requests together.

Why one thread: the engines (one CUDA graph per bucket, or one ONNX Runtime session) are a single
device resource, so running two requests side by side only makes both slower; batching them into one
engine call (B > 1) is where throughput comes from.

Why rows: a request is planned (on the worker) into one row per text chunk (f5rt.service.jobs), and the
worker schedules rows, not requests. Whole requests (`submit`) and streams (`open_stream`) queue
rows alike, so the next piece of a stream and the chunks of a whole request can share one engine
call when they share a sampling schedule (`SynthesisOptions.schedule_key`). Each call takes the row of highest
priority (`Row.priority`: every stream's first piece, then the oldest job's earliest chunk) and adds
compatible rows (same schedule, at most `max_batch` requests and the largest batch bucket). After
`FIRST_PIECE_STREAK` first-piece calls in a row, the oldest other row gets the next call, so a steady
flow of new streams cannot starve whole requests.

- A first-piece call takes only other first pieces whose chunk fits the head's frame bucket, and on
  fixed-shape engines other fitting rows in the batch bucket's padding (free there); anything more
  would make the first audio wait for extra rows' compute.
- Any other call takes compatible rows in priority order, waiting up to `batch_window_ms` (counted
  from the head request's arrival, so a request that already waited waits no longer) for more.
  First pieces never wait: a burst still batches, since rows queue while a call runs.

A stream whose reader closes it (client disconnect) drops its queued rows; nothing more is computed
for it. Every other thread only enqueues work and waits on a `concurrent.futures.Future`, which
asyncio code awaits with `asyncio.wrap_future`, so the event loop never runs inference.

Admission is bounded (`queue_size` requests queued or running, streams included); beyond it
`acquire()` raises Overloaded and the server answers 503 with Retry-After. A request whose first row
would start past its deadline is failed with RequestTimeout instead of being run; a cancelled one is
skipped.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from f5rt.errors import Overloaded, RequestTimeout, ShuttingDown  # defined in errors.py, importable from here too
from f5rt.limits import Limits
from f5rt.metrics import Metrics
from f5rt.options import SynthesisOptions
from f5rt.service.engine import ChunkEngine
from f5rt.service.jobs import Job, JobRequest, Row, StreamJob, WholeJob
from f5rt.service.work import SynthesisResult
from f5rt.voices import Voice

T = TypeVar("T")

log = logging.getLogger("f5rt.service.batcher")

FIRST_PIECE_STREAK = 4
"""First-piece calls in a row while other rows wait, before one call goes to the oldest other row:
first audio goes first, but streams arriving without pause cannot starve whole requests and later
pieces (they get at least every fifth call). A burst of up to 4 x the batch cap streams is unaffected."""

__all__ = ["Batcher", "Overloaded", "RequestTimeout", "ShuttingDown", "Slot", "StreamJob"]


@dataclass(eq=False)
class _Call(Generic[T]):
    fn: Callable[[], T]
    enqueued: float
    deadline: float
    future: Future[T] = field(default_factory=Future)


class Slot:
    """One admitted request; release() is idempotent so every exit path may call it."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher: Batcher | None = batcher

    def release(self) -> None:
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher._release()


class Batcher:
    """The single inference worker (see the module docstring). Its methods, by who calls them:

    - Lifecycle (the app's lifespan, tests): `start` the worker (warm-up first), `stop` it, and
      `pause` / `resume` it to make requests pile up.
    - Admission (a transport, before it queues anything): `acquire` a Slot (given back through
      `Slot.release`) or get Overloaded / ShuttingDown; `inflight` and `queue_depth` are what health
      and metrics report. Admission shares the worker's lock and state instead of living apart: a
      stopping batcher admits nothing, and Retry-After comes from the worker's time per engine call.
    - Submission (any thread): `submit` a whole request, `open_stream` a streamed one, or `call` a
      function on the worker thread; each queues at once and returns a future (or the StreamJob).
    - The worker (its own thread): `_run` plans queued jobs into rows (`_admit`), picks the rows of
      the next engine call (`_pick`, `_group`), runs them (`_run_rows`, `_engine_call`) and delivers
      or fails each row's job; `_abandon` fails everything queued when it stops.
    """

    def __init__(self, engine: ChunkEngine, limits: Limits, metrics: Metrics | None = None) -> None:
        self.engine = engine
        self.limits = limits
        self.metrics = metrics
        self._inbox: collections.deque[Job | _Call[object]] = collections.deque()  # not yet planned / run, FIFO
        self._rows: list[Row] = []  # planned chunks waiting for an engine call
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._warmup = True
        self._stopping = False
        self._paused = False
        self._inflight = 0
        self._service_ema = 0.0  # seconds per engine call, for Retry-After
        self._streak = 0  # first-piece calls in a row while other rows waited
        self.ready = False
        self.warmup_error: str | None = None
        self.batches_run = 0

    def start(self, warmup: bool = True) -> None:
        """Start the worker; with warmup its first job is engine.warmup() and `ready` turns true after."""
        if self._thread is not None:
            return
        self._warmup = warmup
        self._thread = threading.Thread(target=self._run, name="f5rt-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current engine call; everything still queued fails with ShuttingDown."""
        self._abandon(ShuttingDown("server is shutting down"))
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

    @property
    def queue_depth(self) -> int:
        """Requests not yet planned plus chunk rows waiting for an engine call."""
        return len(self._inbox) + len(self._rows)

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

    def submit(
        self, text: str, voice: Voice, options: SynthesisOptions, timeout: float | None = None
    ) -> Future[SynthesisResult]:
        """Queue one synthesis; the future resolves to its SynthesisResult (or its error)."""
        job = WholeJob(self._request(text, voice, options, None, timeout))
        self._enqueue(job)
        return job.future

    def open_stream(
        self,
        text: str,
        voice: Voice,
        options: SynthesisOptions,
        first_chunk_chars: int | None,
        timeout: float | None = None,
    ) -> StreamJob:
        """Queue a stream; read it with `next_piece()`, and `close()` it when the reader goes away."""
        job = StreamJob(self._request(text, voice, options, first_chunk_chars, timeout), on_close=self._forget)
        self._enqueue(job)
        return job

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> Future[T]:
        """Run `fn` alone on the worker thread (anything that touches the engines), in arrival order."""
        now = time.monotonic()
        job = _Call(fn, now, now + (timeout or self.limits.request_timeout_s))
        self._enqueue(job)  # type: ignore[arg-type]  # the queue holds calls of any result type
        return job.future

    def _request(
        self,
        text: str,
        voice: Voice,
        options: SynthesisOptions,
        first_chunk_chars: int | None,
        timeout: float | None,
    ) -> JobRequest:
        now = time.monotonic()
        deadline = now + (timeout or self.limits.request_timeout_s)
        return JobRequest(text, voice, options, first_chunk_chars, now, deadline, next(self._seq))

    def _enqueue(self, item: Job | _Call[object]) -> None:
        with self._cond:
            if self._stopping:
                raise ShuttingDown("server is shutting down")
            self._inbox.append(item)
            self._cond.notify_all()

    def _forget(self, job: Job) -> None:
        """Drop a job's queued rows (a closed stream, a failed request): they will not be computed."""
        with self._cond:
            self._rows = [r for r in self._rows if r.job is not job]

    def _run(self) -> None:
        if self._warmup:
            try:
                t0 = time.monotonic()
                self.engine.warmup()
                log.info("warm-up done in %.2f s", time.monotonic() - t0)
            except Exception as e:  # the server reports it on /api/health and refuses requests
                log.exception("warm-up failed")
                self.warmup_error = f"{type(e).__name__}: {e}"
                self._abandon(ShuttingDown(f"warm-up failed: {e}"))
                return
        self.ready = True
        while True:
            with self._cond:
                while not self._stopping and (self._paused or not (self._inbox or self._rows)):
                    self._cond.wait()
                if self._stopping:
                    return
                inbox, self._inbox = list(self._inbox), collections.deque()
            if inbox:
                self._admit(inbox)
                continue
            group, wait = self._pick()
            if group:
                self._run_rows(group)
                continue
            with self._cond:  # the head may wait for company: until the window closes or work arrives
                if wait > 0 and not (self._inbox or self._stopping or self._paused):
                    self._cond.wait(wait)

    def _abandon(self, error: Exception) -> None:
        """Stop taking work and fail whatever is queued now (a later enqueue raises ShuttingDown)."""
        with self._cond:
            self._stopping = True
            inbox, self._inbox = list(self._inbox), collections.deque()
            rows, self._rows = self._rows, []
            self._cond.notify_all()
        jobs = {id(item): item for item in [*inbox, *(r.job for r in rows)]}
        for item in jobs.values():
            self._refuse(item, error)

    @staticmethod
    def _refuse(item: Job | _Call[object], error: Exception) -> None:
        if isinstance(item, _Call):
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(error)
        else:
            item.fail(error)

    def _admit(self, items: list[Job | _Call[object]]) -> None:
        """Plan new jobs into rows and run calls, in arrival order (planning is cheap next to sampling)."""
        for item in items:
            if self._stopping:  # stop() came while an earlier item ran: it did not see these
                self._refuse(item, ShuttingDown("server is shutting down"))
                continue
            if isinstance(item, _Call):
                self._run_call(item)
                continue
            if item.dead:
                continue
            if time.monotonic() > item.request.deadline:
                item.fail(RequestTimeout("request timed out in the queue"))
                continue
            try:
                rows = item.prepare(self.engine)
            except Exception as e:  # bad options or text: the request's own error
                item.fail(e)
                continue
            with self._cond:
                stopping = self._stopping
                if not stopping and not item.dead:
                    self._rows.extend(rows)
            if stopping:
                item.fail(ShuttingDown("server is shutting down"))

    def _pick(self) -> tuple[list[Row], float]:
        """The rows of the next engine call (taken off the queue), or ([], seconds to wait for more)."""
        with self._cond:
            self._rows = [r for r in self._rows if not r.job.dead]
            if not self._rows:
                return [], 0.0
            head = min(self._rows, key=lambda r: r.priority)
            firsts_waiting = head.first_piece
            others = [r for r in self._rows if not r.first_piece] if firsts_waiting else []
            if others and self._streak >= FIRST_PIECE_STREAK:
                head = min(others, key=lambda r: r.priority)  # the oldest other row's turn
            group = self._group(head)
            if self.limits.batching and not firsts_waiting and len(group) < self._cap:
                wait = head.job.request.enqueued + self.limits.batch_window_ms / 1000.0 - time.monotonic()
                if wait > 0:
                    return [], wait
            taken = {id(r) for r in group}
            self._rows = [r for r in self._rows if id(r) not in taken]
            self._streak = self._streak + 1 if head.first_piece and others else 0
            return group, 0.0

    @property
    def _cap(self) -> int:
        """Rows per engine call: the synthesizer's largest batch bucket."""
        return self.engine.max_rows

    def _group(self, head: Row) -> list[Row]:
        """Head plus the queued rows that may share its engine call (see the module docstring)."""
        max_jobs = self.limits.max_batch if self.limits.batching else 1
        key = head.work.opts.schedule_key
        group, jobs = [head], {id(head.job)}

        def take(row: Row, limit: int) -> None:
            if len(group) >= limit or row is head or row.work.opts.schedule_key != key:
                return
            if id(row.job) not in jobs:
                if len(jobs) >= max_jobs:
                    return
                jobs.add(id(row.job))
            group.append(row)

        queue = sorted(self._rows, key=lambda r: r.priority)
        if not head.first_piece:
            for row in queue:
                take(row, self._cap)
            return group
        fits = [r for r in queue if r.work.bucket <= head.work.bucket]
        for row in fits:
            if row.first_piece:
                take(row, self._cap)
        padded = min(self._cap, self.engine.padded_rows(len(group)))
        for row in fits:  # rows that ride in the batch bucket's padding cost nothing (fixed shapes)
            if not row.first_piece:
                take(row, padded)
        return group

    def _run_call(self, job: _Call[object]) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        if time.monotonic() > job.deadline:
            job.future.set_exception(RequestTimeout("request timed out in the queue"))
            return
        try:
            job.future.set_result(job.fn())
        except BaseException as e:
            job.future.set_exception(e)

    def _run_rows(self, group: list[Row]) -> None:
        """One engine call for the group's live rows; a request's first row checks its queue deadline."""
        now = time.monotonic()
        live = []
        for row in group:
            job = row.job
            if job.dead:
                continue
            if not job.started:
                if now > job.request.deadline:
                    self._fail(job, RequestTimeout("request timed out in the queue"))
                    continue
                job.started = True
            live.append(row)
        if live:
            self._engine_call(live)

    def _engine_call(self, rows: list[Row]) -> None:
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(rows))
        self.batches_run += 1
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        try:
            waves = self.engine.run_chunks([r.work for r in rows], timings)
            if len(waves) != len(rows):
                raise RuntimeError(f"run_chunks returned {len(waves)} waves for {len(rows)} rows")
        except Exception as e:
            if len(rows) == 1:
                self._fail(rows[0].job, e)
                return
            # One bad row must not fail its neighbours: rerun each alone to pin the error on its owner.
            log.warning("engine call of %d rows failed; running them one by one", len(rows), exc_info=True)
            for row in rows:
                if not row.job.dead:
                    self._engine_call([row])
            return
        dt = time.monotonic() - t0
        self._service_ema = dt if self._service_ema == 0 else 0.8 * self._service_ema + 0.2 * dt
        timings["engine"] = dt
        for row, wave in zip(rows, waves, strict=True):
            if row.job.dead:
                continue  # closed or cancelled while it ran: the wave is dropped
            try:
                row.job.deliver(row.work.index, wave, timings)
            except Exception as e:
                self._fail(row.job, e)

    def _fail(self, job: Job, error: BaseException) -> None:
        job.fail(error)
        self._forget(job)
