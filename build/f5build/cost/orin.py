"""The Jetson AGX Orin 64GB roofline and the projection of a request's time and RTF from op counts.

Time model: per op class c (int8, fp16, fp32 tensor ops, other),
    t_c = max(FLOPs_c / (peak_c * u_math), bytes_c / (bandwidth * u_bw))
and a graph's time is the sum over its classes. FP32 tensor ops run at the TF32 peak when TF32 is on
(the compile stage's default; `--trt-no-tf32` turns it off), else at the FP32 CUDA-core peak. "other"
ops (elementwise, norms, softmax, Q/DQ that are not fused) run on CUDA cores at the FP32 peak; they
are bandwidth bound in practice. A request: text encoder once + NFE x step + vocoder on the generated
frames, RTF = that time / the generated audio's duration. With `fused_attention` the attention score
path (OpCounts.attention_bytes) stays on chip, as in a flash / TensorRT MHA kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from f5build.cost.counts import OpCounts
from f5rt.manifest import GRAPHS


@dataclass(frozen=True)
class Device:
    """Dense peaks (no 2:4 sparsity) in TOPS / TFLOP/s and DRAM bandwidth in GB/s."""

    name: str
    int8_tops: float
    fp16_tflops: float
    tf32_tflops: float
    fp32_tflops: float
    bandwidth_gbs: float
    source: str

    def peak(self, cls: str, tf32: bool) -> float:
        """Operations per second of an op class."""
        tera = {
            "int8": self.int8_tops,
            "fp16": self.fp16_tflops,
            "fp32": self.tf32_tflops if tf32 else self.fp32_tflops,
            "other": self.fp32_tflops,
        }[cls]
        return tera * 1e12


ORIN_AGX_64GB = Device(
    name="Jetson AGX Orin 64GB (MAXN, GPU 1.3 GHz, 2048 CUDA cores, 64 tensor cores)",
    int8_tops=85.0,
    fp16_tflops=42.5,
    tf32_tflops=21.25,
    fp32_tflops=5.3,
    bandwidth_gbs=204.8,
    source=(
        "NVIDIA Jetson AGX Orin Series Technical Brief / data sheet: GPU 170 INT8 sparse TOPS = 85 dense, "
        "5.3 FP32 TFLOP/s (2048 cores x 2 x 1.3 GHz), 204.8 GB/s LPDDR5 (256-bit, 6400 MT/s). FP16 dense "
        "42.5 TFLOP/s = half the dense INT8 rate and TF32 dense 21.25 TFLOP/s = half the FP16 rate, the "
        "Ampere (GA10x) tensor-core ratios of the NVIDIA Ampere GA102 whitepaper; NVIDIA lists neither "
        "dense FP16 nor TF32 for Orin, so these two are derived, not quoted"
    ),
)


@dataclass(frozen=True)
class Utilisation:
    """Fractions of the peaks reached: tensor-core / CUDA-core math, and DRAM bandwidth."""

    math: float = 0.35
    bandwidth: float = 0.7

    def __post_init__(self) -> None:
        for name in ("math", "bandwidth"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"utilisation {name} must be in (0, 1], got {v}")


@dataclass(frozen=True)
class ClassTime:
    """Seconds of one op class: its compute and bandwidth bounds and the larger of the two."""

    compute_s: float
    bandwidth_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.bandwidth_s)


def class_times(
    counts: OpCounts, device: Device, util: Utilisation, tf32: bool, fused_attention: bool = False
) -> dict[str, ClassTime]:
    out = {}
    for cls, c in counts.by_class().items():
        moved = counts.bytes_without_attention(cls) if fused_attention else c.bytes
        out[cls] = ClassTime(
            compute_s=c.flops / (device.peak(cls, tf32) * util.math),
            bandwidth_s=moved / (device.bandwidth_gbs * 1e9 * util.bandwidth),
        )
    return out


def graph_seconds(
    counts: OpCounts, device: Device, util: Utilisation, tf32: bool, fused_attention: bool = False
) -> float:
    """Projected time of one graph call: per op class max(compute, bandwidth), summed."""
    return sum(t.seconds for t in class_times(counts, device, util, tf32, fused_attention).values())


@dataclass(frozen=True)
class Workload:
    """One request: reference + generated seconds, in the bucket and vocoder frames they take."""

    ref_seconds: float
    gen_seconds: float
    total_frames: int  # mel frames of reference + generated (what picks the bucket)
    vocoder_frames: int  # mel frames of the generated part (only that is vocoded)
    bucket_frames: int
    batch: int = 1


@dataclass(frozen=True)
class Projection:
    """Projected time of one request for one deployment, NFE and TF32 setting."""

    deployment: str
    graphs: Mapping[str, str]  # graph -> precision variant used
    nfe: int
    tf32: bool
    fused_attention: bool
    text_encoder_s: float
    step_s: float
    vocoder_s: float
    total_s: float
    rtf: float


def project(
    deployment: str,
    graphs: Mapping[str, str],
    counts: Mapping[str, OpCounts],
    workload: Workload,
    nfe: int,
    device: Device,
    util: Utilisation,
    tf32: bool,
    fused_attention: bool = False,
) -> Projection:
    """Text encoder once + `nfe` steps + vocoder, from each graph's counts at the workload's shapes."""
    te, step, voc = (graph_seconds(counts[g], device, util, tf32, fused_attention) for g in GRAPHS)
    total = te + nfe * step + voc
    return Projection(
        deployment, dict(graphs), nfe, tf32, fused_attention, te, step, voc, total, total / workload.gen_seconds
    )
