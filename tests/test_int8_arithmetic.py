"""f5build.int8_arithmetic: the probe that says which INT8 arithmetic ONNX Runtime runs here.

The probe is what `nox -s avx2` relies on to know the emulated processor took effect, and what
validate records beside the cpu-int8 verdict, so both of its answers are checked: the one this
machine gives, and (under qemu-user's Haswell model, AVX2 without VNNI) the saturating one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from f5build.int8_arithmetic import Int8Arithmetic, K, main, probe

ROOT = Path(__file__).resolve().parents[1]
EXACT = K * 255 * 127
SATURATED = (K // 2) * 32767  # every adjacent pair of products clipped to a 16-bit lane


def test_the_probe_finds_one_of_the_two_arithmetics():
    found = probe()
    assert found.exact_value == EXACT
    assert found.value in (EXACT, SATURATED), found  # any other value: the probe no longer measures the kernel
    assert found.kind == ("exact" if found.value == EXACT else "saturating")


def test_the_two_results_are_told_apart_and_described():
    exact, saturated = Int8Arithmetic(EXACT, EXACT), Int8Arithmetic(SATURATED, EXACT)
    assert exact.exact and exact.kind == "exact" and "VNNI" in exact.describe()
    assert not saturated.exact and saturated.kind == "saturating"
    assert "1,048,544 where the exact result is 2,072,640" in saturated.describe()
    assert saturated.to_dict()["kind"] == "saturating"


def test_expect_refuses_the_other_arithmetic(capsys: pytest.CaptureFixture[str]):
    here = probe().kind
    other = "saturating" if here == "exact" else "exact"
    assert main(["--expect", here]) == 0
    assert main(["--expect", other]) == 1
    err = capsys.readouterr().err
    assert f"expected {other} INT8 arithmetic, found {here}" in err and "Haswell-v4" in err


@pytest.mark.skipif(
    shutil.which("qemu-x86_64") is None, reason="qemu-user not installed (apt-get install -y qemu-user)"
)
def test_an_avx2_processor_without_vnni_saturates():
    """Under qemu-user's Haswell model ONNX Runtime picks its AVX2 u8s8 kernel, as on a real AVX2 CPU."""
    env = {"PYTHONPATH": f"{ROOT / 'build'}:{ROOT / 'runtime'}", "PATH": "/usr/bin:/bin"}
    cmd = ["qemu-x86_64", "-cpu", "Haswell-v4", sys.executable, "-m", "f5build.int8_arithmetic", "--expect"]
    run = subprocess.run([*cmd, "saturating"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "saturate at 16 bits" in run.stdout
