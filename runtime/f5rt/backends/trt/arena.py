"""Device memory layout: named, aligned regions of one allocation, and the NFE loop's addresses.

TensorRT's `IExecutionContext::setTensorAddress` requires every I/O address to be 256-byte aligned,
so every region starts on a 256-byte boundary and so does every per-step slot: step i of the NFE loop
reads its t and dt from slot i of a (nfe_max, slot) table whose row stride is a multiple of 256 bytes
(a captured graph bakes the addresses in, so the host writes the whole schedule once per request).
A stride of 4*B bytes, as once here, makes every step after the first misaligned.

Region order is chosen so that the per-request copies are contiguous: x_a .. dt is one copy when the
text embeddings are already on the device (written by the text encoder), x_a .. text_uncond when they
come from the host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from f5rt.buckets import Bucket

ALIGN = 256  # TensorRT's I/O address alignment (and cudaMalloc's)

# Copied in for every request, in arena order, so each group is one contiguous copy.
SAMPLE_INPUTS = ("x_a", "cond", "mask", "cfg", "t", "dt")
TEXT_EMBEDDINGS = ("text_cond", "text_uncond")
TEXT_INPUTS = ("text_ids", "mask")


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


@dataclass(frozen=True)
class Region:
    """`shape` elements of `dtype` at `offset` in an arena (offset and size in bytes)."""

    name: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def itemsize(self) -> int:
        return int(np.dtype(self.dtype).itemsize)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


@dataclass(frozen=True)
class ArenaPlan:
    """Named, aligned, non-overlapping regions of one allocation (device arena and its pinned mirror)."""

    regions: tuple[Region, ...]
    nbytes: int
    align: int = ALIGN

    def __getitem__(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def spans(self, names: Sequence[str]) -> list[tuple[int, int]]:
        """(offset, nbytes) copies covering `names`; neighbours separated only by padding are merged."""
        spans: list[tuple[int, int]] = []
        for r in sorted((self[n] for n in names), key=lambda r: r.offset):
            if spans and r.offset - (spans[-1][0] + spans[-1][1]) < self.align:
                start = spans[-1][0]
                spans[-1] = (start, r.offset + r.nbytes - start)
            else:
                spans.append((r.offset, r.nbytes))
        return spans


def plan_arena(layout: Sequence[tuple[str, tuple[int, ...], str]], align: int = ALIGN) -> ArenaPlan:
    if align <= 0 or align & (align - 1):
        raise ValueError(f"alignment must be a power of two, got {align}")
    regions, offset = [], 0
    for name, shape, dtype in layout:
        r = Region(name, offset, tuple(int(d) for d in shape), dtype)
        regions.append(r)
        offset += _round_up(r.nbytes, align)
    return ArenaPlan(tuple(regions), max(offset, align), align)


def slot_elems(batch: int, align: int = ALIGN) -> int:
    """Float32 elements per per-step t/dt slot: B values padded to a multiple of `align` bytes."""
    return _round_up(batch * 4, align) // 4


def plan_step_arena(bucket: Bucket, mel_dim: int, text_dim: int, nfe_max: int, align: int = ALIGN) -> ArenaPlan:
    """One bucket's device state, shared by its text-encoder and step contexts.

    x_a holds x0 and every even step's input, x_b every odd one's. t and dt are (nfe_max, slot):
    step i reads the first B values of row i, each row starting on an `align` boundary.
    """
    if nfe_max <= 0:
        raise ValueError(f"nfe_max must be positive, got {nfe_max}")
    b, n = bucket.batch, bucket.frames
    slot = slot_elems(b, align)
    return plan_arena(
        [
            ("x_a", (b, n, mel_dim), "float32"),
            ("cond", (b, n, mel_dim), "float32"),
            ("mask", (b, n), "bool"),
            ("cfg", (b,), "float32"),
            ("t", (nfe_max, slot), "float32"),
            ("dt", (nfe_max, slot), "float32"),
            ("text_cond", (b, n, text_dim), "float32"),
            ("text_uncond", (b, n, text_dim), "float32"),
            ("x_b", (b, n, mel_dim), "float32"),
            ("text_ids", (b, n), "int32"),
        ],
        align,
    )


def plan_vocoder_arena(
    max_batch: int, mel_dim: int, max_frames: int, max_samples: int, align: int = ALIGN
) -> ArenaPlan:
    """Vocoder I/O sized for the largest profile; a call uses the first B*C*F / B*samples(F) elements.

    `max_samples` is the manifest's VocoderSpec.samples(max_frames): (F-1)*hop for a center-padded head.
    """
    return plan_arena(
        [
            ("mel", (max_batch * mel_dim * max_frames,), "float32"),
            ("audio", (max_batch * max(max_samples, 1),), "float32"),
        ],
        align,
    )


@dataclass(frozen=True)
class StepAddresses:
    """Device addresses one Euler step reads and writes: x ping-pongs, t/dt move to the step's slot."""

    step: int
    x_in: int
    x_out: int
    t: int
    dt: int


def step_addresses(plan: ArenaPlan, base: int, nfe: int) -> list[StepAddresses]:
    """Step i reads x_a (even i) or x_b (odd i) and writes the other; its t/dt are row i of the tables.

    Pure arithmetic, so the address plan of a captured graph is checked without a GPU.
    """
    t, dt = plan["t"], plan["dt"]
    nfe_max, slot = t.shape
    if nfe <= 0:
        raise ValueError(f"nfe must be positive, got {nfe}")
    if nfe > nfe_max:
        raise ValueError(f"nfe {nfe} exceeds nfe_max {nfe_max} of this arena")
    x_a, x_b = base + plan["x_a"].offset, base + plan["x_b"].offset
    stride = slot * t.itemsize
    steps = []
    for i in range(nfe):
        src, dst = (x_a, x_b) if i % 2 == 0 else (x_b, x_a)
        steps.append(StepAddresses(i, src, dst, base + t.offset + i * stride, base + dt.offset + i * stride))
    return steps


def result_region(nfe: int) -> str:
    """The region x lands in after `nfe` steps starting from x_a."""
    return "x_a" if nfe % 2 == 0 else "x_b"


def step_bindings(plan: ArenaPlan, base: int, step: StepAddresses) -> dict[str, int]:
    """Step graph tensor name -> device address for one step."""
    p = {r.name: base + r.offset for r in plan.regions}
    return {
        "x": step.x_in,
        "cond": p["cond"],
        "text_cond": p["text_cond"],
        "text_uncond": p["text_uncond"],
        "mask": p["mask"],
        "t": step.t,
        "dt": step.dt,
        "cfg": p["cfg"],
        "x_next": step.x_out,
    }


def text_encoder_bindings(plan: ArenaPlan, base: int) -> dict[str, int]:
    return {n: base + plan[n].offset for n in ("text_ids", "mask", "text_cond", "text_uncond")}


def vocoder_bindings(plan: ArenaPlan, base: int) -> dict[str, int]:
    return {"mel": base + plan["mel"].offset, "audio": base + plan["audio"].offset}


def misaligned(bindings: dict[str, int], align: int = ALIGN) -> dict[str, int]:
    """The bindings whose address breaks the alignment rule (checked before every capture)."""
    return {name: addr for name, addr in bindings.items() if addr % align}
