"""Listening figures: ASR word error rate, speaker similarity and DNSMOS per precision, NFE, schedule and CFG.

The held-out set is the training corpus' held-out speakers and sentences (espeak-ng, made in
seconds into artifacts/quality-eval when missing). Every condition (precision x NFE x schedule x CFG)
synthesizes the same requests with the same seeds through the real runtime (f5rt Synthesizer,
ONNX Runtime), and is scored next to two ceilings: the ground-truth audio and copy-synthesis.
Reduced precisions are gated against FP32 at the same NFE, schedule and CFG (config/gates.yaml,
`quality.vs_fp32`); writes quality.{md,json,png} to `--quality-reports`/<model name>/ and exits 1
when a gate fails.

    nox -s quality          # the full sweep (every precision, NFE 4-32, sway and EPSS) on the trained model
    python -m f5build quality --model f5tts-small-en                  # what the pipeline runs: NFE 7 and 16

Each condition's scores are stored when it is done (artifacts/.quality-cache/scores/<name>/, keyed on
the graphs, the runtime and scoring source, the held-out lines and the instruments: f5build.quality.store),
so a killed or widened sweep goes on where it was; `--quality-rescore` scores everything again.

The instruments are the `quality` dependency group (faster-whisper with Whisper weights shipped in
packages, resemblyzer, speechmos): nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from f5build.context import ROOT, artifacts_dir, csv_list
from f5rt.limits import Limits

PRECISIONS = ("fp32", "fp16", "int8", "cpu-fp32", "cpu-int8")
NFES = (4, 6, 7, 8, 16, 32)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quality (listening figures: ASR WER, speaker similarity, DNSMOS)")
    g.add_argument(
        "--quality-precisions",
        default="",
        help=f"comma list of {', '.join(PRECISIONS)} (default: every one the artifacts hold)",
    )
    g.add_argument(
        "--quality-nfe", default="7,16", help="comma list of NFE (default 7,16; the full sweep: 4,6,7,8,16,32)"
    )
    g.add_argument(
        "--quality-schedules",
        default="",
        help="comma list of sway, epss, midpoint (default: the schedule the service runs at each NFE, EPSS where "
        "f5-tts has a table, else sway)",
    )
    g.add_argument(
        "--quality-cfg",
        default="2",
        help="comma list of classifier-free guidance strengths (default 2, f5-tts'; the chat-reader default is "
        "chosen over every one swept)",
    )
    g.add_argument("--quality-utts", type=int, default=8, help="held-out utterances per condition (default 8)")
    g.add_argument("--quality-asr", choices=("base", "tiny.en"), default="base", help="Whisper model (default base)")
    g.add_argument("--quality-eval", type=Path, default=ROOT / "artifacts" / "quality-eval", help="held-out set cache")
    g.add_argument("--quality-reports", type=Path, default=ROOT / "reports", help="reports/<name>/quality.*")
    g.add_argument("--quality-gates", type=Path, default=ROOT / "config" / "gates.yaml", help="gates (YAML)")
    g.add_argument("--quality-threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    g.add_argument("--quality-keep-audio", action="store_true", help="write every generated wav beside the report")
    g.add_argument(
        "--quality-rescore",
        action="store_true",
        help="score every condition again, ignoring the scores stored by earlier runs (each condition is stored "
        "when done, so a killed or widened sweep goes on where it was)",
    )


@dataclass(frozen=True)
class Options:
    artifacts: Path
    precisions: tuple[str, ...]
    nfes: tuple[int, ...]
    schedules: tuple[str, ...]
    cfgs: tuple[float, ...]
    utts: int
    asr: str
    evalset: Path
    reports: Path
    gates: Path
    threads: int
    keep_audio: bool
    rescore: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        precisions = csv_list(args.quality_precisions)
        bad = [p for p in precisions if p not in PRECISIONS]
        if bad:
            raise ValueError(f"--quality-precisions: unknown {bad}; known: {', '.join(PRECISIONS)}")
        try:
            nfes = tuple(int(x) for x in csv_list(args.quality_nfe))
        except ValueError:
            raise ValueError(f"--quality-nfe must be a comma list of integers, got {args.quality_nfe!r}") from None
        if not nfes or min(nfes) < 1:
            raise ValueError(f"--quality-nfe needs positive NFE values, got {args.quality_nfe!r}")
        schedules = csv_list(args.quality_schedules)  # empty: the service's schedule at each NFE
        if any(s not in ("sway", "epss", "midpoint") for s in schedules):
            raise ValueError(f"--quality-schedules: sway, epss and/or midpoint, got {args.quality_schedules!r}")
        try:
            cfgs = tuple(float(x) for x in csv_list(args.quality_cfg))
        except ValueError:
            raise ValueError(f"--quality-cfg must be a comma list of numbers, got {args.quality_cfg!r}") from None
        lo, hi = Limits().cfg_range  # what a request to the service may ask
        if not cfgs or not all(lo <= c <= hi for c in cfgs):
            raise ValueError(f"--quality-cfg needs guidance strengths in [{lo:g}, {hi:g}], got {args.quality_cfg!r}")
        if args.quality_utts < 2:
            raise ValueError(f"--quality-utts must be at least 2, got {args.quality_utts}")
        return cls(
            artifacts=artifacts_dir(args),
            precisions=precisions,
            nfes=nfes,
            schedules=schedules,
            cfgs=cfgs,
            utts=int(args.quality_utts),
            asr=str(args.quality_asr),
            evalset=Path(args.quality_eval),
            reports=Path(args.quality_reports),
            gates=Path(args.quality_gates),
            threads=int(args.quality_threads) or 1,
            keep_audio=bool(args.quality_keep_audio),
            rescore=bool(args.quality_rescore),
        )


def run(options: Options) -> int:
    from f5build.quality.gates import QualityGates, check
    from f5build.quality.report import write_quality_report
    from f5build.quality.store import ScoreStore
    from f5build.quality.sweep import Condition, Listener, ceilings, run_conditions, served_schedule
    from f5build.train.corpus import CorpusOptions, corpus_is_current, load_corpus, make_corpus
    from f5rt.manifest import load_manifest

    gates = QualityGates.load(options.gates)
    if not (options.artifacts / "manifest.json").is_file():
        raise FileNotFoundError(f"{options.artifacts}: no manifest.json (run the pipeline for this model first)")
    manifest = load_manifest(options.artifacts)
    kind = str((manifest.data.get("source") or {}).get("kind", "checkpoint"))
    if kind != "checkpoint":
        print(f"quality: skipped: {manifest.name} has seeded weights ({kind}), whose audio is noise; listening "
              "figures need a trained model (--model f5tts-small-en or a checkpoint)", flush=True)  # fmt: skip
        return 0
    have = manifest.precisions("step")
    precisions = options.precisions or tuple(p for p in PRECISIONS if p in have)
    missing = [p for p in precisions if p not in have]
    if missing:
        raise ValueError(
            f"{options.artifacts}: no {', '.join(missing)} step graph (it has {', '.join(have)}); run quantize first"
        )
    if shutil.which("espeak-ng") is None and not options.evalset.joinpath("corpus.json").is_file():
        print(
            "quality: skipped: the held-out set is spoken by espeak-ng, which is not installed "
            "(apt-get install -y espeak-ng)",
            flush=True,
        )
        return 0
    splits = ("ref", "eval")
    if not corpus_is_current(options.evalset, CorpusOptions(), splits):
        print(f"making the held-out set in {options.evalset}", flush=True)
        make_corpus(options.evalset, CorpusOptions(), splits=splits, progress=False)
    evalset = load_corpus(options.evalset)
    items = evalset.held_out_pairs(options.utts)
    t0 = time.perf_counter()
    cache = options.artifacts.parent / ".quality-cache"
    listener = Listener(evalset, cache, options.asr, options.threads)
    reuse = not (options.rescore or options.keep_audio)  # the store keeps scores, not audio
    store = ScoreStore.for_run(cache / "scores" / options.artifacts.name, evalset, items, options.asr, reuse)
    ceil = ceilings(options.artifacts, evalset, items, listener, options.threads, store)
    conditions = [
        Condition(p, n, s, c)
        for p in precisions
        for n in options.nfes
        for s in options.schedules or (served_schedule(n),)
        for c in options.cfgs
    ]
    out = options.reports / options.artifacts.name
    keep = out / "quality-audio" if options.keep_audio else None
    results, details = run_conditions(
        options.artifacts, conditions, evalset, items, listener, options.threads, keep, store
    )
    verdicts = check(results, gates)
    meta = {"asr": options.asr, "utterances": len(items), "seconds": round(time.perf_counter() - t0, 1)}
    write_quality_report(out, options.artifacts.name, ceil, results, verdicts, details, meta)
    print(f"quality report: {out / 'quality.md'}", flush=True)
    failed = [v for v in verdicts if not v.passed]
    for v in failed:
        print(f"quality gate failed: {v.condition}: {'; '.join(v.failures)}", flush=True)
    return 1 if failed else 0
