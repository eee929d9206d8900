"""Benchmark: f5-tts' own PyTorch inference vs every f5rt precision on ONNX Runtime, same weights.

Each (side, repeat) runs in a fresh process (f5build.bench_workers), with the same thread count,
NFE, voice, texts and fixed durations, so every side generates exactly the same frames. Runs are
interleaved (PyTorch, f5rt fp32, f5rt cpu-int8, PyTorch, ...) so a noisy neighbour slows every
side alike rather than one; the report gives medians over the repeats, per-text min / median / max
speed ratios, each side's peak RSS (VmHWM of its own process) beside the bare interpreter's, the
CPU (model, ISA flags that decide INT8 speed) and the load average around the run. Artifacts that
are missing are exported first in a separate process, never in a measuring one.

    nox -s bench                                   # f5tts-v1-base, NFE 16, 2 threads, 3 repeats
    nox -s bench -- --baseline reports/bench.json  # fail when a ratio drops > 15 % below it
    nox -s bench -- --model tiny --bench-repeat 1  # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from f5build.bench_workers import TEXTS
from f5build.cli import ROOT, ModelSource, artifacts_dir, csv_list
from f5build.common import log, tool_versions
from f5rt._fs import atomic_path, atomic_write_bytes, atomic_write_json

TORCH = "f5-tts (PyTorch)"
ORT_PRECISIONS = ("fp32", "cpu-fp32", "cpu-int8")  # what ONNX Runtime can run on a CPU
BASELINE_TOLERANCE = 0.15


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench-nfe", type=int, default=16, help="ODE steps (default 16)")
    p.add_argument("--bench-threads", type=int, default=2, help="CPU threads for every side (default 2)")
    p.add_argument("--bench-repeat", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    p.add_argument(
        "--bench-precisions",
        default="",
        help=f"comma list of f5rt precisions of {ORT_PRECISIONS} (default: cpu-fp32 and cpu-int8 where built)",
    )
    p.add_argument("--bench-reports", type=Path, default=ROOT / "reports", help="where bench.md/json/png go")
    p.add_argument(
        "--baseline",
        type=Path,
        help=f"earlier bench.json: fail when any speed ratio is more than {BASELINE_TOLERANCE:.0%} below it",
    )


@dataclass(frozen=True)
class BenchOptions:
    """What one bench run measures (built once from the command line by `from_args`)."""

    artifacts: Path
    source: ModelSource
    nfe: int = 16
    threads: int = 2
    repeat: int = 3
    precisions: tuple[str, ...] = ()  # empty: default_precisions(what is built)
    reports: Path = ROOT / "reports"
    baseline: Path | None = None

    def __post_init__(self) -> None:
        if self.repeat < 1:
            raise ValueError(f"--bench-repeat must be >= 1, got {self.repeat}")
        if self.nfe < 1 or self.threads < 1:
            raise ValueError(f"--bench-nfe and --bench-threads must be >= 1, got {self.nfe} and {self.threads}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchOptions:
        return cls(
            artifacts=artifacts_dir(args),
            source=ModelSource.from_args(args),
            nfe=int(args.bench_nfe),
            threads=int(args.bench_threads),
            repeat=int(args.bench_repeat),
            precisions=csv_list(args.bench_precisions),
            reports=Path(args.bench_reports),
            baseline=Path(args.baseline) if args.baseline else None,
        )


Options = BenchOptions


@dataclass
class Side:
    """One benchmarked side: its repeats' runs and readings, and their medians."""

    name: str
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def latency(self, text: int) -> float:
        return statistics.median(r["runs"][text]["latency_s"] for r in self.rounds)

    @property
    def total_s(self) -> float:
        return sum(self.latency(i) for i in range(len(TEXTS)))

    @property
    def peak_rss_mb(self) -> float:
        return max(r["peak_rss_mb"] for r in self.rounds)

    @property
    def load_s(self) -> float:
        return statistics.median(r["load_s"] for r in self.rounds)

    def audio_s(self, text: int) -> float:
        return float(self.rounds[0]["runs"][text]["audio_s"])


@dataclass(frozen=True)
class Ratio:
    """PyTorch's latency over a side's (speed-up; > 1 is faster), total and per text."""

    total: float
    per_text: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.per_text)

    @property
    def median(self) -> float:
        return statistics.median(self.per_text)

    @property
    def max(self) -> float:
        return max(self.per_text)


def speed_ratio(torch: Side, side: Side) -> Ratio:
    per = tuple(torch.latency(i) / side.latency(i) for i in range(len(TEXTS)))
    return Ratio(torch.total_s / side.total_s, per)


