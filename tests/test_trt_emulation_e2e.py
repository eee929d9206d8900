"""The real TensorRT backend end to end on the strict TensorRT + CUDA emulation (tests/emulation).

Engines are built by the real compile stage (the emulated Builder records them in the real manifest);
`TensorRTBackend`, `BucketRunner` and the CUDA wrapper are the code that runs on a Jetson, with only
`tensorrt` and `cuda.bindings.runtime` substituted. Every test ends with the emulated device clean:
no alignment, shape, address, bounds, poison or capture rule broken on the way.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import emulation_report
import numpy as np
import pytest
import soundfile as sf
import yaml

import emulation
from f5rt.backends.onnxruntime import OnnxRuntimeBackend
from f5rt.manifest import load_manifest
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"frames": [256, 384], "batch": [1, 2]}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported for a small bucket table, engines built under emulation (fp32 deployment)."""
    from f5build.cli import main as build
    from f5build.compile import main as compile_main

    root = tmp_path_factory.mktemp("emu")
    buckets = root / "buckets.yaml"
    buckets.write_text(yaml.safe_dump(SMALL))
    assert build(["export", "--model", "tiny", "--artifacts-root", str(root), "--buckets", str(buckets)]) == 0
    with emulation.installed() as device:
        assert compile_main(["--artifacts-root", str(root), "--name", "tiny", "--trt-precision", "fp32"]) == 0
        device.assert_clean()
    return root / "tiny"


@pytest.fixture
def device() -> Iterator[emulation.EmulatedDevice]:
    with emulation.installed() as dev:
        yield dev
        dev.assert_clean()


def test_compile_records_emulated_engines_like_real_ones(engines: Path) -> None:
    m = load_manifest(engines)
    assert m.data["deployments"] == {"fp32": {"text_encoder": "fp32", "step": "fp32", "vocoder": "fp32"}}
    assert m.data["stages"]["compile"]["status"] == "built"
    for graph in ("text_encoder", "step", "vocoder"):
        rel = f"engines/{graph}.fp32.engine"
        meta = m.files[rel]
        assert (meta["tensorrt"], meta["sm"], meta["gpu"]) == ("10.3.0.30", "8.7", "Orin (emulated)")
        assert len(meta["profiles"]) == 4 and meta["options"]["tf32"] is True
        m.verify(rel)
    assert (engines / "engines" / "timing.cache").is_file()
    # the step engine's attention, read back from the engine inspector: FP32 attention does not fuse
    att = m.files["engines/step.fp32.engine"]["attention"]
    assert att["detailed"] and att["source"] == "IEngineInspector" and att["frames"] == 256
    assert att["fused"] == 0 and not att["all_fused"]
    assert att["unfused_blocks"] == ["/transformer_blocks.0/attn", "/transformer_blocks.1/attn"]
    assert att["nn_tensors"] and all("(2, 2, 256, 256)" in t for t in att["nn_tensors"])
    assert "attention" not in m.files["engines/vocoder.fp32.engine"]


def test_compiled_fp32_engines_have_tf32_on(engines: Path, device: emulation.EmulatedDevice) -> None:
    """Defect 4: the FP32 engines are built with TF32 allowed (TensorRT's default, which Polygraphy cleared)."""
    from emulation.engine_file import unpack

    for graph in ("text_encoder", "step", "vocoder"):
        meta = unpack((engines / "engines" / f"{graph}.fp32.engine").read_bytes())[0]
        assert meta["tf32"] is True and meta["strongly_typed"] is True, graph


def test_every_bucket_nfe_and_mode_equals_onnxruntime(engines: Path, device: emulation.EmulatedDevice) -> None:
    rows = emulation_report.sweep(engines, nfes=(7, 16, 32))
    m = load_manifest(engines)
    want = {(b.name, n, mode) for b in m.buckets for n in (7, 16, 32) for mode in ("graph", "eager")}
    assert {(r.bucket, r.nfe, r.mode) for r in rows} == want
    for r in rows:
        assert r.audio_max_abs <= 1e-5 and r.mel_max_abs <= 1e-5, r
        assert r.violations == 0 and r.samples > 0
        assert r.captured == (r.mode == "graph"), r


