"""`python -m f5build.loadtest`: a bounded loopback load test of `f5rt serve`, batched vs unbatched.

Starts the server in a subprocess on 127.0.0.1 (a free port) and fires requests at a fixed
concurrency: /api/tts with dynamic batching (the configured window) and without (window 0) for
throughput; then, on one server, `--repeats` rounds of streams on /v1/audio/speech for time to first
audio (TTFA): a lone stream (concurrency 1), a burst of streams (all `--concurrency` at once, closed
loop), and a mixed burst (half streams, half /api/tts). Writes reports/load.md and reports/load.json:
p50/p95 latency, TTFA, throughput, audio seconds per second, the mean engine-call batch the server's
/metrics saw, and the load average at every round, because a shared machine is noisy: the headline
figures are medians over the rounds, with their spread.

    python -m f5build.loadtest --artifacts artifacts/tiny [--requests 200 --concurrency 16 --repeats 3]
    python -m f5build.loadtest ... --before reports/load_before.json   # adds a before/after table

Without --voices a synthetic reference voice is made in a temp folder (the tiny model does not care
what it imitates). Nothing leaves the machine; every request has a timeout, so the run is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from f5build.loadreport import headline, summarize_rounds, write_report
from f5rt.files import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[2]

# Chat-reader traffic: short messages, a few longer ones, mixed languages.
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


@dataclass
class Sample:
    status: int
    latency_s: float
    ttfa_s: float
    audio_s: float
    error: str = ""
    kind: str = "tts"  # "tts" (/api/tts, one JSON body) or "stream" (/v1/audio/speech, PCM as it comes)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_voice_dir(root: Path) -> Path:
    """One synthetic 3 s voice (voiced-like harmonics with a syllable-rate envelope) as <root>/demo."""
    import soundfile as sf

    sr = 24000
    t = np.arange(3 * sr) / sr
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    wave = (0.2 * wave / np.max(np.abs(wave))).astype(np.float32)
    d = root / "demo"
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="PCM_16")
    atomic_write_bytes(d / "ref.wav", buf.getvalue())
    atomic_write_bytes(d / "ref.txt", b"This is a short reference recording for the load test.")
    return root


@dataclass(frozen=True)
class LoadOptions:
    """One load test's settings, built once from the command line (main) by `from_args`."""

    artifacts: Path
    voices: Path | None
    backend: str
    threads: int | None
    precision: str
    requests: int
    concurrency: int
    stream_requests: int
    lone_requests: int
    mixed_requests: int
    repeats: int
    nfe: int
    batch_window_ms: float
    max_batch: int
    timeout: float
    startup_timeout: float
    before: Path | None
    out: Path

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LoadOptions:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@contextlib.contextmanager
def server_process(opts: LoadOptions, voices: Path, window_ms: float, log_path: Path) -> Iterator[str]:
    """Run `python -m f5rt.server` until the block ends; yields its base URL once /api/health is 200."""
    import httpx

    port = free_port()
    cmd = [
        sys.executable, "-m", "f5rt.server",
        "--artifacts", str(opts.artifacts), "--voices", str(voices),
        "--host", "127.0.0.1", "--port", str(port),
        "--backend", opts.backend, "--batch-window-ms", str(window_ms), "--max-batch", str(opts.max_batch),
        "--nfe", str(opts.nfe), "--log-level", "warning", "--precision", opts.precision,
    ]  # fmt: skip
    if opts.threads:
        cmd += ["--threads", str(opts.threads)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "runtime"), *filter(None, [env.get("PYTHONPATH")])])
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + opts.startup_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server not ready after {opts.startup_timeout} s:\n{log_path.read_text()[-2000:]}"
                    )
                time.sleep(0.2)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def run_load(
    url: str, n: int, concurrency: int, mode: str, nfe: int, timeout: float
) -> tuple[list[Sample], float]:
    """n requests, `concurrency` in flight at a time; returns the samples and the wall time.

    mode: "tts", "stream", or "mixed" (even requests stream, odd ones are /api/tts).
    """
    import httpx

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    samples: list[Sample] = []

    async def one(client: httpx.AsyncClient, i: int) -> Sample:
        text = TEXTS[i % len(TEXTS)]
        t0 = time.perf_counter()
        kind = "stream" if mode == "stream" or (mode == "mixed" and i % 2 == 0) else "tts"
        try:
            if kind == "tts":
                r = await client.post("/api/tts", json={"text": text, "seed": i, "nfe_step": nfe})
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    return Sample(r.status_code, dt, math.nan, 0.0, r.text[:200], kind)
                body = r.json()
                return Sample(200, dt, dt, body["waveform_len"] / body["sample_rate"], kind=kind)
            payload = {"input": text, "voice": None, "seed": i, "response_format": "pcm", "model": "f5-tts"}
            async with client.stream("POST", "/v1/audio/speech", json=payload) as r:
                if r.status_code != 200:
                    await r.aread()
                    return Sample(r.status_code, time.perf_counter() - t0, math.nan, 0.0, r.text[:200], kind)
                ttfa, nbytes = math.nan, 0
                async for chunk in r.aiter_bytes():
                    if chunk and math.isnan(ttfa):
                        ttfa = time.perf_counter() - t0
                    nbytes += len(chunk)
                return Sample(200, time.perf_counter() - t0, ttfa, nbytes / 2 / 24000, kind=kind)
        except httpx.HTTPError as e:
            return Sample(0, time.perf_counter() - t0, math.nan, 0.0, f"{type(e).__name__}: {e}", kind)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            samples.append(await one(client, i))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return samples, wall


