"""deploy/grafana/f5rt.json and deploy/prometheus/alerts.yml load, cover what an operator needs, and use
only metric names (and label names) that the app's own /metrics exposes.

A renamed metric would otherwise leave a dashboard of empty panels and alerts that never fire,
silently; this test is where such a rename fails.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("yaml")

import yaml
from starlette.testclient import TestClient

from f5rt.limits import Limits
from f5rt.server import create_app
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.voices import VoiceStore

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
NAME = re.compile(r"\b((?:f5rt|process)_[a-zA-Z0-9_]+)\b(\{[^}]*\})?")
LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "f5rt.json").read_text(encoding="utf-8"))
    assert dash["uid"] and dash["panels"]
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def exposition(tiny_artifacts: Path, voices_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics after one request of each kind and one refusal, so every labelled series has samples."""
    root = tmp_path_factory.mktemp("dash") / "voices"
    shutil.copytree(voices_dir, root, ignore=shutil.ignore_patterns(".cache"))
    synth = Synthesizer(tiny_artifacts, backend="onnxruntime", threads=1)
    app = create_app(synth, VoiceStore(root), Limits(max_body_bytes=1024), defaults=SynthesisOptions(nfe=4))
    try:
        with TestClient(app) as client:
            deadline = time.monotonic() + 30
            while not app.state.batcher.ready and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.post("/api/tts", json={"text": "Hi.", "seed": 1}).status_code == 200
            speech = {"model": "tts-1", "input": "Hi.", "voice": "alice", "response_format": "pcm"}
            assert client.post("/v1/audio/speech", json=speech).status_code == 200
            assert client.post("/api/tts", json={"text": "a" * 2000}).status_code == 413  # f5rt_rejected_total
            yield client.get("/metrics").text
    finally:
        synth.close()


def exposed(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """(every sample name the exposition declares, label names seen per sample name)."""
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
        elif line and not line.startswith("#"):
            series = line.rsplit(" ", 1)[0]
            name, _, lab = series.partition("{")
            labels.setdefault(name, set()).update(LABEL.findall(lab))
    return names, labels


def test_every_referenced_metric_and_label_exists(exposition: str) -> None:
    names, labels = exposed(exposition)
    exprs = dashboard_exprs() + [r["expr"] for r in alert_rules()]
    used = 0
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr
        for name, matchers in NAME.findall(expr):
            used += 1
            assert name in names, (
                f"{name} (in {expr!r}) is not in /metrics; it has {sorted(n for n in names if n.startswith('f5rt'))}"
            )
            for label in LABEL.findall(matchers or ""):
                assert label in labels.get(name, set()), f"{name} has no label {label!r} (in {expr!r})"
    assert used >= 20


def test_dashboard_covers_latency_ttfa_rtf_queue_batches_errors() -> None:
    exprs = dashboard_exprs()
    for metric in ("f5rt_request_latency_seconds", "f5rt_time_to_first_audio_seconds", "f5rt_real_time_factor"):
        for q in ("0.5", "0.95", "0.99"):
            assert any(f"histogram_quantile({q}," in e and f"{metric}_bucket" in e for e in exprs), (metric, q)
    joined = "\n".join(exprs)
    for needed in ("f5rt_queue_depth", "f5rt_batch_size_bucket", 'status=~"5.."', "process_resident_memory_bytes"):
        assert needed in joined, needed


def test_alerts_cover_rtf_errors_queue_memory() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    assert {"F5RTRealTimeFactorHigh", "F5RTErrorRateHigh", "F5RTQueueFull", "F5RTMemoryGrowth"} <= set(rules)
    assert "f5rt_real_time_factor_bucket" in rules["F5RTRealTimeFactorHigh"]["expr"]
    assert "> 0.01" in rules["F5RTErrorRateHigh"]["expr"]  # error rate above 1 %
    assert "f5rt_queue_capacity" in rules["F5RTQueueFull"]["expr"]
    assert "process_resident_memory_bytes" in rules["F5RTMemoryGrowth"]["expr"]
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule
