"""`python tests/triton_serving/load_report.py`: a bounded loopback load test of the Triton repository.

For each configuration a repository is written (f5rt.triton.repository, over the same artifacts and a
voices folder made here), a real tritonserver serves it on loopback ports, and gRPC clients fire a
fixed number of `f5tts` requests at a fixed concurrency, then a smaller run of `f5tts_stream`
requests for the first-piece latency. Configurations: 1 and 2 instances as the repository writes
them for CPU instances (no dynamic batching, one ONNX Runtime thread each), and 1 instance with
Triton's dynamic batcher (50 ms), the comparison behind that default. The mean batch size is
Triton's own: nv_inference_count / nv_inference_exec_count over the run. Before the servers, the
engine cost of batching itself is measured in process, without a server: 4 requests run alone vs
one `synthesize_batch` of the same 4 (best of a few repeats, so other load on the box counts less).

Writes <out>.json and <out>.md. Every request has a client timeout, so the run is bounded; nothing
is asserted here (timings are reports, not tests), but a run with errors exits 1.

    python tests/triton_serving/load_report.py --out reports/triton_load [--requests 200 --concurrency 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonkit import ROOT, ensure_voices, infer_inputs, metric, request_arrays

from f5rt.files import atomic_write_bytes, atomic_write_json
from f5rt.triton.local import LocalTritonServer
from f5rt.triton.repository import RepositoryOptions, write_repository

# Chat-reader traffic, as in the `f5rt serve` load test (f5build.loadtest): short messages, mixed languages.
TEXTS = (
    "Thanks for the follow!",
    "Hi chat, welcome to the stream.",
    "That was a close one, good game everyone.",
    "Can you play the song from yesterday again?",
    "感谢大家的支持，我们下次再见。",
    "今天的直播就到这里。",
    "Next round starts in two minutes, grab a drink.",
    "Shout out to everyone who joined from the raid, you are all amazing.",
)


@dataclass(frozen=True)
class Config:
    name: str
    instances: int
    queue_delay_us: int


@dataclass
class Run:
    """One configuration's numbers (seconds unless named otherwise)."""

    name: str
    instances: int
    queue_delay_us: int
    threads_per_instance: int
    requests: int
    ok: int
    errors: int
    wall_s: float
    throughput_rps: float
    audio_s_per_s: float
    p50_s: float
    p95_s: float
    mean_batch: float
    stream_requests: int
    stream_ok: int
    stream_errors: int
    first_piece_p50_s: float
    first_piece_p95_s: float
    stream_total_p50_s: float
    server_version: str
    error_samples: list[str] = field(default_factory=list)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def run_requests(
    url: str, n: int, concurrency: int, nfe: int, timeout: float
) -> tuple[list[float], list[float], list[str], float]:
    """n f5tts requests, `concurrency` clients; (latencies, audio seconds, errors, wall time)."""
    latencies: list[float] = []
    audio: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        client = grpcclient.InferenceServerClient(url)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                inputs = infer_inputs(grpcclient, request_arrays(text=TEXTS[i % len(TEXTS)], seed=i, nfe=nfe))
                t0 = time.perf_counter()
                try:
                    r = client.infer("f5tts", inputs, client_timeout=timeout)
                    samples = r.as_numpy("audio").shape[-1]
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                        audio.append(samples / 24000)
                except Exception as e:
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
        finally:
            client.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    return latencies, audio, errors, time.perf_counter() - t0


def run_streams(
    url: str, n: int, concurrency: int, nfe: int, timeout: float
) -> tuple[list[float], list[float], list[str]]:
    """n f5tts_stream requests; (first-piece latencies, total latencies, errors)."""
    first: list[float] = []
    total: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            events: queue.Queue[tuple[Any, Any]] = queue.Queue()
            client = grpcclient.InferenceServerClient(url)
            try:
                client.start_stream(callback=lambda result, error, q=events: q.put((result, error)))
                text = " ".join([TEXTS[i % len(TEXTS)], TEXTS[(i + 3) % len(TEXTS)]])
                t0 = time.perf_counter()
                client.async_stream_infer(
                    "f5tts_stream",
                    infer_inputs(grpcclient, request_arrays(text=text, seed=i, nfe=nfe)),
                    enable_empty_final_response=True,
                )
                got_first = None
                while True:
                    result, error = events.get(timeout=timeout)
                    if error is not None:
                        raise RuntimeError(str(error))
                    if got_first is None and result.as_numpy("audio") is not None:
                        got_first = time.perf_counter() - t0
                    if result.get_response().parameters["triton_final_response"].bool_param:
                        break
                with lock:
                    if got_first is None:
                        errors.append("stream ended without audio")
                    else:
                        first.append(got_first)
                        total.append(time.perf_counter() - t0)
            except Exception as e:
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
            finally:
                client.stop_stream()
                client.close()

    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    return first, total, errors


