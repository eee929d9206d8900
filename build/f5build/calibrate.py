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

Output: artifacts/<name>/calibration/{step,text_encoder,vocoder}.npz (format: f5build.recordings) +
index.json (what was run), hashed in the manifest (stage "calibrate"). A re-run with unchanged
graphs, corpus, voices, budget and code is a no-op. Voices missing from calibration/voices are made
first (calibration/corpus.py).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from f5build.calib_plan import keep_plan, load_corpus_module, pick_requests, voice_hashes
from f5build.common import log, peak_rss_mb, source_hash, tool_versions
from f5build.context import ROOT, add_shared, artifacts_dir
from f5build.recipe import CalibrationBudget, load_recipe
from f5build.recording_backend import RecordingBackend
from f5build.recordings import CALIB_DIR, INDEX_NAME, recording_rel, save_recording
from f5build.space import require_space
from f5rt.errors import ManifestError
from f5rt.files import atomic_write_json, sha256_file, sha256_json
from f5rt.manifest import file_entry, load_manifest, update_manifest

__all__ = ["CalibrateOptions", "Options", "RecordingBackend", "add_arguments", "load_corpus_module", "run"]

GENERATORS = ("auto", "espeak-ng", "synthetic")
# budget fields that may be 0 (no held-out data); every other one must be positive
_MAY_BE_ZERO = ("heldout_requests", "heldout_samples")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibrate (record real sampler inputs)")
    add_shared(g, "calib", "recipe", "corpus", "voices")
    g.add_argument(
        "--calib-generator",
        default="auto",
        choices=GENERATORS,
        help="how missing recipe voices are made (auto: espeak-ng if installed, else synthetic)",
    )
    g.add_argument("--calib-nfe", type=int, help="sampler steps per run (default: recipe)")
    g.add_argument("--calib-samples", type=int, help="recorded step calls for calibration (default: recipe)")
    g.add_argument("--calib-requests", type=int, help="calibration sampler runs (default: recipe)")
    g.add_argument("--calib-heldout-requests", type=int, help="held-out sampler runs (default: recipe)")
    g.add_argument("--calib-heldout-samples", type=int, help="recorded held-out step calls (default: recipe)")
    g.add_argument("--calib-max-frames", type=int, help="largest bucket to calibrate (default: recipe)")
    g.add_argument("--calib-max-mb", type=float, help="cap on recorded data in MB (default: recipe)")
    add_shared(g, "calib", "threads", "force", force="record again even when up to date")


@dataclass(frozen=True)
class CalibrateOptions:
    """What one calibrate run needs; `budget` holds only the overrides of the recipe's budget."""

    root: Path
    recipe: Path = ROOT / "config" / "precision.yaml"
    corpus: Path = ROOT / "calibration"
    voices: Path | None = None
    generator: str = "auto"
    budget: dict[str, int | float] | None = None
    threads: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise ValueError(f"--calib-generator: expected one of {', '.join(GENERATORS)}, got {self.generator!r}")
        for k, v in (self.budget or {}).items():
            if k not in CalibrationBudget.__dataclass_fields__:
                raise ValueError(f"unknown calibration budget field {k!r}")
            if v < 0 or (v == 0 and k not in _MAY_BE_ZERO):
                raise ValueError(f"--calib-{k.replace('_', '-')}: must be positive, got {v}")
        if self.threads < 0:
            raise ValueError(f"--calib-threads: must be >= 0, got {self.threads}")

    @property
    def voices_dir(self) -> Path:
        return Path(self.voices or Path(self.corpus) / "voices")

    def resolve_budget(self, base: CalibrationBudget) -> CalibrationBudget:
        """The recipe's budget with this run's overrides."""
        return replace(base, **(self.budget or {}))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CalibrateOptions:
        over = {
            "nfe": args.calib_nfe,
            "step_samples": args.calib_samples,
            "requests": args.calib_requests,
            "heldout_requests": args.calib_heldout_requests,
            "heldout_samples": args.calib_heldout_samples,
            "max_frames": args.calib_max_frames,
            "max_mb": args.calib_max_mb,
        }
        return cls(
            root=artifacts_dir(args),
            recipe=Path(args.calib_recipe),
            corpus=Path(args.calib_corpus),
            voices=Path(args.calib_voices) if args.calib_voices else None,
            generator=str(args.calib_generator),
            budget={k: v for k, v in over.items() if v is not None},
            threads=int(args.calib_threads or 0),
            force=bool(args.calib_force),
        )


