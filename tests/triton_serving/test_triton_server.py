"""The Triton model repository on a real tritonserver: health, metadata, HTTP/gRPC inference, streaming,
cancellation, concurrency, bad inputs and Triton's own metrics.

The reference for audio is f5rt itself, on the engine variant the repository serves: `f5rt synth`
(a separate process, the CLI users run) for the one-response model, `Synthesizer.stream` for the
stream model (piece by piece). Equality is within 1 LSB of 16-bit PCM.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (`nox -s triton` installs it)")
pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (`nox -s triton` installs it)")

import soundfile as sf
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from tritonkit import SR, config_parameter, infer_inputs, metric, pcm16, request_arrays

WAIT_S = 60.0  # bound for conditions waited on (never asserted as timing)
LONG_TEXT = (
    "This is the first sentence of a longer message. Then a second one follows it, with some more words, "
    "and a third sentence closes the stream after a short pause."
)


@pytest.fixture
def http(server: Any) -> Any:
    c = httpclient.InferenceServerClient(server.http_url, connection_timeout=120, network_timeout=120)
    yield c
    c.close()


@pytest.fixture
def grpc(server: Any) -> Any:
    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


def http_infer(client: Any, **kw: Any) -> np.ndarray:
    r = client.infer("f5tts", infer_inputs(httpclient, request_arrays(**kw)))
    assert r.as_numpy("sample_rate").tolist() == [[SR]]
    audio = r.as_numpy("audio")
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[0] == 1
    return audio[0]


def grpc_infer(client: Any, **kw: Any) -> np.ndarray:
    r = client.infer("f5tts", infer_inputs(grpcclient, request_arrays(**kw)), client_timeout=120)
    return r.as_numpy("audio")[0]


def f5rt_synth(artifacts: Path, voices: Path, tmp_path: Path, text: str, seed: int, nfe: int) -> np.ndarray:
    """`f5rt synth` in its own process, as a user runs it; returns the int16 samples it wrote."""
    out = tmp_path / f"synth_{seed}_{nfe}.wav"
    cli = Path(sys.executable).with_name("f5rt")
    cmd = [
        str(cli),
        "synth",
        "--artifacts",
        str(artifacts),
        "--backend",
        "onnxruntime",
        "--voice",
        str(voices / "alice"),
    ]
    cmd += ["--text", text, "--seed", str(seed), "--nfe", str(nfe), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    data, sr = sf.read(out, dtype="int16")
    assert sr == SR
    return data


def assert_within_lsb(got: np.ndarray, want_pcm: np.ndarray) -> None:
    mine = pcm16(got)
    assert mine.shape == want_pcm.shape
    diff = np.abs(mine.astype(np.int32) - want_pcm.astype(np.int32))
    assert diff.max() <= 1, f"{int((diff > 1).sum())} samples differ by more than 1 LSB (max {diff.max()})"
    assert np.abs(want_pcm).max() > 100  # real audio, not silence equal to silence


class Stream:
    """One gRPC stream on f5tts_stream: responses collected until the final flag (or an error)."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.events: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.events.put((result, error)))

    def send(self, **kw: Any) -> None:
        inputs = infer_inputs(grpcclient, request_arrays(**kw))
        self.client.async_stream_infer("f5tts_stream", inputs, enable_empty_final_response=True)

    def next(self) -> tuple[np.ndarray | None, bool, Any]:
        """(audio piece or None, final flag, error) of the next response."""
        result, error = self.events.get(timeout=WAIT_S)
        if error is not None:
            return None, True, error
        final = result.get_response().parameters["triton_final_response"].bool_param
        audio = result.as_numpy("audio")
        return (None if audio is None else audio[0]), final, None

    def collect(self) -> tuple[list[np.ndarray], Any]:
        pieces = []
        while True:
            audio, final, error = self.next()
            if error is not None:
                return pieces, error
            if audio is not None:
                pieces.append(audio)
            if final:
                assert audio is None, "the final response carries no audio"
                return pieces, None

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


# ---------------------------------------------------------------------------------------------
# server, models, metadata
# ---------------------------------------------------------------------------------------------


