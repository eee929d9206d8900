"""The calibration recording format (f5build.recordings) and the backend that records it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from f5build.recording_backend import RecordingBackend
from f5build.recordings import (
    STEP_INPUTS,
    RecordedSamples,
    Recording,
    crop_feed,
    recording_rel,
    save_recording,
)
from f5rt.backends.base import HostText, SampleJob
from f5rt.buckets import Bucket

B, N, C, D, NFE = 2, 8, 3, 4, 4


class Inner:
    """A stand-in backend: x_next = x + 1 per step, text embeddings of ones, audio = mel summed."""

    name = "fake"
    precision = "fp32"

    def __init__(self) -> None:
        self.steps = 0
        self.closed = False

    def encode_text(self, text_ids: np.ndarray, mask: np.ndarray) -> HostText:
        shape = (*text_ids.shape, D)
        return HostText(np.ones(shape, np.float32), np.zeros(shape, np.float32))

    def sample(self, job: SampleJob) -> np.ndarray:
        assert len(job.t) == 1  # the recording backend runs one step per call
        self.steps += 1
        return job.x0 + 1.0

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        return mel.sum(axis=1)

    def close(self) -> None:
        self.closed = True


def _job() -> SampleJob:
    mask = np.ones((B, N), bool)
    mask[1, 5:] = False
    return SampleJob(
        Bucket(N, B),
        np.zeros((B, N, C), np.float32),
        np.zeros((B, N, C), np.float32),
        HostText(np.ones((B, N, D), np.float32), np.zeros((B, N, D), np.float32)),
        mask,
        np.linspace(0, 1, NFE, endpoint=False).astype(np.float32),
        np.full(NFE, 1 / NFE, np.float32),
        np.full(B, 2.0, np.float32),
    )


def _run(rec: RecordingBackend) -> np.ndarray:
    rec.encode_text(np.zeros((B, N), np.int32), np.ones((B, N), bool))
    x = rec.sample(_job())
    rec.vocode(np.zeros((B, 100, N), np.float32))
    return x


def test_records_only_inside_a_request_and_within_budgets() -> None:
    inner = Inner()
    rec = RecordingBackend(inner, max_bytes=10**9, text_budget=1, vocoder_budget=5)
    x = _run(rec)  # outside any request: delegated, nothing kept
    assert np.all(x == NFE) and inner.steps == NFE
    assert not rec.step.feeds and not rec.text.feeds and not rec.vocoder.feeds
    with rec.split(0, steps=3), rec.request(7, keep_steps={0, 2}):
        _run(rec)
        _run(rec)  # the step budget (3) stops the 4th kept step
    assert [(m["split"], m["request"], m["step"]) for m in rec.step.meta] == [(0, 7, 0), (0, 7, 2), (0, 7, 0)]
    assert len(rec.text.feeds) == 1  # text budget 1
    assert len(rec.vocoder.feeds) == 2
    with rec.split(1, steps=1, extra_text=2), rec.request(8, keep_steps={3}):
        _run(rec)
    assert rec.step.meta[-1]["split"] == 1 and rec.step.meta[-1]["step"] == 3
    assert rec.step.meta[-1]["t"] == pytest.approx(0.75)
    assert [m["split"] for m in rec.text.meta] == [0, 1]  # the split added to what was left (0)
    rec.close()
    assert inner.closed


def test_scopes_are_strict() -> None:
    rec = RecordingBackend(Inner(), max_bytes=10**9)
    with pytest.raises(RuntimeError, match="needs an open split"), rec.request(0, {0}):
        pass
    with rec.split(0, steps=1):
        with pytest.raises(RuntimeError, match="inside split"), rec.split(1, steps=1):
            pass
        with rec.request(0, {0}), pytest.raises(RuntimeError, match="inside request"), rec.request(1, {0}):
            pass
    with pytest.raises(ValueError, match="max_bytes"):
        RecordingBackend(Inner(), max_bytes=0)


def test_byte_cap_stops_recording() -> None:
    rec = RecordingBackend(Inner(), max_bytes=1, text_budget=10, vocoder_budget=10)
    with rec.split(0, steps=100), rec.request(0, set(range(NFE))):
        _run(rec)
    assert rec.capped
    assert len(rec.text.feeds) == 1 and not rec.step.feeds  # the first copy filled the cap


def test_written_recording_reads_back(tmp_path: Path) -> None:
    rec = RecordingBackend(Inner(), max_bytes=10**9, text_budget=1, vocoder_budget=1)
    with rec.split(0, steps=2), rec.request(0, {0, 1}):
        _run(rec)
    with rec.split(1, steps=1), rec.request(1, {3}):
        _run(rec)
    path = tmp_path / "step.npz"
    save_recording(path, rec.step)
    with RecordedSamples(path) as s:
        assert s.inputs == list(STEP_INPUTS)
        assert s.count == 3
        assert s.indices(split=0) == [0, 1] and s.indices(split=1) == [2]
        assert s.indices(limit=2) == [0, 2]  # spread over the recording
        feed = s.feed(1)
        assert feed["x"].shape == (B, N, C) and np.all(feed["x"] == 1.0)  # the state before step 1
        assert feed["t"].dtype == np.float32 and s.meta["step"].dtype == np.int64
        assert float(s.meta["t"][2]) == pytest.approx(0.75)


def test_recording_copies_its_inputs() -> None:
    r = Recording(("a",))
    a = np.zeros(3)
    r.add({"a": a, "ignored": a}, split=0)
    a[:] = 1
    assert np.all(r.feeds[0]["a"] == 0) and list(r.feeds[0]) == ["a"]


def test_crop_feed_keeps_a_valid_frame() -> None:
    feed = {"x": np.ones((2, 10, 3)), "mask": np.zeros((2, 10), bool), "mel": np.ones((1, 100, 10)), "t": np.ones(2)}
    out = crop_feed(feed, 4)
    assert out["x"].shape == (2, 4, 3) and out["mel"].shape == (1, 100, 4) and out["t"].shape == (2,)
    assert out["mask"][:, 0].all() and not feed["mask"].any()  # the caller's mask is untouched


def test_recording_names() -> None:
    assert recording_rel("step") == "calibration/step.npz"
    with pytest.raises(ValueError, match="unknown graph"):
        recording_rel("dit")
