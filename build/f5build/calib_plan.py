"""What the calibrate stage runs: the corpus reader, the requests it picks and the steps it keeps.

The corpus (calibration/: manifest.json, texts/, voices/) is read by calibration/corpus.py, a script
beside its data rather than part of this package, so that the corpus and its rules change together.
Requests are planned with the runtime's own chunker, so that each recorded call has the shapes the
runtime really runs (one chunk per request, every bucket up to `max_frames`, several batch sizes).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from f5build.common import log
from f5rt.buckets import BucketTable
from f5rt.errors import F5RTError

JOIN_SIZES = (1, 2, 3, 5)  # candidate texts: single corpus lines and runs of consecutive lines


def load_corpus_module(corpus_dir: Path) -> ModuleType:
    """calibration/corpus.py (a script, not a package): the corpus reader and voice maker."""
    path = Path(corpus_dir) / "corpus.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the calibration corpus folder needs corpus.py)")
    spec = importlib.util.spec_from_file_location("f5_calibration_corpus", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def keep_plan(samples: int, nfe: int, runs: int) -> list[set[int]]:
    """Step indices to record in each of `runs` sampler runs: `samples` (run, step) pairs in all.

    Pair i records step i % nfe in run (i + i // nfe) % runs: the first nfe pairs cover every step
    index once, spread evenly over the runs (run c takes steps c, c + runs, ...); further passes
    shift by one run, so no pair repeats while samples <= runs * nfe. With fewer samples than steps
    (held-out data), the steps are spread evenly over the schedule, first and last included.
    """
    samples = min(samples, runs * nfe)
    plan: list[set[int]] = [set() for _ in range(runs)]
    if samples < nfe:  # fewer samples than steps: evenly spaced steps, both ends of the ODE included
        steps = sorted({round(j * (nfe - 1) / max(1, samples - 1)) for j in range(samples)})
        for j, k in enumerate(steps):
            plan[j % runs].add(k)
        return plan
    for i in range(samples):
        plan[(i + i // nfe) % runs].add(i % nfe)
    return plan


@dataclass(frozen=True)
class Candidate:
    voice: str
    text: str
    frames: int
    bucket: int
    lang: str


def candidate_texts(lines: list[Any]) -> list[tuple[str, str]]:
    """(lang, text): every line alone and runs of 2, 3, 5 consecutive lines of the same file."""
    by_file: dict[str, list[Any]] = {}
    for ln in lines:
        by_file.setdefault(ln.file, []).append(ln)
    out = []
    for group in by_file.values():
        for k in JOIN_SIZES:
            for i in range(0, len(group) - k + 1, k):
                chunk = group[i : i + k]
                sep = "" if chunk[0].lang == "zh" else " "
                out.append((chunk[0].lang, sep.join(c.text for c in chunk)))
    return out


def pick_requests(
    synth: Any,
    voices: dict[str, Any],
    lines: list[Any],
    buckets: BucketTable,
    max_frames: int,
    runs: int,
    batch_cycle: tuple[int, ...],
    rng: np.random.Generator,
) -> list[list[Candidate]]:
    """`runs` groups of single-chunk requests, round-robin over the buckets up to max_frames.

    Candidates are corpus texts x voices planned with the runtime's own chunker; each chunk that is
    alone in its request keeps its bucket. A group of B requests from one bucket runs as one batch.
    """
    targets = [n for n in buckets.frames if n <= max_frames] or [buckets.frames[0]]
    groups = _pick(synth, voices, lines, buckets, targets, runs, batch_cycle, rng)
    while not groups and len(targets) < len(buckets.frames):
        # e.g. held-out voices whose references alone fill the small buckets: go one bucket up
        targets = list(buckets.frames[: len(targets) + 1])
        log(f"no corpus text fits the buckets up to {targets[-2]} frames with these voices; trying {targets[-1]}")
        groups = _pick(synth, voices, lines, buckets, targets, runs, batch_cycle, rng)
    if not groups:
        raise ValueError("no corpus text fits any bucket with these voices; check the voices and corpus")
    return groups


def _pick(
    synth: Any,
    voices: dict[str, Any],
    lines: list[Any],
    buckets: BucketTable,
    targets: list[int],
    runs: int,
    batch_cycle: tuple[int, ...],
    rng: np.random.Generator,
) -> list[list[Candidate]]:
    from f5rt.synthesizer import SynthesisOptions

    opts = SynthesisOptions()
    texts = candidate_texts(lines)
    order = rng.permutation(len(texts) * len(voices))
    vids = sorted(voices)
    want = {n: runs * max(batch_cycle) for n in targets}
    pool: dict[int, list[Candidate]] = {n: [] for n in targets}
    # f5-tts' duration estimate of a one-chunk text, from UTF-8 bytes: ref + ref * gen / ref_text.
    # Only candidates whose estimate lands in a bucket still short of requests are planned for real.
    ref = {v: (voices[v].samples // synth.engine.hop, max(1, len(voices[v].ref_text.encode("utf-8")))) for v in vids}
    text_bytes = [len(t.encode("utf-8")) for _, t in texts]
    for o in order:
        if all(len(pool[n]) >= want[n] for n in targets):
            break
        ti, vid = int(o) // len(vids), vids[int(o) % len(vids)]
        lang, text = texts[ti]
        est = ref[vid][0] + ref[vid][0] * text_bytes[ti] // ref[vid][1]
        n_est = next((n for n in buckets.frames if n >= est), None)
        if n_est not in pool or len(pool[n_est]) >= want[n_est]:
            continue  # outside the calibrated buckets (or one that is full): not worth planning
        try:
            plans = synth.engine.plan(text, voices[vid], opts)
        except F5RTError:
            continue
        for p in plans:
            try:
                n = buckets.choose(p.frames).frames
            except F5RTError:
                continue
            if n in pool and len(pool[n]) < want[n]:
                pool[n].append(Candidate(vid, p.text, p.frames, n, lang))
    present = [n for n in targets if pool[n]]
    if not present:
        return []
    groups: list[list[Candidate]] = []
    cursor = dict.fromkeys(present, 0)
    for r in range(runs):
        n = present[r % len(present)]
        b = batch_cycle[r % len(batch_cycle)]
        b = next((x for x in buckets.batch if x >= b), buckets.max_batch)
        items = []
        for _ in range(b):
            items.append(pool[n][cursor[n] % len(pool[n])])
            cursor[n] += 1
        groups.append(items)
    return groups


def voice_hashes(voices_dir: Path, ids: list[str]) -> dict[str, str]:
    out = {}
    for vid in ids:
        d = voices_dir / vid
        audio = next((d / n for n in ("ref.wav", "ref.flac") if (d / n).is_file()), None)
        h = hashlib.sha256()
        for p in (audio, d / "ref.txt"):
            if p is not None:
                h.update(p.read_bytes())
        out[vid] = h.hexdigest()
    return out
