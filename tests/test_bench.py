"""The bench's measuring harness: memory read per worker, ratios, baseline regressions (no timing)."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import numpy as np
import pytest

from f5build.bench import Ratio, Side, check_baseline, cpu_info, spawn, speed_ratio


def test_a_worker_launched_after_a_large_allocation_reports_its_own_peak() -> None:
    big = np.ones(700 * 2**20 // 8)  # 700 MB touched in this (parent) process
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > 700
    out = spawn("idle", {"threads": 1})
    assert 0 < out["peak_rss_mb"] < 300, out  # the bare interpreter's, not the parent's 700 MB
    del big


def test_worker_failure_names_the_side() -> None:
    with pytest.raises(RuntimeError, match="bench worker 'f5rt' failed"):
        spawn("f5rt", {"threads": 1, "artifacts": "/nonexistent", "precision": "fp32"})


def _side(name: str, latencies: list[list[float]], rss: list[float]) -> Side:
    s = Side(name)
    for lat, peak in zip(latencies, rss, strict=True):
        s.rounds.append(
            {
                "load_s": 1.0,
                "peak_rss_mb": peak,
                "runs": [{"latency_s": x, "audio_s": 2.0 * (i + 1)} for i, x in enumerate(lat)],
            }
        )
    return s


def test_medians_ratios_and_peaks() -> None:
    torch = _side("t", [[10, 20, 40], [12, 22, 44], [100, 21, 42]], [2500, 2510, 2490])  # one noisy round
    rt = _side("r", [[5, 10, 20], [5, 11, 19], [6, 10, 21]], [1400, 1500, 1450])
    assert torch.latency(0) == 12 and rt.latency(1) == 10
    r = speed_ratio(torch, rt)
    assert r.per_text == pytest.approx((12 / 5, 21 / 10, 42 / 20))
    assert r.total == pytest.approx((12 + 21 + 42) / (5 + 10 + 20))
    assert (r.min, r.max) == (pytest.approx(2.1), pytest.approx(2.4))
    assert rt.peak_rss_mb == 1500  # the worst round, not the median


def test_baseline_fails_only_beyond_the_tolerance() -> None:
    base = {"ratios": {"f5rt cpu-int8": {"total": 3.0, "per_text": [3.0, 3.0, 3.0]}}}
    ok = Ratio(2.6, (2.6, 2.9, 3.5))  # 13 % below: within 15 %
    assert check_baseline({"f5rt cpu-int8": ok}, base) == []
    bad = Ratio(2.9, (2.4, 3.0, 3.0))  # text 0 is 20 % below
    msgs = check_baseline({"f5rt cpu-int8": bad}, base)
    assert len(msgs) == 1 and "text 0" in msgs[0]
    assert check_baseline({"f5rt new": bad}, base) == []  # no baseline for that side


def test_bench_refuses_unbuilt_precisions(
    tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from f5build.cli import main

    shutil.copytree(tiny_artifacts, tmp_path / "tiny")
    args = ["bench", "--model", "tiny", "--artifacts-root", str(tmp_path)]
    assert main([*args, "--bench-precisions", "cpu-int8"]) == 2
    assert "not built" in capsys.readouterr().err
    assert main([*args, "--bench-repeat", "0"]) == 2
    assert "--bench-repeat" in capsys.readouterr().err


def test_cpu_info_names_the_cpu() -> None:
    info = cpu_info()
    assert info["cpus"] >= 1 and isinstance(info["isa"], list)
    json.dumps(info)


def test_default_sides_are_the_cpu_deployments_built() -> None:
    from f5build.bench import default_precisions

    assert default_precisions(["fp32", "fp16", "int8", "cpu-fp32", "cpu-int8"]) == ["cpu-fp32", "cpu-int8"]
    assert default_precisions(["fp32", "cpu-int8"]) == ["fp32", "cpu-int8"]
    assert default_precisions(["fp32"]) == ["fp32"]
