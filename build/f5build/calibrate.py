"""Calibrate: record the graphs' real inputs while the runtime's own sampler runs on the FP32 graphs.

INT8 scales are only as good as the activations they were computed from. F5-TTS' step graph sees
very different inputs along the ODE (pure noise at t = 0, nearly clean mel at t = 1), in both CFG
branches, for every voice, text and bucket size; so the data comes from the real thing: f5rt's
Synthesizer on the FP32 ONNX graphs, over corpus lines x reference voices (calibration/), with a
recording backend that delegates every call to ONNX Runtime and keeps a copy of its inputs.

* step: each sampler run integrates all NFE steps (one step per backend call); a bounded number of
  steps per run is kept, spread evenly over the schedule and rotated from run to run, so together
  the runs cover every timestep index. The graph holds both CFG branches, so each kept call
  calibrates both. Runs are spread over every bucket up to `max_frames` and over batch sizes.
* text encoder: one call per sampler run; vocoder: one call per generated chunk.
* Held-out runs (held-out corpus lines and voices, split 1) are recorded the same way: the validate
  stage compares precisions on them, never on what the scales were fitted to.

Output: artifacts/<name>/calibration/{step,text_encoder,vocoder}.npz + index.json (what was run),
hashed in the manifest (stage "calibrate"). A re-run with unchanged graphs, corpus, voices, budget
and code is a no-op. Voices missing from calibration/voices are made first (calibration/corpus.py).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from f5build.cli import ROOT, artifacts_dir
from f5build.common import log, peak_rss_mb, source_hash, tool_versions
from f5build.placement import CalibrationBudget, load_recipe
from f5rt._fs import atomic_open, atomic_write_json, sha256_file, sha256_json
from f5rt.backends.base import SampleJob, TextEmbeddings
from f5rt.buckets import BucketTable
from f5rt.errors import F5RTError, ManifestError
from f5rt.manifest import file_entry, load_manifest, update_manifest

CALIB_DIR = "calibration"
STEP_INPUTS = ("x", "cond", "text_cond", "text_uncond", "mask", "t", "dt", "cfg")
TEXT_INPUTS = ("text_ids", "mask")
VOCODER_INPUTS = ("mel",)
# Runtime modules whose behaviour shapes the recorded data (a change re-records).
RUNTIME_SOURCES = ("synthesizer", "text", "audio", "voices", "schedules", "backends/onnxruntime")
JOIN_SIZES = (1, 2, 3, 5)  # candidate texts: single corpus lines and runs of consecutive lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibrate (record real sampler inputs)")
    g.add_argument("--calib-recipe", type=Path, default=ROOT / "config" / "precision.yaml", help="precision recipe")
    g.add_argument(
        "--calib-corpus", type=Path, default=ROOT / "calibration", help="corpus folder (manifest.json, texts/)"
    )
    g.add_argument("--calib-voices", type=Path, help="reference voices folder (default: <corpus>/voices)")
    g.add_argument(
        "--calib-generator",
        default="auto",
        choices=("auto", "espeak-ng", "synthetic"),
        help="how missing recipe voices are made (auto: espeak-ng if installed, else synthetic)",
    )
    g.add_argument("--calib-nfe", type=int, help="sampler steps per run (default: recipe)")
    g.add_argument("--calib-samples", type=int, help="recorded step calls for calibration (default: recipe)")
    g.add_argument("--calib-requests", type=int, help="calibration sampler runs (default: recipe)")
    g.add_argument("--calib-heldout-requests", type=int, help="held-out sampler runs (default: recipe)")
    g.add_argument("--calib-heldout-samples", type=int, help="recorded held-out step calls (default: recipe)")
    g.add_argument("--calib-max-frames", type=int, help="largest bucket to calibrate (default: recipe)")
    g.add_argument("--calib-max-mb", type=float, help="cap on recorded data in MB (default: recipe)")
    g.add_argument("--calib-threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    g.add_argument("--calib-force", action="store_true", help="record again even when up to date")


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


def budget_from_args(base: CalibrationBudget, args: argparse.Namespace) -> CalibrationBudget:
    over = {
        "nfe": args.calib_nfe,
        "step_samples": args.calib_samples,
        "requests": args.calib_requests,
        "heldout_requests": args.calib_heldout_requests,
        "heldout_samples": args.calib_heldout_samples,
        "max_frames": args.calib_max_frames,
        "max_mb": args.calib_max_mb,
    }
    for k, v in over.items():
        if v is not None and (v < 0 or (v == 0 and k not in ("heldout_requests", "heldout_samples"))):
            raise ValueError(f"--calib-{k.replace('_', '-')}: must be positive, got {v}")
    return replace(base, **{k: v for k, v in over.items() if v is not None})


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


@dataclass
class Recording:
    """Recorded feeds of one graph with their per-sample metadata."""

    inputs: tuple[str, ...]
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)
    meta: list[dict[str, float | int]] = field(default_factory=list)
    nbytes: int = 0

    def add(self, feed: dict[str, np.ndarray], **meta: float | int) -> None:
        copy = {k: np.ascontiguousarray(feed[k]).copy() for k in self.inputs}
        self.feeds.append(copy)
        self.meta.append(meta)
        self.nbytes += sum(a.nbytes for a in copy.values())

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"inputs": np.array(self.inputs)}
        keys = sorted({k for m in self.meta for k in m})
        for k in keys:
            vals = [m.get(k, -1) for m in self.meta]
            out[f"meta_{k}"] = np.asarray(vals, dtype=np.float32 if k in ("t", "dt") else np.int64)
        for i, feed in enumerate(self.feeds):
            for name, arr in feed.items():
                out[f"s{i:05d}.{name}"] = arr
        return out


class RecordingBackend:
    """A Backend that delegates to another and records the inputs of the calls it is asked to keep.

    sample() runs the NFE loop as NFE one-step jobs on the inner backend (exactly what the ONNX
    Runtime backend does inside its own loop), so every step's real input can be seen.
    """

    # Calibrate on the padded bucket shapes the TensorRT engines run, whatever the inner backend
    # would do: the synthesizer pads jobs to a bucket for fixed-shape backends only, and the padded
    # frames' activations belong in the ranges (the engine computes them too).
    fixed_shapes = True

    def __init__(self, inner: Any, max_bytes: int) -> None:
        self.inner = inner
        self.name = f"recording({inner.name})"
        self.precision = inner.precision
        self.max_bytes = max_bytes
        self.step = Recording(STEP_INPUTS)
        self.text = Recording(TEXT_INPUTS)
        self.vocoder = Recording(VOCODER_INPUTS)
        self.split = 0
        self.request = 0
        self.keep_steps: set[int] = set()
        self.step_budget = 0
        self.text_budget = 0
        self.vocoder_budget = 0
        self.calls = 0
        self.capped = False

    def _room(self) -> bool:
        used = self.step.nbytes + self.text.nbytes + self.vocoder.nbytes
        if used >= self.max_bytes:
            self.capped = True
        return not self.capped

    def encode_text(self, text_ids: np.ndarray, mask: np.ndarray) -> TextEmbeddings:
        if self.text_budget > 0 and self._room():
            self.text.add(
                {"text_ids": text_ids.astype(np.int32), "mask": mask},
                split=self.split,
                request=self.request,
                frames=text_ids.shape[1],
                batch=text_ids.shape[0],
            )
            self.text_budget -= 1
        return self.inner.encode_text(text_ids, mask)

    def sample(self, job: SampleJob) -> np.ndarray:
        b = job.bucket.batch
        x = job.x0
        self.calls += 1
        text_cond, text_uncond = job.text.host()
        for k in range(job.nfe):
            sub = SampleJob(
                job.bucket,
                x,
                job.cond,
                job.text,
                job.mask,
                job.t[k : k + 1],
                job.dt[k : k + 1],
                job.cfg,
            )
            if k in self.keep_steps and self.step_budget > 0 and self._room():
                feed = {
                    "x": x,
                    "cond": job.cond,
                    "text_cond": text_cond,
                    "text_uncond": text_uncond,
                    "mask": job.mask,
                    "t": np.full((b,), job.t[k], dtype=np.float32),
                    "dt": np.full((b,), job.dt[k], dtype=np.float32),
                    "cfg": job.cfg.astype(np.float32),
                }
                self.step.add(
                    feed,
                    split=self.split,
                    request=self.request,
                    step=k,
                    nfe=job.nfe,
                    t=float(job.t[k]),
                    dt=float(job.dt[k]),
                    frames=job.bucket.frames,
                    batch=b,
                )
                self.step_budget -= 1
            x = self.inner.sample(sub)
        return x

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        if self.vocoder_budget > 0 and self._room():
            self.vocoder.add(
                {"mel": mel.astype(np.float32)},
                split=self.split,
                request=self.request,
                frames=mel.shape[2],
                batch=mel.shape[0],
            )
            self.vocoder_budget -= 1
        return self.inner.vocode(mel)

    def close(self) -> None:
        self.inner.close()


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
    ref = {v: (voices[v].samples // synth.hop, max(1, len(voices[v].ref_text.encode("utf-8")))) for v in vids}
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
            plans = synth.plan(text, voices[vid], opts)
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


def _voice_hashes(voices_dir: Path, ids: list[str]) -> dict[str, str]:
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


def _runtime_hash() -> str:
    import f5rt

    base = Path(f5rt.__file__).parent
    h = hashlib.sha256()
    for rel in RUNTIME_SOURCES:
        h.update((base / f"{rel}.py").read_bytes())
    return h.hexdigest()


def _save(path: Path, rec: Recording) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, **rec.arrays())  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    from f5rt.synthesizer import SynthesisOptions, Synthesizer
    from f5rt.voices import VoiceStore

    t_start = time.perf_counter()
    root = artifacts_dir(args)
    manifest = load_manifest(root)
    recipe = load_recipe(args.calib_recipe)
    budget = budget_from_args(recipe.calibration, args)
    corpus = load_corpus_module(args.calib_corpus)
    problems = corpus.check_manifest(args.calib_corpus)
    if problems:
        raise ValueError(f"{args.calib_corpus}/manifest.json: " + "; ".join(problems))
    cmanifest = corpus.read_manifest(args.calib_corpus)
    voices_dir = Path(args.calib_voices or Path(args.calib_corpus) / "voices")
    corpus.ensure_voices(voices_dir, root=args.calib_corpus, generator=args.calib_generator, log=log)
    store = VoiceStore(voices_dir, cache_dir=voices_dir / ".cache")
    ids = store.list()
    held_voices = set(cmanifest["held_out"]["voices"])
    voice_sha = _voice_hashes(voices_dir, ids)
    lines = corpus.read_lines(args.calib_corpus, cmanifest)

    fp = sha256_json(
        {
            "graphs": {g: manifest.files[f"{g}.onnx"]["sha256"] for g in ("text_encoder", "step", "vocoder")},
            "budget": budget.__dict__,
            "corpus": corpus.corpus_sha256(cmanifest),
            "voices": voice_sha,
            "code": source_hash("calibrate"),
            "corpus_code": sha256_file(Path(args.calib_corpus) / "corpus.py"),
            "runtime": _runtime_hash(),
            "tools": tool_versions(("onnxruntime", "numpy")),
        }
    )
    outdir = root / CALIB_DIR
    if not args.calib_force:
        try:
            stage = manifest.data.get("stages", {}).get("calibrate", {})
            rels = [r for r, m in manifest.files.items() if m.get("stage") == "calibrate"]
            if stage.get("inputs_sha256") == fp and rels:
                for rel in rels:
                    manifest.verify(rel)
                log(f"{outdir}: up to date (graphs, corpus, voices and budget unchanged), nothing to do")
                return 0
        except ManifestError:
            pass

    log(f"calibration voices: {', '.join(ids)} (held out: {', '.join(sorted(held_voices & set(ids))) or 'none'})")
    synth = Synthesizer(root, backend="onnxruntime", precision="fp32", threads=args.calib_threads or None)
    rec = RecordingBackend(synth.backend, int(budget.max_mb * 1e6))
    synth.backend = rec  # the synthesizer is untouched: only its backend records
    rng = np.random.Generator(np.random.PCG64(budget.seed))
    voices = {vid: store.get(vid) for vid in ids}
    plan_info: list[dict[str, Any]] = []
    splits = (
        (0, budget.requests, budget.step_samples, {v: voices[v] for v in ids if v not in held_voices}),
        (1, budget.heldout_requests, budget.heldout_samples, {v: voices[v] for v in ids if v in held_voices}),
    )
    request = 0
    rec.text_budget = budget.text_encoder_samples
    rec.vocoder_budget = budget.vocoder_samples
    for split, runs, samples, split_voices in splits:
        if runs == 0 or samples == 0:
            continue
        if not split_voices:
            raise ValueError(f"no {'held-out' if split else 'calibration'} voices in {voices_dir}")
        split_lines = [ln for ln in lines if ln.held_out == bool(split)]
        groups = pick_requests(
            synth, split_voices, split_lines, synth.buckets, budget.max_frames, runs, budget.batch_cycle, rng
        )
        if split == 0 and samples < budget.nfe:
            log(f"calibration samples raised from {samples} to {budget.nfe}: one per timestep at least")
            samples = budget.nfe
        keep = keep_plan(samples, budget.nfe, len(groups))
        rec.split, rec.step_budget = split, samples
        if split == 1:  # held-out text/vocoder samples on top of the calibration budget
            rec.text_budget = max(rec.text_budget, 0) + max(1, budget.text_encoder_samples // 4)
            rec.vocoder_budget = max(rec.vocoder_budget, 0) + max(1, budget.vocoder_samples // 4)
        for call, items in enumerate(groups):
            rec.keep_steps = keep[call]
            rec.request = request
            seeds = [budget.seed * 1000 + request * 10 + k for k in range(len(items))]  # own noise per row
            t0 = time.perf_counter()
            synth.synthesize_batch(
                [
                    (c.text, voices[c.voice], SynthesisOptions(nfe=budget.nfe, seed=sd))
                    for c, sd in zip(items, seeds, strict=True)
                ]
            )
            plan_info.append(
                {
                    "request": request,
                    "split": split,
                    "bucket": {"frames": items[0].bucket, "batch": len(items)},
                    "items": [
                        {"voice": c.voice, "lang": c.lang, "frames": c.frames, "seed": sd, "text": c.text}
                        for c, sd in zip(items, seeds, strict=True)
                    ],
                    "steps_kept": sorted(rec.keep_steps),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            log(
                f"  {'held-out' if split else 'calib'} run {call + 1}/{len(groups)}: bucket n{items[0].bucket} "
                f"x{len(items)}, {sum(len(c.text) for c in items)} chars, {time.perf_counter() - t0:.1f} s "
                f"(recorded {len(rec.step.feeds)} step / {len(rec.text.feeds)} text / {len(rec.vocoder.feeds)} vocoder, "
                f"{(rec.step.nbytes + rec.text.nbytes + rec.vocoder.nbytes) / 1e6:.0f} MB)"
            )
            request += 1
    synth.close()
    if rec.capped:
        log(f"warning: recording stopped at the {budget.max_mb:.0f} MB cap (--calib-max-mb)")
    if not rec.step.feeds:
        raise ValueError("nothing was recorded (budget 0?)")

    outdir.mkdir(parents=True, exist_ok=True)
    written = {}
    for graph, r in (("step", rec.step), ("text_encoder", rec.text), ("vocoder", rec.vocoder)):
        _save(outdir / f"{graph}.npz", r)
        written[graph] = f"{CALIB_DIR}/{graph}.npz"
    split_arr = np.array([m["split"] for m in rec.step.meta])
    steps_cal = sorted({int(m["step"]) for m in rec.step.meta if m["split"] == 0})
    buckets_cal = sorted({f"n{m['frames']}_b{m['batch']}" for m in rec.step.meta if m["split"] == 0})
    missing_steps = sorted(set(range(budget.nfe)) - set(steps_cal))
    summary: dict[str, Any] = {
        "budget": {**budget.__dict__, "batch_cycle": list(budget.batch_cycle)},
        "samples": {
            "step": {"calibration": int((split_arr == 0).sum()), "held_out": int((split_arr == 1).sum())},
            "text_encoder": len(rec.text.feeds),
            "vocoder": len(rec.vocoder.feeds),
        },
        "buckets": buckets_cal,
        "steps_covered": len(steps_cal),
        "steps_missing": missing_steps,
        "mb": round((rec.step.nbytes + rec.text.nbytes + rec.vocoder.nbytes) / 1e6, 1),
        "capped": rec.capped,
    }
    atomic_write_json(
        outdir / "index.json",
        {
            **summary,
            "corpus_sha256": corpus.corpus_sha256(cmanifest),
            "voices": {v: {"sha256": voice_sha[v], "held_out": v in held_voices} for v in ids},
            "requests": plan_info,
        },
    )
    if missing_steps:
        log(f"warning: step indices {missing_steps} have no calibration sample (raise --calib-samples)")
    seconds = round(time.perf_counter() - t_start, 1)

    def mutate(data: dict[str, Any]) -> None:
        files = {k: v for k, v in data.get("files", {}).items() if v.get("stage") != "calibrate"}
        for graph, rel in written.items():
            files[rel] = file_entry(root, rel, graph=graph, kind="calibration", stage="calibrate")
        files[f"{CALIB_DIR}/index.json"] = file_entry(
            root, f"{CALIB_DIR}/index.json", kind="calibration-index", stage="calibrate"
        )
        data["files"] = files
        data.setdefault("stages", {})["calibrate"] = {
            "inputs_sha256": fp,
            "sha256": sha256_json({rel: files[rel]["sha256"] for rel in written.values()}),
            "corpus_sha256": corpus.corpus_sha256(cmanifest),
            "voices": voice_sha,
            **summary,
            "seconds": seconds,
            "peak_rss_mb": round(peak_rss_mb()),
            "tools": tool_versions(("onnxruntime", "numpy")),
        }

    update_manifest(root, mutate)
    log(
        f"calibrate: {summary['samples']['step']} step samples over {len(steps_cal)}/{budget.nfe} timesteps, "
        f"buckets {', '.join(buckets_cal)}; {summary['mb']} MB in {seconds:.1f} s (peak RSS {peak_rss_mb():.0f} MB)"
    )
    return 0
