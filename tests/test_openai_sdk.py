"""The official `openai` SDK as the client of a real `f5rt serve` (uvicorn on a loopback port).

What a new user would try: every response_format, SSE streaming, speed, the model list, and the
error path (bad key, unknown voice, refused values), each through the SDK's own calls and exception
types. Lossless formats are compared sample for sample with the synthesizer called directly; lossy
ones are decoded and compared by length and level. With PyAV installed aac must work; without it
(and, forced, with it) aac must be a 400 that names the extra to install.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, speechlike

pytest.importorskip("fastapi")
pytest.importorskip("openai")

import openai
from server.serverkit import live_server, wav_of  # the HTTP service's test helpers (tests/server)

from f5rt import encoders
from f5rt.audio import encode_audio
from f5rt.errors import EncoderUnavailable
from f5rt.limits import Limits
from f5rt.server import AuthConfig, create_app
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore

KEY = "sdk-test-key-0123456789abcdef"
NFE = 6
TEXT = "Hi chat. Thanks for the follow!"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def synth(tiny_artifacts: Path) -> Iterator[Synthesizer]:
    s = Synthesizer(tiny_artifacts, backend="onnxruntime", threads=1)
    yield s
    s.close()


@pytest.fixture(scope="module")
def voices(voices_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("sdk") / "voices"
    shutil.copytree(voices_dir, dst, ignore=shutil.ignore_patterns(".cache"))
    (dst / "quick").mkdir()
    (dst / "quick" / "ref.wav").write_bytes(wav_of(speechlike(1.0, SR, 3)))
    (dst / "quick" / "ref.txt").write_text("Hello there, this is a test.", encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def url(synth: Synthesizer, voices: Path) -> Iterator[str]:
    app = create_app(
        synth,
        VoiceStore(voices),
        Limits(first_chunk_chars=0),  # one chunking for stream and reference alike
        default_voice="quick",
        defaults=SynthesisOptions(nfe=NFE),
        auth=AuthConfig.from_keys([KEY]),
    )
    with live_server(app) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[Any]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=WAIT_S) as c:
        yield c


@pytest.fixture(scope="module")
def reference(synth: Synthesizer, voices: Path) -> np.ndarray:
    """The 16-bit samples every format must carry: the synthesizer's own output for TEXT, seed 5."""
    audio = synth.synthesize(TEXT, VoiceStore(voices).get("quick"), SynthesisOptions(nfe=NFE, seed=5)).audio
    pcm = np.frombuffer(encode_audio(audio, SR, "pcm"), "<i2")
    assert np.any(pcm != 0)
    return pcm


def speech(client: Any, fmt: str, **kw: Any) -> bytes:
    kw.setdefault("extra_body", {"seed": 5})
    r = client.audio.speech.create(model="f5-tts", voice="quick", input=TEXT, response_format=fmt, **kw)
    return r.content


def decode_lossy(fmt: str, data: bytes) -> np.ndarray:
    if fmt == "opus":
        return sf.read(io.BytesIO(data), dtype="float32")[0]
    av = pytest.importorskip("av")
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.audio[0].codec_context.sample_rate == SR
        return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)[0]


def test_models_list(client: Any) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["f5-tts"]
    assert client.models.retrieve("f5-tts").owned_by == "f5rt"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("tts-1-hd")


@pytest.mark.parametrize("fmt", ["wav", "pcm", "flac"])
def test_lossless_formats_equal_the_synthesizer(client: Any, reference: np.ndarray, fmt: str) -> None:
    data = speech(client, fmt)
    got = np.frombuffer(data, "<i2") if fmt == "pcm" else sf.read(io.BytesIO(data), dtype="int16")[0]
    assert np.array_equal(got, reference)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac"])
def test_lossy_formats_decode_to_the_audio(client: Any, reference: np.ndarray, fmt: str) -> None:
    if fmt == "aac":
        pytest.importorskip("av", reason="without PyAV aac is refused: test_aac_without_pyav_names_the_extra")
    got = decode_lossy(fmt, speech(client, fmt))
    want = reference.astype(np.float32) / 32768
    assert len(want) <= len(got) <= len(want) + 4096, f"{len(got)} samples for {len(want)}"
    level = float(np.sqrt(np.mean(got**2)) / np.sqrt(np.mean(want**2)))
    assert 0.7 < level < 1.4, f"{fmt} level {level:.2f} of the original"


def test_default_format_is_mp3_streamed(client: Any) -> None:
    """No response_format: mp3, as OpenAI answers; the streaming-response API reads it as it comes."""
    with client.audio.speech.with_streaming_response.create(
        model="f5-tts", voice="quick", input=TEXT, extra_body={"seed": 5}
    ) as r:
        assert r.headers["content-type"] == "audio/mpeg"
        data = b"".join(r.iter_bytes(chunk_size=512))
    assert data[:2] == b"\xff\xf3" or data[:3] == b"ID3"  # an MPEG audio frame (or tag) first
    assert encoders.FORMATS["mp3"].streamed


def test_sse_stream_equals_the_audio(client: Any, reference: np.ndarray) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="f5-tts", voice="quick", input=TEXT, response_format="pcm", stream_format="sse", extra_body={"seed": 5}
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    parsed = [json.loads(e[len("data: ") :]) for e in events]
    assert parsed[-1]["type"] == "speech.audio.done" and "usage" in parsed[-1]
    audio = b"".join(base64.b64decode(e["audio"]) for e in parsed if e["type"] == "speech.audio.delta")
    assert np.array_equal(np.frombuffer(audio, "<i2"), reference)


def test_speed_changes_the_length(client: Any) -> None:
    normal = np.frombuffer(speech(client, "pcm"), "<i2")
    fast = np.frombuffer(speech(client, "pcm", speed=2.0), "<i2")
    assert 0.3 < len(fast) / len(normal) < 0.75


def test_errors_come_back_as_sdk_exceptions(url: str, client: Any) -> None:
    bad = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong-key-0123456789abcdef", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError) as e401:
        bad.audio.speech.create(model="f5-tts", voice="quick", input="Hi.")
    assert e401.value.status_code == 401 and e401.value.response.headers["www-authenticate"].startswith("Bearer")
    cases = [
        (openai.NotFoundError, "voice_not_found", {"voice": "alloy"}),
        (openai.BadRequestError, "out_of_range", {"speed": 0.1}),
        (openai.BadRequestError, "text_too_long", {"input": "a" * 5000}),
        (openai.BadRequestError, "missing_field", {"voice": openai.omit}),  # OpenAI requires voice: so do we
        (openai.BadRequestError, "unsupported_format", {"response_format": "wma"}),
    ]
    for error, code, change in cases:
        kw = {"model": "tts-1", "voice": "quick", "input": "Hi.", **change}
        with pytest.raises(error) as e:
            client.audio.speech.create(**kw)
        assert e.value.code == code, (change, e.value.body)
        assert e.value.message  # the server's message, e.g. "unknown voice 'alloy'; see GET /api/voices"


def test_aac_without_pyav_names_the_extra(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_av() -> None:
        raise EncoderUnavailable("response_format 'aac' needs PyAV on the server: pip install 'f5rt[aac]'")

    monkeypatch.setattr(encoders, "_import_av", no_av)  # the server runs in this process
    with pytest.raises(openai.BadRequestError) as e:
        speech(client, "aac")
    assert e.value.status_code == 400 and e.value.code == "format_unavailable" and "f5rt[aac]" in e.value.message
    assert len(speech(client, "mp3")) > 0  # other formats are unaffected
