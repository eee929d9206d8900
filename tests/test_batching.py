"""The batcher schedules chunk rows: first pieces first, streams and whole requests in shared calls.

Every test holds the worker (`pause()`) while it queues work, so what the worker sees when it looks
is fixed and the order of engine calls is deterministic; a recording wrapper logs each engine call's
rows as (chunk text, chunk index), and a recording backend logs the batch size of every `sample`.
Audio is always checked against the Synthesizer run directly on the same request: scheduling may
group rows any way it likes, but must not change a sample (rows are independent, noise is seeded per
(seed, chunk index)). Nothing here asserts on time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import SR, speechlike
from f5rt.backends import make_backend
from f5rt.backends.onnxruntime import OnnxRuntimeBackend
from f5rt.limits import Limits
from f5rt.manifest import load_manifest
from f5rt.service.batcher import FIRST_PIECE_STREAK, Batcher, Overloaded, RequestTimeout, ShuttingDown
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import Voice, prepare_voice

NFE = 6
WAIT_S = 30.0  # upper bound for what the tests wait on (never a timing assertion)
STREAM_A = "Hi chat. Thanks for the follow!"
STREAM_B = "Hey all. Good game, everyone."
STREAM_C = "Yo team. See you tomorrow night."
WHOLE = "Welcome to the stream."


class RecordingBackend:
    """The ONNX Runtime backend, logging the batch size of every engine call (`sample`)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.precision, self.fixed_shapes = inner.name, inner.precision, inner.fixed_shapes
        self.sample_batches: list[int] = []

    def encode_text(self, ids: np.ndarray, mask: np.ndarray) -> Any:
        return self.inner.encode_text(ids, mask)

    def sample(self, job: Any) -> np.ndarray:
        self.sample_batches.append(job.bucket.batch)
        return self.inner.sample(job)

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        return self.inner.vocode(mel)

    def close(self) -> None:
        self.inner.close()


class Recorder:
    """The real synthesizer, logging the rows of each `run_chunks` call; `after_call` runs once after one."""

    def __init__(self, synth: Synthesizer) -> None:
        self._synth = synth.engine  # the ChunkEngine the batcher drives
        self.calls: list[list[tuple[str, int]]] = []
        self.after_call: Any = None
        self.fail_on: str | None = None  # a chunk text that makes any call holding it raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._synth, name)

    def run_chunks(self, works: list[Any], timings: Any = None) -> list[np.ndarray]:
        self.calls.append([(w.plan.text, w.index) for w in works])
        try:
            if self.fail_on is not None and any(w.plan.text == self.fail_on for w in works):
                raise RuntimeError("engine failure on a poisoned row")
            return self._synth.run_chunks(works, timings)
        finally:
            hook, self.after_call = self.after_call, None
            if hook is not None:
                hook()


@pytest.fixture(scope="module")
def backend(tiny_artifacts: Path) -> Iterator[RecordingBackend]:
    rec = RecordingBackend(make_backend("onnxruntime", load_manifest(tiny_artifacts), threads=1))
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def synth(tiny_artifacts: Path, backend: RecordingBackend) -> Synthesizer:
    return Synthesizer(tiny_artifacts, backend=backend)


@pytest.fixture(scope="module")
def voice() -> Voice:
    return prepare_voice("quick", speechlike(1.0, SR, 3), SR, "Hello there, this is a test.")


@pytest.fixture
def rec(synth: Synthesizer, backend: RecordingBackend) -> Recorder:
    backend.sample_batches.clear()
    return Recorder(synth)


@pytest.fixture
def batcher(rec: Recorder) -> Iterator[Batcher]:
    b = Batcher(rec, Limits(batch_window_ms=50, max_batch=4))
    b.start(warmup=False)
    b.pause()  # each test queues its work first, then resumes
    yield b
    b.stop()


