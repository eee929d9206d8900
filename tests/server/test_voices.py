"""Voices: list, upload, replace, use and delete a voice over the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import SR, speechlike

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from server.serverkit import tts, wav_of


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
