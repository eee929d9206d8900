"""Client disconnects on real sockets (uvicorn): queued and streaming work cancelled, a truncated upload
writes nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conftest import SR, speechlike

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx

from f5rt.limits import Limits
from f5rt.server import create_app
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore
from server.serverkit import FAST, NFE, TWO_CHUNKS, WAIT_S, Spy, live_server, wait_until, wav_of


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
