"""cpu-int8 weight formats side by side on this CPU: accuracy against FP32 and the time of one step.

`python -m f5build.int8_formats --artifacts artifacts/<name> [--formats s8,s8-7bit,u8,s8-tensor]`

Why: without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime runs dynamic INT8 as u8 activations x
s8 weights with `vpmaddubsw`, which adds each pair of byte products into a saturating 16-bit sum
(255 x 127 x 2 > 32767). Whether that costs accuracy depends on the trained weights and the
activations, so it is measured, per CPU, not assumed. Each format is the cpu-int8 step graph the
quantize stage would make (the recipe's keep-FP32 rules, fused attention and GELU:
f5build.cpu_variant.build_cpu_variant) with that `Int8Format`:

    s8         s8 weights, 8 bits, per-channel scales (the default)
    s8-7bit    s8 weights in 7 bits (`reduce_range`): no pair sum can saturate
    u8         u8 weights (u8 x u8 kernels)
    s8-tensor  s8 weights, one scale per tensor

Accuracy: every held-out recorded step call of the calibrate stage (real sampler states), one row
each, scored with validate's metric (velocity cosine and SNR on the real frames,
f5build.validate.comparator.sample_errors) against the FP32 step graph and judged by validate's
cpu-int8 step gates (config/gates.yaml). Speed: one full-length step at `--frames` frames, median of
`--calls` calls after a warm-up, for each format and cpu-fp32, in turns (format after format, round
after round) so a neighbour's load falls on all of them alike; the ONNX Runtime sessions use the
runtime's own thread policy. Writes `<reports>/int8_formats.{md,json}` with the CPU's ISA flags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from f5build.context import ROOT, csv_list
from f5build.cpu_variant import Int8Format, build_cpu_variant
from f5build.recipe import load_recipe
from f5rt.files import atomic_write_bytes, atomic_write_json
from f5rt.manifest import load_manifest

FORMATS: dict[str, Int8Format] = {
    "s8": Int8Format(),
    "s8-7bit": Int8Format(reduce_range=True),
    "u8": Int8Format(weights="u8"),
    "s8-tensor": Int8Format(per_channel=False),
}


@dataclass(frozen=True)
class FormatsOptions:
    artifacts: Path
    formats: tuple[str, ...] = tuple(FORMATS)
    recipe: Path = ROOT / "config" / "precision.yaml"
    gates: Path = ROOT / "config" / "gates.yaml"
    reports: Path = ROOT / "reports"
    frames: int = 600
    calls: int = 3
    rounds: int = 2
    recorded: int = 8  # held-out recorded calls per bucket at most
    threads: int | None = None

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ValueError(f"--formats: unknown {bad} (choose from {', '.join(FORMATS)})")
        for name in ("frames", "calls", "rounds", "recorded"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: must be at least 1, got {getattr(self, name)}")


@dataclass
class FormatResult:
    """One format's figures (or cpu-fp32's speed, as the reference row)."""

    name: str
    int8_format: dict[str, Any] | None
    worst_cosine: float = float("nan")
    worst_snr_db: float = float("nan")
    median_snr_db: float = float("nan")
    rows: int = 0
    step_seconds: list[float] = field(default_factory=list)
    passed: bool | None = None

    @property
    def median_step(self) -> float:
        return statistics.median(self.step_seconds) if self.step_seconds else float("nan")


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    from f5rt.backends.onnxruntime import ThreadPolicy

    so = ThreadPolicy.default(threads).session_options(ort)
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _time_step(sess: Any, feed: dict[str, np.ndarray], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        sess.run(None, feed)
        out.append(time.perf_counter() - t0)
    return out


def run(opts: FormatsOptions, log: Callable[[str], None] = print) -> list[FormatResult]:
    from f5build.attention_forms import recorded_feeds, synthetic_feed
    from f5build.validate.comparator import sample_errors
    from f5build.validate.gates import step_bounds

    manifest = load_manifest(opts.artifacts)
    rule = load_recipe(opts.recipe).graphs["step"].cpu
    if rule is None:
        raise ValueError(f"{opts.recipe}: graphs.step has no 'cpu' section to build cpu-int8 from")
    src = manifest.find("step", "fp32")
    heads = int(manifest.model.get("heads", 0))
    feeds = recorded_feeds(manifest, sorted(set(manifest.buckets.frames)), opts.recorded)
    if not feeds:
        raise FileNotFoundError(f"{opts.artifacts}: no step recording; run the calibrate stage first")
    gates = step_bounds(opts.gates, "cpu-int8")
    text = _session(manifest.find("text_encoder", "fp32"), opts.threads)
    timing_feed = synthetic_feed(manifest, text, opts.frames, 0.5, np.random.default_rng(0))
    del text
    ref = _session(src, opts.threads)
    refs = [{"x_next": ref.run(None, feed)[0]} for _, _, feed in feeds]
    del ref
    log(f"{len(feeds)} held-out step calls; timing one step at N = {opts.frames}")
    results: list[FormatResult] = []
    with tempfile.TemporaryDirectory(prefix="int8-formats-") as tmp:
        paths: dict[str, Path] = {}
        for name in ("cpu-fp32", *opts.formats):
            folder = Path(tmp) / name
            folder.mkdir()
            precision = "cpu-fp32" if name == "cpu-fp32" else "cpu-int8"
            fmt = None if name == "cpu-fp32" else FORMATS[name]
            # the placement check holds each format to its own weight width, not the recipe's
            own = rule if fmt is None else replace(rule, weight_bits=7 if fmt.reduce_range else 8)
            path, _, report, _ = build_cpu_variant(src, folder, own, precision, "step", heads, fmt)
            if report.errors:
                raise RuntimeError(f"{name}: the built graph breaks the recipe: {report.errors[0]}")
            paths[name] = path
            res = FormatResult(name, None if fmt is None else fmt.to_dict())
            if fmt is not None:
                sess = _session(path, opts.threads)
                errs = [
                    sample_errors("step", feed, r, {"x_next": sess.run(None, feed)[0]})
                    for (_, _, feed), r in zip(feeds, refs, strict=True)
                ]
                del sess
                res.rows = len(errs)
                res.worst_cosine = min(e["cosine"] for e in errs)
                res.worst_snr_db = min(e["snr_db"] for e in errs)
                res.median_snr_db = float(statistics.median(e["snr_db"] for e in errs))
                res.passed = res.worst_cosine >= gates.get("min_cosine", -1.0) and res.worst_snr_db >= gates.get(
                    "min_snr_db", -1e9
                )
                log(f"  {name}: worst cosine {res.worst_cosine:.6f}, worst SNR {res.worst_snr_db:.1f} dB")
            results.append(res)
        sessions = {name: _session(p, opts.threads) for name, p in paths.items()}
        for sess in sessions.values():
            sess.run(None, timing_feed)  # warm-up: first-call allocations and kernel selection
        for r in range(opts.rounds):
            for res in results:
                res.step_seconds += _time_step(sessions[res.name], timing_feed, opts.calls)
            log(f"  round {r + 1}: " + ", ".join(f"{x.name} {x.median_step:.2f} s" for x in results))
        del sessions
    _write(opts, results, gates)
    return results


def _write(opts: FormatsOptions, results: list[FormatResult], gates: dict[str, float]) -> None:
    from f5build.bench import cpu_info
    from f5build.int8_arithmetic import probe

    cpu = cpu_info()
    # the ISA flags say what the CPU has; the probe says what ONNX Runtime's kernels computed with it,
    # which decides whether 8-bit weights can saturate (and so which format is the more accurate here)
    arithmetic = probe()
    fp32 = next(r for r in results if r.name == "cpu-fp32").median_step
    cmd = "python -m f5build.int8_formats " + " ".join(sys.argv[1:])
    lines = [
        "# cpu-int8 weight formats on this CPU",
        "",
        f"{time.strftime('%Y-%m-%d')}, {cpu.get('model', '?')}, ISA {', '.join(cpu.get('isa', [])) or '?'}; "
        f"artifacts `{opts.artifacts}`; `{cmd}`",
        "",
        f"INT8 arithmetic here (f5build.int8_arithmetic): {arithmetic.describe()}.",
        "",
        f"Accuracy: velocity against the FP32 step graph on held-out recorded step calls; gates (cpu-int8 step): "
        f"cosine >= {gates.get('min_cosine')}, SNR >= {gates.get('min_snr_db')} dB. Speed: one step at "
        f"N = {opts.frames}, median of {opts.calls * opts.rounds} calls in {opts.rounds} interleaved rounds.",
        "",
        "| format | weights | 7-bit | per channel | worst cosine | worst SNR | median SNR | gates | step | vs cpu-fp32 |",
        "|---|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        f = r.int8_format or {}
        acc = (
            f"{r.worst_cosine:.6f} | {r.worst_snr_db:.1f} dB | {r.median_snr_db:.1f} dB | "
            + ("pass" if r.passed else "FAIL")
            if r.int8_format
            else "- | - | - | -"
        )
        cols = f"{f.get('weights', 'fp32')} | {f.get('reduce_range', '-')} | {f.get('per_channel', '-')}"
        lines.append(f"| {r.name} | {cols} | {acc} | {r.median_step:.3f} s | {fp32 / r.median_step:.2f}x |")
    opts.reports.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(opts.reports / "int8_formats.md", ("\n".join(lines) + "\n").encode())
    data = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "int8_arithmetic": arithmetic.to_dict(),
        "command": cmd,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "gates": gates,
        "results": [asdict(r) | {"median_step": r.median_step} for r in results],
    }
    atomic_write_json(opts.reports / "int8_formats.json", json.loads(json.dumps(data, default=str)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m f5build.int8_formats", description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", type=Path, required=True, help="an artifacts folder after calibrate")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma list of {', '.join(FORMATS)}")
    p.add_argument("--frames", type=int, default=600, help="frames of the timed step (default 600)")
    p.add_argument("--calls", type=int, default=3, help="timed calls per round (default 3)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the runtime's policy)")
    p.add_argument("--reports", type=Path, default=ROOT / "reports")
    args = p.parse_args(argv)
    try:
        opts = FormatsOptions(
            artifacts=args.artifacts,
            formats=csv_list(args.formats),
            frames=args.frames,
            calls=args.calls,
            rounds=args.rounds,
            threads=args.threads,
            reports=args.reports,
        )
        run(opts, log=lambda s: print(s, flush=True))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {opts.reports / 'int8_formats.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