Options = CalibrateOptions


def _recording_fingerprint(
    manifest: Any, budget: CalibrationBudget, corpus: Any, cmanifest: Any, voice_sha: dict[str, str], opts: Options
) -> str:
    """Everything the recorded data depends on: graphs, budget, corpus, voices, build and runtime code."""
    return sha256_json(
        {
            "graphs": {g: manifest.files[f"{g}.onnx"]["sha256"] for g in ("text_encoder", "step", "vocoder")},
            "budget": budget.__dict__,
            "corpus": corpus.corpus_sha256(cmanifest),
            "voices": voice_sha,
            "code": source_hash(runtime=True),  # the runtime's sampler, chunker and backend shape the data
            "corpus_code": sha256_file(Path(opts.corpus) / "corpus.py"),
            "tools": tool_versions(("onnxruntime", "numpy")),
        }
    )


def _up_to_date(manifest: Any, fp: str) -> bool:
    try:
        stage = manifest.data.get("stages", {}).get("calibrate", {})
        rels = [r for r, m in manifest.files.items() if m.get("stage") == "calibrate"]
        if stage.get("inputs_sha256") == fp and rels:
            for rel in rels:
                manifest.verify(rel)
            return True
    except ManifestError:
        pass
    return False


def _record(
    synth: Any,
    rec: RecordingBackend,
    budget: CalibrationBudget,
    voices: dict[str, Any],
    held_voices: set[str],
    lines: list[Any],
    voices_dir: Path,
) -> list[dict[str, Any]]:
    """Run the calibration, then the held-out sampler runs, recording through `rec`; returns what ran."""
    from f5rt.synthesizer import SynthesisOptions

    rng = np.random.Generator(np.random.PCG64(budget.seed))
    plan_info: list[dict[str, Any]] = []
    ids = list(voices)
    splits = (
        (0, budget.requests, budget.step_samples, {v: voices[v] for v in ids if v not in held_voices}),
        (1, budget.heldout_requests, budget.heldout_samples, {v: voices[v] for v in ids if v in held_voices}),
    )
    request = 0
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
        # held-out text/vocoder samples come on top of the calibration budget
        extra_text = max(1, budget.text_encoder_samples // 4) if split == 1 else 0
        extra_vocoder = max(1, budget.vocoder_samples // 4) if split == 1 else 0
        with rec.split(split, steps=samples, extra_text=extra_text, extra_vocoder=extra_vocoder):
            for call, items in enumerate(groups):
                seeds = [budget.seed * 1000 + request * 10 + k for k in range(len(items))]  # own noise per row
                t0 = time.perf_counter()
                with rec.request(request, keep[call]):
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
                        "steps_kept": sorted(keep[call]),
                        "seconds": round(time.perf_counter() - t0, 2),
                    }
                )
                log(
                    f"  {'held-out' if split else 'calib'} run {call + 1}/{len(groups)}: bucket n{items[0].bucket} "
                    f"x{len(items)}, {sum(len(c.text) for c in items)} chars, {time.perf_counter() - t0:.1f} s "
                    f"(recorded {len(rec.step.feeds)} step / {len(rec.text.feeds)} text / "
                    f"{len(rec.vocoder.feeds)} vocoder, {rec.nbytes / 1e6:.0f} MB)"
                )
                request += 1
    return plan_info


def _summary(rec: RecordingBackend, budget: CalibrationBudget) -> dict[str, Any]:
    split_arr = np.array([m["split"] for m in rec.step.meta])
    steps_cal = sorted({int(m["step"]) for m in rec.step.meta if m["split"] == 0})
    buckets_cal = sorted({f"n{m['frames']}_b{m['batch']}" for m in rec.step.meta if m["split"] == 0})
    return {
        "budget": {**budget.__dict__, "batch_cycle": list(budget.batch_cycle)},
        "samples": {
            "step": {"calibration": int((split_arr == 0).sum()), "held_out": int((split_arr == 1).sum())},
            "text_encoder": len(rec.text.feeds),
            "vocoder": len(rec.vocoder.feeds),
        },
        "buckets": buckets_cal,
        "steps_covered": len(steps_cal),
        "steps_missing": sorted(set(range(budget.nfe)) - set(steps_cal)),
        "mb": round(rec.nbytes / 1e6, 1),
        "capped": rec.capped,
    }


