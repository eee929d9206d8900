"""Hostile and malformed requests to `f5rt serve`: each is a 4xx with a JSON error, the server stays
healthy, and nothing is written anywhere (the voices folder included) unless a request succeeds.

One server (tiny model) answers every case; after each case the test checks /api/health and that the
whole temp tree (voices folder and a sibling folder a traversal would aim at) is byte-for-byte unchanged.
The cases, in order: JSON bodies; voice uploads and deletes; one bounds table (what the API accepts,
the engine runs).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, speechlike

pytest.importorskip("fastapi")

from starlette.testclient import TestClient

from f5rt.limits import Limits
from f5rt.server import create_app
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore

LIMITS = Limits(max_text_chars=500, max_ref_text_chars=200, max_upload_bytes=256 * 1024, max_body_bytes=64 * 1024)
JSON = {"content-type": "application/json"}


def tree(root: Path) -> dict[str, str]:
    """Every file under root with its hash (the voices' mel cache excepted: reads may fill it)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


@pytest.fixture(scope="module")
def env(
    tiny_artifacts: Path, voices_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Path]]:
    root = tmp_path_factory.mktemp("bad_input")
    shutil.copytree(voices_dir, root / "voices", ignore=shutil.ignore_patterns(".cache"))
    (root / "outside").mkdir()
    (root / "outside" / "keep.txt").write_text("must survive", encoding="utf-8")
    synth = Synthesizer(tiny_artifacts, backend="onnxruntime", threads=1)
    app = create_app(
        synth, VoiceStore(root / "voices"), LIMITS, default_voice="alice", defaults=SynthesisOptions(nfe=4)
    )
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while not app.state.batcher.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.get("/api/health").status_code == 200
        yield client, root
    synth.close()


@pytest.fixture
def client(env: tuple[TestClient, Path]) -> Iterator[TestClient]:
    """The shared client; after the test: still healthy, and the file tree untouched."""
    c, root = env
    before = tree(root)
    yield c
    assert c.get("/api/health").status_code == 200
    assert tree(root) == before, "a refused request changed files"
    assert not list(root.rglob("*.tmp")), "a temp file was left behind"


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]


RAW_CASES = [
    ("empty", b"", 400, "invalid_json"),
    ("truncated_json", b'{"text": "hi"', 400, "invalid_json"),
    ("duplicate_key", b'{"text": "a", "text": "b"}', 400, "duplicate_key"),
    ("nested_duplicate", b'{"text": "a", "voice_id": {"x": 1, "x": 2}}', 400, "duplicate_key"),
    ("nan", b'{"text": "hi", "speed": NaN}', 400, "non_finite_number"),
    ("infinity", b'{"text": "hi", "speed": Infinity}', 400, "non_finite_number"),
    ("minus_infinity", b'{"text": "hi", "cfg_strength": -Infinity}', 400, "non_finite_number"),
    ("overflow_to_inf", b'{"text": "hi", "speed": 1e400}', 400, "non_finite_number"),
    ("array", b'["text"]', 400, "not_an_object"),
    ("string", b'"text"', 400, "not_an_object"),
    ("null", b"null", 400, "not_an_object"),
    ("number", b"42", 400, "not_an_object"),
    ("invalid_utf8", b'{"text": "\xff\xfe"}', 400, "invalid_utf8"),
    ("overlong_utf8", b'{"text": "\xc0\xaf"}', 400, "invalid_utf8"),
    ("utf8_surrogate", b'{"text": "\xed\xa0\x80"}', 400, "invalid_utf8"),
    ("bom", b'\xef\xbb\xbf{"text": "hi"}', 400, "invalid_json"),
    ("lone_surrogate_escape", b'{"text": "hi \\ud800"}', 400, "invalid_text"),
    ("nul", b'{"text": "hi\\u0000there"}', 400, "invalid_text"),
    ("escape_char", b'{"text": "\\u001b[31mred"}', 400, "invalid_text"),
    ("del", b'{"text": "hi\\u007f"}', 400, "invalid_text"),
    ("c1_control", b'{"text": "hi\\u0085"}', 400, "invalid_text"),
    ("huge_int_literal", b'{"text": "hi", "seed": ' + b"9" * 5000 + b"}", 400, "invalid_json"),
    ("deep_nesting", b'{"text": "hi", "voice_id": ' + b"[" * 30000 + b"]" * 30000 + b"}", 400, "invalid_json"),
    ("one_megabyte_text", b'{"text": "' + b"a" * 1_000_000 + b'"}', 413, "body_too_large"),
]


