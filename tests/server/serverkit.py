"""Helpers of the server's tests: the test voices, a served app (TestClient or a real uvicorn), requests
to /api/tts and /v1/audio/speech, WAV and PCM checks against the Synthesizer, Prometheus samples, and Spy
(the engine wrapper that records every engine call)."""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from starlette.testclient import TestClient

from conftest import SR, speechlike
from f5rt.limits import Limits
from f5rt.server import create_app
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore

QUICK_TEXT = "Hello there, this is a test."  # transcript of the 1 s 'quick' voice
NFE = 6
FAST = SynthesisOptions(nfe=NFE)  # the servers' defaults: f5-tts' own except for fewer steps
WAIT_S = 20.0  # upper bound for conditions the tests wait on (never a timing assertion)
TWO_CHUNKS = "Hi chat. Thanks for the follow!"  # two chunks with a 12-character first chunk


def wav_of(samples: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def make_voices(src: Path, dst: Path) -> Path:
    """A private copy of the shared voices plus 'quick' and 'quick2': short references, small buckets."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".cache"))
    (dst / "quick").mkdir()
    (dst / "quick" / "ref.wav").write_bytes(wav_of(speechlike(1.0, SR, 3)))
    (dst / "quick" / "ref.txt").write_text(QUICK_TEXT, encoding="utf-8")
    (dst / "quick2").mkdir()
    (dst / "quick2" / "ref.wav").write_bytes(wav_of(speechlike(1.2, SR, 4, rms=0.2)))
    (dst / "quick2" / "ref.txt").write_text("A second short voice.", encoding="utf-8")
    return dst


def wait_until(cond: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def serving(
    synth: Any, voices: Path, limits: Limits | None = None, warmup: bool = True
) -> Iterator[tuple[TestClient, Any]]:
    app = create_app(synth, VoiceStore(voices), limits or Limits(), default_voice="quick", warmup=warmup, defaults=FAST)
    with TestClient(app) as client:
        wait_until(lambda: app.state.batcher.ready or app.state.batcher.warmup_error, "warm-up")
        yield client, app


def decode_wav(data: bytes) -> tuple[np.ndarray, int, str]:
    info = sf.info(io.BytesIO(data))
    audio, sr = sf.read(io.BytesIO(data), dtype="int16")
    return audio, sr, info.subtype


def pcm16(audio: np.ndarray) -> np.ndarray:
    """What 16-bit output of float audio must be: the runtime's one conversion (libsndfile's, as f5-tts writes)."""
    from f5rt.audio import encode_audio

    return np.frombuffer(encode_audio(audio, SR, "pcm"), dtype="<i2")


def assert_pcm_close(got: np.ndarray, want_float: np.ndarray, lsb: int = 1) -> None:
    want = pcm16(want_float)
    assert got.shape == want.shape, f"length {got.shape} != {want.shape}"
    err = int(np.max(np.abs(got.astype(np.int32) - want.astype(np.int32)))) if len(want) else 0
    assert err <= lsb, f"max error {err} LSB > {lsb}"
    assert np.any(want != 0), "reference audio is silent: the comparison would prove nothing"


def tts(client: TestClient, **body: Any) -> dict[str, Any]:
    body.setdefault("nfe_step", NFE)
    r = client.post("/api/tts", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def speech(client: TestClient, **body: Any) -> httpx.Response:
    body.setdefault("model", "f5-tts")
    body.setdefault("voice", "quick")
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200, r.text
    return r


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text (0 if absent); also checks every line is well-formed."""
    total = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        float(value)  # every sample value parses
        base, _, lab = series.partition("{")
        got = dict(kv.split("=", 1) for kv in lab.rstrip("}").split(",")) if lab else {}
        got = {k: v.strip('"') for k, v in got.items()}
        if base == name and all(got.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


class Spy:
    """Wraps the real synthesizer's engine (the ChunkEngine the server runs): records every engine
    call's rows, can hold warm-up on a gate."""

    def __init__(self, synth: Synthesizer) -> None:
        self._synth = synth.engine
        self.texts: list[str] = []
        self.batches: list[int] = []
        self.warmup_gate: threading.Event | None = None
        self.after_run: Any = None  # called once on the worker after the next engine call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._synth, name)

    def warmup(self) -> None:
        if self.warmup_gate is not None:
            assert self.warmup_gate.wait(WAIT_S)
        self._synth.warmup()

    def run_chunks(self, works: list[Any], timings: Any = None) -> Any:
        """The batcher's engine call: one row per chunk (of whole requests and streams alike)."""
        self.texts += [w.plan.text for w in works]
        self.batches.append(len(works))
        try:
            return self._synth.run_chunks(works, timings)
        finally:
            hook, self.after_run = self.after_run, None
            if hook is not None:
                hook()


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """The app under a real uvicorn on 127.0.0.1 (disconnects need real sockets)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "uvicorn start")
        wait_until(lambda: app.state.batcher.ready, "warm-up")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