def test_health_and_metadata(http: Any, grpc: Any) -> None:
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    for model in ("f5tts", "f5tts_stream"):
        assert http.is_model_ready(model) and grpc.is_model_ready(model)
        meta = http.get_model_metadata(model)
        inputs = {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]}
        assert inputs == {
            "text": ("BYTES", [-1, 1]),
            "voice_id": ("BYTES", [-1, 1]),
            "seed": ("INT64", [-1, 1]),
            "nfe_step": ("INT32", [-1, 1]),
            "speed": ("FP32", [-1, 1]),
        }
        outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
        assert outputs == {"audio": ("FP32", [-1, -1]), "sample_rate": ("INT32", [-1, 1])}
        config = http.get_model_config(model)
        assert config["backend"] == "python"
        assert config["instance_group"][0]["kind"] == "KIND_CPU"  # no TensorRT engines on this machine
        assert config["parameters"]["backend"]["string_value"] == "onnxruntime"
        optional = {i["name"]: i.get("optional", False) for i in config["input"]}
        assert optional == {"text": False, "voice_id": False, "seed": True, "nfe_step": True, "speed": True}
    assert http.get_model_config("f5tts_stream")["model_transaction_policy"]["decoupled"] is True
    assert not http.get_model_config("f5tts").get("model_transaction_policy", {}).get("decoupled", False)
    # CPU instances run one request per call (batching does not pay on ONNX Runtime: README)
    delay = http.get_model_config("f5tts").get("dynamic_batching", {}).get("max_queue_delay_microseconds", 0)
    assert int(delay) == 0


# ---------------------------------------------------------------------------------------------
# audio equals f5rt
# ---------------------------------------------------------------------------------------------


def test_http_audio_equals_f5rt_synth(http: Any, artifacts: Path, voices: Path, tmp_path: Path) -> None:
    text = "Hello world, a test of the server."
    want = f5rt_synth(artifacts, voices, tmp_path, text, seed=7, nfe=8)
    assert_within_lsb(http_infer(http, text=text, seed=7, nfe=8), want)


def test_grpc_audio_equals_http_and_f5rt_synth(
    http: Any, grpc: Any, artifacts: Path, voices: Path, tmp_path: Path
) -> None:
    text = "Another sentence, over gRPC."
    want = f5rt_synth(artifacts, voices, tmp_path, text, seed=11, nfe=6)
    got = grpc_infer(grpc, text=text, seed=11, nfe=6)
    assert_within_lsb(got, want)
    np.testing.assert_array_equal(got, http_infer(http, text=text, seed=11, nfe=6))
    assert not np.array_equal(got, grpc_infer(grpc, text=text, seed=12, nfe=6))  # the seed is used


def test_default_nfe_comes_from_the_config(http: Any, artifacts: Path, voices: Path, tmp_path: Path) -> None:
    nfe = int(config_parameter("f5tts", "default_nfe"))
    want = f5rt_synth(artifacts, voices, tmp_path, "Default steps.", seed=3, nfe=nfe)
    assert_within_lsb(http_infer(http, text="Default steps.", seed=3, nfe=None), want)


def test_stream_sends_the_pieces_synthesizer_stream_yields(server: Any, artifacts: Path, voices: Path) -> None:
    from f5rt.limits import Limits
    from f5rt.synthesizer import SynthesisOptions, Synthesizer
    from f5rt.voices import VoiceStore

    stream = Stream(server.grpc_url)
    try:
        stream.send(text=LONG_TEXT, seed=5, nfe=6)
        pieces, error = stream.collect()
    finally:
        stream.close()
    assert error is None
    assert len(pieces) >= 2, "a multi-chunk text streams more than one piece"
    with Synthesizer(artifacts, backend="onnxruntime", precision=config_parameter("f5tts", "precision")) as synth:
        voice = VoiceStore(voices).get("alice")
        want = list(synth.stream(LONG_TEXT, voice, SynthesisOptions(nfe=6, seed=5), Limits().first_chunk_chars))
    assert [len(p) for p in pieces] == [len(p) for p in want]
    assert_within_lsb(np.concatenate(pieces), pcm16(np.concatenate(want)))


