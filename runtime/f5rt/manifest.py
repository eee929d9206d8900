"""The artifact manifest: what each file in `artifacts/<name>/` is, and proof it is intact.

Layout of manifest.json (format 1)::

    {"format": 1, "name": "tiny",
     "source":  {"kind": "tiny" | "f5tts-v1-base" | "checkpoint", "checkpoint_sha256": ..., ...},
     "model":   {"dim": .., "depth": .., "heads": .., "text_dim": .., "mel_dim": 100, "vocab_size": ..},
     "audio":   {"sample_rate": 24000, "hop_length": 256, "n_fft": 1024, "win_length": 1024, "n_mels": 100},
     "vocoder": {"padding": "center", "hop_length": 256, "n_fft": 1024, "samples": "(F-1)*hop"},
     "buckets": {"frames": [...], "batch": [...]},
     "files":   {"step.onnx": {"sha256": .., "bytes": .., "graph": "step", "precision": "fp32",
                               "kind": "onnx", "stage": "export"}, ...},
     "stages":  {"export": {"inputs_sha256": .., "tools": {...}, "seconds": ..}, "calibrate": ..., ...}}

The build writes it stage by stage (read, modify, atomic replace); the runtime reads it and refuses
files whose hashes differ, so an engine never runs against the wrong manifest.

Public API: `load_manifest(root)` and `Manifest` (`find`, `verify`, `verify_all`) to read and check;
`update_manifest(root, mutate)` and `file_entry(root, rel, **meta)` to write (the build's stages,
and tests that make artifacts by hand). Writes are atomic (`f5rt.files`); the build serialises them
with its lock on the artifacts folder (`f5build.buildlock`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from f5rt.buckets import BucketTable
from f5rt.errors import ManifestError
from f5rt.files import atomic_write_json, sha256_file
from f5rt.names import GRAPHS as GRAPHS  # re-exported: the build reads the graph names from here
from f5rt.names import PRECISIONS

MANIFEST_NAME = "manifest.json"
FORMAT = 1

VOCODER_PADDINGS = ("center", "same")
_SAMPLES_RULE = {"center": "(F-1)*hop", "same": "F*hop"}


@dataclass(frozen=True)
class VocoderSpec:
    """How the exported vocoder maps mel frames to samples (from the Vocos head's ISTFT padding).

    Vocos' ISTFTHead decodes F frames to (F-1)*hop samples with padding "center" (torch.istft,
    center=True: n_fft/2 trimmed on both sides; the released charactr/vocos-mel-24khz) and to
    F*hop with "same". Everything that sizes audio (buffers, chunk joins, durations) asks this
    instead of assuming one rule.
    """

    padding: str  # "center" | "same"
    hop_length: int
    n_fft: int

    def __post_init__(self) -> None:
        if self.padding not in VOCODER_PADDINGS:
            raise ValueError(f"vocoder padding {self.padding!r} is not one of {', '.join(VOCODER_PADDINGS)}")
        for name in ("hop_length", "n_fft"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"vocoder {name} must be a positive integer, got {v!r}")

    def samples(self, frames: int) -> int:
        """Samples the vocoder returns for `frames` mel frames."""
        if self.padding == "center":
            return max(int(frames) - 1, 0) * self.hop_length
        return int(frames) * self.hop_length

    @classmethod
    def from_dict(cls, d: Any) -> VocoderSpec:
        """The manifest's "vocoder" entry; ValueError (say which field) on anything malformed."""
        if not isinstance(d, dict):
            raise ValueError(f"vocoder entry must be a mapping, got {type(d).__name__}")
        missing = [k for k in ("padding", "hop_length", "n_fft") if k not in d]
        if missing:
            raise ValueError(f"vocoder entry lacks {', '.join(missing)}")
        spec = cls(padding=d["padding"], hop_length=d["hop_length"], n_fft=d["n_fft"])
        if "samples" in d and d["samples"] != _SAMPLES_RULE[spec.padding]:
            raise ValueError(
                f"vocoder entry says samples = {d['samples']!r}, but padding {spec.padding!r} gives "
                f"{_SAMPLES_RULE[spec.padding]!r}"
            )
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {
            "padding": self.padding,
            "hop_length": self.hop_length,
            "n_fft": self.n_fft,
            "samples": _SAMPLES_RULE[self.padding],
        }


# (path, size, mtime_ns) -> sha256, so a long-running process hashes each big file once.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


