"""Planned work: a request cut into chunk works (rows of engine calls), its plan, and its result.

A `ChunkWork` is one chunk of one request: the unit the sampler batches (one row of an engine call).
Rows share a call only when their options' `schedule_key` is equal (f5rt.options: the one rule), and
`group_by_schedule` is the one place that groups them by it: the synthesizer's engine calls, and so
`synthesize_batch`, Triton's dynamic batches and the batcher's calls, all go through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from f5rt.options import ScheduleKey, SynthesisOptions
from f5rt.text import ChunkPlan
from f5rt.voices import Voice

Wave = np.ndarray
"""float32 mono samples at the synthesizer's sample rate, shape (samples,)."""


@dataclass(frozen=True, eq=False)
class ChunkWork:
    """One chunk of one request.

    item: which request of a batch it belongs to; index: its chunk number in that request.
    bucket: the frame count of the smallest bucket that holds the chunk, so a scheduler can tell
    which rows share an engine call without extra padding.
    """

    item: int
    index: int
    plan: ChunkPlan
    voice: Voice
    opts: SynthesisOptions
    seed: int
    bucket: int

    @property
    def frames(self) -> int:
        return self.plan.frames


@dataclass(frozen=True)
class RequestPlan:
    """A request cut into the chunk works that make it (see `ChunkEngine.plan_request`)."""

    works: tuple[ChunkWork, ...]
    seed: int
    opts: SynthesisOptions

    @property
    def chunks(self) -> list[str]:
        return [w.plan.text for w in self.works]


@dataclass
class SynthesisResult:
    """One request's audio, with the seed it used, its text chunks and where the time went."""

    audio: np.ndarray
    sample_rate: int
    seed: int
    chunks: list[str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return float(self.audio.shape[0]) / self.sample_rate


def group_by_schedule(works: Sequence[ChunkWork]) -> dict[ScheduleKey, list[int]]:
    """Indices of `works` by schedule key, each group shortest chunk first (so batches pad least)."""
    groups: dict[ScheduleKey, list[int]] = {}
    for i, w in enumerate(works):
        groups.setdefault(w.opts.schedule_key, []).append(i)
    for idxs in groups.values():
        idxs.sort(key=lambda i: works[i].frames)
    return groups


__all__ = ["ChunkWork", "RequestPlan", "SynthesisResult", "Wave", "group_by_schedule"]