def test_cancelled_stream_stops_its_work_and_the_server_goes_on(server: Any, http: Any) -> None:
    long_text = " ".join([LONG_TEXT] * 6)
    stream = Stream(server.grpc_url)
    stream.send(text=long_text, seed=9, nfe=8)
    audio, final, error = stream.next()
    assert error is None and audio is not None and not final
    stream.close(cancel=True)
    deadline = time.monotonic() + WAIT_S
    while "stream cancelled by the client" not in server.log_tail(200_000):
        assert time.monotonic() < deadline, "the model never saw the cancellation"
        time.sleep(0.1)
    # the instance is free again: a new stream runs to its final response
    again = Stream(server.grpc_url)
    try:
        again.send(text="Short one.", seed=1, nfe=6)
        pieces, error = again.collect()
    finally:
        again.close()
    assert error is None and pieces
    assert http.is_server_live()


# ---------------------------------------------------------------------------------------------
# concurrency
# ---------------------------------------------------------------------------------------------


def test_concurrent_clients_get_their_own_audio(server: Any, http: Any) -> None:
    texts = [f"Concurrent request number {i}, with its own words." for i in range(8)]
    alone = [
        http_infer(http, text=t, seed=100 + i, nfe=6, voice_id=("alice", "bob")[i % 2]) for i, t in enumerate(texts)
    ]

    def one(i: int) -> np.ndarray:
        c = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            return grpc_infer(c, text=texts[i], seed=100 + i, nfe=6, voice_id=("alice", "bob")[i % 2])
        finally:
            c.close()

    with ThreadPoolExecutor(len(texts)) as pool:
        together = list(pool.map(one, range(len(texts))))
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert np.abs(pcm16(a).astype(np.int32) - pcm16(b).astype(np.int32)).max() <= 1, f"request {i} changed"


def test_concurrent_streams_all_complete(server: Any) -> None:
    streams = [Stream(server.grpc_url) for _ in range(4)]
    try:
        for i, s in enumerate(streams):
            s.send(text=LONG_TEXT, seed=i, nfe=6)
        results = [s.collect() for s in streams]
    finally:
        for s in streams:
            s.close()
    assert all(error is None and len(pieces) >= 2 for pieces, error in results)
    assert not np.array_equal(np.concatenate(results[0][0]), np.concatenate(results[1][0]))


# ---------------------------------------------------------------------------------------------
# bad requests: Triton errors with f5rt serve's messages, and the server stays up
# ---------------------------------------------------------------------------------------------


def serve_message(body: dict[str, Any]) -> str:
    """What `POST /api/tts` answers for the equivalent JSON body: its own checks, in its own order."""
    from f5rt.limits import Limits
    from f5rt.service.errors import ServiceError
    from f5rt.service.requests import parse_tts
    from f5rt.synthesizer import SynthesisOptions

    with pytest.raises(ServiceError) as e:
        parse_tts(body, SynthesisOptions(), Limits())
    return e.value.message


TOO_LONG = "a" * 4097  # Limits().max_text_chars is 4096
# (name, tensor changes, /api/tts body changes or None, a piece of the expected message)
BAD = [
    ("missing text", {"text": None}, {"text": None}, "field 'text' is required"),
    ("empty text", {"text": "   "}, {"text": "   "}, "'text' is empty"),
    ("text over the limit", {"text": TOO_LONG}, {"text": TOO_LONG}, "'text' has 4097 characters; the limit is"),
    ("unknown voice", {"voice_id": "nobody"}, None, "no voice 'nobody' in"),
    ("invalid voice id", {"voice_id": "../etc"}, {"voice_id": "../etc"}, "voice id must match"),
    ("NaN speed", {"speed": float("nan")}, {"speed": float("nan")}, "'speed' must be a finite number"),
    ("speed out of range", {"speed": 9.0}, {"speed": 9.0}, "speed must be"),
    ("nfe out of range", {"nfe": 2}, {"nfe_step": 2}, "nfe_step must be"),
    ("negative seed", {"seed": -5}, {"seed": -5}, "seed must be -1 or within"),
]


