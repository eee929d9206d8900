"""The graph I/O contract every engine must satisfy (names as exported; see backends/base.py).

Axis roles: B batch, N bucket frames, F vocoder frames, C mel channels, D text dim, S samples (the
vocoder's output length, which follows the manifest's VocoderSpec rule from F).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """One graph tensor: its name, axis roles and dtype (numpy name)."""

    name: str
    axes: tuple[str, ...]
    dtype: str


def _spec(name: str, axes: str, dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, tuple(axes), dtype)


GRAPH_INPUTS: dict[str, tuple[TensorSpec, ...]] = {
    "text_encoder": (_spec("text_ids", "BN", "int32"), _spec("mask", "BN", "bool")),
    "step": (
        _spec("x", "BNC"),
        _spec("cond", "BNC"),
        _spec("text_cond", "BND"),
        _spec("text_uncond", "BND"),
        _spec("mask", "BN", "bool"),
        _spec("t", "B"),
        _spec("dt", "B"),
        _spec("cfg", "B"),
    ),
    "vocoder": (_spec("mel", "BCF"),),
}
GRAPH_OUTPUTS: dict[str, tuple[TensorSpec, ...]] = {
    "text_encoder": (_spec("text_cond", "BND"), _spec("text_uncond", "BND")),
    "step": (_spec("x_next", "BNC"),),
    "vocoder": (_spec("audio", "BS"),),
}


def tensor_shape(spec: TensorSpec, dims: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(int(dims[a]) for a in spec.axes)
