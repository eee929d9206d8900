"""The CPU (ONNX Runtime-only) step variants: fused attention, dynamic INT8, their placement check,
the backend's row-by-row run of padded batches, and `auto` precision on a CPU.

Numbers are against the plain FP32 graph the TensorRT engines are built from (itself equal to
f5-tts to ~1e-7, tests/test_export.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytest.importorskip("modelopt.onnx.quantization", reason="nvidia-modelopt is not installed")

from test_quantize import _BUILT, build_quantized  # shares the session's quantized artifacts


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, tiny_artifacts: Path) -> Path:
    return build_quantized(tmp_path_factory, tiny_artifacts)


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _feed(b: int, n: int, pad: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((b, n), dtype=bool)
    if pad:
        mask[1:, n - pad :] = False
    return {
        "x": rng.standard_normal((b, n, 100)).astype(np.float32),
        "cond": rng.standard_normal((b, n, 100)).astype(np.float32),
        "text_cond": rng.standard_normal((b, n, 64)).astype(np.float32),
        "text_uncond": rng.standard_normal((b, n, 64)).astype(np.float32),
        "mask": mask,
        "t": np.full((b,), 0.4, np.float32),
        "dt": np.full((b,), 0.05, np.float32),
        "cfg": np.full((b,), 2.0, np.float32),
    }


def _velocity(feed: dict[str, np.ndarray], x_next: np.ndarray) -> np.ndarray:
    return (x_next.astype(np.float64) - feed["x"]) / feed["dt"][:, None, None]


def _snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - out) ** 2), 1e-300)))


@pytest.mark.parametrize("masked", [False, True])
def test_fused_attention_equals_the_explicit_graph(tiny_artifacts: Path, tmp_path: Path, masked: bool) -> None:
    from f5build.ort_attention import attention_ops, fuse_attention

    model, count = fuse_attention(onnx.load(str(tiny_artifacts / "step.onnx")), heads=2, masked=masked)
    assert count == 2  # the tiny DiT's two blocks
    assert attention_ops(model) == {"fused": 2, "form": "masked" if masked else "unmasked", "softmax_left": 0}
    onnx.save(model, str(tmp_path / "fused.onnx"))
    ref, fused = _session(tiny_artifacts / "step.onnx"), _session(tmp_path / "fused.onnx")
    feed = _feed(1, 200, 0)
    a, b = ref.run(None, feed)[0], fused.run(None, feed)[0]
    assert np.abs(a - b).max() < 1e-5
    padded = _feed(2, 160, 40)
    a, b = ref.run(None, padded)[0], fused.run(None, padded)[0]
    valid = padded["mask"]
    if masked:  # the key padding mask keeps padded keys out: exact for any batch
        assert np.abs(a - b)[valid].max() < 1e-5
    else:  # no mask: padded keys leak into row 1's valid frames, which is why the backend splits rows
        assert np.abs(a - b)[1][valid[1]].max() > 1e-3
        assert np.abs(a - b)[0].max() < 1e-5


def test_fuse_attention_refuses_a_graph_without_attention(tiny_artifacts: Path) -> None:
    from f5build.ort_attention import fuse_attention

    with pytest.raises(ValueError, match="no explicit attention"):
        fuse_attention(onnx.load(str(tiny_artifacts / "vocoder.onnx")), heads=2, masked=False)
    with pytest.raises(ValueError, match="heads must be positive"):
        fuse_attention(onnx.load(str(tiny_artifacts / "step.onnx")), heads=0, masked=False)


def test_fast_gelu_equals_the_plain_chain(tiny_artifacts: Path, tmp_path: Path) -> None:
    from f5build.ort_gelu import fast_gelu_ops, find_tanh_gelu, fuse_fast_gelu

    plain = onnx.load(str(tiny_artifacts / "step.onnx"))
    assert len(find_tanh_gelu(plain.graph)) == 2  # one per block's feed-forward
    model, count = fuse_fast_gelu(onnx.load(str(tiny_artifacts / "step.onnx")))
    assert count == 2 and fast_gelu_ops(model) == 2 and not find_tanh_gelu(model.graph)
    gelus = [n for n in model.graph.node if n.op_type == "FastGelu"]
    assert all(len(n.input) == 2 for n in gelus), "the Linear's bias is folded into FastGelu"
    assert not any(n.op_type == "Tanh" and "/ff/" in n.name for n in model.graph.node)
    onnx.save(model, str(tmp_path / "fused.onnx"))
    feed = _feed(2, 160, 40, seed=5)
    a = _session(tiny_artifacts / "step.onnx").run(None, feed)[0]
    b = _session(tmp_path / "fused.onnx").run(None, feed)[0]
    assert np.abs(a - b).max() < 1e-5 and np.abs(a).max() > 0.1
    assert fuse_fast_gelu(onnx.load(str(tiny_artifacts / "vocoder.onnx")))[1] == 0  # exact (erf) GELU: not this


def _gelu_graph(half: float = 0.5, leak: bool = False) -> onnx.ModelProto:
    """y = gelu_tanh(x @ W + b) as torch exports it; `half` the final constant, `leak` an extra output."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = {"c3": 0.044715, "k": float(np.sqrt(2 / np.pi)), "one": 1.0, "half": half}
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in consts.items()]
    inits += [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W")]
    inits += [numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")]
    mk = helper.make_node
    nodes = [
        mk("MatMul", ["x", "W"], ["mm"], name="mm"), mk("Add", ["b", "mm"], ["h"], name="bias"),
        mk("Mul", ["h", "h"], ["sq"], name="sq"), mk("Mul", ["h", "sq"], ["cube"], name="cube"),
        mk("Mul", ["c3", "cube"], ["cubic"], name="cubic"), mk("Add", ["h", "cubic"], ["inner"], name="inner"),
        mk("Mul", ["k", "inner"], ["arg"], name="arg"), mk("Tanh", ["arg"], ["th"], name="tanh"),
        mk("Add", ["one", "th"], ["onep"], name="onep"), mk("Mul", ["h", "onep"], ["hx"], name="hx"),
        mk("Mul", ["half", "hx"], ["y"], name="y"),
    ]  # fmt: skip
    f = TensorProto.FLOAT
    outs = [helper.make_tensor_value_info("y", f, [2, 8])]
    if leak:
        outs.append(helper.make_tensor_value_info("th", f, [2, 8]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [2, 8])], outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_fast_gelu_fuses_only_the_exact_formula(tmp_path: Path) -> None:
    from f5build.ort_gelu import find_tanh_gelu, fuse_fast_gelu

    model, count = fuse_fast_gelu(_gelu_graph())
    assert count == 1 and [n.op_type for n in model.graph.node] == ["MatMul", "FastGelu"]
    onnx.save(model, str(tmp_path / "fused.onnx"))
    onnx.save(_gelu_graph(), str(tmp_path / "plain.onnx"))
    x = {"x": np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)}
    want = _session(tmp_path / "plain.onnx").run(None, x)[0]
    np.testing.assert_allclose(_session(tmp_path / "fused.onnx").run(None, x)[0], want, atol=1e-5)
    assert not find_tanh_gelu(_gelu_graph(half=0.4).graph)  # another formula
    assert not find_tanh_gelu(_gelu_graph(leak=True).graph)  # an intermediate read outside the chain
    unnamed = _gelu_graph()
    unnamed.graph.node[0].name = ""
    with pytest.raises(ValueError, match="unique, non-empty node names"):
        fuse_fast_gelu(unnamed)


def test_cpu_variants_recorded_and_accurate(quantized: Path) -> None:
    from f5rt.manifest import load_manifest

    m = load_manifest(quantized)
    for prec in ("cpu-fp32", "cpu-int8"):
        meta = m.files[f"step.{prec}.onnx"]
        assert (meta["precision"], meta["stage"], meta["attention"]) == (prec, "quantize", "unmasked")
        assert meta.get("rows_independent", True) is (prec == "cpu-fp32")
        assert meta["external_data"] == [f"step.{prec}.onnx.data"]
        m.verify(f"step.{prec}.onnx")
    stage = m.data["stages"]["quantize"]["placement"]["step.cpu-int8.onnx"]
    assert stage["ok"] and stage["method"] == "onnxruntime.quantize_dynamic"
    assert stage["quantized"].get("MatMulInteger", 0) > 0
    ref = _session(quantized / "step.onnx")
    feed = _feed(1, 240, 0, seed=3)
    v_ref = _velocity(feed, ref.run(None, feed)[0])
    v32 = _velocity(feed, _session(quantized / "step.cpu-fp32.onnx").run(None, feed)[0])
    v8 = _velocity(feed, _session(quantized / "step.cpu-int8.onnx").run(None, feed)[0])
    assert _snr_db(v_ref, v32) > 80
    assert 20 < _snr_db(v_ref, v8) < 80  # really quantized, and still close


def test_cpu_int8_keeps_the_recipe_fp32_nodes(quantized: Path) -> None:
    from f5build.cpu_variant import excluded_nodes
    from f5build.placement import load_recipe

    rule = load_recipe(Path(__file__).resolve().parents[1] / "config" / "precision.yaml").graphs["step"].cpu
    assert rule is not None
    src = onnx.load(str(quantized / "step.onnx"))
    keep = excluded_nodes(src, rule)
    assert any("/time_embed/" in k for k in keep) and any("/proj_out/" in k for k in keep)
    assert any("/ff/ff/ff.2/" in k for k in keep)  # the feed-forward output linear stays FP32 too
    got = onnx.load(str(quantized / "step.cpu-int8.onnx"), load_external_data=False)
    ops = {n.name: n.op_type for n in got.graph.node}
    for k in keep:  # a Gemm comes back from ORT's quantizer as <name>_MatMul + <name>_Add, in FP32
        assert ops.get(k) in ("MatMul", "Gemm") or ops.get(f"{k}_MatMul") == "MatMul", k
    for n in got.graph.node:  # nothing else quantized in the attention (both operands activations)
        if n.op_type == "MatMulInteger":
            assert "/attn/MatMul" not in n.name


def test_cpu_int8_weights_are_7_bit_and_an_8_bit_graph_is_refused(quantized: Path) -> None:
    """The recipe's weight_bits 7: every s8 weight within +-64, so 2 x 255 x 64 < 32767 and AVX2's
    16-bit pair sums cannot saturate; the placement check refuses a graph with 8-bit weights."""
    import dataclasses

    from f5build.cpu_variant import check_cpu_placement
    from f5build.placement import load_recipe

    rule = load_recipe(Path(__file__).resolve().parents[1] / "config" / "precision.yaml").graphs["step"].cpu
    assert rule is not None and rule.weight_bits == 7
    src = onnx.load(str(quantized / "step.onnx"))
    int8 = onnx.load(str(quantized / "step.cpu-int8.onnx"))
    inits = {i.name: i for i in int8.graph.initializer}
    peaks = [
        int(np.abs(onnx.numpy_helper.to_array(inits[n.input[1]]).astype(np.int16)).max())
        for n in int8.graph.node
        if n.op_type == "MatMulInteger"
    ]
    assert peaks and max(peaks) <= 64 and 2 * 255 * max(peaks) < 32767
    assert check_cpu_placement(int8, src, rule, "cpu-int8", "step").ok
    name = next(n.input[1] for n in int8.graph.node if n.op_type == "MatMulInteger")
    w = onnx.numpy_helper.to_array(inits[name]).copy()
    w.flat[0] = 127
    inits[name].CopyFrom(onnx.numpy_helper.from_array(w, name))
    rep = check_cpu_placement(int8, src, rule, "cpu-int8", "step")
    assert not rep.ok and any("over the 7 bits" in e for e in rep.errors)
    assert check_cpu_placement(int8, src, dataclasses.replace(rule, weight_bits=8), "cpu-int8", "step").ok


def test_cpu_placement_check_refuses_violations(quantized: Path, tmp_path: Path) -> None:
    from f5build.cpu_variant import check_cpu_placement
    from f5build.placement import CpuRule, load_recipe

    rule = load_recipe(Path(__file__).resolve().parents[1] / "config" / "precision.yaml").graphs["step"].cpu
    assert rule is not None
    src = onnx.load(str(quantized / "step.onnx"))
    int8 = onnx.load(str(quantized / "step.cpu-int8.onnx"))
    fp32 = onnx.load(str(quantized / "step.cpu-fp32.onnx"))
    assert check_cpu_placement(int8, src, rule, "cpu-int8", "step").ok
    assert check_cpu_placement(fp32, src, rule, "cpu-fp32", "step").ok
    # a node the recipe keeps FP32 that was quantized: the int8 graph against a stricter rule
    stricter = CpuRule(rule.op_types, (*rule.exclude, ".*/ff/"), rule.attention)
    rep = check_cpu_placement(int8, src, stricter, "cpu-int8", "step")
    assert not rep.ok and any("keeps it FP32" in e for e in rep.errors)
    # a weight node left FP32 the recipe quantizes: the fp32 graph presented as cpu-int8
    rep = check_cpu_placement(fp32, src, rule, "cpu-int8", "step")
    assert not rep.ok and any("left FP32" in e for e in rep.errors)
    # quantized ops in cpu-fp32
    rep = check_cpu_placement(int8, src, rule, "cpu-fp32", "step")
    assert not rep.ok and any("quantized op" in e for e in rep.errors)
    # attention not fused, or fused in the other form
    rep = check_cpu_placement(src, src, rule, "cpu-fp32", "step")
    assert not rep.ok and any("Softmax left" in e for e in rep.errors)
    masked = CpuRule(rule.op_types, rule.exclude, "masked")
    rep = check_cpu_placement(fp32, src, masked, "cpu-fp32", "step")
    assert not rep.ok and any("attention form" in e for e in rep.errors)
    # GELU left as plain ops: attention fused, feed-forward not
    from f5build.ort_attention import fuse_attention

    attn_only, _ = fuse_attention(onnx.load(str(quantized / "step.onnx")), heads=2, masked=False)
    rep = check_cpu_placement(attn_only, src, rule, "cpu-fp32", "step")
    assert not rep.ok and any("tanh GELU chain(s) left unfused" in e for e in rep.errors), rep.errors


def test_backend_runs_a_padded_batch_row_by_row(quantized: Path) -> None:
    from f5rt.backends.base import HostText, SampleJob
    from f5rt.backends.onnxruntime import OnnxRuntimeBackend
    from f5rt.buckets import Bucket
    from f5rt.manifest import load_manifest

    m = load_manifest(quantized)
    plain = OnnxRuntimeBackend(m, precision="fp32", threads=1)
    fused = OnnxRuntimeBackend(m, precision="cpu-fp32", threads=1)
    assert not plain.unmasked_attention and fused.unmasked_attention
    assert fused.graphs == {"text_encoder": "fp32", "step": "cpu-fp32", "vocoder": "fp32"}
    f = _feed(2, 192, 50, seed=5)
    t = np.linspace(0, 1, 5, dtype=np.float32)
    job = SampleJob(
        Bucket(192, 2),
        f["x"],
        f["cond"],
        HostText(f["text_cond"], f["text_uncond"]),
        f["mask"],
        t[:-1],
        np.diff(t),
        f["cfg"],
    )
    a, b = plain.sample(job), fused.sample(job)
    assert np.abs(a - b)[f["mask"]].max() < 1e-4  # every row's real frames as the masked graph gives them
    assert np.array_equal(b[1, ~f["mask"][1]], f["x"][1, ~f["mask"][1]])  # padding untouched
    int8 = OnnxRuntimeBackend(m, precision="cpu-int8", threads=1)
    assert not int8.rows_independent  # per-call activation scales
    full = _feed(2, 160, 0, seed=7)
    job8 = SampleJob(
        Bucket(160, 2), full["x"], full["cond"], HostText(full["text_cond"], full["text_uncond"]), full["mask"],
        t[:-1], np.diff(t), full["cfg"],
    )  # fmt: skip
    both = int8.sample(job8)
    one = SampleJob(
        Bucket(160, 1), full["x"][1:], full["cond"][1:], HostText(full["text_cond"][1:], full["text_uncond"][1:]),
        full["mask"][1:], t[:-1], np.diff(t), full["cfg"][1:],
    )  # fmt: skip
    np.testing.assert_array_equal(both[1:], int8.sample(one))  # a row sounds the same however batched
    bad = f["mask"].copy()
    bad[1, 3] = False  # not a prefix
    with pytest.raises(ValueError, match="prefix"):
        fused.sample(SampleJob(Bucket(192, 2), f["x"], f["cond"], job.text, bad, t[:-1], np.diff(t), f["cfg"]))


def test_auto_precision_needs_a_validated_build(quantized: Path, tmp_path: Path) -> None:
    from f5rt.backends import make_backend
    from f5rt.manifest import load_manifest
    from f5rt.precision import cpu_auto, validated

    root = Path(shutil.copytree(quantized, tmp_path / "tiny"))
    data = json.loads((root / "manifest.json").read_text())
    data.setdefault("stages", {}).pop("validate", None)
    (root / "manifest.json").write_text(json.dumps(data))
    m = load_manifest(root)
    assert cpu_auto(m) == "fp32" and not validated(m, "cpu-int8")  # built, never validated
    files = {
        r: m.files[r]["sha256"]
        for r in ("step.cpu-int8.onnx", "step.cpu-int8.onnx.data", "text_encoder.onnx", "vocoder.onnx")
    }
    data["stages"]["validate"] = {"precisions": {"cpu-int8": {"passed": True, "gates": 5, "files": files}}}
    (root / "manifest.json").write_text(json.dumps(data))
    m = load_manifest(root)
    assert cpu_auto(m) == "cpu-int8"
    backend = make_backend("onnxruntime", m, precision="auto", threads=1)
    assert backend.precision == "cpu-int8"
    backend.close()
    data["stages"]["validate"]["precisions"]["cpu-int8"]["passed"] = False  # a failed gate
    (root / "manifest.json").write_text(json.dumps(data))
    assert cpu_auto(load_manifest(root)) == "fp32"
    data["stages"]["validate"]["precisions"]["cpu-int8"].update(
        passed=True, files={**files, "step.cpu-int8.onnx": "0" * 64}
    )
    (root / "manifest.json").write_text(json.dumps(data))  # passed, but for another file
    assert cpu_auto(load_manifest(root)) == "fp32"
    with pytest.raises(ValueError, match="ONNX Runtime graph"):
        make_backend("tensorrt", load_manifest(root), precision="cpu-int8")


def test_validate_compares_cpu_variants_row_by_row_and_records_verdicts(quantized: Path, tmp_path: Path) -> None:
    from f5build.cli import main
    from f5rt.manifest import load_manifest
    from f5rt.precision import cpu_auto

    root = Path(shutil.copytree(quantized, tmp_path / "a" / "tiny"))
    args = ["validate", "--model", "tiny", "--artifacts-root", str(root.parent), "--val-reports", str(tmp_path / "r")]
    args += ["--val-voices", str(_BUILT["voices"]), "--val-precisions", "cpu-fp32,cpu-int8"]
    assert main([*args, "--val-e2e-lines", "1", "--val-e2e-nfe", "8"]) == 0
    rep = json.loads((tmp_path / "r" / "accuracy.json").read_text())
    step = rep["graphs"]["step"]
    z = np.load(root / "calibration" / "step.npz")
    held = [i for i in range(len(z["meta_split"])) if z["meta_split"][i] == 1]
    real_rows = sum(int((z[f"s{i:05d}.mask"].sum(axis=1) > 0).sum()) for i in held)
    assert len(step["cpu-int8"]["rows"]) == real_rows  # one comparison per real row
    assert all(r["frames"] <= int(r["bucket"][1:].split("_")[0]) for r in step["cpu-int8"]["rows"])
    assert min(r["snr_db"] for r in step["cpu-fp32"]["rows"]) > 80
    gates = {g["gate"] for g in rep["gates"]}
    assert {
        "e2e.cpu-int8.min_median_mel_snr_db",
        "e2e.cpu-int8.max_mcd_db_seed_ratio",
        "step.cpu-int8.min_snr_db",
    } <= gates
    assert "e2e.cpu-fp32.min_mel_snr_db" in gates
    m = load_manifest(root)
    verdict = m.data["stages"]["validate"]["precisions"]["cpu-int8"]
    assert verdict["passed"] and verdict["files"]["step.cpu-int8.onnx"] == m.files["step.cpu-int8.onnx"]["sha256"]
    assert cpu_auto(m) == "cpu-int8"
    strict = tmp_path / "gates.yaml"  # a gate it cannot pass: validate fails and auto falls back
    strict.write_text("graphs:\n  step:\n    cpu-int8:\n      min_snr_db: 200.0\n")
    assert main([*args, "--val-no-e2e", "--val-gates", str(strict)]) == 1
    assert cpu_auto(load_manifest(root)) == "fp32"  # cpu-fp32 had no gate this time: not validated either


def test_exact_rows_splits_a_padded_call() -> None:
    from f5build.validate import exact_rows

    f = _feed(3, 50, 20)
    f["mask"][2] = False  # an empty row is dropped
    rows = exact_rows(f)
    assert [r["x"].shape for r in rows] == [(1, 50, 100), (1, 30, 100)]
    assert all(r["mask"].all() for r in rows) and rows[1]["t"].shape == (1,)
    np.testing.assert_array_equal(rows[1]["cond"][0], f["cond"][1, :30])
