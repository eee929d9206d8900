"""f5build.int8_arithmetic: which INT8 arithmetic ONNX Runtime runs here, and AVX2's on any machine.

The chain of trust: ONNX Runtime under qemu-user's Haswell model (AVX2, no VNNI) picks its AVX2 u8s8
kernel, whose saturating results `avx2_matmul_integer` reproduces bit for bit; `avx2_graph` computes
the same integers inside an ONNX graph, so validate can judge cpu-int8 in AVX2 arithmetic natively
(`nox -s avx2`). Each link is checked here, and the probe's two answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from f5build.int8_arithmetic import Int8Arithmetic, K, avx2_graph, avx2_matmul_integer, main, probe
from f5build.isa_view import NATIVE, IsaView, cpu_flags

ROOT = Path(__file__).resolve().parents[1]
EXACT = K * 255 * 127
SATURATED = (K // 2) * 32767  # every adjacent pair of products clipped to a 16-bit lane
AVX2_VIEW = {"cpuid_fault", "avx2"} <= cpu_flags()


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


QEMU = pytest.mark.skipif(
    shutil.which("qemu-x86_64") is None, reason="qemu-user not installed (apt-get install -y qemu-user)"
)
_CASE = """
import sys, numpy as np, onnxruntime as ort
from onnx import helper, TensorProto, numpy_helper
rng = np.random.default_rng(int(sys.argv[2]))
k = int(sys.argv[3])
a = rng.integers(0, 256, (2, 6, k)).astype(np.uint8)
a[0] = rng.integers(200, 256, (6, k))  # rows high in the u8 range: where pair sums overflow
b = rng.integers(-128, 128, (k, 20)).astype(np.int8)
b[:, :4] = rng.integers(90, 128, (k, 4))
g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b", "za"], ["y"])], "g",
    [helper.make_tensor_value_info("a", TensorProto.UINT8, [2, 6, k])],
    [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
    [numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.array(131, np.uint8), "za")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]); m.ir_version = 8
y = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
np.savez(sys.argv[1], a=a, b=b, y=y)
"""


def _matmul_integer_case(
    tmp_path: Path, seed: int, k: int, emulated: bool, view: IsaView = NATIVE
) -> dict[str, np.ndarray]:
    script = tmp_path / "case.py"
    script.write_text(_CASE)
    out = tmp_path / f"case_{seed}_{k}_{emulated}_{view.name}.npz"
    cmd = [sys.executable, str(script), str(out), str(seed), str(k)]
    if emulated:
        cmd = ["qemu-x86_64", "-cpu", "Haswell-v4", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300, env=view.env(os.environ))
    return dict(np.load(out))


@QEMU
@pytest.mark.parametrize("k", [70, 71])
def test_the_avx2_model_is_onnx_runtime_on_an_avx2_cpu_bit_for_bit(tmp_path: Path, k: int):
    """Random u8 x s8 with a non-zero activation zero point and odd and even K: the model equals what
    ONNX Runtime returns on an AVX2 CPU without VNNI, and differs from the exact product there."""
    case = _matmul_integer_case(tmp_path, 3, k, emulated=True)
    model = avx2_matmul_integer(case["a"], case["b"], 131)
    exact = (case["a"].astype(np.int64) - 131) @ case["b"].astype(np.int64)
    np.testing.assert_array_equal(model, case["y"])
    assert (model != exact).sum() > 10  # the case does saturate: the comparison is not vacuous


@pytest.mark.skipif(not AVX2_VIEW, reason="the avx2 view needs CPUID faulting and AVX2 (f5build.isa_view)")
@pytest.mark.parametrize("k", [70, 71])
def test_onnx_runtime_under_the_avx2_view_runs_the_avx2_arithmetic_natively(tmp_path: Path, k: int):
    """With AVX-512 and VNNI hidden by CPUID faulting, ONNX Runtime picks the same saturating u8s8 kernel
    as under qemu's Haswell model, natively: the model equals it bit for bit, so the view's timings are
    those of the AVX2 code path."""
    view = IsaView.make("avx2", tmp_path / "lib")
    case = _matmul_integer_case(tmp_path, 3, k, emulated=False, view=view)
    model = avx2_matmul_integer(case["a"], case["b"], 131)
    np.testing.assert_array_equal(model, case["y"])
    exact = (case["a"].astype(np.int64) - 131) @ case["b"].astype(np.int64)
    assert (model != exact).sum() > 10


def test_the_avx2_graph_computes_the_model_and_the_exact_product_natively_differs(tmp_path: Path):
    """avx2_graph's MatMulInteger replacement gives the model's integers (odd K included); the original
    graph on this machine gives the exact product when it has VNNI."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    for k in (70, 71):
        b = rng.integers(-128, 128, (k, 20)).astype(np.int8)
        b[:, :4] = rng.integers(90, 128, (k, 4))
        g = helper.make_graph(
            [
                helper.make_node("DynamicQuantizeLinear", ["x"], ["a", "s", "za"]),
                helper.make_node("MatMulInteger", ["a", "b", "za", "bz"], ["y"], name="mm"),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, k])],
            [
                helper.make_tensor_value_info(n, t, None)
                for n, t in (("y", TensorProto.INT32), ("a", TensorProto.UINT8), ("za", TensorProto.UINT8))
            ],
            [numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.zeros(20, np.int8), "bz")],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        x = rng.normal(size=(2, 6, k)).astype(np.float32)
        x[0] += 4  # a skewed range: the zero point moves and high u8 values appear
        y, a, za = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        emulated = avx2_graph(m)
        assert not [n for n in emulated.graph.node if n.op_type == "MatMulInteger"]
        y2, a2, _ = ort.InferenceSession(emulated.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )
        np.testing.assert_array_equal(a2, a)
        np.testing.assert_array_equal(y2, avx2_matmul_integer(a, b, int(za)))
        assert (y2 != (a.astype(np.int64) - int(za)) @ b.astype(np.int64)).any()
        if probe().exact:
            np.testing.assert_array_equal(y, (a.astype(np.int64) - int(za)) @ b.astype(np.int64))


def test_avx2_graph_refuses_what_it_does_not_model():
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "za", "bz"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [
            numpy_helper.from_array(np.ones((4, 3), np.int8), "b"),
            numpy_helper.from_array(np.array(7, np.uint8), "za"),
            numpy_helper.from_array(np.array([0, 1, 0], np.int8), "bz"),
        ],
    )
    with pytest.raises(ValueError, match="zero points 0"):
        avx2_graph(helper.make_model(g))
    with pytest.raises(TypeError, match="u8 activations and s8 weights"):
        avx2_matmul_integer(np.ones((2, 4), np.int8), np.ones((4, 3), np.int8), 0)
