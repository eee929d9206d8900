"""Benchmark: f5-tts' own PyTorch inference vs every f5rt precision on ONNX Runtime, same weights.

Each (side, repeat) runs in a fresh process (f5build.bench_workers), with the same thread count,
NFE, voice, texts and fixed durations, so every side generates exactly the same frames. Runs are
interleaved (PyTorch, f5rt fp32, f5rt cpu-int8, PyTorch, ...) so a noisy neighbour slows every
side alike rather than one; the report gives medians over the repeats, per-text min / median / max
speed ratios, each side's peak RSS (VmHWM of its own process) beside the bare interpreter's, the
CPU (model, ISA flags that decide INT8 speed, the CPU budget: affinity and cgroup quota) and the
load around the run. Artifacts that are missing are exported first in a separate process, never in
a measuring one.

Conditions. `--bench-threads 1,2` sweeps thread counts (every side gets the same count),
`--bench-spinning on,off` ONNX Runtime's spinning (f5rt only; PyTorch keeps its own OpenMP
behaviour, as a user's would), and `--bench-busy 0,1` runs everything again while N competing
processes each keep a core busy for the whole block, started before and stopped after both sides'
runs (a machine shared with, say, streaming software). Every combination is one condition with its
own table and ratios; the busy processes' CPU share is reported so the load is a number.

    nox -s bench                                   # f5tts-v1-base, NFE 16, the CPU budget's threads, 3 repeats
    nox -s bench -- --bench-busy 0,1               # quiet and with one core taken
    nox -s bench -- --bench-step 600 --bench-threads 1,2 --bench-spinning on,off --bench-busy 0,1
                                                   # thread table: one step at N = 600 -> bench_step.md
    nox -s bench -- --baseline reports/bench.json  # fail when a ratio drops > 15 % below it
    nox -s bench -- --model tiny --bench-repeat 1  # quick look
"""

from __future__ import annotations

import argparse
import itertools
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
from f5build.common import log, tool_versions
from f5build.context import ROOT, ModelSource, artifacts_dir, csv_list
from f5build.isa_view import ISA_VIEWS, NATIVE, IsaView, cpu_flags
from f5rt.backends.onnxruntime import cpu_budget, default_threads
from f5rt.files import atomic_path, atomic_write_bytes, atomic_write_json

TORCH = "f5-tts (PyTorch)"
ORT_PRECISIONS = ("fp32", "cpu-fp32", "cpu-int8")  # what ONNX Runtime can run on a CPU
BASELINE_TOLERANCE = 0.15


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench-nfe", type=int, default=16, help="ODE steps (default 16)")
    p.add_argument(
        "--bench-threads",
        default="",
        help="comma list of CPU thread counts, each a condition for every side (default: f5rt's default, "
        "the CPUs this process may use)",
    )
    p.add_argument(
        "--bench-spinning",
        default="off",
        help="comma list of on/off: ONNX Runtime's spinning thread pool (default off, f5rt's default)",
    )
    p.add_argument(
        "--bench-busy",
        default="0",
        help="comma list of N: competing processes keep N cores busy during the condition (default 0)",
    )
    p.add_argument("--bench-repeat", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    p.add_argument(
        "--bench-step",
        type=int,
        default=0,
        metavar="FRAMES",
        help="time one sampling step (both CFG branches) at FRAMES frames instead of whole texts: the "
        "thread table, written to bench_step.{md,json} (default 0: whole texts)",
    )
    p.add_argument("--bench-step-calls", type=int, default=3, help="timed steps per worker in --bench-step (median)")
    p.add_argument(
        "--bench-precisions",
        default="",
        help=f"comma list of f5rt precisions of {ORT_PRECISIONS} (default: cpu-fp32 and cpu-int8 where built)",
    )
    p.add_argument(
        "--bench-isa",
        default="native",
        choices=ISA_VIEWS,
        help="instruction set the measured processes see: native (default) or avx2 (AVX-512 and VNNI hidden by "
        "CPUID faulting, so both sides run their AVX2 code paths natively: f5build.isa_view)",
    )
    p.add_argument("--bench-reports", type=Path, default=ROOT / "reports", help="where bench.md/json/png go")
    p.add_argument(
        "--baseline",
        type=Path,
        help=f"earlier bench.json: fail when any speed ratio is more than {BASELINE_TOLERANCE:.0%} below it",
    )


def _int_list(flag: str, text: str, minimum: int) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in csv_list(text))
    except ValueError:
        raise ValueError(f"{flag} takes a comma list of integers, got {text!r}") from None
    if any(v < minimum for v in values):
        raise ValueError(f"{flag} values must be >= {minimum}, got {text!r}")
    return values