def default_precisions(have: list[str]) -> list[str]:
    """The CPU deployments built: cpu-fp32 and cpu-int8; the plain FP32 graphs only without cpu-fp32.

    The plain FP32 step is the TensorRT engines' source graph; on a CPU, FP32 is served by cpu-fp32
    (the same arithmetic with attention fused), so benchmarking both spends a round's time twice on
    FP32. `--bench-precisions fp32,cpu-fp32,cpu-int8` adds it back.
    """
    cpu = [p for p in ("cpu-fp32", "cpu-int8") if p in have]
    return cpu if "cpu-fp32" in cpu else ["fp32", *cpu]


def cpu_info() -> dict[str, Any]:
    """CPU model, logical CPUs usable here, and the ISA flags that decide ONNX Runtime's kernels."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return {
        "model": model,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "isa": [f for f in wanted if f in flags],
    }


def spawn(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measuring worker in a fresh interpreter; its last stdout line is the JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.get("threads", 1)), "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "f5build.bench_workers", side, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker '{side}' failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def check_baseline(ratios: dict[str, Ratio], baseline: dict[str, Any]) -> list[str]:
    """Regressions against an earlier bench.json: every ratio must stay within the tolerance of it."""
    bad = []
    for name, ratio in ratios.items():
        old = (baseline.get("ratios") or {}).get(name)
        if not old:
            continue
        pairs = [("total", ratio.total, old["total"])]
        pairs += [(f"text {i}", r, o) for i, (r, o) in enumerate(zip(ratio.per_text, old["per_text"], strict=False))]
        for what, now, before in pairs:
            if now < before * (1 - BASELINE_TOLERANCE):
                bad.append(
                    f"{name} {what}: {now:.2f}x, baseline {before:.2f}x (more than {BASELINE_TOLERANCE:.0%} below)"
                )
    return bad


def _plot(sides: dict[str, Side], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(sides)
    for k, side in enumerate(sides.values()):
        xs = [i + (k - (len(sides) - 1) / 2) * width for i in range(len(TEXTS))]
        rtf = [side.latency(i) / side.audio_s(i) for i in range(len(TEXTS))]
        lo = [rtf[i] - min(r["runs"][i]["latency_s"] for r in side.rounds) / side.audio_s(i) for i in range(len(TEXTS))]
        hi = [max(r["runs"][i]["latency_s"] for r in side.rounds) / side.audio_s(i) - rtf[i] for i in range(len(TEXTS))]
        ax.bar(xs, rtf, width, yerr=[lo, hi], capsize=3, label=side.name)
    first = next(iter(sides.values()))
    ax.set_xticks(range(len(TEXTS)), [f"{first.audio_s(i):.0f} s" for i in range(len(TEXTS))])
    ax.set_ylabel("real-time factor (lower is faster)")
    ax.set_title(title + " (median, bars: min-max over repeats)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def markdown(r: dict[str, Any], sides: dict[str, Side], ratios: dict[str, Ratio]) -> str:
    torch = sides[TORCH]
    cpu = r["cpu"]
    L = [
        f"# Benchmark: f5-tts PyTorch vs f5rt ({r['model']})",
        "",
        f"NFE {r['nfe']}, {r['threads']} CPU threads, same seeded weights, voice and fixed durations; "
        f"{r['repeat']} interleaved rounds, each side in a fresh process per round, medians. `nox -s bench` ({r['date']}).",
        f"CPU: {cpu['model']} ({cpu['cpus']} usable), ISA {', '.join(cpu['isa']) or 'none detected'}. "
        f"Load average before / after: {r['loadavg'][0]} / {r['loadavg'][1]}.",
        "",
        "| audio | " + " | ".join(f"{n} latency" for n in sides) + " |",
        "|---:|" + "---:|" * len(sides),
    ]
    for i in range(len(TEXTS)):
        L.append(f"| {torch.audio_s(i):.2f} s | " + " | ".join(f"{s.latency(i):.2f} s" for s in sides.values()) + " |")
    L += [
        "",
        "| side | total latency | speed-up (total) | per text min / median / max | RTF (total) | peak RSS | vs PyTorch | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    audio = sum(torch.audio_s(i) for i in range(len(TEXTS)))
    for name, s in sides.items():
        ra = ratios.get(name)
        sp = f"**{ra.total:.2f}x**" if ra else "1.00x"
        per = f"{ra.min:.2f} / {ra.median:.2f} / {ra.max:.2f}" if ra else "–"
        L.append(
            f"| {name} | {s.total_s:.1f} s | {sp} | {per} | {s.total_s / audio:.3f} | {s.peak_rss_mb:.0f} MB | "
            f"{s.peak_rss_mb / torch.peak_rss_mb:.2f} | {s.load_s:.1f} s |"
        )
    L += [
        "",
        f"Peak RSS is each worker's VmHWM; a bare interpreter reads {r['idle_rss_mb']:.0f} MB. "
        f"f5rt imported torch: {any(rd.get('imports_torch') for n, s in sides.items() if n != TORCH for rd in s.rounds)}.",
        "",
        "![RTF per text](bench.png)",
        "",
    ]
    return "\n".join(L)


def _export_if_missing(opts: BenchOptions) -> None:
    """Export in a child process: the bench's own process never holds a model (or its peak)."""
    if (opts.artifacts / "manifest.json").is_file():
        return
    model = opts.source.model
    log(f"{opts.artifacts}: no artifacts; exporting {model} first (separate process)")
    cmd = [sys.executable, "-m", "f5build", "export", "--model", model, "--seed", str(opts.source.seed)]
    cmd += ["--artifacts-root", str(opts.artifacts.parent), "--name", opts.artifacts.name]
    if subprocess.run(cmd, check=False).returncode != 0:
        raise RuntimeError(f"export of {model} failed; run `nox -s export -- --model {model}`")