def percentile(values: list[float], q: float) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.percentile(vals, q)) if vals else math.nan


def batch_stats(metrics_text: str) -> tuple[float, float]:
    """(rows batched, engine calls) so far, from the server's f5rt_batch_size histogram."""
    total = count = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("f5rt_batch_size_sum"):
            total = float(line.split()[-1])
        elif line.startswith("f5rt_batch_size_count"):
            count = float(line.split()[-1])
    return total, count


def summarize(samples: list[Sample], wall: float) -> dict[str, Any]:
    ok = [s for s in samples if s.status == 200]
    errors: dict[str, int] = {}
    for s in samples:
        if s.status != 200:
            errors[str(s.status)] = errors.get(str(s.status), 0) + 1
    lat = [s.latency_s for s in ok]
    ttfa = [s.ttfa_s for s in ok]
    audio = sum(s.audio_s for s in ok)
    return {
        "requests": len(samples),
        "ok": len(ok),
        "errors": errors,
        "first_errors": sorted({s.error for s in samples if s.error})[:3],
        "wall_s": wall,
        "throughput_rps": len(ok) / wall if wall else math.nan,
        "audio_s_per_s": audio / wall if wall else math.nan,
        "latency_p50_s": percentile(lat, 50),
        "latency_p95_s": percentile(lat, 95),
        "latency_max_s": max(lat) if lat else math.nan,
        "ttfa_p50_s": percentile(ttfa, 50),
        "ttfa_p95_s": percentile(ttfa, 95),
    }


def measure(url: str, opts: LoadOptions, mode: str, n: int, concurrency: int) -> dict[str, Any]:
    """One measured round on a running server, with the engine calls it caused and the load around it."""
    import httpx

    load_before = os.getloadavg()[0]
    before = batch_stats(httpx.get(f"{url}/metrics", timeout=10).text)
    samples, wall = asyncio.run(run_load(url, n, concurrency, mode, opts.nfe, opts.timeout))
    after = batch_stats(httpx.get(f"{url}/metrics", timeout=10).text)
    summary = summarize(samples, wall)
    batched, calls = after[0] - before[0], after[1] - before[1]  # the histogram is cumulative
    summary["engine_calls"], summary["mean_batch"] = calls, (batched / calls if calls else math.nan)
    summary.update(mode=mode, concurrency=concurrency, load_avg_1m=[load_before, os.getloadavg()[0]])
    if mode == "mixed":  # the streams' first audio among whole requests, and those requests' latency
        streams = summarize([s for s in samples if s.kind == "stream"], wall)
        whole = summarize([s for s in samples if s.kind == "tts"], wall)
        summary.update(stream_ttfa_p50_s=streams["ttfa_p50_s"], stream_ttfa_p95_s=streams["ttfa_p95_s"])
        summary.update(tts_latency_p50_s=whole["latency_p50_s"], tts_latency_p95_s=whole["latency_p95_s"])
    print(
        f"[loadtest] {mode} x{n} @{concurrency}: {summary['ok']}/{n} ok, {summary['throughput_rps']:.2f} req/s, "
        f"TTFA p50 {summary['ttfa_p50_s']:.3f} s p95 {summary['ttfa_p95_s']:.3f} s, "
        f"mean batch {summary['mean_batch']:.2f}, load {load_before:.1f}",
        flush=True,
    )
    return summary


def tts_run(opts: LoadOptions, voices: Path, window_ms: float, log_path: Path) -> dict[str, Any]:
    with server_process(opts, voices, window_ms, log_path) as url:
        asyncio.run(run_load(url, 4, 4, "tts", opts.nfe, opts.timeout))  # warm caches
        summary = measure(url, opts, "tts", opts.requests, opts.concurrency)
    summary.update(batch_window_ms=window_ms, max_batch=opts.max_batch if window_ms > 0 else 1)
    return summary