@dataclass(frozen=True)
class Condition:
    """How the sides run in one block of the bench: thread count, f5rt's spinning, busy cores."""

    threads: int
    spinning: str = "off"  # "on" / "off": ONNX Runtime's intra-op spinning (f5rt sides only)
    busy: int = 0

    @property
    def label(self) -> str:
        return f"{self.threads} threads, spinning {self.spinning}, busy {self.busy}"


@dataclass(frozen=True)
class BenchOptions:
    """What one bench run measures (built once from the command line by `from_args`)."""

    artifacts: Path
    source: ModelSource
    nfe: int = 16
    threads: tuple[int, ...] = ()  # empty: f5rt's default (the CPU budget)
    spinning: tuple[str, ...] = ("off",)
    busy: tuple[int, ...] = (0,)
    repeat: int = 3
    step_frames: int = 0  # > 0: the one-step thread table instead of whole texts
    step_calls: int = 3
    precisions: tuple[str, ...] = ()  # empty: default_precisions(what is built)
    reports: Path = ROOT / "reports"
    baseline: Path | None = None
    isa: str = "native"  # f5build.isa_view.ISA_VIEWS

    def __post_init__(self) -> None:
        if self.isa not in ISA_VIEWS:
            raise ValueError(f"--bench-isa takes one of {', '.join(ISA_VIEWS)}, got {self.isa!r}")
        if self.repeat < 1:
            raise ValueError(f"--bench-repeat must be >= 1, got {self.repeat}")
        if self.nfe < 1 or any(t < 1 for t in self.threads):
            raise ValueError(f"--bench-nfe and --bench-threads must be >= 1, got {self.nfe} and {self.threads}")
        if not self.spinning or any(v not in ("on", "off") for v in self.spinning):
            raise ValueError(f"--bench-spinning takes on and/or off, got {','.join(self.spinning)!r}")
        if not self.busy or any(b < 0 for b in self.busy):
            raise ValueError(f"--bench-busy takes counts >= 0, got {self.busy}")
        if self.step_frames < 0 or self.step_calls < 1:
            raise ValueError(
                f"--bench-step must be >= 0 and --bench-step-calls >= 1, got {self.step_frames}, {self.step_calls}"
            )

    @property
    def conditions(self) -> list[Condition]:
        threads = self.threads or (default_threads(),)
        # one intra-op thread has no pool: nothing spins, so one spinning value stands for both
        return [
            Condition(t, s, b)
            for b, t, s in itertools.product(self.busy, threads, self.spinning)
            if t > 1 or s == self.spinning[0]
        ]

    def command(self) -> str:
        """The `nox -s bench` line that measures this again (every option that differs from the default)."""
        a = ["--model", self.source.model]
        if self.source.seed:
            a += ["--seed", str(self.source.seed)]
        if self.step_frames:
            a += ["--bench-step", str(self.step_frames), "--bench-step-calls", str(self.step_calls)]
        if self.nfe != 16 and not self.step_frames:
            a += ["--bench-nfe", str(self.nfe)]
        if self.threads:
            a += ["--bench-threads", ",".join(map(str, self.threads))]
        if self.spinning != ("off",):
            a += ["--bench-spinning", ",".join(self.spinning)]
        if self.busy != (0,):
            a += ["--bench-busy", ",".join(map(str, self.busy))]
        if self.repeat != 3:
            a += ["--bench-repeat", str(self.repeat)]
        if self.precisions:
            a += ["--bench-precisions", ",".join(self.precisions)]
        if self.isa != "native":
            a += ["--bench-isa", self.isa]
        return "nox -s bench -- " + " ".join(a)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchOptions:
        return cls(
            artifacts=artifacts_dir(args),
            source=ModelSource.from_args(args),
            nfe=int(args.bench_nfe),
            threads=_int_list("--bench-threads", args.bench_threads, 1),
            spinning=tuple(v.lower() for v in csv_list(args.bench_spinning)),
            busy=_int_list("--bench-busy", args.bench_busy, 0),
            repeat=int(args.bench_repeat),
            step_frames=int(args.bench_step),
            step_calls=int(args.bench_step_calls),
            precisions=csv_list(args.bench_precisions),
            reports=Path(args.bench_reports),
            baseline=Path(args.baseline) if args.baseline else None,
            isa=str(args.bench_isa),
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


def cpu_info(view: IsaView = NATIVE) -> dict[str, Any]:
    """CPU model, the CPU budget (affinity mask, cgroup quota) and the ISA flags that decide ONNX
    Runtime's kernels (AVX2 without VNNI: INT8 MatMuls on u8 x s8 pairs summed in 16 bits), as the
    measured processes see them through `view`."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    flags = cpu_flags() - view.hides
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    budget = cpu_budget()
    return {
        "model": model,
        "cpus": budget.cpus,
        "affinity": budget.affinity,
        "cgroup_quota": budget.quota,
        "machine_cpus": os.cpu_count(),
        "isa": [f for f in wanted if f in flags],
        "isa_view": view.describe(),
    }


def cpu_busy_fraction(seconds: float = 1.0) -> float | None:
    """How busy the machine's CPUs were over `seconds` (0 = idle, 1 = every CPU busy), from /proc/stat."""

    def read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v[:8]), idle

    a = read()
    time.sleep(seconds)
    b = read()
    if a is None or b is None or b[0] == a[0]:
        return None
    return round(1.0 - (b[1] - a[1]) / (b[0] - a[0]), 3)


