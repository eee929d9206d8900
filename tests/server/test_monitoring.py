"""Health, warm-up, metrics and capacity: readiness after warm-up, health while busy, the Prometheus
samples, overload (503) and request timeouts (504)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from f5rt.limits import Limits
from f5rt.server import create_app
from f5rt.synthesizer import Synthesizer
from f5rt.voices import VoiceStore
from server.serverkit import FAST, NFE, WAIT_S, Spy, metric_value, serving, speech, tts, wait_until


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