def run(opts: BenchOptions) -> int:
    root = opts.artifacts
    _export_if_missing(opts)
    from f5rt.manifest import load_manifest

    have = load_manifest(root).precisions("step")
    wanted = list(opts.precisions) or default_precisions(have)
    missing = [p for p in wanted if p not in have]
    if missing:
        raise ValueError(f"--bench-precisions {missing}: not built in {root} (have {have}); run `nox -s quantize`")
    spec = {"model": opts.source.model, "seed": opts.source.seed, "artifacts": str(root), "nfe": opts.nfe}
    spec["threads"] = opts.threads
    sides = {TORCH: Side(TORCH), **{f"f5rt {p}": Side(f"f5rt {p}") for p in wanted}}
    load_before = os.getloadavg()[0]
    idle = spawn("idle", spec)["peak_rss_mb"]
    for k in range(opts.repeat):
        for name, side in sides.items():
            log(f"round {k + 1}/{opts.repeat}: {name} …")
            if name == TORCH:
                side.rounds.append(spawn("torch", spec))
            else:
                side.rounds.append(spawn("f5rt", {**spec, "precision": name.removeprefix("f5rt ")}))
            last = side.rounds[-1]
            log(f"  {last['runs'][-1]['latency_s']:.1f} s on the longest text, peak {last['peak_rss_mb']:.0f} MB")
    torch = sides[TORCH]
    ratios = {n: speed_ratio(torch, s) for n, s in sides.items() if n != TORCH}
    result = {
        "model": root.name,
        "nfe": opts.nfe,
        "threads": opts.threads,
        "repeat": opts.repeat,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_info(),
        "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "idle_rss_mb": idle,
        "texts": [{"target_s": g, "text": t} for g, t in TEXTS],
        "sides": {
            n: {
                **asdict(s),
                "median_latency_s": [s.latency(i) for i in range(len(TEXTS))],
                "total_s": s.total_s,
                "peak_rss_mb": s.peak_rss_mb,
                "load_s": s.load_s,
            }
            for n, s in sides.items()
        },  # fmt: skip
        "ratios": {
            n: {"total": r.total, "per_text": list(r.per_text), "min": r.min, "median": r.median, "max": r.max}
            for n, r in ratios.items()
        },  # fmt: skip
        "memory_ratio": {n: s.peak_rss_mb / torch.peak_rss_mb for n, s in sides.items() if n != TORCH},
        "tools": tool_versions(("torch", "onnxruntime", "f5-tts", "numpy")),
    }
    out = opts.reports
    out.mkdir(parents=True, exist_ok=True)
    regressions = check_baseline(ratios, json.loads(opts.baseline.read_text())) if opts.baseline else []
    result["baseline"] = {"file": str(opts.baseline) if opts.baseline else None, "regressions": regressions}
    atomic_write_json(out / "bench.json", result)
    _plot(sides, f"{result['model']}, NFE {opts.nfe}, {opts.threads} threads", out / "bench.png")
    atomic_write_bytes(out / "bench.md", markdown(result, sides, ratios).encode("utf-8"))
    for n, r in ratios.items():
        log(
            f"{n}: {r.total:.2f}x PyTorch (per text {r.min:.2f}-{r.max:.2f}x), peak RSS {result['memory_ratio'][n]:.2f}x"
        )
    log(f"wrote {out / 'bench.md'}")
    for line in regressions:
        log(f"bench: regression: {line}")
    return 1 if regressions else 0
