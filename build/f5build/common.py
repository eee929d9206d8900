"""Small helpers every stage shares: tool versions, progress lines, peak memory, the bucket file."""

from __future__ import annotations

import hashlib
import resource
import sys
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from f5build.inputs import BuildInputError, read_yaml
from f5rt.buckets import BucketTable
from f5rt.files import sha256_json

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
    data = read_yaml(path, "bucket table", keys=("frames", "batch"))
    try:
        return BucketTable.from_dict(data)
    except (ValueError, TypeError) as e:
        raise BuildInputError(path, str(e)) from None


def package_hash(directory: Path, modules: Sequence[str] | None = None) -> str:
    """sha256 over every .py file under `directory`: relative path and content, sorted by path.

    Hashing a whole package rather than a list of module names means a renamed, added or removed
    module changes the hash too (a list of names silently stops covering a renamed module). Where only
    some modules matter (`modules`, file names relative to `directory`), a named one that is missing is
    an error, never a silent gap.
    """
    directory = Path(directory)
    if modules is None:
        files = sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)
    else:
        files = sorted(directory / m for m in modules)
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"no such module to hash: {', '.join(missing)}")
    if not files:
        raise FileNotFoundError(f"{directory}: no Python source to hash")
    h = hashlib.sha256()
    for p in files:
        rel = p.relative_to(directory).as_posix().encode("utf-8")
        data = p.read_bytes()
        h.update(len(rel).to_bytes(8, "little") + rel + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def source_hash(runtime: bool = False) -> str:
    """Hash of the build's own source (the whole f5build package), so a code change invalidates a
    stage's outputs; with `runtime`, of the f5rt package too (for stages that run the runtime)."""
    import f5rt

    h = package_hash(Path(__file__).parent)
    return sha256_json([h, package_hash(Path(f5rt.__file__).parent)]) if runtime else h