@pytest.mark.parametrize("mode", ["graph", "eager"])
def test_synthesize_batch_and_stream_equal_onnxruntime(engines: Path, voices_dir: Path, device, mode: str) -> None:
    from f5rt.backends.trt.backend import TensorRTBackend

    store = VoiceStore(voices_dir)
    items = [
        ("Hi chat!", store.get("alice"), SynthesisOptions(nfe=7, seed=1)),
        ("大家好！", store.get("bob"), SynthesisOptions(nfe=7, seed=2)),
        ("Good game, see you.", store.get("alice"), SynthesisOptions(nfe=16, seed=3)),
    ]
    backend = TensorRTBackend(engines, "fp32", nfe_warmup=(7,), cuda_graphs=mode == "graph")
    with backend, Synthesizer(engines, backend=backend) as trt:
        assert trt.backend_name == "tensorrt"
        got = trt.synthesize_batch(items)
        streamed = np.concatenate(
            list(trt.stream("Hi chat! Welcome to the stream.", store.get("alice"), items[0][2], 8))
        )
        whole = trt.synthesize("Hi chat! Welcome to the stream.", store.get("alice"), items[0][2], 8).audio
        captured = backend.captured_graphs()
        if mode == "graph":  # NFE 7 captured at start-up in every bucket, 16 on first use where it ran
            assert all(7 in nfes for nfes in captured.values()) and any(16 in nfes for nfes in captured.values())
        else:
            assert not any(captured.values())
    with Synthesizer(engines, backend="onnxruntime", threads=2) as ort:
        want = ort.synthesize_batch(items)
    for g, w in zip(got, want, strict=True):
        assert g.audio.shape == w.audio.shape
        assert float(np.max(np.abs(g.audio - w.audio))) <= 1e-4  # bucket padding vs exact size: FP32 noise
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_text_embeddings_stay_on_the_device(engines: Path, device) -> None:
    """Defect 6: encode_text returns a receipt; sample copies only x/cond/mask/cfg/t/dt in."""
    from f5rt.backends.trt.backend import TensorRTBackend
    from f5rt.backends.trt.runner import DeviceText

    ref = OnnxRuntimeBackend(load_manifest(engines), "fp32", pad_to_buckets=True)
    with TensorRTBackend(engines, "fp32", nfe_warmup=(7,)) as trt:
        ids = np.full((1, 256), -1, np.int32)
        ids[0, :50] = np.arange(50)
        mask = np.zeros((1, 256), bool)
        mask[0, :200] = True
        text = trt.encode_text(ids, mask)
        assert isinstance(text, DeviceText)
        for got, want in zip(text.host(), ref.encode_text(ids, mask).host(), strict=True):
            np.testing.assert_allclose(got, want, atol=1e-6)
        trt.encode_text(ids, mask)  # overwrites the arena: the first receipt is stale now
        with pytest.raises(ValueError, match="stale text embeddings"):
            text.host()


def test_failed_capture_falls_back_to_eager_cleanly(engines: Path, device) -> None:
    """Defect 2: a capture that fails leaves no stale CUDA error behind for the eager steps."""
    from f5rt.backends.trt import cuda
    from f5rt.backends.trt.arena import plan_step_arena
    from f5rt.backends.trt.runner import BucketRunner
    from f5rt.buckets import Bucket

    calls = []

    def enqueue(bindings: dict[str, int], stream: cuda.Stream) -> None:
        calls.append(bindings["t"])
        if len(calls) == 1:
            stream.synchronize()  # prohibited during capture: the capture fails

    plan = plan_step_arena(Bucket(256, 1), 100, 64, 8)
    with cuda.Stream() as stream, BucketRunner(Bucket(256, 1), plan, stream, enqueue) as r:
        r.prepare(4)
        assert not r.cuda_graphs and "cudaStreamSynchronize" in (r.graph_error or "")
        assert cuda.clear_last_error() == 0  # already cleared by the failed capture
    assert device.rules() == ["capture-prohibited"]
    device.reset()


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emulation.launch", "--", "f5rt", *args],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout,
    )  # fmt: skip