def measure(cfg: Config, args: argparse.Namespace, artifacts: Path, voices: Path, work: Path) -> Run:
    threads = args.threads or max(1, (os.cpu_count() or 1) // cfg.instances)
    repo_dir = work / "".join(c if c.isalnum() else "_" for c in cfg.name)
    opts = RepositoryOptions(
        artifacts_path=str(artifacts),
        voices_path=str(voices),
        instances=cfg.instances,
        queue_delay_us=cfg.queue_delay_us,
        threads=threads,
        default_nfe=args.nfe,
    )
    write_repository(artifacts, repo_dir / "repository", opts)
    labels = {"model": "f5tts", "version": "1"}
    with LocalTritonServer(repo_dir / "repository", repo_dir / "server", stop_timeout=10) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        version = str(client.get_server_metadata().version)
        client.close()
        run_requests(server.grpc_url, min(8, args.requests), min(4, args.concurrency), args.nfe, args.timeout)  # warm
        before = scrape(server.metrics_url)
        lat, audio, errors, wall = run_requests(
            server.grpc_url, args.requests, args.concurrency, args.nfe, args.timeout
        )
        after = scrape(server.metrics_url)
        first, total, stream_errors = run_streams(
            server.grpc_url, args.stream_requests, args.concurrency, args.nfe, args.timeout
        )
    count = metric(after, "nv_inference_count", **labels) - metric(before, "nv_inference_count", **labels)
    execs = metric(after, "nv_inference_exec_count", **labels) - metric(before, "nv_inference_exec_count", **labels)
    return Run(
        name=cfg.name,
        instances=cfg.instances,
        queue_delay_us=cfg.queue_delay_us,
        threads_per_instance=threads,
        requests=args.requests,
        ok=len(lat),
        errors=len(errors),
        wall_s=round(wall, 3),
        throughput_rps=round(len(lat) / wall, 3),
        audio_s_per_s=round(sum(audio) / wall, 3),
        p50_s=round(pct(lat, 50), 4),
        p95_s=round(pct(lat, 95), 4),
        mean_batch=round(count / execs, 3) if execs else float("nan"),
        stream_requests=args.stream_requests,
        stream_ok=len(first),
        stream_errors=len(stream_errors),
        first_piece_p50_s=round(pct(first, 50), 4),
        first_piece_p95_s=round(pct(first, 95), 4),
        stream_total_p50_s=round(pct(total, 50), 4),
        server_version=version,
        error_samples=(errors + stream_errors)[:5],
    )


def batch_cost(artifacts: Path, voices: Path, nfe: int, threads: int, repeats: int = 5) -> dict[str, float]:
    """Seconds for 4 requests alone vs batched, mixed lengths and equal lengths (min over repeats)."""
    from f5rt.manifest import load_manifest
    from f5rt.synthesizer import SynthesisOptions, Synthesizer
    from f5rt.triton.repository import choose_placement
    from f5rt.voices import VoiceStore

    precision = choose_placement(load_manifest(artifacts), None).precision  # what the CPU repository serves
    voice = VoiceStore(voices).get("alice")
    mixed = [(t, voice, SynthesisOptions(nfe=nfe, seed=i)) for i, t in enumerate(TEXTS[:4])]
    equal = [(TEXTS[1], voice, SynthesisOptions(nfe=nfe, seed=i)) for i in range(4)]
    best: dict[str, float] = {}
    with Synthesizer(artifacts, backend="onnxruntime", precision=precision, threads=threads) as synth:
        synth.warmup()
        for _ in range(repeats):
            for name, items in (("mixed", mixed), ("equal", equal)):
                t0 = time.perf_counter()
                for item in items:
                    synth.synthesize(*item)
                t1 = time.perf_counter()
                synth.synthesize_batch(items)
                t2 = time.perf_counter()
                for key, value in ((f"{name}_alone_s", t1 - t0), (f"{name}_batch_s", t2 - t1)):
                    best[key] = round(min(best.get(key, value), value), 4)
    return best


def markdown(runs: list[Run], meta: dict[str, Any]) -> str:
    lines = [
        "# Triton load test (loopback, tiny model)",
        "",
        f"`{meta['artifacts']}` on tritonserver {meta['triton']} (nvidia-pytriton {meta['pytriton']}), "
        f"ONNX Runtime {meta['precision']} on CPU ({meta['cpus']} cores, {meta['machine']}). {meta['requests']} `f5tts` requests "
        f"at concurrency {meta['concurrency']}, then {meta['stream_requests']} `f5tts_stream` requests; nfe "
        f"{meta['nfe']}, gRPC clients. Mean batch = Triton's nv_inference_count / nv_inference_exec_count.",
        "",
        "| configuration | ok | errors | req/s | audio s/s | p50 s | p95 s | mean batch | stream ok | first piece p50 s | first piece p95 s | stream total p50 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.name} (threads/instance {r.threads_per_instance}) | {r.ok}/{r.requests} | {r.errors} | "
            f"{r.throughput_rps:.2f} | {r.audio_s_per_s:.2f} | {r.p50_s:.3f} | {r.p95_s:.3f} | {r.mean_batch:.2f} | "
            f"{r.stream_ok}/{r.stream_requests} | {r.first_piece_p50_s:.3f} | {r.first_piece_p95_s:.3f} | "
            f"{r.stream_total_p50_s:.3f} |"
        )
    cost = meta["batch_cost"]
    lines += [
        "",
        f"Engine cost of batching, in process (ONNX Runtime, {meta['batch_cost_threads']} thread, nfe {meta['nfe']}, "
        "best of 5): 4 requests of mixed lengths "
        f"{cost['mixed_alone_s']:.3f} s alone vs {cost['mixed_batch_s']:.3f} s as one batch; 4 of equal length "
        f"{cost['equal_alone_s']:.3f} s vs {cost['equal_batch_s']:.3f} s.",
    ]
    errs = [e for r in runs for e in r.error_samples]
    lines += [
        "",
        f"Errors: {sum(r.errors + r.stream_errors for r in runs)} in all." + (f" First: {errs[0]}" if errs else ""),
    ]
    lines += [
        "",
        "What this is: the machine this ran on, the tiny model (0.8 M parameters), CPU instances. It shows",
        "the serving path (Triton's scheduling, the Python backend's IPC, batching, streaming) under",
        "load, not Jetson or GPU speed; TensorRT instances are not measured here.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="load_report", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "triton_load")
    p.add_argument("--artifacts", type=Path, default=ROOT / "artifacts" / "tiny")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--stream-requests", type=int, default=32)
    p.add_argument("--nfe", type=int, default=7, help="NFE per request (7: an EPSS schedule, the low-latency setting)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="ONNX Runtime threads per instance (0: cores / instances); 1 keeps configurations comparable",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="client timeout per request (s)")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.stream_requests < 0:
        p.error("--requests and --concurrency must be positive, --stream-requests non-negative")
    import importlib.metadata as md

    configs = [
        Config("1 instance", 1, 0),
        Config("2 instances", 2, 0),
        Config("1 instance, dynamic batching 50 ms", 1, 50_000),
    ]
    runs = []
    with tempfile.TemporaryDirectory(prefix="triton-load-") as tmp:
        work = Path(tmp)
        voices = ensure_voices(work / "voices")
        print("[triton load] engine cost of batching, in process", flush=True)
        cost = batch_cost(args.artifacts.resolve(), voices, args.nfe, args.threads or 1)
        print(f"[triton load] {cost}", flush=True)
        for cfg in configs:
            print(f"[triton load] {cfg.name}: {args.requests} requests at concurrency {args.concurrency}", flush=True)
            run = measure(cfg, args, args.artifacts.resolve(), voices, work)
            print(
                f"[triton load] {cfg.name}: {run.ok}/{run.requests} ok, {run.throughput_rps:.2f} req/s, p50 "
                f"{run.p50_s:.3f} s, p95 {run.p95_s:.3f} s, mean batch {run.mean_batch:.2f}; streams "
                f"{run.stream_ok}/{run.stream_requests}, first piece p50 {run.first_piece_p50_s:.3f} s",
                flush=True,
            )
            runs.append(run)
    from f5rt.manifest import load_manifest
    from f5rt.triton.repository import choose_placement

    meta = {
        "artifacts": str(args.artifacts),
        "precision": choose_placement(load_manifest(args.artifacts), None).precision,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "stream_requests": args.stream_requests,
        "nfe": args.nfe,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "pytriton": md.version("nvidia-pytriton"),
        "triton": runs[0].server_version if runs else "?",
        "batch_cost": cost,
        "batch_cost_threads": args.threads or 1,
    }
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), {"config": meta, "runs": [asdict(r) for r in runs]})
    atomic_write_bytes(out.with_suffix(".md"), markdown(runs, meta).encode("utf-8"))
    print(f"[triton load] wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 1 if any(r.errors or r.stream_errors for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
