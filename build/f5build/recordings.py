"""The calibration recording format: what the calibrate stage writes and quantize / validate read.

One `.npz` per graph under artifacts/<name>/calibration/ (plus index.json, what was run):

* `inputs`: the graph's input names, in feed order;
* `meta_<key>`: one value per recorded call (`split`: 0 = calibration, 1 = held out; `request`,
  `frames`, `batch`, and for the step graph `step`, `nfe`, `t`, `dt`); a key a call lacks is -1;
* `s{i:05d}.{input}`: the arrays of call i.

The format lives here, in one place, so that the writer (`Recording`, `save_recording`) and the reader
(`RecordedSamples`) cannot drift apart, and so that validate does not reach into quantize for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from f5rt.files import atomic_open
from f5rt.manifest import Manifest

CALIB_DIR = "calibration"
INDEX_NAME = f"{CALIB_DIR}/index.json"
STEP_INPUTS = ("x", "cond", "text_cond", "text_uncond", "mask", "t", "dt", "cfg")
TEXT_INPUTS = ("text_ids", "mask")
VOCODER_INPUTS = ("mel",)
GRAPH_INPUTS = {"step": STEP_INPUTS, "text_encoder": TEXT_INPUTS, "vocoder": VOCODER_INPUTS}
_FLOAT_META = ("t", "dt")  # every other metadata key is an integer
# Inputs whose axis 1 is the frame (or token) axis; the vocoder's mel (B, C, F) has frames last.
_FRAME_AXIS_1 = ("x", "cond", "text_cond", "text_uncond", "mask", "text_ids")


def recording_rel(graph: str) -> str:
    """The recording of `graph`, relative to the artifacts folder (as the manifest names it)."""
    if graph not in GRAPH_INPUTS:
        raise ValueError(f"unknown graph {graph!r} (choose from {', '.join(GRAPH_INPUTS)})")
    return f"{CALIB_DIR}/{graph}.npz"


# -- writer -------------------------------------------------------------------------------------------


@dataclass
class Recording:
    """Recorded feeds of one graph with their per-sample metadata (held in memory until saved)."""

    inputs: tuple[str, ...]
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)
    meta: list[dict[str, float | int]] = field(default_factory=list)
    nbytes: int = 0

    def add(self, feed: Mapping[str, np.ndarray], **meta: float | int) -> None:
        """Keep a private, contiguous copy: the caller's buffers are reused by the next call."""
        copy = {k: np.ascontiguousarray(feed[k]).copy() for k in self.inputs}
        self.feeds.append(copy)
        self.meta.append(meta)
        self.nbytes += sum(a.nbytes for a in copy.values())

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"inputs": np.array(self.inputs)}
        keys = sorted({k for m in self.meta for k in m})
        for k in keys:
            vals = [m.get(k, -1) for m in self.meta]
            out[f"meta_{k}"] = np.asarray(vals, dtype=np.float32 if k in _FLOAT_META else np.int64)
        for i, feed in enumerate(self.feeds):
            for name, arr in feed.items():
                out[f"s{i:05d}.{name}"] = arr
        return out


def save_recording(path: Path, rec: Recording) -> None:
    """Write `rec` atomically: a reader never sees a half-written recording."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **rec.arrays())  # type: ignore[arg-type]


# -- reader -------------------------------------------------------------------------------------------


class RecordedSamples:
    """Recorded graph inputs from a calibration .npz (one feed dict per recorded call).

    Arrays are read lazily, one sample at a time (the step recording of a real model is GBs). Use as a
    context manager, or call close(): the .npz keeps its file open.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._z = np.load(self.path, allow_pickle=False)
        self.meta = {k[5:]: self._z[k] for k in self._z.files if k.startswith("meta_")}
        self.inputs = [str(x) for x in self._z["inputs"]] if "inputs" in self._z.files else []
        self.count = int(len(self.meta.get("split", [])))

    def indices(self, split: int | None = None, limit: int | None = None) -> list[int]:
        """Samples of `split` (all when None); at most `limit`, spread evenly over the recording."""
        idx = [i for i in range(self.count) if split is None or int(self.meta["split"][i]) == split]
        if limit is not None and 0 < limit < len(idx):
            pick = np.linspace(0, len(idx) - 1, limit).round().astype(int)
            idx = [idx[i] for i in sorted(set(pick.tolist()))]
        return idx

    def feed(self, i: int) -> dict[str, np.ndarray]:
        return {name: self._z[f"s{i:05d}.{name}"] for name in self.inputs}

    def close(self) -> None:
        self._z.close()

    def __enter__(self) -> RecordedSamples:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def calibration_file(manifest: Manifest, graph: str) -> Path | None:
    """The verified recording of `graph` in the manifest, or None when calibrate has not run."""
    for rel, meta in manifest.files.items():
        if meta.get("kind") == "calibration" and meta.get("graph") == graph:
            return manifest.verify(rel)
    return None


def crop_feed(feed: Mapping[str, np.ndarray], frames: int) -> dict[str, np.ndarray]:
    """The first `frames` frames of a recorded feed (rows keep their real start).

    Activation magnitudes hardly depend on the sequence length, memory does (quadratically in the
    attention maps), so the FP16 overflow check runs on crops. The vocoder's mel (B, C, F) is
    cropped on its last axis.
    """
    out = {}
    for name, a in feed.items():
        if name in _FRAME_AXIS_1 and a.ndim >= 2:
            out[name] = a[:, :frames]
        elif name == "mel":
            out[name] = a[..., :frames]
        else:
            out[name] = a
    if "mask" in out:
        out["mask"] = out["mask"].copy()
        out["mask"][:, 0] = True  # a row needs at least one valid frame
    return out
