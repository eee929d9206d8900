"""Which precision runs when a caller asks for `auto`: the one place that resolves it.

Precisions come in two families (f5rt.names). TensorRT deployments (`fp32`, `fp16`, `int8`) are
engine sets compiled on the device; the CPU precisions (`cpu-fp32`, `cpu-int8`) are ONNX Runtime-only
step graphs the build makes for machines without TensorRT (fused com.microsoft attention; cpu-int8
adds dynamic INT8 MatMuls). `auto` never picks a variant the build has not proven: on the CPU it
takes `cpu-int8` only when `f5build validate` recorded that its gates passed *for the very files
present now* (their sha256), then `cpu-fp32` on the same terms, and otherwise the plain FP32 graphs;
on TensorRT it takes the most reduced deployment compiled (compile ran the engine checks; validate
gates the ONNX graphs they came from).

`resolve` is what the backends, `f5rt info` and the Triton repository writer call; nothing else
compares a precision with "auto".
"""

from __future__ import annotations

from typing import Any, Literal

from f5rt.manifest import Manifest
from f5rt.names import AUTO, CPU_PRECISIONS, PRECISIONS, TRT_PRECISIONS

__all__ = ["AUTO", "CPU_PRECISIONS", "TRT_ORDER", "EngineKind", "cpu_auto", "resolve", "trt_auto", "validated"]

EngineKind = Literal["onnxruntime", "tensorrt"]
TRT_ORDER = tuple(reversed(TRT_PRECISIONS))  # most reduced first: int8, fp16, fp32


def validated(manifest: Manifest, precision: str) -> bool:
    """True when validate passed `precision`'s gates on the files the manifest records now."""
    stage: dict[str, Any] = (manifest.data.get("stages") or {}).get("validate") or {}
    entry = (stage.get("precisions") or {}).get(precision)
    if not isinstance(entry, dict) or entry.get("passed") is not True:
        return False
    checked = entry.get("files") or {}
    files = manifest.files
    return bool(checked) and all(files.get(rel, {}).get("sha256") == sha for rel, sha in checked.items())


def cpu_auto(manifest: Manifest) -> str:
    """The first of cpu-int8, cpu-fp32 the build made and validated, else `fp32` (the plain graphs)."""
    have = manifest.precisions("step")
    return next((p for p in reversed(CPU_PRECISIONS) if p in have and validated(manifest, p)), "fp32")


def trt_auto(manifest: Manifest) -> str:
    """The most reduced TensorRT deployment compile recorded (int8, then fp16, then fp32)."""
    recorded = manifest.data.get("deployments") or {}
    return next((p for p in TRT_ORDER if p in recorded), TRT_ORDER[0])


def resolve(manifest: Manifest, backend: EngineKind, precision: str) -> str:
    """The precision `backend` runs for a caller's `precision`: `auto` resolved, any other name checked.

    A CPU precision on TensorRT is refused (it is an ONNX Runtime graph); an unknown name is refused
    listing the known ones. Whether the files exist is the backend's check (it names the stage to run).
    """
    if precision == AUTO:
        return trt_auto(manifest) if backend == "tensorrt" else cpu_auto(manifest)
    if backend == "tensorrt" and precision in CPU_PRECISIONS:
        raise ValueError(f"precision {precision!r} is an ONNX Runtime graph; use --backend onnxruntime (or auto)")
    if precision not in PRECISIONS and precision not in (manifest.data.get("deployments") or {}):
        raise ValueError(f"unknown precision {precision!r} (choose from {AUTO}, {', '.join(PRECISIONS)})")
    return precision
