"""Benchmark: f5-tts' own PyTorch inference vs f5rt (ONNX Runtime) on the same weights.

Each side runs in its own process (so peak RSS is its own), with the same thread count, NFE, voice,
texts and durations (fixed, so both generate exactly the same number of frames: about 2, 5 and 12 s
of audio). Reports latency, RTF, load time and peak RSS to reports/bench.{md,json,png}.

    nox -s bench                                  # f5tts-v1-base, NFE 16, 2 threads
    nox -s bench -- --model tiny --bench-nfe 32   # quick look on the tiny model
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from f5build.cli import ROOT, artifacts_dir
from f5build.common import log, peak_rss_mb, tool_versions
from f5rt._fs import atomic_path, atomic_write_bytes, atomic_write_json

REF_TEXT = "This is the reference voice, speaking clearly."
REF_SECONDS = 3.0
TEXTS = (  # (generated seconds, text): durations are fixed so both sides do identical work
    (2.0, "Thanks for the follow!"),
    (5.0, "欢迎来到直播间，今天我们来聊聊新游戏。"),
    (12.0, "Okay chat, here is the plan for tonight: first we finish the boss fight, then we read your messages."),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench-nfe", type=int, default=16, help="ODE steps (default 16)")
    p.add_argument("--bench-threads", type=int, default=2, help="CPU threads for both sides (default 2)")
    p.add_argument("--bench-repeat", type=int, default=1, help="timed runs per text (default 1)")
    p.add_argument("--bench-reports", type=Path, default=ROOT / "reports", help="where bench.md/json/png go")


def reference_audio() -> Any:
    """A 3 s, 24 kHz speech-like reference (harmonic bursts with pauses), the same on both sides."""
    import numpy as np

    sr = 24000
    t = np.arange(int(REF_SECONDS * sr)) / sr
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.7 * t)) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (np.sin(2 * np.pi * 1.3 * t) > -0.3)
    return (x / np.sqrt(np.mean(x**2)) * 0.08).astype(np.float32)


def _worker_torch(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    from f5_tts.infer.utils_infer import infer_batch_process

    from f5build.load import f5_reference_sampler, load_model

    t0 = time.perf_counter()
    bundle = load_model(spec["model"], seed=spec["seed"])
    model = f5_reference_sampler(bundle, Path(spec["artifacts"]) / "vocab.txt")
    load_s = time.perf_counter() - t0
    wave = torch.from_numpy(reference_audio())[None]

    def synth(text: str, gen_s: float, nfe: int) -> np.ndarray:
        out, _, _ = next(
            infer_batch_process(
                (wave, 24000),
                REF_TEXT + " ",
                [text],
                model,
                bundle.vocos,
                nfe_step=nfe,
                cfg_strength=2.0,
                sway_sampling_coef=-1.0,
                fix_duration=REF_SECONDS + gen_s,
                device="cpu",
                progress=None,
            )
        )
        return np.asarray(out)

    return _timed(synth, load_s, spec)


def _worker_f5rt(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from f5rt.synthesizer import SynthesisOptions, Synthesizer
    from f5rt.voices import Voice

    t0 = time.perf_counter()
    synth_ = Synthesizer(spec["artifacts"], backend="onnxruntime", threads=spec["threads"])
    load_s = time.perf_counter() - t0
    ref = reference_audio()
    voice = Voice("bench", REF_TEXT + " ", ref, float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))), "")

    def synth(text: str, gen_s: float, nfe: int) -> np.ndarray:
        opts = SynthesisOptions(nfe=nfe, seed=0, fix_duration=REF_SECONDS + gen_s)
        return synth_.synthesize(text, voice, opts).audio

    out = _timed(synth, load_s, spec)
    out["imports_torch"] = "torch" in sys.modules
    return out


def _timed(synth: Any, load_s: float, spec: dict[str, Any]) -> dict[str, Any]:
    synth(TEXTS[0][1], 0.5, 2)  # warm-up: first-call allocations are not part of the steady state
    rows = []
    for gen_s, text in TEXTS:
        for _ in range(spec["repeat"]):
            t0 = time.perf_counter()
            audio = synth(text, gen_s, spec["nfe"])
            latency = time.perf_counter() - t0
            seconds = len(audio) / 24000
            rows.append(
                {
                    "text": text,
                    "target_s": gen_s,
                    "audio_s": round(seconds, 3),
                    "latency_s": round(latency, 3),
                    "rtf": round(latency / seconds, 4),
                }
            )
    return {"load_s": round(load_s, 2), "peak_rss_mb": round(peak_rss_mb()), "runs": rows}


def _spawn(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    log(f"running {side} …")
    proc = subprocess.run(
        [sys.executable, "-m", "f5build.bench", "--worker", side, json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": str(spec["threads"])},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker '{side}' failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for k, side in enumerate(("f5-tts (PyTorch)", "f5rt (ONNX Runtime)")):
        runs = result["sides"][side]["runs"]
        xs = [i + (k - 0.5) * width for i in range(len(runs))]
        ax.bar(xs, [r["rtf"] for r in runs], width, label=side)
    ax.set_xticks(range(len(result["sides"]["f5rt (ONNX Runtime)"]["runs"])))
    ax.set_xticklabels([f"{r['audio_s']:.0f} s" for r in result["sides"]["f5rt (ONNX Runtime)"]["runs"]])
    ax.set_ylabel("real-time factor (lower is faster)")
    ax.set_title(f"{result['model']}, NFE {result['nfe']}, {result['threads']} threads")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _markdown(r: dict[str, Any]) -> str:
    torch_side, rt_side = r["sides"]["f5-tts (PyTorch)"], r["sides"]["f5rt (ONNX Runtime)"]
    lines = [
        f"# Benchmark: f5-tts PyTorch vs f5rt ({r['model']})",
        "",
        f"NFE {r['nfe']}, {r['threads']} CPU threads, same seeded weights, voice and fixed durations; "
        f"{r['repeat']} timed run(s) per text after a warm-up. `nox -s bench` ({r['date']}).",
        "",
        "| audio | f5-tts latency | f5rt latency | f5-tts RTF | f5rt RTF | speed-up |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for a, b in zip(torch_side["runs"], rt_side["runs"], strict=True):
        lines.append(
            f"| {b['audio_s']:.2f} s | {a['latency_s']:.2f} s | {b['latency_s']:.2f} s | {a['rtf']:.3f} | {b['rtf']:.3f} | {a['latency_s'] / b['latency_s']:.2f}x |"
        )
    lines += [
        "",
        "| | f5-tts (PyTorch) | f5rt (ONNX Runtime) |",
        "|---|---:|---:|",
        f"| load | {torch_side['load_s']:.1f} s | {rt_side['load_s']:.1f} s |",
        f"| peak RSS | {torch_side['peak_rss_mb']} MB | {rt_side['peak_rss_mb']} MB |",
        f"| total latency | {r['torch_total_s']:.1f} s | {r['f5rt_total_s']:.1f} s |",
        "",
        f"**Speed ratio (total latency): {r['speedup']:.2f}x** (goal >= 1.3x); memory ratio f5rt/f5-tts: "
        f"{r['memory_ratio']:.2f} (goal <= 1.0). f5rt imported torch: {rt_side.get('imports_torch')}.",
        "",
        "![RTF per text](bench.png)",
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    root = artifacts_dir(args)
    if not (root / "manifest.json").is_file():
        from f5build import export

        args.opset, args.force = getattr(args, "opset", 17), False
        if export.run(args) != 0:
            return 1
    spec = {
        "model": args.model,
        "seed": args.seed,
        "artifacts": str(root),
        "nfe": args.bench_nfe,
        "threads": args.bench_threads,
        "repeat": args.bench_repeat,
    }
    sides = {"f5-tts (PyTorch)": _spawn("torch", spec), "f5rt (ONNX Runtime)": _spawn("f5rt", spec)}
    t_torch = sum(x["latency_s"] for x in sides["f5-tts (PyTorch)"]["runs"])
    t_rt = sum(x["latency_s"] for x in sides["f5rt (ONNX Runtime)"]["runs"])
    result = {
        "model": root.name,
        "nfe": args.bench_nfe,
        "threads": args.bench_threads,
        "repeat": args.bench_repeat,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "sides": sides,
        "torch_total_s": t_torch,
        "f5rt_total_s": t_rt,
        "speedup": t_torch / t_rt,
        "memory_ratio": sides["f5rt (ONNX Runtime)"]["peak_rss_mb"] / sides["f5-tts (PyTorch)"]["peak_rss_mb"],
        "tools": tool_versions(),
    }
    out = Path(args.bench_reports)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "bench.json", result)
    _plot(result, out / "bench.png")
    atomic_write_bytes(out / "bench.md", _markdown(result).encode("utf-8"))
    log(f"speed-up {result['speedup']:.2f}x, memory ratio {result['memory_ratio']:.2f}; wrote {out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        fn = {"torch": _worker_torch, "f5rt": _worker_f5rt}[sys.argv[2]]
        print(json.dumps(fn(json.loads(sys.argv[3]))))
    else:
        raise SystemExit("usage: python -m f5build.bench --worker torch|f5rt SPEC_JSON (use `python -m f5build bench`)")
