"""Scored conditions kept on disk, so a sweep that is killed, or rerun wider, scores each condition once.

The full sweep (every precision x NFE 4-32 x sway / EPSS / midpoint) runs for an hour or more on a
small CPU, and the report is written when the last condition is scored. Each condition's per-utterance
scores are therefore stored as soon as it finishes, and a rerun takes them back instead of
synthesizing and listening again.

A stored result is only reused where nothing it depends on has changed. Its key names:

- the graphs the runtime runs for the precision: the sha256 that the manifest records for every text
  encoder and vocoder variant, the precision's step graph and its weights file (a rebuilt graph, or
  another attention form, is another key);
- the source of the runtime (`f5rt`) and of the modules of this package that synthesize and score
  (a change to the sampler or the scoring is another key; one to the report or the gates is not);
- the held-out set (corpus.json's file hashes) and the (reference, target) pairs scored, in order
  (the seed of each request is its index);
- the instruments: the ASR model and the versions of the packages that score;
- the condition: precision, NFE, schedule, guidance strength.

Files are written atomically; an unreadable or mismatched file is a miss, scored again. Only the
newest result of each condition is kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from f5build.common import package_hash, tool_versions
from f5build.quality.scoring import UtteranceScore
from f5build.train.corpus import Corpus, Utterance
from f5rt.files import atomic_write_json, sha256_json
from f5rt.manifest import Manifest

FORMAT = 1
INSTRUMENT_PACKAGES = ("faster-whisper", "ctranslate2", "resemblyzer", "speechmos", "jiwer")
SCORING_MODULES = ("instruments.py", "scoring.py", "sweep.py")  # what a score depends on; not the report's


def graph_hashes(manifest: Manifest, precision: str | None) -> dict[str, str]:
    """sha256 of every file the runtime may read for `precision` (None: only the FP32 vocoder, which
    copy-synthesis runs). The text encoder and vocoder fall back to FP32 where a precision has no
    variant of them, so every variant of theirs is included."""
    out: dict[str, str] = {}
    for rel, meta in manifest.files.items():
        graph = meta.get("graph")
        if meta.get("kind") != "onnx":
            continue
        wanted = (
            graph == "vocoder" and meta.get("precision") == "fp32"
            if precision is None
            else graph in ("text_encoder", "vocoder") or (graph == "step" and meta.get("precision") == precision)
        )
        if wanted:
            out[rel] = str(meta["sha256"])
            for data in meta.get("external_data", []):
                out[data] = str(manifest.files[data]["sha256"])
    return out


class ScoreStore:
    """Per-utterance scores of finished conditions, in `folder`, keyed on everything they depend on."""

    def __init__(self, folder: Path, context: dict[str, Any], reuse: bool = True) -> None:
        self.folder = folder
        self.context = context
        self.reuse = reuse  # False: every condition is scored again (and stored, for the next run)

    @classmethod
    def for_run(
        cls, folder: Path, evalset: Corpus, items: Sequence[tuple[Utterance, Utterance]], asr: str, reuse: bool = True
    ) -> ScoreStore:
        import f5rt

        corpus = json.loads((evalset.root / "corpus.json").read_text(encoding="utf-8"))
        context = {
            "format": FORMAT,
            "runtime": package_hash(Path(f5rt.__file__).parent),
            "quality": package_hash(Path(__file__).parent, SCORING_MODULES),
            "evalset": corpus["files"],
            "items": [[ref.id, tgt.id] for ref, tgt in items],
            "asr": asr,
            "packages": tool_versions(INSTRUMENT_PACKAGES),
        }
        return cls(folder, context, reuse)

    def key(self, name: str, made_from: dict[str, str]) -> str:
        return sha256_json({"context": self.context, "condition": name, "graphs": made_from})

    def _path(self, name: str, key: str) -> Path:
        return self.folder / f"{slug(name)}-{key[:16]}.json"

    def get(self, name: str, made_from: dict[str, str]) -> list[UtteranceScore] | None:
        """The stored scores of condition `name` made from `made_from` (the sha256 of the graphs or weights
        that produced its audio), or None to score it."""
        if not self.reuse:
            return None
        key = self.key(name, made_from)
        path = self._path(name, key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["key"] != key:
                return None
            names = {f.name for f in fields(UtteranceScore)}
            scores = [UtteranceScore(**{k: v for k, v in row.items() if k in names}) for row in data["scores"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return scores if len(scores) == len(self.context["items"]) else None

    def scored(
        self, name: str, made_from: dict[str, str], score: Callable[[], list[UtteranceScore]]
    ) -> list[UtteranceScore]:
        """`name`'s stored scores where they match `made_from`, else `score()`'s, stored for the next run."""
        found = self.get(name, made_from)
        if found is not None:
            return found
        scores = score()
        self.put(name, made_from, scores)
        return scores

    def put(self, name: str, made_from: dict[str, str], scores: Sequence[UtteranceScore]) -> Path | None:
        """Store `name`'s scores; None when the disk refused (a warning: the scores were only a saving, the
        run goes on and its report is the product)."""
        key = self.key(name, made_from)
        path = self._path(name, key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"key": key, "condition": name, "scores": [asdict(s) for s in scores]})
        except OSError as e:
            print(f"quality: warning: {name}'s scores not stored, a rerun will score it again: {e}", flush=True)
            return None
        for old in self.folder.glob(f"{slug(name)}-*.json"):  # the newest result of a condition only
            if old != path and re.fullmatch(re.escape(slug(name)) + r"-[0-9a-f]{16}\.json", old.name):
                old.unlink(missing_ok=True)
        return path


def slug(name: str) -> str:
    """`name` as a file-name part: runs of anything but letters, digits and dots become one underscore."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")
