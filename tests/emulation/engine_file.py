"""The emulated engine file: what `build_serialized_network` writes and `deserialize_cuda_engine` reads.

Why a file format at all: the runtime reads engines from disk and checks the manifest against them,
so emulated engines must survive a round trip through bytes exactly like real plans. A real plan is
opaque and tied to one TensorRT release and one SM; this one is a magic header, a JSON record of
everything the builder decided (release, SM, flags, profiles, I/O) and the ONNX bytes the emulator
executes, so the same checks (release, SM) can be made on deserialization.

Layout: MAGIC (8 bytes) | format version (u32 LE) | JSON length (u64 LE) | JSON (UTF-8) | ONNX bytes.
"""

from __future__ import annotations

import json
import struct
from typing import Any

MAGIC = b"F5EMUTRT"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ")


class EngineFileError(ValueError):
    """The bytes are not an emulated engine file (wrong magic, truncated, bad metadata)."""


def pack(meta: dict[str, Any], onnx_bytes: bytes) -> bytes:
    """Serialize engine metadata and its ONNX graph."""
    blob = json.dumps(meta, sort_keys=True).encode()
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(blob)) + blob + bytes(onnx_bytes)


def unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(metadata, ONNX bytes) of an engine file, or EngineFileError saying what is wrong."""
    raw = bytes(data)
    if len(raw) < _HEADER.size:
        raise EngineFileError(f"{len(raw)} bytes is shorter than an engine header")
    magic, version, length = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise EngineFileError(f"magic {magic!r} is not {MAGIC!r} (not an engine file, or a real TensorRT plan)")
    if version != FORMAT_VERSION:
        raise EngineFileError(f"engine file format {version}, this emulator reads {FORMAT_VERSION}")
    start = _HEADER.size
    if start + length > len(raw):
        raise EngineFileError("truncated engine file")
    try:
        meta = json.loads(raw[start : start + length])
    except ValueError as e:
        raise EngineFileError(f"unreadable engine metadata: {e}") from None
    if not isinstance(meta, dict):
        raise EngineFileError("engine metadata is not an object")
    return meta, raw[start + length :]