@pytest.mark.parametrize(("name", "changes", "body", "piece"), BAD, ids=[b[0] for b in BAD])
def test_bad_request_is_a_triton_error_with_the_serve_message(
    name: str, changes: dict[str, Any], body: dict[str, Any] | None, piece: str, http: Any, grpc: Any, server: Any
) -> None:
    message = piece
    if body is not None:  # the whole message /api/tts gives for the same request
        full = {"text": "Hello.", "voice_id": "alice", "seed": 1, "nfe_step": 6, **body}
        message = serve_message({k: v for k, v in full.items() if v is not None})  # None: left out
        assert piece in message
    kw: dict[str, Any] = {"seed": 1, "nfe": 6, **changes}
    with pytest.raises(InferenceServerException) as e:
        http_infer(http, **kw)
    assert message in str(e.value), f"{name}: {e.value}"
    with pytest.raises(InferenceServerException) as e:
        grpc_infer(grpc, **kw)
    assert message in e.value.message(), f"{name}: {e.value}"
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    stream = Stream(server.grpc_url)  # the stream model refuses it the same way, as its only response
    try:
        stream.send(**kw)
        pieces, error = stream.collect()
    finally:
        stream.close()
    assert not pieces and error is not None and message in str(error)
    assert http.is_server_live() and http.is_model_ready("f5tts") and http.is_model_ready("f5tts_stream")


def test_missing_voice_id_is_refused(http: Any) -> None:
    """Unlike /api/tts (whose null voice means the default voice), the models need a voice_id."""
    with pytest.raises(InferenceServerException) as e:
        http_infer(http, voice_id=None)
    assert "field 'voice_id' is required" in str(e.value)


def test_bad_request_among_concurrent_ones_fails_alone(server: Any) -> None:
    def one(kw: dict[str, Any]) -> Any:
        c = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            return grpc_infer(c, **kw)
        except InferenceServerException as e:
            return e
        finally:
            c.close()

    kws = [{"text": f"Good request {i}.", "seed": i, "nfe": 6} for i in range(3)] + [{"voice_id": "nobody"}]
    with ThreadPoolExecutor(len(kws)) as pool:
        results = list(pool.map(one, kws))
    assert all(isinstance(r, np.ndarray) and len(r) > 0 for r in results[:3])
    assert isinstance(results[3], InferenceServerException)


# ---------------------------------------------------------------------------------------------
# Triton's own Prometheus metrics
# ---------------------------------------------------------------------------------------------


def scrape(server: Any) -> str:
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def test_prometheus_metrics_count_requests(server: Any, http: Any) -> None:
    """Triton's own counters count every request the model answered. A refusal the model sends is a
    completed request to Triton (it counts as a success, not a failure), and a request Triton's
    front end rejects (an input of the wrong datatype) never reaches the model's counters."""
    labels = {"model": "f5tts", "version": "1"}

    def counts(text: str) -> tuple[float, ...]:
        names = ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count")
        return tuple(metric(text, n, **labels) for n in names)

    before = counts(scrape(server))
    settle = time.monotonic() + WAIT_S
    while time.monotonic() < settle:  # earlier tests' requests still finishing must not count here
        time.sleep(1.0)
        now = counts(scrape(server))
        if now == before:
            break
        before = now
    for i in range(2):
        http_infer(http, text=f"Counted {i}.", seed=i, nfe=6)
    with pytest.raises(InferenceServerException):
        http_infer(http, voice_id="nobody")
    wrong = request_arrays(text="Wrong type.")
    wrong["nfe_step"] = wrong["nfe_step"].astype(np.int64)  # the config says INT32: Triton refuses it before the model
    with pytest.raises(InferenceServerException) as e:
        http.infer("f5tts", infer_inputs(httpclient, wrong))
    assert "nfe_step" in str(e.value)
    deadline = time.monotonic() + WAIT_S
    while True:
        text = scrape(server)
        delta = tuple(a - b for a, b in zip(counts(text), before, strict=True))
        if delta[:2] == (3, 3) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert delta[:2] == (3, 3), delta
    assert 1 <= delta[2] <= 3  # model executions: at most one per request (fewer when batched)
    assert "# TYPE nv_inference_queue_duration_us counter" in text