def opts(seed: int, **kw: Any) -> SynthesisOptions:
    return SynthesisOptions(nfe=NFE, seed=seed, **kw)


def drain(stream: Any) -> np.ndarray:
    pieces = []
    while (piece := stream.next_piece().result(WAIT_S)) is not None:
        assert len(piece) > 0, "a stream must not hand out empty pieces"
        pieces.append(piece)
    return np.concatenate(pieces)


def wait_until(cond: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


def assert_same_audio(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float rounding of differently sized batches (a seeding or ordering bug is ~0.1)."""
    assert got.shape == want.shape, f"length {got.shape} != {want.shape}"
    assert np.any(want != 0), "reference audio is silent: the comparison would prove nothing"
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def chunks(synth: Synthesizer, voice: Voice, text: str, first: int | None = 12) -> list[str]:
    return synth.engine.plan_request(text, voice, opts(0), first).chunks


def test_first_pieces_go_ahead_of_older_requests_and_later_pieces(
    batcher: Batcher, rec: Recorder, synth: Synthesizer, voice: Voice
) -> None:
    a, b = chunks(synth, voice, STREAM_A), chunks(synth, voice, STREAM_B)
    assert len(a) == len(b) == 2
    whole = batcher.submit(WHOLE, voice, opts(1))  # the oldest request
    s1 = batcher.open_stream(STREAM_A, voice, opts(2), 12)
    s2 = batcher.open_stream(STREAM_B, voice, opts(3), 12)
    batcher.resume()
    got_a, got_b, result = drain(s1), drain(s2), whole.result(WAIT_S)
    # Both first pieces share the first call; then the oldest request's chunk leads the next one.
    assert sorted(rec.calls[0]) == sorted([(a[0], 0), (b[0], 0)]), rec.calls
    assert rec.calls[1][0] == (WHOLE, 0), rec.calls
    ran = [row for call in rec.calls for row in call]
    assert sorted(ran) == sorted([(a[0], 0), (a[1], 1), (b[0], 0), (b[1], 1), (WHOLE, 0)]), "each row runs once"
    assert_same_audio(got_a, synth.synthesize(STREAM_A, voice, opts(2), 12).audio)
    assert_same_audio(got_b, synth.synthesize(STREAM_B, voice, opts(3), 12).audio)
    assert_same_audio(result.audio, synth.synthesize(WHOLE, voice, opts(1)).audio)
    assert result.seed == 1 and result.chunks == [WHOLE]


def test_stream_pieces_and_whole_requests_share_one_engine_call(
    batcher: Batcher, rec: Recorder, backend: RecordingBackend, synth: Synthesizer, voice: Voice
) -> None:
    a = chunks(synth, voice, STREAM_A)
    stream = batcher.open_stream(STREAM_A, voice, opts(4), 12)
    whole = batcher.submit(WHOLE, voice, opts(5))
    batcher.resume()
    got, result = drain(stream), whole.result(WAIT_S)
    # The first piece runs alone (nothing rides along on a dynamic-shape backend), then the stream's
    # second chunk and the whole request's chunk go through one B = 2 engine call.
    assert rec.calls == [[(a[0], 0)], [(a[1], 1), (WHOLE, 0)]]
    assert backend.sample_batches == [1, 2]
    assert batcher.batches_run == 2
    assert_same_audio(got, synth.synthesize(STREAM_A, voice, opts(4), 12).audio)
    assert_same_audio(result.audio, synth.synthesize(WHOLE, voice, opts(5)).audio)


def test_a_steady_flow_of_streams_cannot_starve_a_whole_request(rec: Recorder, voice: Voice) -> None:
    b = Batcher(rec, Limits(batch_window_ms=50, max_batch=2))  # two requests per call: many calls
    b.start(warmup=False)
    try:
        b.pause()
        whole = b.submit(WHOLE, voice, opts(1))
        lines = [f"Hi number {i}." for i in range(2 * FIRST_PIECE_STREAK + 2)]  # one-chunk streams
        streams = [b.open_stream(t, voice, opts(i), 12) for i, t in enumerate(lines)]
        b.resume()
        whole.result(WAIT_S)
        for s in streams:
            drain(s)
    finally:
        b.stop()
    turn = next(i for i, call in enumerate(rec.calls) if (WHOLE, 0) in call)
    assert turn == FIRST_PIECE_STREAK, rec.calls  # after exactly that many first-piece calls
    assert all(len(call) == 2 and all(i == 0 for _, i in call) for call in rec.calls[:turn])


def test_streamed_equals_non_streamed_for_the_same_seed_among_other_traffic(
    batcher: Batcher, synth: Synthesizer, voice: Voice
) -> None:
    plain = batcher.open_stream(STREAM_A, voice, opts(7), None)  # no short first chunk
    short = batcher.open_stream(STREAM_B, voice, opts(8), 12)
    other = batcher.submit(STREAM_C, voice, opts(9))
    drawn = batcher.open_stream(WHOLE, voice, SynthesisOptions(nfe=NFE), 12)  # the seed is drawn
    batcher.resume()
    assert_same_audio(drain(plain), synth.synthesize(STREAM_A, voice, opts(7)).audio)
    assert_same_audio(drain(short), synth.synthesize(STREAM_B, voice, opts(8), 12).audio)
    assert_same_audio(other.result(WAIT_S).audio, synth.synthesize(STREAM_C, voice, opts(9)).audio)
    assert len(drain(drawn)) > 0


def test_closing_a_stream_drops_its_queued_rows(
    batcher: Batcher, rec: Recorder, synth: Synthesizer, voice: Voice
) -> None:
    a = chunks(synth, voice, STREAM_A)
    rec.after_call = batcher.pause  # hold the worker once the first piece is computed
    stream = batcher.open_stream(STREAM_A, voice, opts(2), 12)
    batcher.resume()
    assert len(stream.next_piece().result(WAIT_S)) > 0
    assert batcher.queue_depth == 1  # the second chunk is queued
    stream.close()
    assert batcher.queue_depth == 0
    assert stream.next_piece().result(WAIT_S) is None
    batcher.resume()
    assert batcher.submit(WHOLE, voice, opts(1)).result(WAIT_S).audio.size > 0
    assert rec.calls == [[(a[0], 0)], [(WHOLE, 0)]], "nothing more may be computed for a closed stream"


def test_closing_a_stream_while_its_row_runs_drops_that_piece_too(
    batcher: Batcher, rec: Recorder, synth: Synthesizer, voice: Voice
) -> None:
    a = chunks(synth, voice, STREAM_A)
    stream = batcher.open_stream(STREAM_A, voice, opts(2), 12)
    waiting = stream.next_piece()
    rec.after_call = stream.close  # the reader leaves while the first call runs
    batcher.resume()
    assert waiting.result(WAIT_S) is None
    assert batcher.submit(WHOLE, voice, opts(1)).result(WAIT_S).audio.size > 0
    assert rec.calls == [[(a[0], 0)], [(WHOLE, 0)]]


def test_without_batching_only_rows_of_one_request_share_a_call(
    rec: Recorder, synth: Synthesizer, voice: Voice
) -> None:
    a = chunks(synth, voice, STREAM_A, None)
    b = Batcher(rec, Limits(batch_window_ms=0, max_batch=4))
    b.start(warmup=False)
    try:
        b.pause()
        first = b.submit(STREAM_A, voice, opts(1))
        second = b.submit(WHOLE, voice, opts(2))
        b.resume()
        first.result(WAIT_S)
        second.result(WAIT_S)
    finally:
        b.stop()
    assert rec.calls == [[(c, i) for i, c in enumerate(a)], [(WHOLE, 0)]]


def test_fixed_shape_engines_fill_a_first_piece_call_with_rows_that_fit(tiny_artifacts: Path, voice: Voice) -> None:
    padded = OnnxRuntimeBackend(load_manifest(tiny_artifacts), threads=1, pad_to_buckets=True)
    synth = Synthesizer(tiny_artifacts, backend=padded)
    rec = Recorder(synth)
    b = Batcher(rec, Limits(batch_window_ms=50, max_batch=4))
    b.start(warmup=False)
    try:
        b.pause()
        whole = b.submit(WHOLE, voice, opts(1))
        streams = [b.open_stream(t, voice, opts(i), 12) for i, t in enumerate((STREAM_A, STREAM_B, STREAM_C))]
        b.resume()
        for s in streams:
            drain(s)
        whole.result(WAIT_S)
    finally:
        b.stop()
        padded.close()
    # Three first pieces take the B = 4 bucket; its fourth row is free, so the whole request rides along.
    assert sorted(i for _, i in rec.calls[0]) == [0, 0, 0, 0] and (WHOLE, 0) in rec.calls[0], rec.calls


def test_one_failing_row_does_not_fail_its_neighbours(batcher: Batcher, rec: Recorder, voice: Voice) -> None:
    rec.fail_on = "Good game."
    bad = batcher.submit("Good game.", voice, opts(1))
    good = batcher.submit(WHOLE, voice, opts(2))
    batcher.resume()
    assert good.result(WAIT_S).audio.size > 0
    with pytest.raises(RuntimeError, match="poisoned"):
        bad.result(WAIT_S)
    assert [len(c) for c in rec.calls] == [2, 1, 1]  # the shared call, then each row alone


def test_errors_reach_the_request_that_caused_them(batcher: Batcher, rec: Recorder, voice: Voice) -> None:
    stream = batcher.open_stream(STREAM_A, voice, SynthesisOptions(nfe=0), 12)
    whole = batcher.submit(WHOLE, voice, SynthesisOptions(nfe=0))
    batcher.resume()
    with pytest.raises(ValueError, match="nfe"):
        stream.next_piece().result(WAIT_S)
    with pytest.raises(ValueError, match="nfe"):
        whole.result(WAIT_S)
    assert rec.calls == []


def test_overload_timeout_and_shutdown(batcher: Batcher, rec: Recorder, voice: Voice) -> None:
    small = Batcher(rec, Limits(queue_size=2))
    slots = [small.acquire(), small.acquire()]
    with pytest.raises(Overloaded) as e:
        small.acquire()
    assert e.value.retry_after >= 1
    slots[0].release()
    slots[0].release()  # idempotent
    small.acquire().release()
    assert small.inflight == 1

    late = batcher.submit(WHOLE, voice, opts(1), timeout=0.001)
    late_stream = batcher.open_stream(STREAM_A, voice, opts(2), 12, timeout=0.001)
    time.sleep(0.02)  # both deadlines pass while the worker is held
    batcher.resume()
    with pytest.raises(RequestTimeout):
        late.result(WAIT_S)
    with pytest.raises(RequestTimeout):
        late_stream.next_piece().result(WAIT_S)
    assert rec.calls == [], "a request past its deadline must not be computed"

    batcher.pause()
    gate = threading.Event()
    busy = batcher.call(gate.wait)
    queued = batcher.submit(WHOLE, voice, opts(3))
    stream = batcher.open_stream(STREAM_A, voice, opts(4), 12)
    batcher.resume()
    wait_until(busy.running, "the worker to run the call")
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    wait_until(lambda: batcher.queue_depth == 0, "stop() to take the queue")
    gate.set()
    stopper.join(WAIT_S)
    with pytest.raises(ShuttingDown):
        queued.result(WAIT_S)
    with pytest.raises(ShuttingDown):
        stream.next_piece().result(WAIT_S)
    with pytest.raises(ShuttingDown):
        batcher.submit(WHOLE, voice, opts(5))
    assert rec.calls == []