def stream_rounds(opts: LoadOptions, voices: Path, log_path: Path) -> dict[str, list[dict[str, Any]]]:
    """`--repeats` rounds of lone / burst / mixed on one server, interleaved so they share the noise."""
    rounds: dict[str, list[dict[str, Any]]] = {"lone": [], "burst": [], "mixed": []}
    with server_process(opts, voices, opts.batch_window_ms, log_path) as url:
        asyncio.run(run_load(url, 4, 4, "stream", opts.nfe, opts.timeout))  # warm caches
        for _ in range(opts.repeats):
            rounds["lone"].append(measure(url, opts, "stream", opts.lone_requests, 1))
            rounds["burst"].append(measure(url, opts, "stream", opts.stream_requests, opts.concurrency))
            if opts.mixed_requests > 0:
                rounds["mixed"].append(measure(url, opts, "mixed", opts.mixed_requests, opts.concurrency))
    return rounds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m f5build.loadtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", type=Path, default=ROOT / "artifacts" / "tiny")
    p.add_argument("--voices", type=Path, help="voices folder (default: one synthetic voice in a temp folder)")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--precision",
        default="fp32",
        help="step graph variant (default fp32: the exported graph, so runs compare whatever else was built)",
    )
    p.add_argument("--requests", type=int, default=200, help="/api/tts requests per throughput run (0: skip)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--stream-requests", type=int, default=48, help="streams per burst round (0: skip streams)")
    p.add_argument("--lone-requests", type=int, default=8, help="streams per lone round (concurrency 1)")
    p.add_argument("--mixed-requests", type=int, default=32, help="requests per mixed round (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of lone/burst/mixed (medians are reported)")
    p.add_argument("--nfe", type=int, default=16, help="NFE steps per request (EPSS schedule at 16)")
    p.add_argument("--batch-window-ms", type=float, default=50.0)
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--timeout", type=float, default=300.0, help="per-request client timeout (s)")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--before", type=Path, help="a load.json of an earlier run (e.g. before a change) to compare with")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    args = p.parse_args(argv)
    opts = LoadOptions.from_args(args)
    if opts.requests < 0 or opts.concurrency < 1 or opts.repeats < 1 or opts.lone_requests < 1:
        p.error("--concurrency, --repeats and --lone-requests must be positive, --requests non-negative")
    if not (opts.artifacts / "manifest.json").is_file():
        p.error(f"{opts.artifacts} has no manifest.json (run `python -m f5build export` first)")
    before = None
    if opts.before is not None:
        try:
            before = headline(json.loads(opts.before.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            p.error(f"--before {opts.before}: {e}")

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="f5-load-") as tmp:
        tmp_path = Path(tmp)
        voices = opts.voices or make_voice_dir(tmp_path / "voices")
        if opts.requests > 0:
            for name, window in (("batched", opts.batch_window_ms), ("unbatched", 0.0)):
                runs[name] = tts_run(opts, voices, window, tmp_path / f"{name}.log")
        if opts.stream_requests > 0:
            runs.update(stream_rounds(opts, voices, tmp_path / "streams.log"))
    report: dict[str, Any] = {
        "config": {
            "artifacts": str(opts.artifacts), "backend": opts.backend, "precision": opts.precision,
            "requests": opts.requests,
            "concurrency": opts.concurrency, "nfe": opts.nfe, "batch_window_ms": opts.batch_window_ms,
            "max_batch": opts.max_batch, "repeats": opts.repeats, "stream_requests": opts.stream_requests,
            "lone_requests": opts.lone_requests, "mixed_requests": opts.mixed_requests,
            "host": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        },
        "runs": runs,
    }  # fmt: skip
    if "lone" in runs:
        report["summary"] = summarize_rounds(runs)
    report["headline"] = headline(report)
    b, u = runs.get("batched"), runs.get("unbatched")
    report["speedup"] = b["throughput_rps"] / u["throughput_rps"] if b and u and u["throughput_rps"] else math.nan
    if before is not None:
        report["before"], report["before_source"] = before, str(opts.before)
    write_report(report, opts.out)
    print(
        f"[loadtest] wrote {opts.out / 'load.md'} and load.json; burst/lone TTFA {report['headline'].get('burst_over_lone', math.nan):.2f}x"
    )
    failed = sum(x["requests"] - x["ok"] for r in runs.values() for x in (r if isinstance(r, list) else [r]))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
