"""The bench's measuring harness: memory read per worker, ratios, baseline regressions (no timing)."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import numpy as np
import pytest

from f5build.bench import Ratio, Side, baseline_for, check_baseline, cpu_info, spawn, speed_ratio


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


def _opts(tmp_path: Path, **kw: object):
    from f5build.bench import BenchOptions
    from f5build.context import ModelSource

    return BenchOptions(artifacts=tmp_path, source=ModelSource("tiny"), **kw)  # type: ignore[arg-type]


def test_conditions_are_every_combination(tmp_path: Path) -> None:
    from f5build.bench import Condition
    from f5rt.backends.onnxruntime import default_threads

    o = _opts(tmp_path, threads=(1, 2), spinning=("on", "off"), busy=(0, 1))
    assert len(o.conditions) == 6 and o.conditions[0] == Condition(1, "on", 0)  # 1 thread: no pool to spin
    assert Condition(1, "off", 0) not in o.conditions and Condition(2, "off", 0) in o.conditions
    assert o.conditions[-1] == Condition(2, "off", 1) and o.conditions[-1].label == "2 threads, spinning off, busy 1"
    assert _opts(tmp_path).conditions == [Condition(default_threads(), "off", 0)]  # f5rt's own default
    assert o.command() == "nox -s bench -- --model tiny --bench-threads 1,2 --bench-spinning on,off --bench-busy 0,1"


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"spinning": ("fast",)}, "--bench-spinning"),
        ({"busy": (-1,)}, "--bench-busy"),
        ({"threads": (0,)}, "--bench-threads"),
        ({"step_frames": -5}, "--bench-step"),
    ],
)
def test_bad_conditions_are_refused(tmp_path: Path, kw: dict[str, object], flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        _opts(tmp_path, **kw)


def test_bench_cli_refuses_a_bad_list(tiny_artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from f5build.cli import main

    args = ["bench", "--model", "tiny", "--artifacts-root", str(tiny_artifacts.parent)]
    assert main([*args, "--bench-threads", "1,two"]) == 2
    assert "--bench-threads takes a comma list of integers" in capsys.readouterr().err


def test_busy_processes_load_the_cpu_and_are_gone_after() -> None:
    import time

    from f5build.bench import Busy

    with Busy(1) as busy:
        pids = [p.pid for p in busy.procs]
        assert len(pids) == 1
        time.sleep(1.5)
    assert busy.cpu_share is not None and busy.cpu_share > 0.05, busy.cpu_share  # it did burn CPU
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    with Busy(0) as none:
        assert none.procs == []


def test_busy_processes_exit_when_the_bench_dies() -> None:
    import subprocess
    import sys
    import time

    code = (
        "import sys, time\nfrom f5build.bench import Busy\n"
        "b = Busy(1).__enter__()\nprint(b.procs[0].pid, flush=True)\ntime.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()  # no cleanup runs in the parent
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{child}").exists():
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.2)
    else:
        assert not Path(f"/proc/{child}").exists(), "the busy process outlived the bench"


def test_baseline_is_matched_per_condition() -> None:
    from f5build.bench import Condition

    quiet, busy = Condition(2, "off", 0), Condition(2, "off", 1)
    base = {
        "conditions": [
            {"label": quiet.label, "ratios": {"f5rt cpu-int8": {"total": 4.0, "per_text": [4.0]}}},
            {"label": busy.label, "ratios": {"f5rt cpu-int8": {"total": 2.0, "per_text": [2.0]}}},
        ]
    }
    now = {"f5rt cpu-int8": Ratio(2.5, (2.5,))}
    assert check_baseline(now, base, busy) == []  # 2.5x is fine against the busy baseline
    msgs = check_baseline(now, base, quiet)
    assert msgs and "busy 0" in msgs[0]  # ...and a regression against the quiet one
    old = {"threads": 2, "ratios": {"f5rt cpu-int8": {"total": 4.0, "per_text": [4.0]}}}  # before conditions
    assert check_baseline(now, old, quiet) and check_baseline(now, old, busy) == []


def test_step_worker_times_one_step(tiny_artifacts: Path, tmp_path: Path) -> None:
    from f5build.cli import main

    root = tmp_path / "tiny"
    shutil.copytree(tiny_artifacts, root)
    assert main(["quantize", "--model", "tiny", "--artifacts-root", str(tmp_path), "--quant-variants", "cpu-fp32"]) == 0
    spec = {"artifacts": str(root), "frames": 48, "calls": 2, "threads": 1, "spinning": "on", "precision": "cpu-fp32"}
    out = spawn("step-f5rt", spec)
    assert out["step_s"] > 0 and len(out["times_s"]) == 2 and out["peak_rss_mb"] > 0
    reports = tmp_path / "rep"
    args = ["bench", "--model", "tiny", "--artifacts-root", str(tmp_path), "--bench-reports", str(reports)]
    args += ["--bench-step", "48", "--bench-step-calls", "1", "--bench-repeat", "1", "--bench-threads", "1"]
    assert main([*args, "--bench-busy", "1", "--bench-precisions", "cpu-fp32"]) == 0
    table = json.loads((reports / "bench_step.json").read_text())
    (row,) = table["rows"]
    assert row["busy"] == 1 and row["threads"] == 1 and row["f5rt"]["cpu-fp32"] > 0 and row["torch_s"] > 0
    assert row["busy_share"] and row["busy_share"][0] > 0  # the competing process really ran
    assert (
        table["cpu"]["affinity"] >= 1 and isinstance(table["cpu"]["isa"], list) and "--bench-busy" in table["command"]
    )
    md = (reports / "bench_step.md").read_text()
    assert "| 1 | 1 | off |" in md and "Command:" in md


def test_a_baseline_of_another_instruction_set_view_is_refused_before_measuring(tmp_path: Path) -> None:
    """Ratios measured on AVX2 kernels say nothing about AVX-512 ones: --baseline must match --bench-isa
    (a bench.json from before the option was native)."""
    from f5build.isa_view import NATIVE, IsaView

    old, avx2 = tmp_path / "old.json", tmp_path / "avx2.json"
    old.write_text(json.dumps({"ratios": {}}))
    avx2.write_text(json.dumps({"isa_view": "avx2", "ratios": {}}))
    view = IsaView("avx2", tmp_path / "lib.so")
    assert baseline_for(old, NATIVE) == {"ratios": {}} and baseline_for(avx2, view) is not None
    assert baseline_for(None, view) is None
    with pytest.raises(ValueError, match="measured with --bench-isa native, this run uses --bench-isa avx2"):
        baseline_for(old, view)
    with pytest.raises(ValueError, match="measured with --bench-isa avx2, this run uses --bench-isa native"):
        baseline_for(avx2, NATIVE)
