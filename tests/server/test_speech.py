"""/v1/audio/speech: streamed audio in every format and as SSE, a short first chunk, OpenAI's voice object."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from conftest import SR

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from f5rt.limits import Limits
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore
from server.serverkit import NFE, TWO_CHUNKS, assert_pcm_close, decode_wav, serving, speech, tts


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
