"""ONNX Runtime thread policy: the CPU budget (affinity, cgroup quota), spinning, and the CLI wiring."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from f5rt.backends.onnxruntime import (
    SPIN_ENV,
    CpuBudget,
    OnnxRuntimeBackend,
    ThreadPolicy,
    _cgroup_quota,
    cpu_budget,
    default_threads,
    thread_setting,
)


def _cgroup_v2(tmp_path: Path, path: str, limits: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cg"
    for rel, cpu_max in limits.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(cpu_max + "\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text(f"0::{path}\n")
    return root, proc


def test_cgroup_v2_quota_is_the_smallest_on_the_path(tmp_path: Path) -> None:
    root, proc = _cgroup_v2(tmp_path, "/pod/app", {"": "max 100000", "pod": "150000 100000", "pod/app": "max 100000"})
    assert _cgroup_quota(root, proc) == pytest.approx(1.5)
    root, proc = _cgroup_v2(tmp_path / "b", "/pod/app", {"pod": "300000 100000", "pod/app": "50000 100000"})
    assert _cgroup_quota(root, proc) == pytest.approx(0.5)
    root, proc = _cgroup_v2(tmp_path / "c", "/", {"": "max 100000"})
    assert _cgroup_quota(root, proc) is None  # no limit anywhere
    assert _cgroup_quota(tmp_path / "nothing", tmp_path / "no_such_file") is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    d = tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("200000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    assert _cgroup_quota(tmp_path / "cg", proc) == pytest.approx(2.0)
    (d / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert _cgroup_quota(tmp_path / "cg", proc) is None


def test_budget_caps_threads_by_affinity_and_quota() -> None:
    assert CpuBudget(8, None).cpus == 8
    assert CpuBudget(8, 2.0).cpus == 2
    assert CpuBudget(8, 1.5).cpus == 2  # two threads still do more work than one under a 1.5-CPU quota
    assert CpuBudget(8, 0.3).cpus == 1
    assert CpuBudget(2, 16.0).cpus == 2  # the affinity mask still holds


def test_default_threads_follow_the_affinity_mask() -> None:
    budget = cpu_budget()
    assert default_threads() == budget.cpus
    assert default_threads(share=budget.cpus * 4) == 1  # never 0
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux and 2+ CPUs to narrow the affinity mask")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert default_threads() == 1  # `taskset -c 0` is obeyed, whatever os.cpu_count() says
    finally:
        os.sched_setaffinity(0, before)


def test_policy_defaults_and_session_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    monkeypatch.delenv(SPIN_ENV, raising=False)
    p = ThreadPolicy.default()
    assert p == ThreadPolicy(default_threads(), spinning=False, inter_op=1)
    opts = p.session_options(ort)
    assert opts.intra_op_num_threads == p.intra_op and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    on = ThreadPolicy(3, spinning=True).session_options(ort)
    assert on.get_session_config_entry("session.intra_op.allow_spinning") == "1" and on.intra_op_num_threads == 3
    assert ThreadPolicy.default(5).intra_op == 5
    monkeypatch.setenv(SPIN_ENV, "1")
    assert ThreadPolicy.default().spinning is True
    assert ThreadPolicy.default(spinning=False).spinning is False  # an explicit choice beats the environment
    monkeypatch.setenv(SPIN_ENV, "sometimes")
    with pytest.raises(ValueError, match=SPIN_ENV):
        ThreadPolicy.default()


def test_bad_thread_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="threads must be >= 1"):
        ThreadPolicy(0)
    with pytest.raises(ValueError, match="leave it out"):
        ThreadPolicy.default(-2)
    with pytest.raises(ValueError, match="--ort-spinning"):
        thread_setting(2, "maybe")
    assert thread_setting(3, None) == 3 and thread_setting(None, None) is None
    assert thread_setting(3, "on") == ThreadPolicy(3, spinning=True)


def test_backend_runs_under_the_policy(tiny_artifacts: Path) -> None:
    from f5rt.manifest import load_manifest

    m = load_manifest(tiny_artifacts)
    b = OnnxRuntimeBackend(m, "fp32", threads=ThreadPolicy(1, spinning=True))
    assert b.policy == ThreadPolicy(1, spinning=True) and b.threads == 1
    assert OnnxRuntimeBackend(m, "fp32", threads=2).policy == ThreadPolicy(2, spinning=False)


def test_cli_flags_reach_the_backend(tiny_artifacts: Path) -> None:
    from f5rt.cli import _threads, build_parser

    args = build_parser().parse_args(
        ["synth", "--artifacts", str(tiny_artifacts), "--voice", "v", "--text", "x", "--out", "o.wav"]
        + ["--threads", "1", "--ort-spinning", "on"]
    )
    assert _threads(args) == ThreadPolicy(1, spinning=True)
    args = build_parser().parse_args(["serve", "--artifacts", str(tiny_artifacts), "--voices", "v"])
    assert _threads(args) is None  # the default policy, decided by the backend
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--artifacts", "a", "--voices", "v", "--ort-spinning", "yes"])


def test_triton_cpu_instances_split_the_budget() -> None:
    from f5rt.triton.model import instance_threads

    budget = cpu_budget().cpus
    cpu2 = {"instance_group": [{"kind": "KIND_CPU", "count": 2}]}
    assert instance_threads(cpu2, "CPU") == max(1, budget // 2)
    assert instance_threads({"instance_group": [{"kind": "KIND_CPU", "count": 64}]}, "CPU") == 1
    assert instance_threads({}, "CPU") == budget
    assert instance_threads({"instance_group": [{"kind": "KIND_GPU", "count": 2}]}, "GPU") is None
