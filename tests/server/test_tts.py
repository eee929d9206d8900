"""/api/tts: the response's fields, its audio equal to the Synthesizer's, every option reaching it, the named voice."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from conftest import SR

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore
from server.serverkit import NFE, assert_pcm_close, decode_wav, tts


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
