"""Batching of queued requests: a batch equals each request alone; a zero window never batches."""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from f5rt.limits import Limits
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore
from server.serverkit import NFE, WAIT_S, Spy, assert_pcm_close, decode_wav, metric_value, serving, tts, wait_until


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
