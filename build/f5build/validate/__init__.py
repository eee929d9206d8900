"""Validate: every reduced-precision variant against FP32, per graph, bucket and timestep, and end to end.

Graphs: Polygraphy (`OnnxrtRunner` + `SessionFromOnnx`; `TrtRunner` for the compiled engines where
TensorRT exists) runs FP32 and each variant on held-out inputs recorded by the calibrate stage (real
sampler states from held-out texts and voices, never the calibration set), `Comparator.run` +
`Comparator.compare_accuracy` give Polygraphy's own verdict, and each output is also measured on the
request's real frames: max/mean absolute and relative error, cosine, SNR, grouped per bucket and, for
the step graph, per timestep along the ODE.

End to end: the real runtime (f5rt Synthesizer, ONNX Runtime backend) synthesizes held-out corpus
lines with held-out voices at every precision with the same seed; each precision's audio is compared
with the FP32 audio: mel SNR, mel cepstral distortion, STOI, PESQ (16 kHz) and duration.

Thresholds come from config/gates.yaml. Writes reports/accuracy.md, accuracy.json and PNG plots
(atomically), records a summary in the manifest, and exits 1 naming each gate that failed.

The package, one concept per module: `struct` (typed results), `comparator` (graph comparison),
`end_to_end` (audio comparison), `gates` (thresholds, checks, per-precision verdicts), `report`
(markdown, JSON, plots). `run()` here only wires them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from f5build.common import log, peak_rss_mb, tool_versions
from f5build.context import ROOT, add_shared, artifacts_dir, csv_list
from f5build.recipe import CPU_PRECISIONS
from f5build.recordings import RecordedSamples, calibration_file
from f5build.validate.comparator import ExactRowLoader, RecordedLoader, compare_graph, exact_rows
from f5build.validate.end_to_end import end_to_end, pick_utterances
from f5build.validate.gates import (
    GRAPH_METRICS,
    E2EMetric,
    e2e_gates,
    graph_gates,
    load_gates,
    precision_verdicts,
)
from f5build.validate.report import fmt, write_reports
from f5build.validate.struct import SEED_FLOOR_LABEL, AccuracyReport, EndToEndComparison, GateCheck, GraphComparison
from f5rt.manifest import Manifest, load_manifest, update_manifest

__all__ = [
    "GRAPH_METRICS",
    "E2EMetric",
    "ExactRowLoader",
    "Options",
    "RecordedLoader",
    "ValidateOptions",
    "add_arguments",
    "compare_graph",
    "exact_rows",
    "load_gates",
    "precision_verdicts",
    "run",
]

GRAPH_ORDER = ("text_encoder", "step", "vocoder")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("validate (accuracy vs FP32, gated)")
    g.add_argument("--val-gates", type=Path, default=ROOT / "config" / "gates.yaml", help="gate thresholds (YAML)")
    add_shared(g, "val", "reports", reports="folder for accuracy.md/.json/plots")
    g.add_argument("--val-precisions", default="", help="comma list (default: every variant in the manifest)")
    g.add_argument("--val-max-samples", type=int, default=0, help="held-out samples per graph (0 = all)")
    g.add_argument("--val-e2e-lines", type=int, default=4, help="held-out corpus lines synthesized end to end")
    g.add_argument("--val-e2e-nfe", type=int, default=32, help="sampler steps of the end-to-end runs")
    g.add_argument("--val-no-e2e", action="store_true", help="skip the end-to-end audio comparison")
    g.add_argument(
        "--val-no-record",
        action="store_true",
        help="report only: leave the manifest's verdicts as they are (for checks of another processor's "
        "arithmetic, e.g. `nox -s avx2`, whose verdict must not decide what this machine runs)",
    )
    add_shared(g, "val", "corpus", "voices")
    add_shared(g, "val", "threads", threads="ONNX Runtime threads of the end-to-end runs (0 = default)")


@dataclass(frozen=True)
class ValidateOptions:
    """One validate run. Empty `precisions`: every variant in the manifest; `max_samples` 0: all held-out
    samples; `e2e_lines` 0 (or `e2e` False): no end-to-end comparison."""

    root: Path
    gates: Path = ROOT / "config" / "gates.yaml"
    reports: Path = ROOT / "reports"
    precisions: tuple[str, ...] = ()
    max_samples: int = 0
    e2e: bool = True
    record: bool = True  # write the verdicts into the manifest (what f5rt.precision's `auto` reads)
    e2e_lines: int = 4
    e2e_nfe: int = 32
    corpus: Path = ROOT / "calibration"
    voices: Path | None = None
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("max_samples", "e2e_lines", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"--val-{name.replace('_', '-')}: must be >= 0, got {getattr(self, name)}")
        if self.e2e_nfe < 1:
            raise ValueError(f"--val-e2e-nfe: must be positive, got {self.e2e_nfe}")

    @property
    def voices_dir(self) -> Path:
        return Path(self.voices or Path(self.corpus) / "voices")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ValidateOptions:
        return cls(
            root=artifacts_dir(args),
            gates=Path(args.val_gates),
            reports=Path(args.val_reports),
            precisions=csv_list(args.val_precisions),
            max_samples=int(args.val_max_samples or 0),
            e2e=not bool(args.val_no_e2e),
            record=not bool(args.val_no_record),
            e2e_lines=int(args.val_e2e_lines),
            e2e_nfe=int(args.val_e2e_nfe),
            corpus=Path(args.val_corpus),
            voices=Path(args.val_voices) if args.val_voices else None,
            threads=int(args.val_threads or 0),
        )


Options = ValidateOptions


def compare_graphs(
    manifest: Manifest, gates: dict[str, Any], opts: ValidateOptions
) -> dict[str, dict[str, GraphComparison]]:
    """Every graph's variants against FP32 on its held-out recording, TensorRT and CPU precisions in
    separate groups (comparator.compare_graph)."""
    out: dict[str, dict[str, GraphComparison]] = {}
    for graph in GRAPH_ORDER:
        precs = [p for p in manifest.precisions(graph) if p != "fp32" and (not opts.precisions or p in opts.precisions)]
        if not precs:
            continue
        calib = calibration_file(manifest, graph)
        if calib is None:
            raise FileNotFoundError(f"{opts.root}: no recorded inputs for '{graph}'; run `nox -s calibrate` first")
        with RecordedSamples(calib) as samples:
            idx = samples.indices(split=1, limit=opts.max_samples or None)
            if not idx:
                raise ValueError(f"{calib}: no held-out samples (split 1); calibrate with --calib-heldout-requests > 0")
            log(f"{graph}: FP32 vs {', '.join(precs)} on {len(idx)} held-out samples (Polygraphy, ONNX Runtime)")
            res: dict[str, GraphComparison] = {}
            for group in ([p for p in precs if p not in CPU_PRECISIONS], [p for p in precs if p in CPU_PRECISIONS]):
                if group:
                    res.update(compare_graph(manifest, graph, group, samples, idx, gates))
        out[graph] = res
        for prec, r in res.items():
            if prec.startswith("trt-") or r.polygraphy is None:
                continue
            log(
                f"  {graph}.{prec}: min cosine {r.worst('cosine')['cosine']:.6f}, "
                f"min SNR {r.worst('snr_db')['snr_db']:.1f} dB, max abs {r.worst('max_abs')['max_abs']:.3g}, "
                f"Polygraphy pass {100 * r.polygraphy.pass_rate:.0f}%"
            )
    return out


def compare_end_to_end(root: Path, precisions: list[str], opts: ValidateOptions) -> EndToEndComparison:
    """Held-out corpus lines with held-out voices through the runtime at FP32 and each precision."""
    from f5build.calib_plan import load_corpus_module
    from f5rt.voices import VoiceStore

    corpus = load_corpus_module(opts.corpus)
    cm = corpus.read_manifest(opts.corpus)
    voices_dir = opts.voices_dir
    corpus.ensure_voices(voices_dir, root=opts.corpus, log=log)
    store = VoiceStore(voices_dir, cache_dir=voices_dir / ".cache")
    langs = {v["id"]: v["lang"] for v in cm["voices"] if v["id"] in cm["held_out"]["voices"]}
    langs = {v: lang for v, lang in langs.items() if v in store.list()}
    if not langs:
        raise ValueError(f"no held-out voice in {voices_dir}")
    from f5build.validate.end_to_end import MIN_COVERAGE, vocab_coverage
    from f5rt.text import load_vocab

    vocab = load_vocab(root / "vocab.txt")
    lines = corpus.read_lines(opts.corpus, cm)
    spoken = [ln for ln in lines if vocab_coverage(ln.text, vocab) >= MIN_COVERAGE]
    if len(spoken) < len(lines):
        log(f"end to end: {len(lines) - len(spoken)} corpus lines left out: the model's vocab lacks their characters")
    langs = {v: lang for v, lang in langs.items() if any(ln.lang == lang for ln in spoken)} or langs
    utts = pick_utterances(spoken, langs, opts.e2e_lines)
    if not utts:
        raise ValueError(f"no held-out corpus line in {opts.corpus} is written in characters the model's vocab has")
    log(f"end to end: {len(utts)} held-out lines x fp32/{'/'.join(precisions)} (NFE {opts.e2e_nfe})")
    result = end_to_end(root, precisions, utts, {v: store.get(v) for v in langs}, opts.e2e_nfe, opts.threads)
    floor = [u.seed_floor or {} for u in result.utterances]
    log(f"  e2e seed floor ({SEED_FLOOR_LABEL}): MCD {', '.join(fmt(x.get('mcd_db'), 1) for x in floor)} dB")
    for prec in precisions:
        m = [u.precisions[prec] for u in result.utterances]
        log(
            f"  e2e {prec}: mel SNR min {min(x['mel_snr_db'] for x in m):.1f} dB, MCD "
            f"{', '.join(fmt(x['mcd_db'], 2) for x in m)} dB, STOI {', '.join(fmt(x['stoi'], 3) for x in m)}, "
            f"PESQ {', '.join(fmt(x['pesq'], 2) for x in m)}"
        )
    return result


def _record(
    root: Path,
    manifest: Manifest,
    checks: list[GateCheck],
    report_md: Path,
    seconds: float,
    measured: set[str],
    int8_arithmetic: Mapping[str, Any] | None = None,
) -> None:
    """stages.validate in the manifest: the verdicts f5rt.precision reads, and a summary.

    A run restricted to some precisions (`--val-precisions`) replaces the verdicts of those it
    `measured` (one measured without a gate loses its verdict) and keeps the others' (the runtime still
    checks each verdict's file hashes, so a rebuilt graph is not trusted on an old one). The cpu-int8
    verdict names the INT8 arithmetic it was measured with.
    """
    verdicts = precision_verdicts(manifest, checks)
    if int8_arithmetic is not None and "cpu-int8" in verdicts:
        verdicts["cpu-int8"]["int8_arithmetic"] = int8_arithmetic["kind"]
    failed = [c for c in checks if not c.passed]

    def mutate(data: dict[str, Any]) -> None:
        before = data.get("stages", {}).get("validate", {}).get("precisions", {})
        kept = {p: v for p, v in before.items() if p not in measured}
        data.setdefault("stages", {})["validate"] = {
            "precisions": {**kept, **verdicts},
            "passed": not failed,
            "failed_gates": [c.gate for c in failed],
            "gates": len(checks),
            "report": str(report_md),
            "seconds": seconds,
            "peak_rss_mb": round(peak_rss_mb()),
        }

    update_manifest(root, mutate)


def run(opts: ValidateOptions) -> int:
    t_start = time.perf_counter()
    root = opts.root
    manifest = load_manifest(root)
    gates = load_gates(opts.gates)
    report = AccuracyReport(
        model=manifest.name,
        artifacts=str(root),
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        files={rel: m["sha256"] for rel, m in manifest.files.items() if m.get("kind") in ("onnx", "calibration")},
        tools=tool_versions(("onnx", "onnxruntime", "polygraphy", "nvidia-modelopt", "tensorrt")),
    )
    report.graphs = compare_graphs(manifest, gates, opts)
    if any("cpu-int8" in precs for precs in report.graphs.values()):
        from f5build.int8_arithmetic import arithmetic_of

        report.int8_arithmetic = arithmetic_of(manifest)
        log(f"cpu-int8 arithmetic: {report.int8_arithmetic['text']}")
    for res in report.graphs.values():
        for r in res.values():
            report.gates += graph_gates(r, gates)
    # end to end at the step graph's precisions (the one graph every deployment reduces)
    e2e_precs = [
        p for p in manifest.precisions("step") if p != "fp32" and (not opts.precisions or p in opts.precisions)
    ]
    if e2e_precs and opts.e2e and opts.e2e_lines > 0:
        report.e2e = compare_end_to_end(root, e2e_precs, opts)
        for prec in e2e_precs:
            report.gates += e2e_gates(prec, report.e2e.utterances, gates)
    report.placement = manifest.data.get("stages", {}).get("quantize", {}).get("placement", {})

    images = write_reports(report, gates, opts.reports)
    seconds = round(time.perf_counter() - t_start, 1)
    checks = report.gates
    if opts.record:
        measured = {p for precs in report.graphs.values() for p in precs} | set(e2e_precs)
        _record(root, manifest, checks, Path(opts.reports) / "accuracy.md", seconds, measured, report.int8_arithmetic)
    else:
        log("--val-no-record: the manifest's verdicts are left as they were")
    log(f"wrote {Path(opts.reports) / 'accuracy.md'} (+ .json, {len(images)} plots) in {seconds:.1f} s")
    if not checks:
        log("no reduced-precision variant to validate (run `nox -s quantize`)")
    for c in checks:
        if not c.passed:
            d = 6 if "cosine" in c.gate else 4
            log(f"validate: gate {c.gate} failed: {fmt(c.value, d)} vs bound {fmt(c.bound, d)} ({c.where})")
    return 0 if report.passed else 1
