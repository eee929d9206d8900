"""Backends: `onnxruntime` (any CPU) and `tensorrt` (Jetson / NVIDIA GPU, one CUDA graph per bucket)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from f5rt.backends.base import Backend, HostText, SampleJob, TextEmbeddings
from f5rt.errors import BackendUnavailable
from f5rt.manifest import Manifest
from f5rt.names import AUTO, BACKENDS, CPU_PRECISIONS
from f5rt.precision import resolve

if TYPE_CHECKING:
    from f5rt.backends.onnxruntime import ThreadPolicy

__all__ = ["Backend", "HostText", "SampleJob", "TextEmbeddings", "make_backend", "BACKENDS"]

log = logging.getLogger(__name__)


def make_backend(
    name: str, manifest: Manifest, precision: str = AUTO, threads: int | ThreadPolicy | None = None
) -> Backend:
    """Open `name` over `manifest`; `auto` takes TensorRT when its engines and a GPU are there, else ONNX Runtime.

    Precision `auto` (f5rt.precision) is the most reduced TensorRT deployment compiled, or on ONNX
    Runtime cpu-int8 when the build made and validated it, else FP32. A CPU precision (cpu-fp32,
    cpu-int8) is ONNX Runtime's only: `auto` goes straight there, `tensorrt` refuses it.

    `tensorrt` raises BackendUnavailable saying what is missing (TensorRT, a driver for the installed
    cuda-python, a GPU, engines); `auto` logs that reason at WARNING and falls back, so a Jetson that
    silently ends up on the CPU is visible in the service log.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name == "tensorrt":
        resolve(manifest, "tensorrt", precision)  # a CPU precision is refused before TensorRT is looked for
    if name in (AUTO, "tensorrt") and precision not in CPU_PRECISIONS:
        try:
            from f5rt.backends.trt.backend import TensorRTBackend

            return TensorRTBackend(manifest, precision=resolve(manifest, "tensorrt", precision))
        except BackendUnavailable as e:
            if name == "tensorrt":
                raise
            log.warning("backend auto: TensorRT unavailable (%s); using ONNX Runtime", e)
    from f5rt.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(manifest, precision=resolve(manifest, "onnxruntime", precision), threads=threads)
