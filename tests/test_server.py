"""`f5rt serve` contract tests on the tiny model: every endpoint, streaming, batching, cancellation.

The reference for every audio check is the Synthesizer itself, called directly with the same text,
voice and options: the server may schedule, batch, chunk and encode, but must not change the audio
(beyond 16-bit quantisation). Requests use a 1 s voice and few NFE steps so a request costs ~0.1 s.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, speechlike

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx
from starlette.testclient import TestClient

from f5rt.limits import Limits
from f5rt.server import create_app
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore

QUICK_TEXT = "Hello there, this is a test."  # transcript of the 1 s 'quick' voice
NFE = 6
FAST = SynthesisOptions(nfe=NFE)  # the servers' defaults: f5-tts' own except for fewer steps
WAIT_S = 20.0  # upper bound for conditions the tests wait on (never a timing assertion)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tiny_artifacts: Path) -> Iterator[Synthesizer]:
    s = Synthesizer(tiny_artifacts, backend="onnxruntime", threads=1)
    yield s
    s.close()


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


@pytest.fixture
def voices(voices_dir: Path, tmp_path: Path) -> Path:
    return make_voices(voices_dir, tmp_path / "voices")


@pytest.fixture
def server(synth: Synthesizer, voices: Path) -> Iterator[tuple[TestClient, Any]]:
    with serving(synth, voices) as s:
        yield s


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


# ---------------------------------------------------------------------------------------------
# /api/tts
# ---------------------------------------------------------------------------------------------


def test_api_tts_contract_and_audio(server: tuple[TestClient, Any], synth: Synthesizer, voices: Path) -> None:
    client, _ = server
    body = tts(client, text="Hi chat!", seed=11)
    assert set(body) >= {"request_id", "voice_id", "engine", "sample_rate", "audio_base64", "waveform_len", "format"}
    assert body["voice_id"] == "quick" and body["format"] == "wav" and body["sample_rate"] == SR
    assert body["engine"] == f"f5rt-{synth.backend_name}" and body["seed"] == 11
    audio, sr, subtype = decode_wav(base64.b64decode(body["audio_base64"]))
    assert (sr, subtype, audio.ndim) == (SR, "PCM_16", 1)
    assert len(audio) == body["waveform_len"]
    voice = VoiceStore(voices).get("quick")
    want = synth.synthesize("Hi chat!", voice, SynthesisOptions(nfe=NFE, seed=11)).audio
    assert_pcm_close(audio, want, lsb=0)
    # Same seed: same audio; another seed: other audio; a second request gets a new id.
    again = tts(client, text="Hi chat!", seed=11)
    assert again["audio_base64"] == body["audio_base64"] and again["request_id"] != body["request_id"]
    assert tts(client, text="Hi chat!", seed=12)["audio_base64"] != body["audio_base64"]


def test_api_tts_every_option_reaches_the_synthesizer(
    server: tuple[TestClient, Any], synth: Synthesizer, voices: Path
) -> None:
    client, _ = server
    fields = dict(
        text="Good game, everyone.",
        voice_id="quick",
        speed=1.3,
        target_rms=0.05,
        cross_fade_duration=0.1,
        sway_sampling_coef=None,
        cfg_strength=1.5,
        nfe_step=5,
        fix_duration=None,
        remove_silence=True,
        seed=7,
    )
    body = tts(client, **fields)
    opts = SynthesisOptions(
        nfe=5, cfg=1.5, sway=None, speed=1.3, target_rms=0.05, cross_fade=0.1, remove_silence=True, seed=7
    )
    want = synth.synthesize(fields["text"], VoiceStore(voices).get("quick"), opts).audio
    assert_pcm_close(decode_wav(base64.b64decode(body["audio_base64"]))[0], want, lsb=0)
    # fix_duration sets the total (reference + generated) length: 2.0 s - 1.0 s reference = 1.0 s out.
    fixed = tts(client, text="Good game.", fix_duration=2.0, seed=1)
    want = synth.synthesize(
        "Good game.", VoiceStore(voices).get("quick"), SynthesisOptions(nfe=NFE, fix_duration=2.0, seed=1)
    )
    assert fixed["waveform_len"] == len(want.audio)
    # No seed (or -1): the server draws one and reports it, so the audio can be reproduced.
    drawn = tts(client, text="Good game.", seed=-1)
    assert tts(client, text="Good game.", seed=drawn["seed"])["audio_base64"] == drawn["audio_base64"]


def test_api_tts_uses_the_named_voice(server: tuple[TestClient, Any], synth: Synthesizer, voices: Path) -> None:
    client, _ = server
    a = tts(client, text="Hi.", voice_id="quick", seed=3)
    b = tts(client, text="Hi.", voice_id="alice", seed=3)
    assert (a["voice_id"], b["voice_id"]) == ("quick", "alice")
    want = synth.synthesize("Hi.", VoiceStore(voices).get("alice"), SynthesisOptions(nfe=NFE, seed=3)).audio
    assert_pcm_close(decode_wav(base64.b64decode(b["audio_base64"]))[0], want, lsb=0)


# ---------------------------------------------------------------------------------------------
# /v1/audio/speech
# ---------------------------------------------------------------------------------------------

TWO_CHUNKS = "Hi chat. Thanks for the follow!"  # two chunks with a 12-character first chunk


def speech(client: TestClient, **body: Any) -> httpx.Response:
    body.setdefault("model", "f5-tts")
    body.setdefault("voice", "quick")
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200, r.text
    return r


def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            events.append(json.loads(block[len("data: ") :]))
    return events


def test_speech_stream_equals_non_streamed(synth: Synthesizer, voices: Path) -> None:
    """Without a short first chunk, the stream is the /api/tts audio for the same seed, in every format."""
    with serving(synth, voices, Limits(first_chunk_chars=0)) as (client, _):
        ref = tts(client, text=TWO_CHUNKS, seed=5)
        want, _, _ = decode_wav(base64.b64decode(ref["audio_base64"]))
        r = speech(client, input=TWO_CHUNKS, seed=5, response_format="wav")
        assert r.headers["content-type"] == "audio/wav" and r.headers["x-seed"] == "5"
        got, sr, _ = decode_wav(r.content)  # streamed WAV: header with unknown length, then PCM
        assert sr == SR and np.array_equal(got, want)
        pcm = speech(client, input=TWO_CHUNKS, seed=5, response_format="pcm").content
        assert np.array_equal(np.frombuffer(pcm, "<i2"), want)
        flac = speech(client, input=TWO_CHUNKS, seed=5, response_format="flac").content
        assert np.array_equal(sf.read(io.BytesIO(flac), dtype="int16")[0], want)
        events = sse_events(speech(client, input=TWO_CHUNKS, seed=5, response_format="pcm", stream_format="sse").text)
        assert [e["type"] for e in events[-1:]] == ["speech.audio.done"] and "usage" in events[-1]
        deltas = [e for e in events[:-1]]
        assert deltas and all(e["type"] == "speech.audio.delta" for e in deltas)
        joined = b"".join(base64.b64decode(e["audio"]) for e in deltas)
        assert np.array_equal(np.frombuffer(joined, "<i2"), want)


def test_speech_short_first_chunk_streams_in_pieces(synth: Synthesizer, voices: Path) -> None:
    """With first_chunk_chars the stream is several pieces whose join equals synthesize() with that chunking."""
    with serving(synth, voices, Limits(first_chunk_chars=12)) as (client, _):
        events = sse_events(speech(client, input=TWO_CHUNKS, seed=9, response_format="pcm", stream_format="sse").text)
        deltas = [base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta"]
        assert len(deltas) >= 2, "a two-chunk text must stream in more than one piece"
        got = np.frombuffer(b"".join(deltas), "<i2")
        voice = VoiceStore(voices).get("quick")
        result = synth.synthesize(TWO_CHUNKS, voice, SynthesisOptions(nfe=NFE, seed=9), first_chunk_chars=12)
        assert len(result.chunks) == 2 and result.chunks[0] == "Hi chat."
        # Pieces are cross-faded incrementally; the join must equal the one-shot cross-fade.
        assert_pcm_close(got, result.audio, lsb=1)


def test_speech_accepts_openai_voice_object_and_reports_bad_format(server: tuple[TestClient, Any]) -> None:
    client, _ = server
    a = speech(client, input="Hi.", voice={"id": "quick"}, seed=1, response_format="pcm").content
    b = speech(client, input="Hi.", voice="quick", seed=1, response_format="pcm", instructions="cheerful").content
    assert a == b and len(a) > 0
    r = client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "quick", "response_format": "wma"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_format"


# ---------------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------------


def test_batched_requests_equal_each_request_alone(synth: Synthesizer, voices: Path) -> None:
    spy = Spy(synth)
    limits = Limits(batch_window_ms=200, max_batch=4)  # paused worker: all 4 are queued when it looks
    texts = ["Hi chat!", "Welcome to the stream, friend.", "Good game.", "See you."]
    results: dict[int, dict[str, Any]] = {}
    with serving(spy, voices, limits) as (client, app):
        batcher = app.state.batcher
        batcher.pause()  # hold the worker so the requests are all queued when it looks

        def post(i: int) -> None:
            nfe = NFE if i < 3 else NFE + 1  # the last one has another schedule: it may not join the batch
            results[i] = tts(client, text=texts[i], seed=100 + i, nfe_step=nfe, voice_id="quick" if i % 2 else "quick2")

        threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: batcher.queue_depth == 4, "4 queued requests")
        batcher.resume()
        for t in threads:
            t.join(WAIT_S)
        metrics = client.get("/metrics").text
    assert sorted(spy.batches) == [1, 3], f"expected one batch of 3 and one single call, got {spy.batches}"
    assert metric_value(metrics, "f5rt_batch_size_count") == 2
    assert metric_value(metrics, "f5rt_batch_size_sum") == 4
    store = VoiceStore(voices)
    for i in range(4):
        got = decode_wav(base64.b64decode(results[i]["audio_base64"]))[0]
        opts = SynthesisOptions(nfe=NFE if i < 3 else NFE + 1, seed=100 + i)
        alone = synth.synthesize(texts[i], store.get("quick" if i % 2 else "quick2"), opts).audio
        assert_pcm_close(got, alone, lsb=1)


def test_window_zero_never_batches(synth: Synthesizer, voices: Path) -> None:
    spy = Spy(synth)
    with serving(spy, voices, Limits(batch_window_ms=0, max_batch=4)) as (client, app):
        app.state.batcher.pause()
        threads = [
            threading.Thread(target=tts, args=(client,), kwargs={"text": f"Hi {i}.", "seed": i}) for i in range(3)
        ]
        for t in threads:
            t.start()
        wait_until(lambda: app.state.batcher.queue_depth == 3, "3 queued requests")
        app.state.batcher.resume()
        for t in threads:
            t.join(WAIT_S)
    assert spy.batches == [1, 1, 1]


# ---------------------------------------------------------------------------------------------
# voices
# ---------------------------------------------------------------------------------------------


def test_voice_upload_replace_use_delete(server: tuple[TestClient, Any], voices: Path) -> None:
    client, _ = server
    listed = client.get("/api/voices").json()
    assert [v["voice_id"] for v in listed["voices"]] == ["alice", "bob", "quick", "quick2"] and listed[
        "default"
    ] == "quick"
    assert listed["voices"][0]["ref_text"].startswith("Hello there")

    first = wav_of(speechlike(1.2, SR, 5))
    r = client.post(
        "/api/voices/new_voice-1", files={"audio": ("a.wav", first, "audio/wav")}, data={"text": "One two three."}
    )
    assert r.status_code == 201, r.text
    assert r.json()["voice_id"] == "new_voice-1" and r.json()["duration_s"] > 0.5
    assert (voices / "new_voice-1" / "ref.wav").read_bytes() == first
    used = tts(client, text="Hi.", voice_id="new_voice-1", seed=1)

    second = wav_of(speechlike(1.5, 16000, 6), 16000)
    r = client.post(
        "/api/voices/new_voice-1", files={"audio": ("b.wav", second, "audio/wav")}, data={"text": "Four five."}
    )
    assert r.status_code == 200, r.text  # replaced
    assert (voices / "new_voice-1" / "ref.txt").read_text(encoding="utf-8") == "Four five."
    assert tts(client, text="Hi.", voice_id="new_voice-1", seed=1)["audio_base64"] != used["audio_base64"]

    r = client.delete("/api/voices/new_voice-1")
    assert r.status_code == 200 and not (voices / "new_voice-1").exists()
    assert client.post("/api/tts", json={"text": "Hi.", "voice_id": "new_voice-1"}).status_code == 404
    assert client.delete("/api/voices/new_voice-1").status_code == 404
    assert [v["voice_id"] for v in client.get("/api/voices").json()["voices"]] == ["alice", "bob", "quick", "quick2"]


# ---------------------------------------------------------------------------------------------
# health, warm-up, metrics, capacity
# ---------------------------------------------------------------------------------------------


def test_health_is_ready_only_after_warmup(synth: Synthesizer, voices: Path) -> None:
    spy = Spy(synth)
    spy.warmup_gate = threading.Event()
    app = create_app(spy, VoiceStore(voices), Limits(), default_voice="quick", defaults=FAST)
    with TestClient(app) as client:
        r = client.get("/api/health")
        assert r.status_code == 503 and r.json()["status"] == "warming_up"
        assert metric_value(client.get("/metrics").text, "f5rt_ready") == 0
        # A request sent during warm-up waits for it instead of failing.
        out: dict[str, Any] = {}
        t = threading.Thread(target=lambda: out.update(tts(client, text="Hi.", seed=1)))
        t.start()
        wait_until(lambda: app.state.batcher.queue_depth == 1, "the queued request")
        spy.warmup_gate.set()
        wait_until(lambda: app.state.batcher.ready, "warm-up")
        r = client.get("/api/health")
        assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["ready"] is True
        t.join(WAIT_S)
        assert out["waveform_len"] > 0
        assert metric_value(client.get("/metrics").text, "f5rt_ready") == 1


def test_health_answers_while_the_worker_is_busy(server: tuple[TestClient, Any]) -> None:
    client, app = server
    gate = threading.Event()
    busy = app.state.batcher.call(lambda: gate.wait(WAIT_S))  # occupies the inference thread
    try:
        wait_until(lambda: busy.running(), "the worker to be busy")
        r = client.get("/api/health")
        assert r.status_code == 200 and r.json()["ready"] is True
        assert client.get("/metrics").status_code == 200
    finally:
        gate.set()
    assert busy.result(WAIT_S) is True


def test_metrics_count_requests_latency_ttfa_rtf(server: tuple[TestClient, Any]) -> None:
    client, _ = server
    tts(client, text="Hi.", seed=1)
    speech(client, input="Hi.", seed=1, response_format="pcm")
    client.post("/api/tts", json={"text": 5})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = r.text
    assert metric_value(m, "f5rt_requests_total", route="/api/tts", status="200") == 1
    assert metric_value(m, "f5rt_requests_total", route="/api/tts", status="400") == 1
    assert metric_value(m, "f5rt_requests_total", route="/v1/audio/speech", status="200") == 1
    assert metric_value(m, "f5rt_request_latency_seconds_count", route="/api/tts") == 1
    assert metric_value(m, "f5rt_time_to_first_audio_seconds_count", route="/v1/audio/speech") == 1
    assert metric_value(m, "f5rt_real_time_factor_count", route="/api/tts") == 1
    assert metric_value(m, "f5rt_audio_seconds_total", route="/api/tts") > 0
    assert metric_value(m, "f5rt_batch_size_count") == 2  # engine calls: the request's and the stream's
    assert "# TYPE f5rt_queue_depth gauge" in m and "# TYPE f5rt_request_latency_seconds histogram" in m
    # Histogram buckets are cumulative and end in +Inf == _count.
    assert metric_value(m, "f5rt_request_latency_seconds_bucket", route="/api/tts", le="+Inf") == 1


def test_overload_answers_503_with_retry_after(synth: Synthesizer, voices: Path) -> None:
    with serving(synth, voices, Limits(queue_size=1)) as (client, app):
        app.state.batcher.pause()
        out: dict[str, Any] = {}
        t = threading.Thread(target=lambda: out.update(tts(client, text="Hi.", seed=1)))
        t.start()
        wait_until(lambda: app.state.batcher.inflight == 1, "the first request to be admitted")
        r = client.post("/api/tts", json={"text": "Hi.", "nfe_step": NFE})
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert int(r.headers["retry-after"]) >= 1
        app.state.batcher.resume()
        t.join(WAIT_S)
        assert out["waveform_len"] > 0
        assert tts(client, text="Hi.", seed=1)["audio_base64"] == out["audio_base64"]


def test_request_timeout_answers_504_and_skips_the_work(synth: Synthesizer, voices: Path) -> None:
    spy = Spy(synth)
    with serving(spy, voices, Limits(request_timeout_s=0.3)) as (client, app):
        app.state.batcher.pause()
        r = client.post("/api/tts", json={"text": "Too late.", "nfe_step": NFE})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        app.state.batcher.resume()
        app.state.batcher.call(lambda: None).result(WAIT_S)  # the worker has gone past the expired request
        assert client.get("/api/health").status_code == 200
    assert spy.texts == []


# ---------------------------------------------------------------------------------------------
# client disconnects (real sockets)
# ---------------------------------------------------------------------------------------------


def test_disconnect_cancels_queued_and_streaming_work(synth: Synthesizer, voices: Path) -> None:
    spy = Spy(synth)
    app = create_app(spy, VoiceStore(voices), Limits(first_chunk_chars=12), default_voice="quick", defaults=FAST)
    metrics = app.state.metrics
    chunks = synth.engine.plan_request(
        TWO_CHUNKS, VoiceStore(voices).get("quick"), SynthesisOptions(nfe=NFE), 12
    ).chunks
    assert len(chunks) == 2
    with live_server(app) as url:
        # /api/tts: the client gives up while its request is queued; the worker must never run it.
        app.state.batcher.pause()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/api/tts", json={"text": "Nobody listens.", "nfe_step": NFE}, timeout=0.5)
        wait_until(lambda: metrics.requests.value(route="/api/tts", status="499") == 1, "the server to notice")
        app.state.batcher.resume()
        assert httpx.post(f"{url}/api/tts", json={"text": "Hi.", "nfe_step": NFE}, timeout=WAIT_S).status_code == 200
        assert spy.texts == ["Hi."]

        # A stream: read the first piece, hang up; its queued second chunk must be dropped unrun.
        spy.after_run = app.state.batcher.pause  # hold the worker once the first piece is computed
        body = {"model": "f5-tts", "input": TWO_CHUNKS, "voice": "quick", "seed": 2, "response_format": "pcm"}
        with httpx.Client(timeout=WAIT_S) as c, c.stream("POST", f"{url}/v1/audio/speech", json=body) as r:
            assert r.status_code == 200
            # Hold the iterator: a discarded one is closed whenever the garbage collector gets to it,
            # and httpx then hangs up, which the server rightly treats as the client going away.
            raw = r.iter_raw()
            assert next(raw)  # first audio arrives while the second chunk is queued
            wait_until(
                lambda: app.state.batcher.queue_depth == 1,
                f"the second chunk to wait in the queue (engine calls so far: {spy.texts}, {spy.batches})",
            )
        wait_until(lambda: metrics.requests.value(route="/v1/audio/speech", status="499") == 1, "the server to notice")
        wait_until(lambda: app.state.batcher.queue_depth == 0, "the stream's queued row to be dropped")
        app.state.batcher.resume()
        assert httpx.post(f"{url}/api/tts", json={"text": "Bye.", "nfe_step": NFE}, timeout=WAIT_S).status_code == 200
        assert spy.texts == ["Hi.", chunks[0], "Bye."]  # the second chunk never ran
        assert httpx.get(f"{url}/api/health", timeout=WAIT_S).status_code == 200
        assert app.state.batcher.inflight == 0


def test_truncated_upload_on_a_real_socket_writes_nothing(synth: Synthesizer, voices: Path) -> None:
    app = create_app(synth, VoiceStore(voices), Limits(), default_voice="quick", defaults=FAST)
    before = sorted(p.relative_to(voices.parent) for p in voices.parent.rglob("*"))
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        payload = (
            b'--XyZ\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
            + wav_of(speechlike(1.0, SR, 1))[:3000]
        )
        head = (
            "POST /api/voices/eve HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
            f"Content-Length: {len(payload) + 50_000}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head + payload)
        wait_until(
            lambda: app.state.metrics.requests.value(route="/api/voices/{voice_id}", status="400") == 1, "the refusal"
        )
        assert httpx.get(f"{url}/api/health", timeout=WAIT_S).status_code == 200
    after = sorted(p.relative_to(voices.parent) for p in voices.parent.rglob("*") if ".cache" not in p.parts)
    assert after == [p for p in before if ".cache" not in p.parts]


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


def test_limits_load_from_json_and_refuse_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    path.write_text(json.dumps({"max_text_chars": 100, "speed_range": [0.5, 2.0], "batch_window_ms": 0}))
    limits = Limits.from_json(path)
    assert limits.max_text_chars == 100 and limits.speed_range == (0.5, 2.0) and not limits.batching
    assert limits.queue_size == Limits().queue_size and Limits().batching
    bad_cases = [
        {"max_text_char": 100},  # typo: must not silently keep the default
        {"speed_range": [2.0, 1.0]},
        {"speed_range": [0.5]},
        {"nfe_range": [1.5, 8]},
        {"queue_size": 0},
        {"max_batch": True},
        {"request_timeout_s": 0},
        {"batch_window_ms": -1},
        {"max_body_bytes": "big"},
    ]
    for bad in bad_cases:
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError):
            Limits.from_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="object"):
        Limits.from_json(path)


def test_cli_serve_arguments_parse() -> None:
    """`f5rt serve` shares the CLI's engine options with the server's own (no argparse conflicts)."""
    from f5rt.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--artifacts", "a", "--voices", "v", "--port", "9000", "--batch-window-ms", "0", "--nfe", "16"]
    )
    assert (args.port, args.batch_window_ms, args.nfe, args.backend, args.host) == (9000, 0.0, 16, "auto", "127.0.0.1")


def test_serve_request_defaults_take_nfe_and_cfg_and_refuse_what_no_request_may_ask():
    """--nfe and --cfg set what a request without nfe_step / cfg_strength gets (a model's chat-reader default),
    checked by the same bounds as a request's own values."""
    from f5rt.cli import build_parser
    from f5rt.server.cli import request_defaults

    base = ["serve", "--artifacts", "a", "--voices", "v"]
    assert request_defaults(build_parser().parse_args(base)) == SynthesisOptions()
    chosen = request_defaults(build_parser().parse_args([*base, "--nfe", "7", "--cfg", "1"]))
    assert (chosen.nfe, chosen.cfg, chosen.sway) == (7, 1.0, SynthesisOptions().sway)
    for flag, value in (("--cfg", "-1"), ("--cfg", "50"), ("--nfe", "0")):
        with pytest.raises(ValueError, match=flag.lstrip("-")):
            request_defaults(build_parser().parse_args([*base, flag, value]))
