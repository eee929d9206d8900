"""The TensorRT backend on the emulated TensorRT + CUDA runtime, bucket by bucket, against ONNX Runtime.

For every bucket of an artifacts folder's table, every NFE asked and both NFE-loop modes (one captured
CUDA graph per NFE, and eager per-step enqueues), the real `TensorRTBackend` (engines built by the real
compile stage with the emulated builder) encodes text, samples and vocodes one padded batch; the ONNX
Runtime backend does the same on identical inputs padded to the same bucket. Rows hold the max abs
difference of the audio (and of the sampled mel) and whether the emulated contract held throughout.

    cd tests && python -m emulation_report --out ../reports/trt_emulation       # what `nox -s emulate` runs

Without --artifacts it exports the tiny model with config/buckets.yaml into a temporary folder (the
emulated engines never land in artifacts/, where a real device would meet them).

The emulator memoizes engine runs on identical input bytes (see emulation), so the eager pass over a
job costs nothing after the graph pass fed the very same bytes; a wrong address or stale buffer
changes the bytes and is computed, and compared, afresh.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from f5rt.backends.base import Backend, SampleJob
from f5rt.backends.onnxruntime import OnnxRuntimeBackend
from f5rt.buckets import Bucket
from f5rt.manifest import load_manifest
from f5rt.schedules import steps

ROOT = Path(__file__).resolve().parents[1]
MODES = ("graph", "eager")
DEPLOYMENT = "fp32"  # the exported graphs; the reference runs the very same ONNX files


@dataclass(frozen=True)
class SweepRow:
    """One bucket x NFE x mode: how far the TensorRT path is from ONNX Runtime, and whether it was legal."""

    bucket: str
    nfe: int
    mode: str
    audio_max_abs: float
    mel_max_abs: float
    samples: int
    captured: bool
    violations: int
    seconds: float


def bucket_batch(bucket: Bucket, prev_frames: int, vocab: int, mel_dim: int, seed: int) -> dict[str, np.ndarray]:
    """A padded batch that lands in `bucket`: row 0 fills it, later rows are shorter but still longer
    than the previous bucket's frames (so no smaller bucket fits); reference = first third of each row."""
    rng = np.random.default_rng(seed)
    b, n = bucket.batch, bucket.frames
    lens = [max(prev_frames + 1, n - r * max(1, (n - prev_frames) // (b + 1))) for r in range(b)]
    ids = np.full((b, n), -1, np.int32)
    mask = np.zeros((b, n), bool)
    cond = np.zeros((b, n, mel_dim), np.float32)
    refs = []
    for r, length in enumerate(lens):
        mask[r, :length] = True
        ntext = max(1, length // 3)
        ids[r, :ntext] = rng.integers(0, vocab, ntext)
        ref = max(1, length // 3)
        cond[r, :ref] = rng.standard_normal((ref, mel_dim), dtype=np.float32) * 2 - 5
        refs.append(ref)
    return {
        "ids": ids,
        "mask": mask,
        "cond": cond,
        "x0": rng.standard_normal((b, n, mel_dim), dtype=np.float32),
        "cfg": np.full((b,), 2.0, np.float32),
        "lens": np.array(lens),
        "refs": np.array(refs),
    }


def synthesize(
    backend: Backend, bucket: Bucket, batch: dict[str, np.ndarray], nfe: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """encode_text -> sample -> vocode each row's generated frames, as the synthesizer does."""
    t, dt = steps(nfe)
    text = backend.encode_text(batch["ids"], batch["mask"])
    x = backend.sample(SampleJob(bucket, batch["x0"], batch["cond"], text, batch["mask"], t, dt, batch["cfg"]))
    audio = []
    for r in range(bucket.batch):
        gen = x[r, batch["refs"][r] : batch["lens"][r]].T[None]
        audio.append(backend.vocode(np.ascontiguousarray(gen, dtype=np.float32))[0])
    return x, audio


def sweep(artifacts: Path, nfes: Sequence[int] = (7, 16, 32), threads: int = 2) -> list[SweepRow]:
    """Every bucket x NFE x mode of `artifacts` (engines built for the fp32 deployment), under emulation."""
    import emulation
    from f5rt.backends.trt.backend import TensorRTBackend

    manifest = load_manifest(artifacts)
    buckets = manifest.buckets
    vocab, mel_dim = int(manifest.model["vocab_size"]), int(manifest.model.get("mel_dim", 100))
    reference = OnnxRuntimeBackend(manifest, DEPLOYMENT, threads=threads, pad_to_buckets=True)
    device = emulation.current_device()
    rows: list[SweepRow] = []
    backends = {
        mode: TensorRTBackend(
            manifest,
            DEPLOYMENT,
            nfe_warmup=nfes if mode == "graph" else (),
            nfe_max=max(nfes),
            cuda_graphs=mode == "graph",
        )
        for mode in MODES
    }
    try:
        prev = 0
        for frames in buckets.frames:
            for b in buckets.batch:
                bucket = Bucket(frames, b)
                for nfe in nfes:
                    batch = bucket_batch(bucket, prev, vocab, mel_dim, seed=frames * 10 + b + nfe)
                    want_x, want_audio = synthesize(reference, bucket, batch, nfe)
                    for mode, backend in backends.items():
                        before = len(device.violations)
                        t0 = time.perf_counter()
                        x, audio = synthesize(backend, bucket, batch, nfe)
                        rows.append(
                            SweepRow(
                                bucket=bucket.name,
                                nfe=nfe,
                                mode=mode,
                                audio_max_abs=max(
                                    float(np.max(np.abs(a - w), initial=0.0))
                                    for a, w in zip(audio, want_audio, strict=True)
                                ),
                                mel_max_abs=float(np.max(np.abs(x - want_x))),
                                samples=int(sum(len(a) for a in audio)),
                                captured=nfe in backend.captured_graphs()[bucket.name],
                                violations=len(device.violations) - before,
                                seconds=round(time.perf_counter() - t0, 3),
                            )
                        )
                        r = rows[-1]
                        print(
                            f"  {r.bucket} nfe {r.nfe:>2} {r.mode:5}: audio max abs {r.audio_max_abs:.1e}, {r.seconds:.1f} s",
                            flush=True,
                        )
                        if any(len(a) != len(w) for a, w in zip(audio, want_audio, strict=True)):
                            raise AssertionError(
                                f"{bucket.name} nfe {nfe} {mode}: audio lengths differ from ONNX Runtime"
                            )
            prev = frames
    finally:
        for backend in backends.values():
            backend.close()
        reference.close()
    return rows


def write_report(rows: Sequence[SweepRow], out: Path, meta: dict[str, object]) -> tuple[Path, Path]:
    """reports/trt_emulation.{json,md}: every row, and a summary a person can read."""
    out.parent.mkdir(parents=True, exist_ok=True)
    worst = max((r.audio_max_abs for r in rows), default=0.0)
    held = all(r.violations == 0 for r in rows)
    data = {**meta, "rows": [asdict(r) for r in rows], "audio_max_abs": worst, "contract_held": held}
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# TensorRT backend on the emulated TensorRT + CUDA runtime vs ONNX Runtime",
        "",
        f"Artifacts `{meta.get('artifacts')}`, deployment `{DEPLOYMENT}`, emulated TensorRT {meta.get('tensorrt')} "
        f"(SM {meta.get('sm')}). Same inputs and seed, same bucket padding; audio = each row's generated frames vocoded.",
        "",
        f"**{len(rows)} runs, worst audio max abs difference {worst:.2e}, contract {'held' if held else 'VIOLATED'}.**",
        "",
        "| bucket | NFE | mode | captured | audio max abs | mel max abs | samples | violations | s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.bucket} | {r.nfe} | {r.mode} | {'yes' if r.captured else 'no'} | {r.audio_max_abs:.2e} | "
            f"{r.mel_max_abs:.2e} | {r.samples} | {r.violations} | {r.seconds:.2f} |"
        )
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emulation_report", description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", type=Path, help="an exported artifacts folder to copy (default: export tiny)")
    p.add_argument("--buckets", type=Path, default=ROOT / "config" / "buckets.yaml", help="bucket table for the export")
    p.add_argument("--out", type=Path, required=True, help="report path without suffix (writes .json and .md)")
    p.add_argument("--nfe", type=int, nargs="+", default=[7, 16, 32])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import emulation
    from f5build.cli import main as build
    from f5build.compile import main as compile_main

    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="f5-emulate-"))
    root = scratch / "tiny"
    if args.artifacts is not None:
        shutil.copytree(args.artifacts, root, ignore=shutil.ignore_patterns("engines"))
    elif build(["export", "--model", "tiny", "--artifacts-root", str(scratch), "--buckets", str(args.buckets)]) != 0:
        return 1
    with emulation.installed() as device:
        compiled = compile_main(["--artifacts-root", str(scratch), "--name", "tiny", "--trt-precision", DEPLOYMENT])
        if compiled != 0:
            print("emulation_report: the compile stage failed under emulation", file=sys.stderr)
            return 1
        rows = sweep(root, args.nfe, args.threads)
        meta = {
            "artifacts": str(args.artifacts or f"tiny exported with {args.buckets.name}"),
            "tensorrt": device.config.tensorrt_version,
            "sm": ".".join(map(str, device.config.sm)),
            "nfe": args.nfe,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        json_path, md_path = write_report(rows, args.out, meta)
    shutil.rmtree(scratch, ignore_errors=True)
    worst = max(r.audio_max_abs for r in rows)
    bad = [r for r in rows if r.violations or r.audio_max_abs > 1e-5]
    print(f"{len(rows)} runs, worst audio max abs {worst:.2e}; wrote {json_path} and {md_path}")
    for r in bad:
        print(
            f"FAILED {r.bucket} nfe {r.nfe} {r.mode}: audio {r.audio_max_abs:.2e}, violations {r.violations}",
            file=sys.stderr,
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
