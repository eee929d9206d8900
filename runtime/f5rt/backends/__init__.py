"""Backends: `onnxruntime` (any CPU) and `tensorrt` (Jetson / NVIDIA GPU, one CUDA graph per bucket)."""

from __future__ import annotations

from f5rt.backends.base import Backend, SampleJob
from f5rt.errors import BackendUnavailable
from f5rt.manifest import Manifest

__all__ = ["Backend", "SampleJob", "make_backend", "BACKENDS"]

BACKENDS = ("auto", "onnxruntime", "tensorrt")


def make_backend(name: str, manifest: Manifest, precision: str = "fp32", threads: int | None = None) -> Backend:
    """Open `name` over `manifest`; `auto` takes TensorRT when its engines and a GPU are there, else ONNX Runtime."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name in ("auto", "tensorrt"):
        try:
            from f5rt.backends.tensorrt import TensorRTBackend

            return TensorRTBackend(manifest, precision=precision)
        except BackendUnavailable:
            if name == "tensorrt":
                raise
    from f5rt.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(manifest, precision=precision, threads=threads)
