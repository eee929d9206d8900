"""A Backend that delegates to another and keeps a copy of the inputs the calibrate stage asks for.

The synthesizer is never modified: calibrate hands it this backend (`Synthesizer(root,
backend=RecordingBackend(...))`). What is recorded is said through two nested context managers, so
that no state is set on the backend from outside and nothing is recorded by accident:

    with rec.split(0, steps=64):                   # calibration runs: 64 step calls in all
        with rec.request(7, keep_steps={0, 8, 16}):  # this sampler run: keep these step indices
            synth.synthesize_batch(...)

Calls made outside a request are delegated, not recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from f5build.recordings import STEP_INPUTS, TEXT_INPUTS, VOCODER_INPUTS, Recording
from f5rt.backends.base import SampleJob, TextEmbeddings


@dataclass(frozen=True)
class _Scope:
    split: int
    request: int
    keep_steps: frozenset[int]


class RecordingBackend:
    """Records the graphs' real inputs while delegating every call to `inner`.

    sample() runs the NFE loop as NFE one-step jobs on the inner backend (exactly what the ONNX
    Runtime backend does inside its own loop), so every step's real input can be seen. Budgets count
    down: `text_budget` / `vocoder_budget` calls over the whole recording (a split may add to them),
    the step budget per split; `max_bytes` caps the total, after which `capped` is True.
    """

    # Calibrate on the padded bucket shapes the TensorRT engines run, whatever the inner backend
    # would do: the synthesizer pads jobs to a bucket for fixed-shape backends only, and the padded
    # frames' activations belong in the ranges (the engine computes them too).
    fixed_shapes = True

    def __init__(self, inner: Any, max_bytes: int, text_budget: int = 0, vocoder_budget: int = 0) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.inner = inner
        self.name = f"recording({inner.name})"
        self.precision = inner.precision
        self.max_bytes = max_bytes
        self.step = Recording(STEP_INPUTS)
        self.text = Recording(TEXT_INPUTS)
        self.vocoder = Recording(VOCODER_INPUTS)
        self.calls = 0
        self.capped = False
        self._text_budget = text_budget
        self._vocoder_budget = vocoder_budget
        self._step_budget = 0
        self._split: int | None = None
        self._scope: _Scope | None = None

    @property
    def nbytes(self) -> int:
        return self.step.nbytes + self.text.nbytes + self.vocoder.nbytes

    @contextlib.contextmanager
    def split(self, split: int, steps: int, extra_text: int = 0, extra_vocoder: int = 0) -> Iterator[None]:
        """Record split `split` (0 calibration, 1 held out): at most `steps` step calls in it, and
        `extra_text` / `extra_vocoder` more text-encoder / vocoder calls on top of what is left."""
        if self._split is not None:
            raise RuntimeError(f"split {split} opened inside split {self._split}")
        if steps < 0 or extra_text < 0 or extra_vocoder < 0:
            raise ValueError(f"budgets must be >= 0, got steps={steps} text={extra_text} vocoder={extra_vocoder}")
        self._split, self._step_budget = split, steps
        self._text_budget = max(self._text_budget, 0) + extra_text
        self._vocoder_budget = max(self._vocoder_budget, 0) + extra_vocoder
        try:
            yield
        finally:
            self._split, self._step_budget = None, 0

    @contextlib.contextmanager
    def request(self, request: int, keep_steps: set[int] | frozenset[int]) -> Iterator[None]:
        """Record the calls of sampler run `request`, keeping the step calls of `keep_steps`."""
        if self._split is None:
            raise RuntimeError("RecordingBackend.request() needs an open split()")
        if self._scope is not None:
            raise RuntimeError(f"request {request} opened inside request {self._scope.request}")
        self._scope = _Scope(self._split, request, frozenset(keep_steps))
        try:
            yield
        finally:
            self._scope = None

    def _room(self) -> bool:
        if self.nbytes >= self.max_bytes:
            self.capped = True
        return not self.capped

    def encode_text(self, text_ids: np.ndarray, mask: np.ndarray) -> TextEmbeddings:
        s = self._scope
        if s is not None and self._text_budget > 0 and self._room():
            self.text.add(
                {"text_ids": text_ids.astype(np.int32), "mask": mask},
                split=s.split,
                request=s.request,
                frames=text_ids.shape[1],
                batch=text_ids.shape[0],
            )
            self._text_budget -= 1
        return self.inner.encode_text(text_ids, mask)

    def sample(self, job: SampleJob) -> np.ndarray:
        b = job.bucket.batch
        x = job.x0
        self.calls += 1
        s = self._scope
        text_cond, text_uncond = job.text.host()
        for k in range(job.nfe):
            sub = SampleJob(job.bucket, x, job.cond, job.text, job.mask, job.t[k : k + 1], job.dt[k : k + 1], job.cfg)
            if s is not None and k in s.keep_steps and self._step_budget > 0 and self._room():
                feed = {
                    "x": x,
                    "cond": job.cond,
                    "text_cond": text_cond,
                    "text_uncond": text_uncond,
                    "mask": job.mask,
                    "t": np.full((b,), job.t[k], dtype=np.float32),
                    "dt": np.full((b,), job.dt[k], dtype=np.float32),
                    "cfg": job.cfg.astype(np.float32),
                }
                self.step.add(
                    feed,
                    split=s.split,
                    request=s.request,
                    step=k,
                    nfe=job.nfe,
                    t=float(job.t[k]),
                    dt=float(job.dt[k]),
                    frames=job.bucket.frames,
                    batch=b,
                )
                self._step_budget -= 1
            x = self.inner.sample(sub)
        return x

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        s = self._scope
        if s is not None and self._vocoder_budget > 0 and self._room():
            self.vocoder.add(
                {"mel": mel.astype(np.float32)},
                split=s.split,
                request=s.request,
                frames=mel.shape[2],
                batch=mel.shape[0],
            )
            self._vocoder_budget -= 1
        return self.inner.vocode(mel)

    def close(self) -> None:
        self.inner.close()
