"""Which precision runs when a caller asks for `auto`, and which graphs are ONNX Runtime's own.

Precisions come in two families. TensorRT deployments (`fp32`, `fp16`, `int8`) are engine sets
compiled on the device; the CPU precisions (`cpu-fp32`, `cpu-int8`) are ONNX Runtime-only step
graphs the build makes for machines without TensorRT (fused com.microsoft attention; cpu-int8 adds
dynamic INT8 MatMuls). `auto` never picks a variant the build has not proven: on the CPU it takes
`cpu-int8` only when `f5build validate` recorded that its gates passed *for the very files present
now* (their sha256), then `cpu-fp32` on the same terms, and otherwise the plain FP32 graphs; on TensorRT it takes the most reduced deployment compiled
(compile ran the engine checks; validate gates the ONNX graphs they came from).
"""

from __future__ import annotations

from typing import Any

from f5rt.manifest import Manifest

AUTO = "auto"
CPU_PRECISIONS = ("cpu-fp32", "cpu-int8")
TRT_ORDER = ("int8", "fp16", "fp32")  # most reduced first


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
    return next((p for p in ("cpu-int8", "cpu-fp32") if p in have and validated(manifest, p)), "fp32")


def trt_auto(manifest: Manifest) -> str:
    """The most reduced TensorRT deployment compile recorded (int8, then fp16, then fp32)."""
    recorded = manifest.data.get("deployments") or {}
    return next((p for p in TRT_ORDER if p in recorded), "int8")
