"""The backend protocol: what the synthesizer asks of an inference engine.

A backend owns the three graphs of one artifacts folder. The synthesizer hands it whole jobs, not
single steps, so a backend may run the entire NFE loop however it likes: ONNX Runtime calls the step
graph NFE times from Python; TensorRT replays all NFE enqueues as one captured CUDA graph.

Graph I/O (names as exported; B batch, N bucket frames, C = 100 mel channels, D text dim, F frames):

    text_encoder: text_ids int32 (B, N) [-1 = padding], mask bool (B, N)
                  -> text_cond float32 (B, N, D), text_uncond float32 (B, N, D)
    step:         x, cond float32 (B, N, C); text_cond, text_uncond (B, N, D); mask bool (B, N);
                  t, dt, cfg float32 (B,)  -> x_next float32 (B, N, C)
    vocoder:      mel float32 (B, C, F) -> audio float32 (B, S), S = manifest.vocoder.samples(F)
                  ((F-1)*hop for Vocos' center-padded head, F*hop for a same-padded one)

Text embeddings come back from `encode_text` as a `TextEmbeddings` object rather than arrays, so a
device backend can keep them where the text encoder wrote them (TensorRT: ~46 MB each way saved per
batch at n2816_b4) and the host only sees them when it asks (`host()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from f5rt.buckets import Bucket


class TextEmbeddings:
    """(text_cond, text_uncond) of one padded batch (B, N, D), wherever the backend keeps them."""

    shape: tuple[int, int]  # (B, N)

    def host(self) -> tuple[np.ndarray, np.ndarray]:
        """Both embeddings as host arrays (a copy from the device where they live there)."""
        raise NotImplementedError


class HostText(TextEmbeddings):
    """Text embeddings held as host arrays (ONNX Runtime, or given by a caller)."""

    def __init__(self, cond: np.ndarray, uncond: np.ndarray) -> None:
        if cond.shape != uncond.shape or cond.ndim != 3:
            raise ValueError(f"text_cond and text_uncond must be equal (B, N, D), got {cond.shape} and {uncond.shape}")
        self.cond, self.uncond = cond, uncond
        self.shape = (int(cond.shape[0]), int(cond.shape[1]))

    def host(self) -> tuple[np.ndarray, np.ndarray]:
        return self.cond, self.uncond


@dataclass
class SampleJob:
    """Everything one batched ODE solve needs, already padded to its bucket.

    x0: initial noise (B, N, C); cond: reference mel, zero beyond the reference (B, N, C);
    text: both text embeddings (B, N, D), as `encode_text` returned them; mask: valid frames (B, N);
    t, dt: the solver's steps (shared by the batch); cfg: guidance strength per row (B,);
    solver: "euler" (one step-graph call per step) or "midpoint" (two: f5rt.options.SOLVERS).
    """

    bucket: Bucket
    x0: np.ndarray
    cond: np.ndarray
    text: TextEmbeddings
    mask: np.ndarray
    t: np.ndarray
    dt: np.ndarray
    cfg: np.ndarray
    solver: str = "euler"

    def __post_init__(self) -> None:
        b, n = self.bucket.batch, self.bucket.frames
        if tuple(self.text.shape) != (b, n):
            raise ValueError(f"SampleJob.text has shape {self.text.shape}, bucket {self.bucket.name} wants ({b}, {n})")
        for name in ("x0", "cond"):
            arr = getattr(self, name)
            if arr.shape[:2] != (b, n):
                raise ValueError(
                    f"SampleJob.{name} has shape {arr.shape}, bucket {self.bucket.name} wants ({b}, {n}, …)"
                )
        if self.mask.shape != (b, n) or self.mask.dtype != np.bool_:
            raise ValueError(f"SampleJob.mask must be bool ({b}, {n}), got {self.mask.dtype} {self.mask.shape}")
        if self.t.shape != self.dt.shape or self.t.ndim != 1 or len(self.t) == 0:
            raise ValueError(f"SampleJob.t and dt must be equal 1-D schedules, got {self.t.shape} {self.dt.shape}")
        if self.solver not in ("euler", "midpoint"):
            raise ValueError(f"SampleJob.solver must be euler or midpoint, got {self.solver!r}")
        if self.cfg.shape != (b,):
            raise ValueError(f"SampleJob.cfg must have shape ({b},), got {self.cfg.shape}")

    @property
    def nfe(self) -> int:
        """Solver steps (the length of t and dt)."""
        return int(self.t.shape[0])

    @property
    def graph_calls(self) -> int:
        """Step-graph calls the solve makes: one per Euler step, two per midpoint step."""
        return self.nfe * (2 if self.solver == "midpoint" else 1)


@runtime_checkable
class Backend(Protocol):
    """An inference engine for one artifacts folder (see the module docstring for graph I/O)."""

    name: str
    precision: str
    fixed_shapes: bool  # True: jobs must come in a shape bucket (engines); False: any size works

    def encode_text(self, text_ids: np.ndarray, mask: np.ndarray) -> TextEmbeddings:
        """Both text embeddings for padded ids (B, N) and frame mask (B, N)."""
        ...

    def sample(self, job: SampleJob) -> np.ndarray:
        """Run the whole Euler loop from job.x0; return x at t = 1, shape (B, N, C)."""
        ...

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        """Waveform (B, manifest.vocoder.samples(F)) for a mel batch (B, C, F)."""
        ...

    def close(self) -> None:
        """Release sessions, device memory and streams."""
        ...
