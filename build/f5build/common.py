"""Small helpers every stage shares: tool versions, progress lines, peak memory, the bucket file."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from f5rt.buckets import BucketTable

TOOLS = (
    "torch",
    "onnx",
    "onnxruntime",
    "f5-tts",
    "vocos",
    "onnx-graphsurgeon",
    "polygraphy",
    "nvidia-modelopt",
    "tensorrt",
)


def tool_versions(names: Iterable[str] = TOOLS) -> dict[str, str]:
    """Installed versions of the tools that shape an artifact (absent ones are left out)."""
    out: dict[str, str] = {"python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read_buckets(path: Path) -> BucketTable:
    try:
        data: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"bucket table {path} not found") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'frames' and 'batch'")
    try:
        return BucketTable.from_dict(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def source_hash(*modules: str) -> str:
    """Hash of the build's own source files, so a code change invalidates a stage's outputs."""
    import hashlib

    h = hashlib.sha256()
    here = Path(__file__).parent
    for mod in sorted(modules):
        h.update((here / f"{mod}.py").read_bytes())
    return h.hexdigest()
