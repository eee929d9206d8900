"""What a count holds: the work of one op class (ClassCount) and of a graph at one shape (OpCounts).

A module of its own because these records are the cost model's interface: f5build.cost.count fills
them from an ONNX graph, while the Orin projection (f5build.cost.orin), the reports and the tests only
read or build them, and need no ONNX graph or tracing for that. Plain frozen dataclasses, no ONNX
import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClassCount:
    """One op class: FLOPs (2 per multiply-add; 1 per output element for "other"), bytes, ops."""

    flops: int = 0
    bytes: int = 0
    weight_bytes: int = 0
    ops: int = 0
    act_act_flops: int = 0  # FLOPs of tensor ops with no weight input (attention q k^T, p v)

    def __add__(self, o: ClassCount) -> ClassCount:
        return ClassCount(*(a + b for a, b in zip(_astuple(self), _astuple(o), strict=True)))

    def scaled(self, k: int) -> ClassCount:
        return ClassCount(*(a * k for a in _astuple(self)))


def _astuple(c: ClassCount) -> tuple[int, ...]:
    return (c.flops, c.bytes, c.weight_bytes, c.ops, c.act_act_flops)


@dataclass(frozen=True)
class OpCounts:
    """A graph's work at one input shape: tensor ops by precision, plus everything else."""

    int8: ClassCount = ClassCount()
    fp16: ClassCount = ClassCount()
    fp32: ClassCount = ClassCount()
    other: ClassCount = ClassCount()
    int8_blocked: tuple[str, ...] = ()  # tensor ops whose int8 DQ input is behind another op
    other_unfused_bytes: int = 0  # "other" bytes if nothing were fused (2x every output)
    # per class: bytes of the attention score path (q k^T output, mask/softmax ops, p read by p v)
    # that a fused attention kernel (flash / TensorRT MHA) keeps on chip
    attention_bytes: Mapping[str, int] = field(default_factory=dict)

    def by_class(self) -> dict[str, ClassCount]:
        return {"int8": self.int8, "fp16": self.fp16, "fp32": self.fp32, "other": self.other}

    @property
    def tensor_flops(self) -> int:
        return self.int8.flops + self.fp16.flops + self.fp32.flops

    @property
    def tf32_flops(self) -> int:
        """FP32 tensor-op FLOPs TensorRT may run on TF32 tensor cores (TF32 on)."""
        return self.fp32.flops

    @property
    def fp32_share(self) -> float:
        """FP32 fraction of the tensor-op FLOPs (0 when there are none)."""
        return self.fp32.flops / self.tensor_flops if self.tensor_flops else 0.0

    def bytes_without_attention(self, cls: str) -> int:
        """Bytes of a class if a fused attention kernel kept the score matrices on chip."""
        return self.by_class()[cls].bytes - int(self.attention_bytes.get(cls, 0))
