"""The cost stage: FLOPs by precision counted from ONNX graphs, and the Orin projection arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from f5build.cost.count import count_model
from f5build.cost.counts import ClassCount, OpCounts
from f5build.cost.flops import einsum_flops
from f5build.cost.orin import Device, Utilisation, Workload, graph_seconds, project
from f5build.cost.shapes import input_shapes, resolve_shapes, skeleton
from f5rt.errors import ManifestError

F = TensorProto.FLOAT
H = TensorProto.FLOAT16


def _model(nodes, inputs, outputs, inits=(), opset: int = 19) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    return m


def _w(name: str, shape, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(dtype), name)


def test_matmul_flops_and_bytes() -> None:
    b, n, k, m_ = 2, 8, 16, 24
    m = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [helper.make_tensor_value_info("x", F, ["batch", "frames", k])],
        [helper.make_tensor_value_info("y", F, ["batch", "frames", m_])],
        [_w("w", (k, m_))],
    )
    skel = skeleton(m)
    counts, method = count_model(skel, input_shapes(skel, {"batch": b, "frames": n}))
    assert counts.fp32.flops == 2 * b * n * k * m_
    assert counts.int8.flops == counts.fp16.flops == 0
    assert counts.fp32.weight_bytes == k * m_ * 4
    assert counts.fp32.bytes == (k * m_ + b * n * k + b * n * m_) * 4
    assert counts.fp32.act_act_flops == 0
    assert counts.fp32_share == 1.0 and counts.tf32_flops == counts.fp32.flops
    assert method == "onnx"


def test_conv_and_conv_transpose_flops() -> None:
    # Conv1d: 4 -> 8 channels, kernel 3, groups 2, same padding; ConvTranspose1d 8 -> 6, kernel 4, stride 2
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], group=2, pads=[1, 1], name="conv"),
        helper.make_node("ConvTranspose", ["c", "wt"], ["y"], strides=[2], name="convt"),
    ]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 4, 16])],
        [helper.make_tensor_value_info("y", F, [1, 6, 34])],
        [_w("w", (8, 2, 3)), _w("b", (8,)), _w("wt", (8, 6, 4))],
    )
    counts, _ = count_model(m, {"x": (1, 4, 16)})
    conv = 2 * (1 * 8 * 16) * (2 * 3)  # 2 x out elements x (Cin/group x kernel)
    convt = 2 * (1 * 8 * 16) * (6 * 4)  # 2 x in elements x (Cout/group x kernel)
    assert counts.fp32.flops == conv + convt
    assert counts.fp32.ops == 2


def test_dq_matmul_counted_int8_and_cast_blocks_it() -> None:
    k, m_ = 16, 8
    wq = numpy_helper.from_array(np.ones((k, m_), np.int8), "wq")
    inits = [
        wq,
        numpy_helper.from_array(np.full((m_,), 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros((m_,), np.int8), "wz"),
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
    ]
    weight = helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=1, name="dq_w")
    q = helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x")
    dq = helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq_x")
    x_in = [helper.make_tensor_value_info("x", F, ["batch", "frames", k])]
    out = [helper.make_tensor_value_info("y", F, ["batch", "frames", m_])]
    m = _model([weight, q, dq, helper.make_node("MatMul", ["xd", "w"], ["y"], name="mm")], x_in, out, inits)
    counts, _ = count_model(m, {"x": (1, 4, k)})
    assert counts.int8.flops == 2 * 4 * k * m_ and counts.fp32.flops == 0
    assert counts.int8.weight_bytes == k * m_  # one byte per int8 weight
    assert counts.int8_blocked == ()
    assert counts.other.ops == 0  # the Q/DQ pair is fused into the INT8 GEMM, the weight DQ folded
    # A Cast between the activation's DQ and the MatMul: no INT8 kernel, counted at the float type.
    cast = helper.make_node("Cast", ["xd"], ["xc"], to=F, name="cast")
    m2 = _model([weight, q, dq, cast, helper.make_node("MatMul", ["xc", "w"], ["y"], name="mm")], x_in, out, inits)
    c2, _ = count_model(m2, {"x": (1, 4, k)})
    assert c2.int8.flops == 0 and c2.fp32.flops == 2 * 4 * k * m_
    assert c2.int8_blocked == ("mm",)
    # Weight-only quantization is not an INT8 GEMM either.
    m3 = _model([weight, helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], x_in, out, inits)
    c3, _ = count_model(m3, {"x": (1, 4, k)})
    assert c3.int8.flops == 0 and c3.fp32.flops == 2 * 4 * k * m_


def test_float16_matmul_counted_fp16() -> None:
    m = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", H, ["n", 32])],
        [helper.make_tensor_value_info("y", H, ["n", 8])],
        [_w("w", (32, 8), np.float16)],
    )
    counts, _ = count_model(m, {"x": (10, 32)})
    assert counts.fp16.flops == 2 * 10 * 32 * 8 and counts.fp32.flops == 0
    assert counts.fp16.bytes == (10 * 32 + 32 * 8 + 10 * 8) * 2
    assert counts.fp32_share == 0.0


def _attention_like() -> onnx.ModelProto:
    """x (batch, frames, D) -> q = x Wq; s = q q^T (B,N,N); softmax; s x; plus an elementwise Add."""
    d = 16
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="to_q"),
        helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "qt"], ["s"], name="scores"),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "x"], ["o"], name="pv"),
        helper.make_node("Add", ["o", "x"], ["y"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", F, ["batch", "frames", d])],
        [helper.make_tensor_value_info("y", F, ["batch", "frames", d])],
        [_w("wq", (d, d))],
    )


@pytest.mark.parametrize(("b", "n"), [(1, 8), (2, 16), (4, 40)])
def test_symbolic_dims_resolved_per_bucket(b: int, n: int) -> None:
    d = 16
    skel = skeleton(_attention_like())
    counts, _ = count_model(skel, input_shapes(skel, {"batch": b, "frames": n}))
    assert counts.fp32.flops == 2 * b * n * d * d + 2 * (2 * b * n * n * d)
    assert counts.fp32.act_act_flops == 2 * (2 * b * n * n * d)  # quadratic in frames
    # other: Transpose (b n d) + Softmax (b n n) + Add (b n d) output elements, each written and read back
    assert counts.other.flops == b * n * d + b * n * n + b * n * d
    assert counts.other.bytes == 2 * 4 * (b * n * d + b * n * n + b * n * d)
    # the score path a fused attention kernel keeps on chip: q k^T written, softmax out and back, p read
    assert counts.attention_bytes == {"fp32": 2 * 4 * b * n * n, "other": 2 * 4 * b * n * n}
    assert counts.bytes_without_attention("fp32") == counts.fp32.bytes - 2 * 4 * b * n * n


def test_pointwise_chain_is_fused() -> None:
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["a"]),
        helper.make_node("Tanh", ["a"], ["t"]),  # a feeds only a pointwise op: same kernel
        helper.make_node("MatMul", ["t", "w"], ["y"]),
    ]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [4, 8])],
        [helper.make_tensor_value_info("y", F, [4, 2])],
        [_w("w", (8, 2))],
    )
    counts, _ = count_model(m, {"x": (4, 8)})
    assert counts.other.flops == 2 * 4 * 8 and counts.other.ops == 2
    assert counts.other.bytes == 2 * 4 * 4 * 8  # only t reaches DRAM (written, read by the MatMul)
    assert counts.other_unfused_bytes == 2 * 2 * 4 * 4 * 8


def test_onnxruntime_fallback_gives_the_same_shapes() -> None:
    skel = skeleton(_attention_like())
    shapes = input_shapes(skel, {"batch": 2, "frames": 12})
    a = resolve_shapes(skel, shapes, methods=("onnx",))
    b = resolve_shapes(skel, shapes, methods=("onnxruntime",))
    assert b.method == "onnxruntime"
    for name in ("q", "s", "p", "o", "y"):
        assert a.shapes[name] == b.shapes[name]
    with pytest.raises(ValueError, match="symbolic dim"):
        input_shapes(skel, {"batch": 2})


def test_einsum_flops() -> None:
    assert einsum_flops("i,j->ij", [(10,), (4,)]) == 40  # outer product: multiplies only
    assert einsum_flops("bik,bkj->bij", [(2, 3, 5), (2, 5, 7)]) == 2 * 2 * 3 * 5 * 7
    assert einsum_flops("...k,kj->...j", [(2, 3, 5), (5, 7)]) == 2 * 2 * 3 * 5 * 7


def test_projection_arithmetic() -> None:
    dev = Device("test", int8_tops=100, fp16_tflops=50, tf32_tflops=25, fp32_tflops=5, bandwidth_gbs=100, source="-")
    util = Utilisation(math=0.5, bandwidth=0.5)
    counts = OpCounts(
        int8=ClassCount(flops=10**12, bytes=10**9),  # compute 1e12 / 50e12 = 20 ms; bw 1e9 / 50e9 = 20 ms
        fp16=ClassCount(flops=10**11, bytes=10**9),  # compute 4 ms; bw 20 ms -> 20 ms
        fp32=ClassCount(flops=10**12, bytes=0),  # TF32: 1e12 / 12.5e12 = 80 ms; FP32: 1e12 / 2.5e12 = 400 ms
        other=ClassCount(flops=10**9, bytes=2 * 10**9),  # compute 0.4 ms; bw 40 ms
    )
    assert graph_seconds(counts, dev, util, tf32=True) == pytest.approx(0.020 + 0.020 + 0.080 + 0.040)
    assert graph_seconds(counts, dev, util, tf32=False) == pytest.approx(0.020 + 0.020 + 0.400 + 0.040)
    small = OpCounts(fp32=ClassCount(flops=10**10))  # 0.8 ms TF32
    work = Workload(6.0, 6.0, 1125, 563, 1536)
    p = project("x", {}, {"text_encoder": small, "step": counts, "vocoder": small}, work, 7, dev, util, True)
    assert p.step_s == pytest.approx(0.160)
    assert p.total_s == pytest.approx(0.0008 + 7 * 0.160 + 0.0008)
    assert p.rtf == pytest.approx(p.total_s / 6.0)
    # a fused attention kernel takes the score bytes off the bandwidth bound of their class
    attn = OpCounts(other=ClassCount(flops=10**9, bytes=2 * 10**9), attention_bytes={"other": 10**9})
    assert graph_seconds(attn, dev, util, tf32=True) == pytest.approx(0.040)
    assert graph_seconds(attn, dev, util, tf32=True, fused_attention=True) == pytest.approx(0.020)


def _step_flops(model: dict, b: int, n: int, rotary_einsum: bool) -> int:
    """Independent count of the F5 DiT step's tensor-op FLOPs from its config (f5-tts' layer shapes)."""
    dim, depth, heads, dh = model["dim"], model["depth"], model["heads"], model["dim_head"]
    ff, mel, text = dim * model["ff_mult"], model["mel_dim"], model["text_dim"]
    r = 2 * b  # cond + uncond rows (CFG batch concat)
    inner = heads * dh
    time_mlp = 2 * b * (256 * dim + dim * dim)  # sinusoid (256) -> dim -> dim, once per request
    # input embedding (noisy mel + cond mel + text -> dim) and 2 grouped convs (kernel 31, 16 groups),
    # each run for both CFG branches on B rows
    inp = 2 * (2 * b * n * (2 * mel + text) * dim + 2 * (2 * b * n * dim * (dim // 16) * 31))
    block = (
        2 * r * dim * 6 * dim  # AdaLN modulation
        + 2 * r * n * dim * inner * 3  # q, k, v
        + 2 * r * n * inner * dim  # out
        + 2 * (2 * r * heads * n * n * dh)  # q k^T and p v
        + 2 * r * n * dim * ff * 2  # feed-forward
    )
    out = 2 * r * dim * 2 * dim + 2 * r * n * dim * mel  # final AdaLN + output projection
    # rotary angles computed in the graph (Range + Einsum): outer product positions x inverse
    # frequencies; a precomputed rotary table costs no tensor-op FLOPs
    rotary = n * (dh // 2) if rotary_einsum else 0
    return time_mlp + inp + depth * block + out + rotary


def test_stage_on_the_tiny_export(tiny_artifacts: Path, tmp_path: Path) -> None:
    from f5build.cli import main

    out = tmp_path / "reports"
    argv = ["cost", "--artifacts-root", str(tiny_artifacts.parent), "--cost-reports", str(out)]
    assert main([*argv, "--cost-buckets", "n256_b1,n512_b1,n512_b2"]) == 0
    for ext in ("md", "json", "png"):
        assert (out / f"cost.{ext}").stat().st_size > 0
    rep = json.loads((out / "cost.json").read_text())
    model = rep["model"]
    steps = {(r["frames"], r["batch"]): r for r in rep["results"] if r["graph"] == "step"}
    einsum = any(n.op_type == "Einsum" for n in onnx.load(str(tiny_artifacts / "step.onnx")).graph.node)
    assert set(steps) == {(256, 1), (512, 1), (512, 2)}
    for (n, b), r in steps.items():
        assert r["precision"] == "fp32"
        assert r["counts"]["fp32"]["flops"] == _step_flops(model, b, n, einsum), (n, b)
        assert r["fp32_share"] == 1.0
        attn = model["depth"] * 2 * (2 * 2 * b * model["heads"] * n * n * model["dim_head"])
        assert r["counts"]["fp32"]["act_act_flops"] == attn
    assert rep["fp32_share"]["step"]["fp32"]["workload_bucket"] == 1.0
    # the projected request: 6 s + 6 s = 1125 frames -> the 1536 bucket, 563 vocoded frames
    assert rep["workload"]["total_frames"] == 1125 and rep["workload"]["bucket_frames"] == 1536
    assert rep["workload"]["vocoder_frames"] == 563
    proj = {(p["deployment"], p["nfe"], p["tf32"]): p for p in rep["projections"]}
    assert {d for d, _, _ in proj} == {"fp32"}  # the fp16 / int8 deployments need the quantize stage
    assert any("quantize" in n for n in rep["notes"])
    p7, p16 = proj[("fp32", 7, True)], proj[("fp32", 16, True)]
    assert p16["total_s"] - p7["total_s"] == pytest.approx(9 * p7["step_s"])
    assert proj[("fp32", 7, False)]["rtf"] > p7["rtf"]  # FP32 CUDA cores slower than TF32
    md = (out / "cost.md").read_text()
    assert "FP32 share" in md and "100.0 %" in md
    # a small model is not set beside the full-size PyTorch baseline as if comparable
    assert "No PyTorch baseline row" in md and "| f5-tts PyTorch" not in md
    assert rep["pytorch_reference"]["comparable"] is False and "full-size" in rep["pytorch_reference"]["why_not"]
    # FP32 attention is projected unfused, with the check's reason; the headline follows it
    att = rep["attention"]["fp32"]
    assert att["fused"] is False and "FP32 attention" in att["reason"] and att["blocks"] == model["depth"]
    assert rep["headline"] and all(not h["fused_attention"] for h in rep["headline"])
    # streamed time to first audio: 6 s + 1.5 s = 704 frames -> n768; B=2/4 step ratios in that bucket
    assert rep["first_piece"]["total_frames"] == 704 and rep["first_piece"]["bucket_frames"] == 768
    ttfa = {s["nfe"]: s for s in rep["streaming"]}
    assert ttfa[16]["ttfa_s"] - ttfa[7]["ttfa_s"] == pytest.approx(9 * ttfa[7]["step_s"])
    assert 1.0 < rep["batch_ratios"]["fp32"]["b2"] < rep["batch_ratios"]["fp32"]["b4"] <= 4.0 + 1e-9
    # asking for a variant the export did not make says which stage makes it
    with pytest.raises(ManifestError, match="quantize"):
        from f5build.cost import CostOptions, compute

        compute(CostOptions(tiny_artifacts, out, buckets=("n256_b1",), precisions=("int8",)), log=lambda *_: None)


def test_missing_artifacts_and_bad_options(tmp_path: Path) -> None:
    from f5build.cli import main
    from f5build.cost import CostOptions, compute

    with pytest.raises(ManifestError, match="export"):
        compute(CostOptions(tmp_path / "nothing", tmp_path))
    assert main(["cost", "--artifacts-root", str(tmp_path), "--cost-reports", str(tmp_path)]) == 2
    with pytest.raises(ValueError, match="n<frames>_b<batch>"):
        CostOptions(tmp_path, tmp_path, buckets=("1536",))
    with pytest.raises(ValueError, match="cost-precisions"):
        CostOptions(tmp_path, tmp_path, precisions=("bf16",))
