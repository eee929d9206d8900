"""`cd tests && python -m gpucheck [--out ../reports/gpucheck.json]`: see the package docstring."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from f5rt.backends.base import HostText, SampleJob
from f5rt.backends.trt import cuda
from f5rt.backends.trt.arena import ALIGN, plan_step_arena
from f5rt.backends.trt.runner import BucketRunner
from f5rt.buckets import Bucket
from gpucheck.kernel import CfgEulerKernel, cfg_euler_reference

ROOT = Path(__file__).resolve().parents[2]
MEL, TEXT = 100, 8


def make_job(bucket: Bucket, nfe: int, seed: int) -> SampleJob:
    rng = np.random.default_rng(seed)
    b, n = bucket.batch, bucket.frames
    mask = np.ones((b, n), bool)
    mask[-1, n - n // 5 :] = False  # the last row is a shorter request padded to the bucket
    ts = np.sort(rng.uniform(0, 1, nfe + 1)).astype(np.float32)
    zeros = np.zeros((b, n, TEXT), np.float32)
    return SampleJob(
        bucket=bucket,
        x0=rng.standard_normal((b, n, MEL), dtype=np.float32),
        cond=rng.standard_normal((b, n, MEL), dtype=np.float32),
        text=HostText(zeros, zeros.copy()),
        mask=mask,
        t=ts[:-1],
        dt=np.diff(ts),
        cfg=np.linspace(1.5, 2.5, b, dtype=np.float32),
    )


def bench(bucket: Bucket, nfes: Sequence[int], repeat: int) -> list[dict[str, Any]]:
    """Per NFE and mode: median loop and request times, max |runner - numpy|, alignment of every slot."""
    rows: list[dict[str, Any]] = []
    with cuda.Stream() as stream, CfgEulerKernel() as kernel, cuda.StageTimer() as timer:

        def enqueue(b: dict[str, int], s: cuda.Stream) -> None:
            kernel.launch(
                s, x=b["x"], x_next=b["x_next"], cond=b["cond"], mask=b["mask"], t=b["t"], dt=b["dt"],
                cfg=b["cfg"], batch=bucket.batch, frames=bucket.frames, channels=MEL,
            )  # fmt: skip

        plan = plan_step_arena(bucket, MEL, TEXT, max(nfes))
        for use_graph in (False, True):
            with BucketRunner(bucket, plan, stream, enqueue, timer=timer, cuda_graphs=use_graph) as runner:
                for nfe in nfes:
                    job = make_job(bucket, nfe, seed=nfe)
                    runner.prepare(nfe)
                    got = runner.sample(job)  # also the warm-up
                    want = cfg_euler_reference(job.x0, job.cond, job.mask, job.t, job.dt, job.cfg)
                    addresses = [a for b in runner.step_bindings(nfe) for a in b.values()]
                    loop_ms, wall_ms = [], []
                    for _ in range(repeat):
                        t0 = time.perf_counter()
                        runner.sample(job)
                        wall_ms.append((time.perf_counter() - t0) * 1e3)
                        loop_ms.append(timer.results()["steps"])
                    rows.append(
                        {
                            "mode": "graph" if use_graph else "eager",
                            "captured": nfe in runner.captured,
                            "nfe": nfe,
                            "bucket": bucket.name,
                            "max_abs_vs_numpy": float(np.max(np.abs(got - want))),
                            "addresses_aligned": all(a % ALIGN == 0 for a in addresses),
                            "loop_ms": float(np.median(loop_ms)),
                            "per_step_us": float(np.median(loop_ms)) * 1e3 / nfe,
                            "request_ms": float(np.median(wall_ms)),
                        }
                    )
    return rows


def run_gpu_tests() -> dict[str, Any]:
    """The CUDA wrapper's GPU tests (tests/test_cuda_gpu.py), as pytest reports them."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_cuda_gpu.py", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1), "tail": tail}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpucheck", description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "gpucheck.json")
    p.add_argument("--frames", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--nfe", type=int, nargs="+", default=[7, 16, 32])
    p.add_argument("--repeat", type=int, default=50)
    args = p.parse_args(argv)
    try:
        cuda.require_gpu(0)
        cuda.init_device(0)
    except Exception as e:
        print(f"gpucheck: {e}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"device": asdict(cuda.device_info(0)), "cuda_python": cuda.bindings_version()}
    report["tests"] = run_gpu_tests()
    report["bench"] = bench(Bucket(args.frames, args.batch), args.nfe, args.repeat)
    ok = report["tests"]["returncode"] == 0 and all(
        r["addresses_aligned"] and r["max_abs_vs_numpy"] <= 1e-5 for r in report["bench"]
    )
    report["ok"] = ok
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
