"""The Triton repository writer, its parameters, request checks and both models, without a server.

The models run here against a stand-in for `triton_python_backend_utils` (the module exists only
inside Triton's stub process): requests in, responses out, exactly as the stub would call them.
tests/triton_serving/ runs the same code on a real tritonserver (`nox -s triton`).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from f5rt.errors import ManifestError
from f5rt.limits import Limits
from f5rt.manifest import load_manifest, update_manifest
from f5rt.service.errors import ServiceError
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.triton.params import ModelParams, ParameterError
from f5rt.triton.repository import RepositoryOptions, choose_placement, write_repository
from f5rt.triton.requests import parse_request
from f5rt.voices import VoiceStore

WAIT_S = 30.0


def parameters(config_text: str) -> dict[str, str]:
    return dict(re.findall(r'key: "([^"]+)" value: \{ string_value: "([^"]*)" \}', config_text))


@pytest.fixture(scope="module")
def repo(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    art = tmp_path_factory.mktemp("triton_art") / "tiny"
    shutil.copytree(tiny_artifacts, art)
    write_repository(art, art / "triton")
    return art / "triton"


# ---------------------------------------------------------------------------------------------
# repository and parameters
# ---------------------------------------------------------------------------------------------


def test_repository_layout_and_configs(repo: Path) -> None:
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    assert files == ["f5tts/1/model.py", "f5tts/config.pbtxt", "f5tts_stream/1/model.py", "f5tts_stream/config.pbtxt"]
    batch = (repo / "f5tts" / "config.pbtxt").read_text()
    stream = (repo / "f5tts_stream" / "config.pbtxt").read_text()
    for text in (batch, stream):
        assert 'backend: "python"' in text and "max_batch_size: 4" in text  # the bucket table's largest batch
        assert "kind: KIND_CPU count: 1" in text
        assert '{ name: "text" data_type: TYPE_STRING dims: [ 1 ] }' in text
        assert '{ name: "seed" data_type: TYPE_INT64 dims: [ 1 ] optional: true }' in text
        assert '{ name: "nfe_step" data_type: TYPE_INT32 dims: [ 1 ] optional: true }' in text
        assert '{ name: "speed" data_type: TYPE_FP32 dims: [ 1 ] optional: true }' in text
        assert '{ name: "audio" data_type: TYPE_FP32 dims: [ -1 ] }' in text
        assert '{ name: "sample_rate" data_type: TYPE_INT32 dims: [ 1 ] }' in text
        assert parameters(text)["backend"] == "onnxruntime"
    assert "decoupled: true" in stream and "decoupled" not in batch
    assert "dynamic_batching" not in batch  # CPU instances: batching does not pay on ONNX Runtime (README)
    assert "SynthesisModel as TritonPythonModel" in (repo / "f5tts" / "1" / "model.py").read_text()
    assert "StreamingModel as TritonPythonModel" in (repo / "f5tts_stream" / "1" / "model.py").read_text()


def test_parameters_resolve_relative_to_the_repository(repo: Path) -> None:
    params = ModelParams.from_strings(parameters((repo / "f5tts" / "config.pbtxt").read_text()), repo)
    assert params.artifacts == repo.parent.resolve()
    assert params.voices == (repo.parent / "voices").resolve()
    assert (params.backend, params.precision, params.default_nfe, params.default_cfg) == ("onnxruntime", "fp32", 32, 2)
    moved = repo.parent.parent / "moved"  # the artifacts folder moves as a whole
    shutil.copytree(repo.parent, moved)
    again = ModelParams.from_strings(
        parameters((moved / "triton" / "f5tts" / "config.pbtxt").read_text()), moved / "triton"
    )
    assert again.artifacts == moved.resolve()


def test_bad_parameters_fail_the_load_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="unknown config parameter"):
        ModelParams.from_strings({"voice": "x"}, tmp_path)
    with pytest.raises(ParameterError, match="'default_nfe' 2 is outside the limits' nfe_range"):
        ModelParams.from_strings({"default_nfe": "2"}, tmp_path)
    with pytest.raises(ParameterError, match=r"'default_cfg' 11 is outside the limits' cfg_range \[0, 10\]"):
        ModelParams.from_strings({"default_cfg": "11"}, tmp_path)
    with pytest.raises(ParameterError, match="'default_cfg' must be a number"):
        ModelParams.from_strings({"default_cfg": "strong"}, tmp_path)
    with pytest.raises(ParameterError, match="'default_cfg' nan is outside the limits' cfg_range"):
        ModelParams.from_strings({"default_cfg": "nan"}, tmp_path)
    with pytest.raises(ParameterError, match="'backend' must be one of"):
        ModelParams.from_strings({"backend": "cuda"}, tmp_path)
    with pytest.raises(ParameterError, match="'threads' must be an integer"):
        ModelParams.from_strings({"threads": "two"}, tmp_path)
    assert ModelParams.from_strings({"voices": "/srv/voices"}, tmp_path).voices == Path("/srv/voices")


def test_placement_follows_the_built_deployments(tiny_artifacts: Path, tmp_path: Path) -> None:
    art = tmp_path / "tiny"
    shutil.copytree(tiny_artifacts, art)
    cpu = choose_placement(load_manifest(art), None)
    assert (cpu.kind, cpu.backend, cpu.precision) == ("KIND_CPU", "onnxruntime", "fp32")
    with pytest.raises(ManifestError, match="neither built engines"):
        choose_placement(load_manifest(art), "int4")
    deployment = {"text_encoder": "fp32", "step": "int8", "vocoder": "fp16"}
    update_manifest(art, lambda d: d.setdefault("deployments", {}).__setitem__("int8", deployment))
    gpu = choose_placement(load_manifest(art), None)
    assert (gpu.kind, gpu.backend, gpu.precision) == ("KIND_GPU", "tensorrt", "int8")
    write_repository(art, art / "triton", RepositoryOptions(instances=2))
    text = (art / "triton" / "f5tts" / "config.pbtxt").read_text()
    assert "kind: KIND_GPU count: 2" in text and parameters(text)["backend"] == "tensorrt"
    assert "dynamic_batching { max_queue_delay_microseconds: 50000 }" in text  # GPU: Triton's batcher
    write_repository(art, art / "triton", RepositoryOptions(queue_delay_us=0))
    assert "dynamic_batching" not in (art / "triton" / "f5tts" / "config.pbtxt").read_text()


def test_build_stage_records_every_file_in_the_manifest(tiny_artifacts: Path, tmp_path: Path) -> None:
    main = pytest.importorskip("f5build.cli", reason="the build stage needs f5build (not in the runtime-only env)").main

    shutil.copytree(tiny_artifacts, tmp_path / "tiny")
    argv = ["--triton-instances", "2", "--triton-nfe", "16", "--triton-cfg", "1.5"]
    assert main(["triton", "--artifacts-root", str(tmp_path), *argv]) == 0
    m = load_manifest(tmp_path / "tiny")
    rels = [r for r, meta in m.files.items() if meta.get("stage") == "triton"]
    assert sorted(rels) == sorted(m.data["stages"]["triton"]["files"]) and len(rels) == 4
    for rel in rels:
        m.verify(rel)  # hash recorded matches the file written
    text = (tmp_path / "tiny" / "triton" / "f5tts" / "config.pbtxt").read_text()
    assert "count: 2" in text and parameters(text)["default_nfe"] == "16"
    assert ModelParams.from_strings(parameters(text), tmp_path / "tiny" / "triton").default_cfg == 1.5


# ---------------------------------------------------------------------------------------------
# request checks: f5rt serve's messages
# ---------------------------------------------------------------------------------------------


def arrays(**kw: Any) -> dict[str, np.ndarray | None]:
    base: dict[str, Any] = {"text": "Hello there.", "voice_id": "alice", "seed": 3, "nfe": 6, "speed": None}
    base.update(kw)
    out: dict[str, np.ndarray | None] = {}
    for key, value in base.items():
        name = "nfe_step" if key == "nfe" else key  # the tensor is named as /api/tts names the field
        if value is None:
            out[name] = None
        elif isinstance(value, np.ndarray):
            out[name] = value
        elif name in ("text", "voice_id"):
            out[name] = np.array([[value.encode() if isinstance(value, str) else value]], dtype=object)
        else:
            dtype = {"seed": np.int64, "nfe_step": np.int32, "speed": np.float32}[name]
            out[name] = np.array([[value]], dtype=dtype)
    return out


def test_parse_request_checks_like_the_http_server(voices_dir: Path) -> None:
    store, defaults, limits = VoiceStore(voices_dir), SynthesisOptions(nfe=32), Limits()
    job = parse_request(arrays(), store, defaults, limits)
    assert (job.text, job.voice_id, job.options.nfe, job.options.seed) == ("Hello there.", "alice", 6, 3)
    assert parse_request(arrays(nfe=None, seed=None), store, defaults, limits).options.nfe == 32
    cases = [
        (arrays(text=None), "field 'text' is required"),
        (arrays(text="  "), "'text' is empty"),
        (arrays(text="a" * 4097), "'text' has 4097 characters; the limit is 4096"),
        (arrays(voice_id="nobody"), "no voice 'nobody' in"),
        (arrays(voice_id="../x"), "voice id must match"),
        (arrays(speed=float("nan")), "field 'speed' must be a finite number"),
        (arrays(nfe=2), "nfe_step must be"),
        (arrays(text=b"\xff\xfe"), "input 'text' is not valid UTF-8 (byte 0)"),
        (arrays(text=np.array([[b"a"], [b"b"]], dtype=object)), "must hold exactly one element"),
    ]
    for inputs, message in cases:
        with pytest.raises(ServiceError) as e:
            parse_request(inputs, store, defaults, limits)
        assert message in str(e.value)


# ---------------------------------------------------------------------------------------------
# the models, over a stand-in for triton_python_backend_utils
# ---------------------------------------------------------------------------------------------


class FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self._array = name, np.asarray(array)

    def as_numpy(self) -> np.ndarray:
        return self._array


class FakeError:
    INVALID_ARG, INTERNAL, UNAVAILABLE, CANCELLED = "INVALID_ARG", "INTERNAL", "UNAVAILABLE", "CANCELLED"

    def __init__(self, message: str, code: str | None = None) -> None:
        self.msg, self.code = message, code

    def message(self) -> str:
        return self.msg


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor] | None = None, error: FakeError | None = None) -> None:
        self.outputs = {t.name: t.as_numpy() for t in output_tensors or []}
        self.error = error


class FakeSender:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.responses: list[tuple[FakeResponse | None, int]] = []
        self.cancel_after = cancel_after
        self.done = threading.Event()

    def send(self, response: FakeResponse | None = None, flags: int = 0) -> None:
        assert not self.done.is_set(), "nothing may follow the final response"
        self.responses.append((response, flags))
        if flags == 1:
            self.done.set()

    def is_cancelled(self) -> bool:
        sent = sum(1 for r, _ in self.responses if r is not None)
        return self.cancel_after is not None and sent >= self.cancel_after


class FakeRequest:
    def __init__(self, inputs: dict[str, np.ndarray | None], sender: FakeSender | None = None) -> None:
        self.inputs = {k: v for k, v in inputs.items() if v is not None}
        self.sender = sender or FakeSender()

    def is_cancelled(self) -> bool:
        return False

    def get_response_sender(self) -> FakeSender:
        return self.sender


@pytest.fixture
def pb_utils(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = types.ModuleType("triton_python_backend_utils")
    mod.Tensor = FakeTensor
    mod.TritonError = FakeError
    mod.InferenceResponse = FakeResponse
    mod.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    mod.get_input_tensor_by_name = lambda r, n: FakeTensor(n, r.inputs[n]) if n in r.inputs else None
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", mod)
    return mod


def model_args(repo: Path, voices: Path, model: str) -> dict[str, str]:
    params = {k: {"string_value": v} for k, v in parameters((repo / model / "config.pbtxt").read_text()).items()}
    params["voices"] = {"string_value": str(voices)}
    params["threads"] = {"string_value": "1"}
    config = {"name": model, "max_batch_size": 4, "parameters": params}
    return {
        "model_config": json.dumps(config),
        "model_repository": str(repo / model),
        "model_instance_kind": "CPU",
        "model_instance_name": f"{model}_0",
    }


@pytest.fixture(scope="module")
def reference(tiny_artifacts: Path) -> Iterator[Synthesizer]:
    with Synthesizer(tiny_artifacts, backend="onnxruntime", threads=1) as s:
        yield s


def test_batch_model_answers_each_request_and_isolates_bad_ones(
    pb_utils: Any, repo: Path, voices_dir: Path, reference: Synthesizer
) -> None:
    from f5rt.triton.model import SynthesisModel

    model = SynthesisModel()
    model.initialize(model_args(repo, voices_dir, "f5tts"))
    try:
        good = [arrays(text="First request.", seed=1), arrays(text="Second one.", seed=2, voice_id="bob")]
        requests = [FakeRequest(good[0]), FakeRequest(arrays(speed=float("nan"))), FakeRequest(good[1])]
        responses = model.execute(requests)
    finally:
        model.finalize()
    assert len(responses) == 3
    bad = responses[1]
    assert bad.error is not None and bad.error.code == "INVALID_ARG"
    assert bad.error.message() == "field 'speed' must be a finite number"
    voices = VoiceStore(voices_dir)
    for resp, (text, vid, seed) in zip(
        (responses[0], responses[2]), (("First request.", "alice", 1), ("Second one.", "bob", 2)), strict=True
    ):
        assert resp.error is None
        assert resp.outputs["sample_rate"].tolist() == [[24000]]
        want = reference.synthesize(text, voices.get(vid), SynthesisOptions(nfe=6, seed=seed)).audio
        np.testing.assert_allclose(resp.outputs["audio"][0], want, atol=1e-5)


def test_a_request_without_cfg_takes_the_configs_default_cfg(
    pb_utils: Any, repo: Path, voices_dir: Path, reference: Synthesizer
) -> None:
    """`default_cfg` in config.pbtxt is what a request that sends no `cfg_strength` is sampled with."""
    from f5rt.triton.model import SynthesisModel

    args = model_args(repo, voices_dir, "f5tts")
    config = json.loads(args["model_config"])
    config["parameters"]["default_cfg"] = {"string_value": "0.5"}
    model = SynthesisModel()
    model.initialize({**args, "model_config": json.dumps(config)})
    try:
        (resp,) = model.execute([FakeRequest(arrays(text="Less guidance.", seed=7))])
    finally:
        model.finalize()
    assert resp.error is None
    voice = VoiceStore(voices_dir).get("alice")
    want = reference.synthesize("Less guidance.", voice, SynthesisOptions(nfe=6, cfg=0.5, seed=7)).audio
    np.testing.assert_allclose(resp.outputs["audio"][0], want, atol=1e-5)
    default = reference.synthesize("Less guidance.", voice, SynthesisOptions(nfe=6, seed=7)).audio
    assert not np.allclose(want, default, atol=1e-5)  # the strength changes the audio: the check above bites


def wait(sender: FakeSender) -> None:
    assert sender.done.wait(WAIT_S), "the stream never sent its final response"


def test_stream_model_sends_pieces_then_an_empty_final_response(
    pb_utils: Any, repo: Path, voices_dir: Path, reference: Synthesizer
) -> None:
    from f5rt.triton.model import StreamingModel

    text = "This is a first sentence of a longer message. A second sentence follows, and then a third one."
    model = StreamingModel()
    model.initialize(model_args(repo, voices_dir, "f5tts_stream"))
    try:
        ok, bad, cancelled = FakeSender(), FakeSender(), FakeSender(cancel_after=1)
        model.execute(
            [
                FakeRequest(arrays(text=text, seed=4), ok),
                FakeRequest(arrays(voice_id="nobody"), bad),
                FakeRequest(arrays(text=" ".join([text] * 4), seed=5), cancelled),
            ]
        )
        for s in (ok, bad, cancelled):
            wait(s)
    finally:
        model.finalize()
    pieces = [r.outputs["audio"][0] for r, flags in ok.responses if r is not None]
    assert len(pieces) >= 2 and ok.responses[-1] == (None, 1)
    voice = VoiceStore(voices_dir).get("alice")
    want = reference.synthesize(text, voice, SynthesisOptions(nfe=6, seed=4), Limits().first_chunk_chars).audio
    np.testing.assert_allclose(np.concatenate(pieces), want, atol=1e-5)
    assert len(bad.responses) == 1 and bad.responses[0][1] == 1
    assert "no voice 'nobody'" in bad.responses[0][0].error.message()
    audio_sent = [r for r, _ in cancelled.responses if r is not None]
    assert len(audio_sent) == 1, "a cancelled stream sends nothing after the client went away"
    assert cancelled.responses[-1] == (None, 1)