def test_cli_synth_on_tensorrt_equals_onnxruntime(engines: Path, voices_dir: Path, tmp_path: Path) -> None:
    common = ["--artifacts", str(engines), "--ref-audio", str(voices_dir / "alice" / "ref.wav")]
    common += ["--ref-text", "Hello there, this is a test.", "--text", "Hi chat, welcome!", "--nfe", "7", "--seed", "5"]
    proc = cli("synth", *common, "--backend", "tensorrt", "--out", str(tmp_path / "trt.wav"))
    assert proc.returncode == 0, proc.stderr  # 3 would mean a recorded contract violation
    assert "on tensorrt/fp32" in proc.stdout
    ort = subprocess.run(
        [sys.executable, "-c", "import sys; from f5rt.cli import main; sys.exit(main())", "synth", *common, "--backend", "onnxruntime", "--out", str(tmp_path / "ort.wav")],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert ort.returncode == 0, ort.stderr
    a, _ = sf.read(tmp_path / "trt.wav", dtype="int16")
    b, _ = sf.read(tmp_path / "ort.wav", dtype="int16")
    assert a.shape == b.shape and int(np.max(np.abs(a.astype(int) - b.astype(int)))) <= 1 and np.any(b != 0)


def test_cli_tensorrt_refuses_an_engine_for_another_gpu(engines: Path, voices_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "emulation.launch", "--sm", "9.0", "--", "f5rt", "synth", "--artifacts", str(engines),
         "--ref-audio", str(voices_dir / "alice" / "ref.wav"), "--ref-text", "Hello.", "--text", "Hi.",
         "--backend", "tensorrt", "--out", str(tmp_path / "x.wav")],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "was built for SM 8.7 (Orin (emulated)), this GPU is SM 9.0" in proc.stderr
    assert not (tmp_path / "x.wav").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(engines: Path, voices: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulation.launch", "--", "f5rt", "serve", "--artifacts", str(engines),
         "--backend", "tensorrt", "--precision", "fp32", "--voices", str(voices), "--port", str(port),
         "--nfe", "7", "--batch-window-ms", "300", "--max-batch", "2", "--log-level", "warning"],
        env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(
                    f"f5rt serve exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("f5rt serve did not become ready")
        yield url
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert "contract violation" not in out.lower(), out


def test_serve_on_tensorrt_batches_and_equals_onnxruntime(engines: Path, voices_dir: Path) -> None:
    import httpx

    texts = ["Hi chat!", "Good game."]
    results: dict[int, bytes] = {}
    with served(engines, voices_dir) as url:

        def post(i: int) -> None:
            body = {"text": texts[i], "voice_id": "alice", "seed": 10 + i, "nfe_step": 7}
            r = httpx.post(f"{url}/api/tts", json=body, timeout=120)
            assert r.status_code == 200, r.text
            results[i] = base64.b64decode(r.json()["audio_base64"])

        threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    # every engine call held rows of both requests (none ran alone): batch-size histogram empty at 1
    batch = dict(ln.rsplit(" ", 1) for ln in metrics.splitlines() if ln.startswith("f5rt_batch_size_"))
    assert float(batch['f5rt_batch_size_bucket{le="1.0"}']) == 0 and float(batch["f5rt_batch_size_count"]) >= 1, batch
    store = VoiceStore(voices_dir)
    with Synthesizer(engines, backend="onnxruntime", threads=2) as ort:
        for i, text in enumerate(texts):
            got, _ = sf.read(io.BytesIO(results[i]), dtype="int16")
            want = ort.synthesize(text, store.get("alice"), SynthesisOptions(nfe=7, seed=10 + i)).audio
            want16, _ = sf.read(io.BytesIO(_wav(want)), dtype="int16")
            assert got.shape == want16.shape and int(np.max(np.abs(got.astype(int) - want16.astype(int)))) <= 1


def _wav(audio: np.ndarray) -> bytes:
    from f5rt.audio import encode_audio

    return encode_audio(audio, 24000, "wav")


def test_report_writer_summarises_rows(tmp_path: Path) -> None:
    row = emulation_report.SweepRow("n256_b1", 7, "graph", 0.0, 0.0, 1000, True, 0, 0.1)
    bad = emulation_report.SweepRow("n256_b1", 7, "eager", 2e-3, 1e-3, 1000, False, 1, 0.1)
    j, md = emulation_report.write_report(
        [row, bad], tmp_path / "r", {"artifacts": "x", "tensorrt": "10.3", "sm": "8.7"}
    )
    data = json.loads(j.read_text())
    assert data["contract_held"] is False and data["audio_max_abs"] == 2e-3 and len(data["rows"]) == 2
    assert "contract VIOLATED" in md.read_text()
