"""Optimization profiles: one per shape bucket, min = opt = max (the vocoder's frame axis is a range).

Peers' lesson (NVIDIA/TensorRT#4450): FP16 engines of F5-TTS gave blank audio when the runtime shape
differed from the optimization shape, so every step/text-encoder profile is one exact shape.

This module plans profiles and picks one at run time; it does not check them. The manifest checks of
an engine's recorded profiles (indices 0..n-1, every bucket of the table covered, exact shapes for the
step and text encoder, no frame gaps for the vocoder) are `engines.engine_profiles`, beside the
engine's other checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from f5rt.backends.trt.contract import GRAPH_INPUTS, tensor_shape
from f5rt.buckets import Bucket, BucketTable
from f5rt.errors import NoBucketError

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # (min, opt, max)


@dataclass(frozen=True)
class ProfileSpec:
    """Optimization profile `index` of an engine: bucket (frames, batch), min = opt = max.

    The vocoder is the exception on its frame axis: it vocodes exactly the generated frames, so its
    profile for bucket N_k spans (N_{k-1}, N_k] (opt = max = N_k). Together the ranges cover every
    length 1..max frames without padding the mel, so TensorRT output never depends on a pad value.
    """

    index: int
    frames: int
    batch: int
    min_frames: int

    @property
    def bucket(self) -> Bucket:
        return Bucket(self.frames, self.batch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "bucket": self.bucket.name,
            "frames": self.frames,
            "batch": self.batch,
            "min_frames": self.min_frames,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProfileSpec:
        try:
            frames = int(d["frames"])
            return cls(int(d["index"]), frames, int(d["batch"]), int(d.get("min_frames", frames)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed profile record {dict(d)!r}: {e}") from None


def plan_profiles(graph: str, buckets: BucketTable) -> list[ProfileSpec]:
    """Profiles in bucket-table order (frames major, batch minor); index = position."""
    if graph not in GRAPH_INPUTS:
        raise ValueError(f"unknown graph {graph!r} (expected one of {', '.join(GRAPH_INPUTS)})")
    lower = {
        n: (prev + 1 if graph == "vocoder" else n)
        for prev, n in zip((0, *buckets.frames), buckets.frames, strict=False)
    }
    return [ProfileSpec(i, b.frames, b.batch, lower[b.frames]) for i, b in enumerate(buckets)]


def profile_shapes(graph: str, profile: ProfileSpec, mel_dim: int, text_dim: int) -> dict[str, ShapeRange]:
    """(min, opt, max) shape of every input of `graph` under `profile`."""
    top = {"B": profile.batch, "N": profile.frames, "F": profile.frames, "C": mel_dim, "D": text_dim}
    low = {**top, "F": profile.min_frames}
    return {s.name: (tensor_shape(s, low), tensor_shape(s, top), tensor_shape(s, top)) for s in GRAPH_INPUTS[graph]}


def choose_vocoder_profile(profiles: Sequence[ProfileSpec], frames: int, batch: int) -> ProfileSpec:
    """The profile running `batch` rows of `frames` mel frames: smallest batch that holds them."""
    if frames <= 0 or batch <= 0:
        raise ValueError(f"vocoder input must have positive frames and batch, got frames={frames} batch={batch}")
    batches = sorted({p.batch for p in profiles})
    b = next((x for x in batches if x >= batch), None)
    if b is None:
        raise NoBucketError(
            f"vocoder batch {batch} exceeds the largest batch profile ({batches[-1] if batches else 0})"
        )
    for p in profiles:
        if p.batch == b and p.min_frames <= frames <= p.frames:
            return p
    top = max((p.frames for p in profiles if p.batch == b), default=0)
    raise NoBucketError(f"{frames} mel frames exceed the vocoder engine's largest profile ({top} frames)")