class Busy:
    """`n` competing processes, each keeping one core busy for as long as the block runs.

    Each is a pure-Python loop in its own interpreter (f5build.bench_workers busy), not pinned, at
    the bench's own priority, so the scheduler shares the cores between it and the measured side as
    it would with any neighbour. A busy process exits by itself when the bench dies. `cpu_share`
    reads how much CPU they really got (CPU seconds / wall seconds, summed): the load, as a number.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cpu_share: float | None = None
        self._t0 = 0.0

    def __enter__(self) -> Busy:
        cmd = [sys.executable, "-m", "f5build.bench_workers", "busy", str(os.getpid())]
        try:
            for _ in range(self.n):
                self.procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL))
        except BaseException:
            self._stop()
            raise
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    @staticmethod
    def _cpu_s(pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def _stop(self) -> None:
        wall = time.perf_counter() - self._t0
        used = [self._cpu_s(p.pid) for p in self.procs]
        if self.procs and wall > 0 and all(u is not None for u in used):
            self.cpu_share = round(sum(u for u in used if u is not None) / wall, 2)
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


def spawn(side: str, spec: dict[str, Any], view: IsaView = NATIVE) -> dict[str, Any]:
    """Run one measuring worker in a fresh interpreter, seeing the instruction set `view` shows; its last
    stdout line is the JSON result."""
    env = view.env({**os.environ, "OMP_NUM_THREADS": str(spec.get("threads", 1)), "PYTHONHASHSEED": "0"})
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


def baseline_for(path: Path | None, view: IsaView) -> dict[str, Any] | None:
    """The earlier bench.json at `path`, read before anything is measured: one measured under another
    instruction-set view (`--bench-isa`; files from before the option were native) is refused, since
    its ratios are of other kernels."""
    if path is None:
        return None
    baseline = dict(json.loads(path.read_text()))
    measured = baseline.get("isa_view", NATIVE.name)
    if measured != view.name:
        raise ValueError(
            f"--baseline {path}: measured with --bench-isa {measured}, this run uses "
            f"--bench-isa {view.name}; compare runs of the same view"
        )
    return baseline


def check_baseline(ratios: dict[str, Ratio], baseline: dict[str, Any], condition: Condition | None = None) -> list[str]:
    """Regressions against an earlier bench.json: every ratio must stay within the tolerance of it.

    A bench.json with conditions is matched condition by condition (same threads, spinning, busy);
    one from before conditions existed holds only for its own thread count on a quiet machine.
    """
    old_ratios: dict[str, Any] = {}
    if "conditions" in baseline:
        for c in baseline["conditions"]:
            if condition is None or c.get("label") == condition.label:
                old_ratios = c.get("ratios") or {}
                break
    elif condition is None or (condition.busy == 0 and condition.threads == baseline.get("threads")):
        old_ratios = baseline.get("ratios") or {}
    where = f" [{condition.label}]" if condition else ""
    bad = []
    for name, ratio in ratios.items():
        old = old_ratios.get(name)
        if not old:
            continue
        pairs = [("total", ratio.total, old["total"])]
        pairs += [(f"text {i}", r, o) for i, (r, o) in enumerate(zip(ratio.per_text, old["per_text"], strict=False))]
        for what, now, before in pairs:
            if now < before * (1 - BASELINE_TOLERANCE):
                bad.append(
                    f"{name} {what}{where}: {now:.2f}x, baseline {before:.2f}x (more than {BASELINE_TOLERANCE:.0%} below)"
                )
    return bad


@dataclass
class Block:
    """One condition's sides, ratios and the load it ran under."""

    condition: Condition
    sides: dict[str, Side]
    busy_share: list[float] = field(default_factory=list)  # busy processes' CPU share, per round

    @property
    def ratios(self) -> dict[str, Ratio]:
        torch = self.sides[TORCH]
        return {n: speed_ratio(torch, s) for n, s in self.sides.items() if n != TORCH}

    def to_json(self) -> dict[str, Any]:
        torch = self.sides[TORCH]
        return {
            "label": self.condition.label,
            **asdict(self.condition),
            "busy_cpu_share": self.busy_share,
            "sides": {
                n: {
                    **asdict(s),
                    "median_latency_s": [s.latency(i) for i in range(len(TEXTS))],
                    "total_s": s.total_s,
                    "peak_rss_mb": s.peak_rss_mb,
                    "load_s": s.load_s,
                }
                for n, s in self.sides.items()
            },  # fmt: skip
            "ratios": {
                n: {"total": r.total, "per_text": list(r.per_text), "min": r.min, "median": r.median, "max": r.max}
                for n, r in self.ratios.items()
            },  # fmt: skip
            "memory_ratio": {n: s.peak_rss_mb / torch.peak_rss_mb for n, s in self.sides.items() if n != TORCH},
        }


