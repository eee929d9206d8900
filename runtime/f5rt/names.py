"""The names every layer shares: graphs, precisions, backends. One constant set, imported everywhere.

A graph is one of the three ONNX graphs the build exports (and TensorRT engines are built from). A
precision names either a TensorRT deployment (`fp32`, `fp16`, `int8`: engine sets compiled on the
device) or an ONNX Runtime-only step variant (`cpu-fp32`, `cpu-int8`); `auto` is resolved in one
place, `f5rt.precision.resolve`. Stdlib only: the manifest, the backends, the CLI and the Triton
repository writer all import from here, and this imports nothing of f5rt.
"""

from __future__ import annotations

from typing import Final

GRAPHS: Final = ("text_encoder", "step", "vocoder")
"""The exported graphs, in the order a request runs them."""

AUTO: Final = "auto"
"""Precision or backend chosen from what the artifacts hold and the machine has (f5rt.precision.resolve)."""

TRT_PRECISIONS: Final = ("fp32", "fp16", "int8")
"""TensorRT deployments (one precision per graph, recorded in the manifest), widest first."""

CPU_PRECISIONS: Final = ("cpu-fp32", "cpu-int8")
"""ONNX Runtime-only step graphs (fused attention; cpu-int8 adds dynamic INT8 MatMuls)."""

PRECISIONS: Final = (*TRT_PRECISIONS, *CPU_PRECISIONS)
"""Every precision a caller may name besides `auto`, in display order."""

BACKENDS: Final = (AUTO, "onnxruntime", "tensorrt")
"""Backends a caller may name; `auto` takes TensorRT when its engines and a GPU are there."""

__all__ = ["AUTO", "BACKENDS", "CPU_PRECISIONS", "GRAPHS", "PRECISIONS", "TRT_PRECISIONS"]