@pytest.mark.parametrize(("body", "status", "code"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
@pytest.mark.parametrize("path", ["/api/tts", "/v1/audio/speech"])
def test_malformed_json_is_refused(client: TestClient, path: str, body: bytes, status: int, code: str) -> None:
    if path == "/v1/audio/speech":  # the same defect in a body that is otherwise complete (model, voice, input)
        body = body.replace(b'{"text"', b'{"model": "tts-1", "voice": "alice", "input"', 1)
        body = body.replace(b'"text"', b'"input"').replace(b'"voice_id"', b'"voice"')
        body = body.replace(b'"cfg_strength"', b'"speed"')
    assert_error(client.post(path, content=body, headers=JSON), status, code)


FIELD_CASES = [
    ("missing_text", {}, 400, "missing_field"),
    ("unknown_field", {"text": "hi", "foo": 1}, 400, "unknown_field"),
    ("case_variant_field", {"text": "hi", "Text": "hi"}, 400, "unknown_field"),
    ("text_number", {"text": 5}, 400, "invalid_type"),
    ("text_null", {"text": None}, 400, "invalid_type"),
    ("text_list", {"text": ["hi"]}, 400, "invalid_type"),
    ("speed_string", {"text": "hi", "speed": "1"}, 400, "invalid_type"),
    ("speed_bool", {"text": "hi", "speed": True}, 400, "invalid_type"),
    ("nfe_float", {"text": "hi", "nfe_step": 8.0}, 400, "invalid_type"),
    ("nfe_string", {"text": "hi", "nfe_step": "8"}, 400, "invalid_type"),
    ("nfe_bool", {"text": "hi", "nfe_step": True}, 400, "invalid_type"),
    ("nfe_null", {"text": "hi", "nfe_step": None}, 400, "invalid_type"),
    ("seed_float", {"text": "hi", "seed": 1.5}, 400, "invalid_type"),
    ("remove_silence_string", {"text": "hi", "remove_silence": "yes"}, 400, "invalid_type"),
    ("remove_silence_int", {"text": "hi", "remove_silence": 1}, 400, "invalid_type"),
    ("voice_id_number", {"text": "hi", "voice_id": 5}, 400, "invalid_type"),
    ("empty_text", {"text": ""}, 400, "invalid_text"),
    ("blank_text", {"text": " \n\t "}, 400, "invalid_text"),
    ("text_too_long", {"text": "a" * 501}, 400, "text_too_long"),
    ("speed_zero", {"text": "hi", "speed": 0}, 400, "out_of_range"),
    ("speed_negative", {"text": "hi", "speed": -1.0}, 400, "out_of_range"),
    ("speed_huge", {"text": "hi", "speed": 100}, 400, "out_of_range"),
    ("nfe_zero", {"text": "hi", "nfe_step": 0}, 400, "out_of_range"),
    ("nfe_huge", {"text": "hi", "nfe_step": 100000}, 400, "out_of_range"),
    ("nfe_bigint", {"text": "hi", "nfe_step": 10**30}, 400, "out_of_range"),
    ("cfg_negative", {"text": "hi", "cfg_strength": -1}, 400, "out_of_range"),
    ("target_rms_zero", {"text": "hi", "target_rms": 0}, 400, "out_of_range"),
    ("cross_fade_negative", {"text": "hi", "cross_fade_duration": -0.1}, 400, "out_of_range"),
    ("sway_huge", {"text": "hi", "sway_sampling_coef": 5}, 400, "out_of_range"),
    ("fix_duration_zero", {"text": "hi", "fix_duration": 0}, 400, "out_of_range"),
    ("fix_duration_huge", {"text": "hi", "fix_duration": 1e6}, 400, "out_of_range"),
    ("seed_negative", {"text": "hi", "seed": -2}, 400, "out_of_range"),
    ("seed_too_big", {"text": "hi", "seed": 2**64}, 400, "out_of_range"),
    ("voice_traversal", {"text": "hi", "voice_id": "../outside"}, 400, "invalid_voice_id"),
    ("voice_absolute", {"text": "hi", "voice_id": "/etc/passwd"}, 400, "invalid_voice_id"),
    ("voice_empty", {"text": "hi", "voice_id": ""}, 400, "invalid_voice_id"),
    ("voice_too_long", {"text": "hi", "voice_id": "a" * 65}, 400, "invalid_voice_id"),
    ("voice_cache_dir", {"text": "hi", "voice_id": ".cache"}, 400, "invalid_voice_id"),
    ("voice_unknown", {"text": "hi", "voice_id": "nobody"}, 404, "voice_not_found"),
]


@pytest.mark.parametrize(("body", "status", "code"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_bad_tts_fields_are_refused(client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    assert_error(client.post("/api/tts", content=json.dumps(body).encode(), headers=JSON), status, code)


def _speech(**fields: Any) -> dict[str, Any]:
    """A valid OpenAI body (model, input, voice) with `fields` changed; a None value drops the field."""
    body = {"model": "tts-1", "input": "hi", "voice": "alice", **fields}
    return {k: v for k, v in body.items() if v is not None}


SPEECH_CASES = [
    ("missing_input", _speech(input=None), 400, "missing_field"),
    ("missing_model", _speech(model=None), 400, "missing_field"),  # OpenAI requires model, input, voice
    ("missing_voice", _speech(voice=None), 400, "missing_field"),
    ("unknown_field", {"input": "hi", "stream": True}, 400, "unknown_field"),
    ("unknown_format", _speech(response_format="wma"), 400, "unsupported_format"),
    ("format_case", _speech(response_format="MP3"), 400, "unsupported_format"),
    ("bad_stream_format", _speech(stream_format="chunked"), 400, "invalid_value"),
    ("voice_list", _speech(voice=["alice"]), 400, "invalid_type"),
    ("voice_object_number", _speech(voice={"id": 5}), 400, "invalid_type"),
    ("voice_object_extra", _speech(voice={"id": "alice", "name": "x"}), 400, "unknown_field"),
    ("voice_traversal", _speech(voice="../../outside"), 400, "invalid_voice_id"),
    ("voice_unknown", _speech(voice="alloy"), 404, "voice_not_found"),
    ("model_number", _speech(model=5), 400, "invalid_type"),
    ("model_list", _speech(model=["tts-1"]), 400, "invalid_type"),
    ("speed_too_slow", _speech(speed=0.1), 400, "out_of_range"),
    ("input_control", _speech(input="hi\u0007"), 400, "invalid_text"),
    ("input_too_long", _speech(input="b" * 501), 400, "text_too_long"),
]


@pytest.mark.parametrize(("body", "status", "code"), [c[1:] for c in SPEECH_CASES], ids=[c[0] for c in SPEECH_CASES])
def test_bad_speech_fields_are_refused(client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    assert_error(client.post("/v1/audio/speech", content=json.dumps(body).encode(), headers=JSON), status, code)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 415, "unsupported_media_type"),
        ({"content-type": "text/plain"}, 415, "unsupported_media_type"),
        ({"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        ({"content-type": "application/json; charset=latin-1"}, 415, "unsupported_media_type"),
        ({"content-type": "application/json", "content-length": "500"}, 400, "truncated_body"),
        ({"content-type": "application/json", "content-length": "lots"}, 400, "invalid_content_length"),
    ],
    ids=["none", "text_plain", "form", "latin1", "short_body", "bad_length"],
)
def test_wrong_content_type_or_length(client: TestClient, headers: dict[str, str], status: int, code: str) -> None:
    assert_error(client.post("/api/tts", content=b'{"text": "hi"}', headers=headers), status, code)


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    assert_error(client.get("/api/nothing"), 404, "not_found")
    assert_error(client.get("/api/tts"), 405, "method_not_allowed")
    assert_error(client.put("/v1/audio/speech", json={"input": "hi"}), 405, "method_not_allowed")
    assert_error(client.delete("/api/voices"), 405, "method_not_allowed")


def wav_of(samples: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


GOOD_WAV = wav_of(speechlike(1.0, SR, 7))


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[bytes, dict[str, str]]:
    """A hand-made multipart body: (name, filename or None, data) per part."""
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"content-type": f"multipart/form-data; boundary={boundary}"}


def good_parts(text: bytes = b"One two three.") -> list[tuple[str, str | None, bytes]]:
    return [("audio", "a.wav", GOOD_WAV), ("text", None, text)]


TRAVERSAL_IDS = [
    ("dotdot", "%2E%2E", 400, "invalid_voice_id"),
    ("dot", "%2E", 400, "invalid_voice_id"),
    ("cache_dir", ".cache", 400, "invalid_voice_id"),
    ("encoded_slash", "..%2Foutside", 404, "not_found"),
    ("nested_encoded", "alice%2F..%2F..%2Foutside", 404, "not_found"),
    ("nul", "a%00b", 400, "invalid_voice_id"),
    ("backslash", "..%5Coutside", 400, "invalid_voice_id"),
    ("unicode", "%C3%A9t%C3%A9", 400, "invalid_voice_id"),
    ("too_long", "a" * 65, 400, "invalid_voice_id"),
    ("space", "a%20b", 400, "invalid_voice_id"),
]


@pytest.mark.parametrize(
    ("voice_id", "status", "code"), [c[1:] for c in TRAVERSAL_IDS], ids=[c[0] for c in TRAVERSAL_IDS]
)
def test_traversal_voice_ids_are_refused(client: TestClient, voice_id: str, status: int, code: str) -> None:
    body, headers = multipart(good_parts())
    assert_error(client.post(f"/api/voices/{voice_id}", content=body, headers=headers), status, code)
    assert_error(client.delete(f"/api/voices/{voice_id}"), status, code)


BAD_UPLOADS = [
    ("json_body", b'{"audio": "x"}', JSON, 415, "unsupported_media_type"),
    ("no_boundary", multipart(good_parts())[0], {"content-type": "multipart/form-data"}, 400, "invalid_multipart"),
    ("truncated", multipart(good_parts())[0][:-40], multipart([])[1], 400, "truncated_body"),
    ("cut_in_audio", multipart(good_parts())[0][:2000], multipart([])[1], 400, "truncated_body"),
    ("missing_audio", *multipart([("text", None, b"hi")]), 400, "missing_field"),
    ("missing_text", *multipart([("audio", "a.wav", GOOD_WAV)]), 400, "missing_field"),
    ("audio_not_a_file", *multipart([("audio", None, GOOD_WAV[:100]), ("text", None, b"hi")]), 400, "missing_field"),
    ("extra_field", *multipart([*good_parts(), ("speed", None, b"2")]), 400, "unknown_field"),
    ("duplicate_text", *multipart([*good_parts(), ("text", None, b"again")]), 400, "duplicate_key"),
    ("two_files", *multipart([*good_parts(), ("audio", "b.wav", GOOD_WAV)]), 400, "duplicate_key"),
    (
        "no_disposition",
        b"--b0undary\r\nX-Foo: 1\r\n\r\nhi\r\n--b0undary--\r\n",
        multipart([])[1],
        400,
        "invalid_multipart",
    ),
    ("text_as_file", *multipart([("audio", "a.wav", GOOD_WAV), ("text", "t.txt", b"hi")]), 400, "missing_field"),
    ("empty_audio", *multipart([("audio", "a.wav", b""), ("text", None, b"hi")]), 422, "invalid_audio"),
    (
        "corrupt_audio",
        *multipart([("audio", "a.wav", bytes(range(256)) * 8), ("text", None, b"hi")]),
        422,
        "invalid_audio",
    ),
    (
        "fake_riff",
        *multipart([("audio", "a.wav", b"RIFF\x00\x00\x00\x00WAVEfmt "), ("text", None, b"hi")]),
        422,
        "invalid_audio",
    ),
    (
        "silent_audio",
        *multipart([("audio", "a.wav", wav_of(np.zeros(SR, np.float32))), ("text", None, b"hi")]),
        422,
        "invalid_audio",
    ),
    ("too_large", *multipart([("audio", "a.wav", b"\0" * (300 * 1024)), ("text", None, b"hi")]), 413, "body_too_large"),
    ("empty_transcript", *multipart(good_parts(b"")), 400, "invalid_text"),
    ("control_transcript", *multipart(good_parts(b"hi\x1b[0m")), 400, "invalid_text"),
    ("invalid_utf8_transcript", *multipart(good_parts(b"hi \xff")), 400, "invalid_text"),
    ("long_transcript", *multipart(good_parts(b"a" * 201)), 400, "text_too_long"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"), [c[1:] for c in BAD_UPLOADS], ids=[c[0] for c in BAD_UPLOADS]
)
@pytest.mark.parametrize("voice_id", ["fresh", "alice"], ids=["new", "replace"])
def test_bad_uploads_store_nothing(
    client: TestClient, voice_id: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    """Refused uploads neither create a voice nor damage the one they would have replaced."""
    assert_error(client.post(f"/api/voices/{voice_id}", content=body, headers=headers), status, code)


def test_server_still_works_after_the_abuse(env: tuple[TestClient, Path]) -> None:
    client, root = env
    r = client.post("/api/tts", json={"text": "Still here,\nstill talking.", "seed": 1})
    assert r.status_code == 200 and r.json()["waveform_len"] > 0
    speech = {"model": "tts-1", "input": "Still here.", "voice": "bob", "response_format": "pcm"}
    r = client.post("/v1/audio/speech", json=speech)
    assert r.status_code == 200 and len(r.content) > 0
    assert [v["voice_id"] for v in client.get("/api/voices").json()["voices"]] == ["alice", "bob"]
    assert (root / "outside" / "keep.txt").read_text(encoding="utf-8") == "must survive"
    metrics = client.get("/metrics").text
    assert 'f5rt_requests_total{route="/api/tts",status="400"}' in metrics
    assert 'route="other",status="404"' in metrics  # unknown paths share one label


def test_api_limits_sit_inside_the_engine_bounds() -> None:
    """Every extreme the API accepts builds options the engine validates; limits wider than it are refused."""
    import inspect

    from f5rt.backends.trt.backend import TensorRTBackend
    from f5rt.limits import ENGINE_BOUNDS, NFE_MAX
    from f5rt.service.errors import ServiceError
    from f5rt.service.requests import build_options

    assert inspect.signature(TensorRTBackend.__init__).parameters["nfe_max"].default == NFE_MAX
    assert ENGINE_BOUNDS["nfe"].hi == NFE_MAX == Limits().nfe_range[1]
    limits = Limits()
    field_of = {"speed": "speed_range", "nfe_step": "nfe_range", "cfg_strength": "cfg_range"}
    field_of |= {"sway_sampling_coef": "sway_range", "target_rms": "target_rms_range"}
    field_of |= {"cross_fade_duration": "cross_fade_range"}
    for end in (0, 1):
        fields = {f: getattr(limits, r)[end] for f, r in field_of.items()}
        fields["fix_duration"] = limits.max_fix_duration_s if end else 1e-3
        build_options(SynthesisOptions(), fields, limits).validate()
    for field, rng in field_of.items():  # one step outside a range is refused with the range in the message
        hi = getattr(limits, rng)[1]
        with pytest.raises(ServiceError, match=rf", {hi:g}\]") as e:
            build_options(SynthesisOptions(), {field: hi + 1}, limits)
        assert e.value.code == "out_of_range"
    for wide in (
        {"nfe_range": [4, NFE_MAX + 1]},
        {"nfe_range": [0, 8]},
        {"speed_range": [0.01, 4.0]},
        {"target_rms_range": [0.0, 1.0]},  # 0 is outside the engine's (0, 1]
        {"cfg_range": [0.0, 21.0]},
        {"max_fix_duration_s": 601.0},
    ):
        with pytest.raises(ValueError, match="engine"):
            Limits.from_dict(wide)
    with pytest.raises(ValueError, match=r"nfe must be an integer in \[1, 64\]"):
        SynthesisOptions(nfe=NFE_MAX + 1).validate()