def run(opts: CalibrateOptions) -> int:
    from f5rt.backends import make_backend
    from f5rt.synthesizer import Synthesizer
    from f5rt.voices import VoiceStore

    t_start = time.perf_counter()
    root = opts.root
    manifest = load_manifest(root)
    recipe = load_recipe(opts.recipe)
    budget = opts.resolve_budget(recipe.calibration)
    corpus = load_corpus_module(opts.corpus)
    problems = corpus.check_manifest(opts.corpus)
    if problems:
        raise ValueError(f"{opts.corpus}/manifest.json: " + "; ".join(problems))
    cmanifest = corpus.read_manifest(opts.corpus)
    voices_dir = opts.voices_dir
    corpus.ensure_voices(voices_dir, root=opts.corpus, generator=opts.generator, log=log)
    store = VoiceStore(voices_dir, cache_dir=voices_dir / ".cache")
    ids = store.list()
    held_voices = set(cmanifest["held_out"]["voices"])
    voice_sha = voice_hashes(voices_dir, ids)
    lines = corpus.read_lines(opts.corpus, cmanifest)

    fp = _recording_fingerprint(manifest, budget, corpus, cmanifest, voice_sha, opts)
    outdir = root / CALIB_DIR
    if not opts.force and _up_to_date(manifest, fp):
        log(f"{outdir}: up to date (graphs, corpus, voices and budget unchanged), nothing to do")
        return 0

    # the recordings are capped at max_mb: refuse now rather than after minutes of sampling
    require_space(
        outdir.parent, budget.max_mb * 1e6, f"calibration recordings (up to --calib-max-mb {budget.max_mb:g})"
    )
    log(f"calibration voices: {', '.join(ids)} (held out: {', '.join(sorted(held_voices & set(ids))) or 'none'})")
    inner = make_backend("onnxruntime", manifest, precision="fp32", threads=opts.threads or None)
    rec = RecordingBackend(
        inner, int(budget.max_mb * 1e6), text_budget=budget.text_encoder_samples, vocoder_budget=budget.vocoder_samples
    )
    try:
        # the synthesizer is the runtime's own, untouched: only the backend it is given records
        synth = Synthesizer(root, backend=rec, precision="fp32")
        voices = {vid: store.get(vid) for vid in ids}
        plan_info = _record(synth, rec, budget, voices, held_voices, lines, voices_dir)
    finally:
        rec.close()
    if rec.capped:
        log(f"warning: recording stopped at the {budget.max_mb:.0f} MB cap (--calib-max-mb)")
    if not rec.step.feeds:
        raise ValueError("nothing was recorded (budget 0?)")

    outdir.mkdir(parents=True, exist_ok=True)
    require_space(outdir, rec.nbytes, "the calibration recordings")
    written = {}
    for graph, r in (("step", rec.step), ("text_encoder", rec.text), ("vocoder", rec.vocoder)):
        written[graph] = recording_rel(graph)
        save_recording(root / written[graph], r)
    summary = _summary(rec, budget)
    atomic_write_json(
        root / INDEX_NAME,
        {
            **summary,
            "corpus_sha256": corpus.corpus_sha256(cmanifest),
            "voices": {v: {"sha256": voice_sha[v], "held_out": v in held_voices} for v in ids},
            "requests": plan_info,
        },
    )
    if summary["steps_missing"]:
        log(f"warning: step indices {summary['steps_missing']} have no calibration sample (raise --calib-samples)")
    seconds = round(time.perf_counter() - t_start, 1)

    def mutate(data: dict[str, Any]) -> None:
        files = {k: v for k, v in data.get("files", {}).items() if v.get("stage") != "calibrate"}
        for graph, rel in written.items():
            files[rel] = file_entry(root, rel, graph=graph, kind="calibration", stage="calibrate")
        files[INDEX_NAME] = file_entry(root, INDEX_NAME, kind="calibration-index", stage="calibrate")
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
        f"calibrate: {summary['samples']['step']} step samples over {summary['steps_covered']}/{budget.nfe} "
        f"timesteps, buckets {', '.join(summary['buckets'])}; {summary['mb']} MB in {seconds:.1f} s "
        f"(peak RSS {peak_rss_mb():.0f} MB)"
    )
    return 0