def _plot(blocks: list[Block], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(blocks), 1, figsize=(8, 3.4 * len(blocks)), squeeze=False)
    for ax, block in zip(axes[:, 0], blocks, strict=True):
        sides = block.sides
        width = 0.8 / len(sides)
        for k, side in enumerate(sides.values()):
            xs = [i + (k - (len(sides) - 1) / 2) * width for i in range(len(TEXTS))]
            rtf = [side.latency(i) / side.audio_s(i) for i in range(len(TEXTS))]
            lo = [
                rtf[i] - min(r["runs"][i]["latency_s"] for r in side.rounds) / side.audio_s(i)
                for i in range(len(TEXTS))
            ]
            hi = [
                max(r["runs"][i]["latency_s"] for r in side.rounds) / side.audio_s(i) - rtf[i]
                for i in range(len(TEXTS))
            ]
            ax.bar(xs, rtf, width, yerr=[lo, hi], capsize=3, label=side.name)
        first = next(iter(sides.values()))
        ax.set_xticks(range(len(TEXTS)), [f"{first.audio_s(i):.0f} s" for i in range(len(TEXTS))])
        ax.set_ylabel("real-time factor (lower is faster)")
        ax.set_title(f"{title}, {block.condition.label} (median, bars: min-max over repeats)", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _where(r: dict[str, Any]) -> list[str]:
    """The lines saying where and under what load a bench ran."""
    cpu = r["cpu"]
    quota = f", cgroup quota {cpu['cgroup_quota']:.2f} CPUs" if cpu.get("cgroup_quota") else ""
    return [
        f"CPU: {cpu['model']}, {cpu['cpus']} usable of {cpu.get('machine_cpus', '?')} (affinity {cpu.get('affinity', '?')}"
        f"{quota}); ISA {', '.join(cpu['isa']) or 'none detected'}.",
        f"Instruction set seen by the measured processes: {cpu.get('isa_view', 'native')}; ONNX Runtime's INT8 "
        f"arithmetic there: {r.get('int8_arithmetic', {}).get('text', 'not probed')}.",
        f"Load: load average before / after {r['loadavg'][0]} / {r['loadavg'][1]}; CPUs busy before the run "
        f"{r.get('busy_before', '?')} (fraction of all CPUs, 1 s sample). `busy N`: N competing processes kept "
        "N cores busy for the whole block (their CPU share, in cores, per round, is given beside it).",
        f"Command: `{r['command']}` ({r['date']}).",
    ]


def markdown(r: dict[str, Any], blocks: list[Block]) -> str:
    L = [
        f"# Benchmark: f5-tts PyTorch vs f5rt ({r['model']})",
        "",
        f"NFE {r['nfe']}, same seeded weights, voice and fixed durations; {r['repeat']} interleaved rounds, "
        "each side in a fresh process per round, medians.",
        *_where(r),
    ]
    for block in blocks:
        sides, ratios = block.sides, block.ratios
        torch = sides[TORCH]
        share = ", ".join(f"{x:.2f}" for x in block.busy_share)
        L += [
            "",
            f"## {block.condition.label}" + (f" (busy processes' CPU share: {share})" if share else ""),
            "",
            "| audio | " + " | ".join(f"{n} latency" for n in sides) + " |",
            "|---:|" + "---:|" * len(sides),
        ]
        for i in range(len(TEXTS)):
            L.append(
                f"| {torch.audio_s(i):.2f} s | " + " | ".join(f"{s.latency(i):.2f} s" for s in sides.values()) + " |"
            )
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
    imports = any(rd.get("imports_torch") for b in blocks for n, s in b.sides.items() if n != TORCH for rd in s.rounds)
    L += [
        "",
        f"Peak RSS is each worker's VmHWM; a bare interpreter reads {r['idle_rss_mb']:.0f} MB. "
        f"f5rt imported torch: {imports}.",
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


def _header(
    opts: BenchOptions, view: IsaView, root: Path, load_before: float, busy_before: float | None
) -> dict[str, Any]:
    return {
        "model": root.name,
        "nfe": opts.nfe,
        "repeat": opts.repeat,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": opts.command(),
        "isa_view": view.name,
        "cpu": cpu_info(view),
        # asked of ONNX Runtime in a worker that sees what the measured ones see: the view is in force
        "int8_arithmetic": spawn("int8-arithmetic", {}, view),
        "busy_before": busy_before,
        "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "tools": tool_versions(("torch", "onnxruntime", "f5-tts", "numpy")),
    }


def run(opts: BenchOptions) -> int:
    root = opts.artifacts
    _export_if_missing(opts)
    from f5rt.manifest import load_manifest

    have = load_manifest(root).precisions("step")
    wanted = list(opts.precisions) or default_precisions(have)
    missing = [p for p in wanted if p not in have]
    if missing:
        raise ValueError(f"--bench-precisions {missing}: not built in {root} (have {have}); run `nox -s quantize`")
    view = IsaView.make(opts.isa, root.parent / ".isa-view")
    baseline = baseline_for(opts.baseline, view)
    if opts.step_frames:
        return run_step_table(opts, view, wanted)
    spec = {"model": opts.source.model, "seed": opts.source.seed, "artifacts": str(root), "nfe": opts.nfe}
    busy_before = cpu_busy_fraction()
    load_before = os.getloadavg()[0]
    idle = spawn("idle", {**spec, "threads": 1}, view)["peak_rss_mb"]
    blocks = [
        Block(c, {TORCH: Side(TORCH), **{f"f5rt {p}": Side(f"f5rt {p}") for p in wanted}}) for c in opts.conditions
    ]
    for k in range(opts.repeat):
        for block in blocks:
            c = block.condition
            with Busy(c.busy) as busy:
                for name, side in block.sides.items():
                    log(f"round {k + 1}/{opts.repeat} [{c.label}]: {name} …")
                    cspec = {**spec, "threads": c.threads, "spinning": c.spinning}
                    if name == TORCH:
                        side.rounds.append(spawn("torch", cspec, view))
                    else:
                        side.rounds.append(spawn("f5rt", {**cspec, "precision": name.removeprefix("f5rt ")}, view))
                    last = side.rounds[-1]
                    log(
                        f"  {last['runs'][-1]['latency_s']:.1f} s on the longest text, peak {last['peak_rss_mb']:.0f} MB"
                    )
            if busy.cpu_share is not None:
                block.busy_share.append(busy.cpu_share)
    result = _header(opts, view, root, load_before, busy_before)
    result["idle_rss_mb"] = idle
    result["texts"] = [{"target_s": g, "text": t} for g, t in TEXTS]
    result["conditions"] = [b.to_json() for b in blocks]
    # the first condition's figures stay at the top level, where earlier bench.json files kept them
    first = result["conditions"][0]
    result.update(threads=first["threads"], ratios=first["ratios"], memory_ratio=first["memory_ratio"])
    out = opts.reports
    out.mkdir(parents=True, exist_ok=True)
    regressions = [line for b in blocks for line in check_baseline(b.ratios, baseline, b.condition)] if baseline else []
    result["baseline"] = {"file": str(opts.baseline) if opts.baseline else None, "regressions": regressions}
    atomic_write_json(out / "bench.json", result)
    _plot(blocks, f"{result['model']}, NFE {opts.nfe}", out / "bench.png")
    atomic_write_bytes(out / "bench.md", markdown(result, blocks).encode("utf-8"))
    for b in blocks:
        for n, r in b.ratios.items():
            log(
                f"[{b.condition.label}] {n}: {r.total:.2f}x PyTorch (per text {r.min:.2f}-{r.max:.2f}x), "
                f"peak RSS {b.to_json()['memory_ratio'][n]:.2f}x"
            )
    log(f"wrote {out / 'bench.md'}")
    for line in regressions:
        log(f"bench: regression: {line}")
    return 1 if regressions else 0


def step_markdown(r: dict[str, Any], rows: list[dict[str, Any]], precisions: list[str]) -> str:
    """The thread table: one step's median seconds per condition and side, and f5rt's speed-up."""
    L = [
        f"# Thread table: one sampling step, f5-tts PyTorch vs f5rt ({r['model']})",
        "",
        f"One step at N = {r['frames']} frames, batch 1 (both CFG branches: PyTorch's DiT runs them as B = 2, "
        f"f5rt's step graph batches them itself); per worker {r['calls']} timed steps after a warm-up, median; "
        f"{r['repeat']} interleaved rounds, each side in a fresh process, median of the workers' medians.",
        *_where(r),
        "",
        "| busy cores | threads | spinning (f5rt) | PyTorch | "
        + " | ".join(f"f5rt {p} | vs PyTorch" for p in precisions)
        + " | busy share |",
        "|---:|---:|---|---:|" + "---:|---:|" * len(precisions) + "---:|",
    ]
    for row in rows:
        cells = [f"{row['busy']}", f"{row['threads']}", row["spinning"], f"{row['torch_s']:.2f} s"]
        for p in precisions:
            cells += [f"{row['f5rt'][p]:.2f} s", f"{row['torch_s'] / row['f5rt'][p]:.2f}x"]
        share = "/".join(f"{x:.2f}" for x in row["busy_share"]) or "–"
        L.append("| " + " | ".join(cells) + f" | {share} |")
    L.append("")
    return "\n".join(L)


def run_step_table(opts: BenchOptions, view: IsaView, precisions: list[str]) -> int:
    """`--bench-step N`: the thread table (every condition x side, one step each) -> bench_step.{md,json}."""
    root = opts.artifacts
    spec = {"model": opts.source.model, "seed": opts.source.seed, "artifacts": str(root)}
    spec |= {"frames": opts.step_frames, "calls": opts.step_calls}
    busy_before = cpu_busy_fraction()
    load_before = os.getloadavg()[0]
    conds = opts.conditions
    torch_keys = sorted({(c.busy, c.threads) for c in conds})  # PyTorch has no spinning switch
    readings: dict[Any, list[dict[str, Any]]] = {}
    shares: dict[tuple[int, int], list[float]] = {}
    for k in range(opts.repeat):
        for busy_n, threads in torch_keys:
            with Busy(busy_n) as busy:
                key = (busy_n, threads)
                log(f"round {k + 1}/{opts.repeat} [busy {busy_n}, {threads} threads]: PyTorch step …")
                readings.setdefault(("torch", *key), []).append(spawn("step-torch", {**spec, "threads": threads}, view))
                log(f"    {readings[('torch', *key)][-1]['step_s']:.2f} s")
                for c in (c for c in conds if (c.busy, c.threads) == key):
                    for p in precisions:
                        log(f"  f5rt {p}, spinning {c.spinning} …")
                        cspec = {**spec, "threads": threads, "spinning": c.spinning, "precision": p}
                        r = spawn("step-f5rt", cspec, view)
                        readings.setdefault((p, c), []).append(r)
                        log(f"    {r['step_s']:.2f} s (steps {r['times_s']})")
            if busy.cpu_share is not None:
                shares.setdefault(key, []).append(busy.cpu_share)

    def med(key: Any) -> float:
        return statistics.median(x["step_s"] for x in readings[key])

    rows = []
    for c in conds:
        row: dict[str, Any] = {**asdict(c), "torch_s": med(("torch", c.busy, c.threads))}
        row["f5rt"] = {p: med((p, c)) for p in precisions}
        row["speedup"] = {p: row["torch_s"] / row["f5rt"][p] for p in precisions}
        row["busy_share"] = shares.get((c.busy, c.threads), [])
        row["readings"] = {p: [x["times_s"] for x in readings[(p, c)]] for p in precisions}
        row["readings"]["torch"] = [x["times_s"] for x in readings[("torch", c.busy, c.threads)]]
        rows.append(row)
        log(
            f"[{c.label}] PyTorch {row['torch_s']:.2f} s; "
            + ", ".join(f"{p} {row['f5rt'][p]:.2f} s ({row['speedup'][p]:.2f}x)" for p in precisions)
        )
    result = _header(opts, view, root, load_before, busy_before)
    result |= {"frames": opts.step_frames, "calls": opts.step_calls, "precisions": precisions, "rows": rows}
    out = opts.reports
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "bench_step.json", result)
    atomic_write_bytes(out / "bench_step.md", step_markdown(result, rows, precisions).encode("utf-8"))
    log(f"wrote {out / 'bench_step.md'}")
    return 0