@dataclass
class Manifest:
    root: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.data.get("name", self.root.name))

    @property
    def buckets(self) -> BucketTable:
        return BucketTable.from_dict(self.data["buckets"])

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.data["model"])

    @property
    def audio(self) -> dict[str, Any]:
        return dict(self.data["audio"])

    @property
    def vocoder(self) -> VocoderSpec:
        """The vocoder's frames -> samples rule, as the export recorded it."""
        path = self.root / MANIFEST_NAME
        if "vocoder" not in self.data:
            raise ManifestError(
                f"{path}: manifest does not record the vocoder layout (made before it did); "
                "re-run the export (`nox -s export` or `python -m f5build export --force`)"
            )
        try:
            return VocoderSpec.from_dict(self.data["vocoder"])
        except (ValueError, TypeError) as e:
            raise ManifestError(f"{path}: bad 'vocoder' entry: {e}; re-run the export") from e

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return dict(self.data.get("files", {}))

    def precisions(self, graph: str, kind: str = "onnx") -> list[str]:
        """Precision variants of `graph` present as `kind` files (fp32 first)."""
        found = {m["precision"] for m in self.files.values() if m.get("graph") == graph and m.get("kind") == kind}
        order = PRECISIONS
        return sorted(found, key=lambda p: (order.index(p) if p in order else len(order), p))

    def find(self, graph: str, precision: str = "fp32", kind: str = "onnx") -> Path:
        """Path of one graph variant, verified against its recorded hash."""
        for rel, meta in self.files.items():
            if meta.get("graph") == graph and meta.get("precision") == precision and meta.get("kind") == kind:
                return self.verify(rel)
        have = self.precisions(graph, kind)
        raise ManifestError(
            f"{self.root}: no {kind} file for graph '{graph}' at precision '{precision}' "
            f"(have: {', '.join(have) or 'none'}); run the build stage that makes it"
        )

    def verify(self, rel: str) -> Path:
        """Check that `rel` exists and matches its recorded sha256 (and its external data file)."""
        meta = self.files.get(rel)
        if meta is None:
            raise ManifestError(f"{self.root / MANIFEST_NAME}: '{rel}' is not recorded in the manifest")
        path = self.root / rel
        if not path.is_file():
            raise ManifestError(
                f"{path}: recorded in the manifest but missing; re-run `nox -s {meta.get('stage', 'export')}`"
            )
        if os.environ.get("F5RT_SKIP_HASH") != "1":
            digest = _cached_sha256(path)
            if digest != meta["sha256"]:
                raise ManifestError(
                    f"{path}: sha256 {digest[:12]}… does not match the manifest ({meta['sha256'][:12]}…); "
                    f"the file was changed after the build: re-run `nox -s {meta.get('stage', 'export')}`"
                )
        for extra in meta.get("external_data", []):
            self.verify(extra)
        return path

    def verify_all(self, *, stage: str | None = None, kind: str | None = None) -> int:
        """Verify every recorded file (or those of one `stage` / `kind`, e.g. kind="engine" or
        stage="triton"), in the manifest's order; returns how many. The first missing or changed
        file raises ManifestError naming it and the stage that rebuilds it."""
        rels = [
            rel
            for rel, meta in self.files.items()
            if (stage is None or meta.get("stage") == stage) and (kind is None or meta.get("kind") == kind)
        ]
        for rel in rels:
            self.verify(rel)
        return len(rels)


def load_manifest(artifacts: str | os.PathLike[str]) -> Manifest:
    """Read `artifacts/<name>/manifest.json` (or the file itself) and check its format."""
    path = Path(artifacts)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest; build the artifacts first (`nox -s export`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: unreadable manifest ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError(
            f"{path}: manifest format {data.get('format') if isinstance(data, dict) else '?'} is not {FORMAT}; rebuild"
        )
    for key in ("model", "audio", "buckets", "files"):
        if key not in data:
            raise ManifestError(f"{path}: manifest lacks '{key}'; rebuild")
    try:
        BucketTable.from_dict(data["buckets"])
    except ValueError as e:
        raise ManifestError(f"{path}: {e}") from e
    return Manifest(root=path.parent, data=data)


def update_manifest(root: str | os.PathLike[str], mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read-modify-write the manifest atomically (the build's stages run one at a time)."""
    path = Path(root) / MANIFEST_NAME
    data: dict[str, Any] = {"format": FORMAT}
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
    mutate(data)
    data["format"] = FORMAT
    atomic_write_json(path, data)
    return data


def file_entry(root: Path, rel: str, **meta: Any) -> dict[str, Any]:
    """A `files` entry for `root/rel`: its hash and size plus what it is (graph, precision, kind, stage)."""
    path = root / rel
    return {"sha256": _cached_sha256(path), "bytes": path.stat().st_size, **meta}
