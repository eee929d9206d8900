"""Calibration recording, ModelOpt INT8/FP16 variants and the Q/DQ placement check on the tiny model.

The quantized artifacts are built once per session (export fixture -> calibrate with a tiny budget
and synthetic voices -> quantize) in a private copy, so other tests keep their FP32-only folder.
The structural checks here look at the ONNX graphs directly (onnx + shape inference), not through
f5build.placement, so the placement check itself is under test too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytest.importorskip("modelopt.onnx.quantization", reason="nvidia-modelopt is not installed")

ROOT = Path(__file__).resolve().parents[1]
NFE = 8
CALIB_ARGS = [
    "--calib-requests",
    "4",
    "--calib-samples",
    "16",
    "--calib-nfe",
    str(NFE),
    "--calib-heldout-requests",
    "2",
    "--calib-heldout-samples",
    "8",
    "--calib-max-frames",
    "512",
    "--calib-generator",
    "synthetic",
]
_BUILT: dict[str, Path] = {}


def build_quantized(tmp_path_factory: pytest.TempPathFactory, tiny_artifacts: Path) -> Path:
    """Copy of the tiny artifacts with calibration data and fp16/int8 variants (made once per session)."""
    if "root" in _BUILT:
        return _BUILT["root"]
    from f5build.cli import main

    base = tmp_path_factory.mktemp("quant")
    shutil.copytree(tiny_artifacts, base / "tiny")
    voices = base / "voices"
    common = ["--model", "tiny", "--artifacts-root", str(base)]
    assert main(["calibrate", *common, *CALIB_ARGS, "--calib-voices", str(voices)]) == 0
    assert main(["quantize", *common]) == 0
    _BUILT["root"], _BUILT["voices"] = base / "tiny", voices
    return base / "tiny"


@pytest.fixture(scope="session")
def quantized(tmp_path_factory: pytest.TempPathFactory, tiny_artifacts: Path) -> Path:
    return build_quantized(tmp_path_factory, tiny_artifacts)


def _model(root: Path, rel: str, infer: bool = True) -> onnx.ModelProto:
    m = onnx.load(str(root / rel))
    return onnx.shape_inference.infer_shapes(m) if infer else m


def _producers(m: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in m.graph.node for o in n.output}


def _consumers(m: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in m.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _from_dq(m: onnx.ModelProto, tensor: str) -> bool:
    """Is `tensor` a DequantizeLinear output (looking through Casts)?"""
    prod = _producers(m)
    node = prod.get(tensor)
    while node is not None and node.op_type == "Cast":
        node = prod.get(node.input[0])
    return node is not None and node.op_type == "DequantizeLinear"


def _attention_matmuls(m: onnx.ModelProto) -> set[str]:
    """Score and value MatMuls, found from the Softmax outward (independently of f5build.placement)."""
    prod, cons = _producers(m), _consumers(m)
    chain = {"Cast", "Mul", "Div", "Add", "Where", "Pow", "Sub", "Transpose", "Reshape"}
    found = set()
    for sm in (n for n in m.graph.node if n.op_type == "Softmax"):
        stack = [sm.input[0]]
        while stack:
            node = prod.get(stack.pop())
            if node is None:
                continue
            if node.op_type == "MatMul":
                found.add(node.name)
            elif node.op_type in chain:
                stack.extend(i for i in node.input if i in prod and prod[i].op_type != "Constant")
        stack = [sm.output[0]]
        while stack:
            for node in cons.get(stack.pop(), []):
                if node.op_type == "MatMul":
                    found.add(node.name)
                elif node.op_type in chain:
                    stack.extend(node.output)
    return found


def _dtypes(m: onnx.ModelProto) -> dict[str, int]:
    vi = [*m.graph.value_info, *m.graph.input, *m.graph.output]
    out = {v.name: v.type.tensor_type.elem_type for v in vi}
    out.update({i.name: i.data_type for i in m.graph.initializer})
    return out


# -- calibration ---------------------------------------------------------------------------------


def test_calibration_records_real_sampler_states(quantized: Path) -> None:
    """Every timestep index of the NFE schedule is recorded; step-0 inputs are the runtime's seeded noise."""
    import json

    from f5rt import schedules
    from f5rt.synthesizer import default_noise

    z = np.load(quantized / "calibration" / "step.npz")
    split, step, t = z["meta_split"], z["meta_step"], z["meta_t"]
    assert set(step[split == 0].tolist()) == set(range(NFE))
    t_sched, dt_sched = schedules.steps(NFE, -1.0, True)
    np.testing.assert_array_equal(t, t_sched[step])
    assert (split == 1).sum() == 8 and (split == 0).sum() == 16
    index = json.loads((quantized / "calibration" / "index.json").read_text())
    items = {r["request"]: r["items"] for r in index["requests"]}
    checked = 0
    for i in np.flatnonzero(step == 0):
        x, mask = z[f"s{i:05d}.x"], z[f"s{i:05d}.mask"]
        req = int(z["meta_request"][i])
        frames = int(mask[0].sum())
        if len(items[req]) == 1:  # batched rows are sorted by length: check the single-item runs
            np.testing.assert_array_equal(x[0, :frames], default_noise(items[req][0]["seed"], 0, frames, 100))
            np.testing.assert_array_equal(x[0, frames:], 0.0)
            checked += 1
        np.testing.assert_array_equal(z[f"s{i:05d}.dt"], np.full(x.shape[0], dt_sched[0], np.float32))
    assert checked >= 1
    # a later step's recorded x is the FP32 ODE trajectory: replay it from the seeded noise
    import onnxruntime as ort

    sess = ort.InferenceSession(str(quantized / "step.onnx"), providers=["CPUExecutionProvider"])
    single = [i for i in np.flatnonzero(split == 0) if len(items[int(z["meta_request"][i])]) == 1 and step[i] > 1]
    i = max(single, key=lambda j: step[j])
    feed = {n: z[f"s{i:05d}.{n}"] for n in ("cond", "text_cond", "text_uncond", "mask", "cfg")}
    frames = int(feed["mask"][0].sum())
    x = np.zeros_like(z[f"s{i:05d}.x"])
    x[0, :frames] = default_noise(items[int(z["meta_request"][i])][0]["seed"], 0, frames, 100)
    for k in range(int(step[i])):
        b = x.shape[0]
        (x,) = sess.run(None, {**feed, "x": x, "t": np.full(b, t_sched[k]), "dt": np.full(b, dt_sched[k])})
    np.testing.assert_allclose(x[0, :frames], z[f"s{i:05d}.x"][0, :frames], rtol=0, atol=1e-5)


def test_calibrate_rerun_is_noop(quantized: Path) -> None:
    from f5build.cli import main

    path = quantized / "calibration" / "step.npz"
    before = path.stat().st_mtime_ns
    common = ["--model", "tiny", "--artifacts-root", str(quantized.parent)]
    assert main(["calibrate", *common, *CALIB_ARGS, "--calib-voices", str(_BUILT["voices"])]) == 0
    assert path.stat().st_mtime_ns == before


def test_voice_generators(tmp_path: Path) -> None:
    """The synthetic fallback makes every recipe voice, deterministically; transcripts come from the manifest."""
    from f5build.calibrate import load_corpus_module

    corpus = load_corpus_module(ROOT / "calibration")
    assert corpus.check_manifest(ROOT / "calibration") == []
    assert len(corpus.read_lines(ROOT / "calibration")) >= 300
    a = corpus.ensure_voices(tmp_path / "a", generator="synthetic", log=lambda _m: None)
    b = corpus.ensure_voices(tmp_path / "b", generator="synthetic", log=lambda _m: None)
    manifest = corpus.read_manifest(ROOT / "calibration")
    assert len(a) == len(manifest["voices"]) >= 8
    assert {k: v["sha256"] for k, v in a.items()} == {k: v["sha256"] for k, v in b.items()}
    recipe = manifest["voices"][0]
    assert (tmp_path / "a" / recipe["id"] / "ref.txt").read_text(encoding="utf-8") == recipe["text"]
    if corpus.espeak_version() is None:
        with pytest.raises(FileNotFoundError, match="apt-get install -y espeak-ng"):
            corpus.ensure_voices(tmp_path / "c", generator="espeak-ng")


# -- placement -------------------------------------------------------------------------------------


def test_placement_counts_per_op_type(quantized: Path, tiny_bundle: Any) -> None:
    """INT8 exactly on five projections of each DiT block (ff.2 stays FP16); nothing quantized in the fp16 graph."""
    from f5build.placement import check_placement, load_recipe

    recipe = load_recipe(ROOT / "config" / "precision.yaml")
    depth = tiny_bundle.arch["depth"]
    rep = check_placement(quantized / "step.int8.onnx", recipe.graphs["step"], "int8")
    assert rep.ok, rep.errors
    assert rep.quantized == {"MatMul": 5 * depth}  # to_q, to_k, to_v, to_out, ff in (ff out: FP16, the recipe)
    assert rep.weight_qdq == 5 * depth
    assert rep.activation_qdq == 3 * depth  # q/k/v share one input
    assert rep.qdq_pairs == 8 * depth
    assert rep.attention_matmuls == 2 * depth
    # projections compute in FP16 around the Q/DQ, and so do the attention matmuls (recipe: attention fp16)
    assert rep.fp16_nodes.get("MatMul") == 6 * depth + 2 * depth
    fp16 = check_placement(quantized / "step.fp16.onnx", recipe.graphs["step"], "fp16")
    assert fp16.ok, fp16.errors
    assert fp16.qdq_pairs == 0 and fp16.quantized == {}
    assert fp16.fp32_nodes.get("LayerNormalization") == tiny_bundle.arch["depth"] * 2 + 1
    voc = check_placement(quantized / "vocoder.int8.onnx", recipe.graphs["vocoder"], "int8")
    assert voc.ok, voc.errors
    # pwconv1 of each ConvNeXt block but the first two (their error passes through every later block);
    # pwconv2 (reads the GELU output, as the step's ff.2 does) stays FP16
    assert voc.quantized == {"MatMul": len(tiny_bundle.vocos.backbone.convnext) - 2} == {"MatMul": 1}


def test_no_qdq_on_layernorm_softmax_attention(quantized: Path, tiny_bundle: Any) -> None:
    m = _model(quantized, "step.int8.onnx", infer=False)
    attn = _attention_matmuls(m)
    assert len(attn) == 2 * tiny_bundle.arch["depth"]
    guarded = [n for n in m.graph.node if n.op_type in ("LayerNormalization", "Softmax") or n.name in attn]
    assert len(guarded) > len(attn)
    for node in guarded:
        assert not any(_from_dq(m, i) for i in node.input), f"{node.op_type} {node.name} reads a dequantized tensor"
    # and the quantized ones are exactly the block projections
    q = {
        n.name for n in m.graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and any(_from_dq(m, i) for i in n.input)
    }
    assert q and all(("/attn/to_" in n or "/ff/" in n) for n in q), sorted(q)


@pytest.mark.parametrize("rel", ["step.int8.onnx", "step.fp16.onnx"])
def test_guard_ops_stay_fp32(quantized: Path, rel: str) -> None:
    """LayerNorm, sin/cos (time embedding, rotary), time MLP, input and output projections and the
    CFG/Euler glue read and write FP32; the attention matmuls and Softmax compute in FP16, as the
    recipe's attention form (fused-fp16) says (shape inference on the saved graph)."""
    m = _model(quantized, rel)
    types = _dtypes(m)
    attn = _attention_matmuls(m)
    for node in (n for n in m.graph.node if n.name in attn or n.op_type == "Softmax"):
        tensors = [t for t in [*node.input, *node.output] if t in types]
        assert tensors and all(types[t] == onnx.TensorProto.FLOAT16 for t in tensors), node.name
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    checked = 0
    low = 0
    for node in m.graph.node:
        guard = (
            node.op_type in ("LayerNormalization", "Sin", "Cos")
            or node.name.startswith(("/time_embed/", "/input_embed", "/proj_out/", "/norm_out/"))
            or (node.name.count("/") == 1 and node.op_type not in ("Cast", "Constant"))
        )
        tensors = [t for t in [*node.input, *node.output] if types.get(t) in floats]
        if any(types[t] == onnx.TensorProto.FLOAT16 for t in tensors):
            low += 1
        if guard and node.op_type != "Cast":
            bad = [t for t in tensors if types[t] != onnx.TensorProto.FLOAT]
            assert not bad, f"{node.op_type} {node.name}: {bad[0]} is not float32"
            checked += 1
    assert checked > 50
    assert low > 20  # the FP16 conversion did happen elsewhere
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in m.graph.output)


def test_placement_check_rejects_violations(quantized: Path) -> None:
    """A Q/DQ pair on a LayerNorm input, a quantized attention matmul, or an FP16 Softmax fail the check."""
    import onnx_graphsurgeon as gs

    from f5build.placement import check_placement, load_recipe

    recipe = load_recipe(ROOT / "config" / "precision.yaml").graphs["step"]

    def with_qdq(pick: Any) -> Any:
        g = gs.import_onnx(onnx.load(str(quantized / "step.int8.onnx")))
        node = next(n for n in g.nodes if pick(n))
        x = node.inputs[0]
        scale = gs.Constant(f"{node.name}_bad_scale", np.array(0.05, dtype=np.float32))
        zp = gs.Constant(f"{node.name}_bad_zp", np.array(0, dtype=np.int8))
        q_out = gs.Variable(f"{node.name}_q", dtype=np.int8)
        dq_out = gs.Variable(f"{node.name}_dq", dtype=x.dtype)
        g.nodes.append(gs.Node("QuantizeLinear", f"{node.name}_Q", inputs=[x, scale, zp], outputs=[q_out]))
        g.nodes.append(gs.Node("DequantizeLinear", f"{node.name}_DQ", inputs=[q_out, scale, zp], outputs=[dq_out]))
        node.inputs[0] = dq_out
        return g, node.name

    g, name = with_qdq(lambda n: n.op == "LayerNormalization")
    rep = check_placement(g, recipe, "int8")
    assert not rep.ok and any(name in e for e in rep.errors)
    g, name = with_qdq(lambda n: n.op == "MatMul" and n.name.endswith("/attn/MatMul"))
    rep = check_placement(g, recipe, "int8")
    assert not rep.ok and any(name in e and "exclusion" in e for e in rep.errors)
    # an attention matmul left in FP32 where the recipe says fp16 attention
    g = gs.import_onnx(onnx.load(str(quantized / "step.fp16.onnx")))
    mm = next(n for n in g.nodes if n.op == "MatMul" and n.name.endswith("/attn/MatMul"))
    for k, t in enumerate(list(mm.inputs)):
        as32 = gs.Variable(f"{mm.name}_in{k}_fp32", dtype=np.float32)
        g.nodes.append(
            gs.Node(
                "Cast", f"{mm.name}_in{k}_to_fp32", attrs={"to": onnx.TensorProto.FLOAT}, inputs=[t], outputs=[as32]
            )
        )
        mm.inputs[k] = as32
    back = gs.Variable(f"{mm.name}_out_fp32", dtype=np.float32)
    out = mm.outputs[0]
    mm.outputs[0] = back
    g.nodes.append(
        gs.Node("Cast", f"{mm.name}_to_fp16", attrs={"to": onnx.TensorProto.FLOAT16}, inputs=[back], outputs=[out])
    )
    rep = check_placement(g, recipe, "fp16")
    assert any(mm.name in e and "attention form fused-fp16 computes it in fp16" in e for e in rep.errors), rep.errors

    # an FP32 Softmax where the form computes it in FP16 (the FP32 softmax section of issue 12's recipe)
    g = gs.import_onnx(onnx.load(str(quantized / "step.fp16.onnx")))
    sm = next(n for n in g.nodes if n.op == "Softmax")
    full_in, full_out, out = (
        gs.Variable(f"{sm.name}_f32", dtype=np.float32),
        gs.Variable(f"{sm.name}_o32", dtype=np.float32),
        sm.outputs[0],
    )
    g.nodes.append(
        gs.Node(
            "Cast", f"{sm.name}_to_f32", attrs={"to": onnx.TensorProto.FLOAT}, inputs=[sm.inputs[0]], outputs=[full_in]
        )
    )
    g.nodes.append(
        gs.Node("Cast", f"{sm.name}_to_f16", attrs={"to": onnx.TensorProto.FLOAT16}, inputs=[full_out], outputs=[out])
    )
    sm.inputs[0], sm.outputs[0] = full_in, full_out
    rep = check_placement(g, recipe, "fp16")
    assert not rep.ok and any(sm.name in e and "computes it in fp16" in e for e in rep.errors), rep.errors
    # the untouched graphs pass
    assert check_placement(quantized / "step.onnx", recipe, "fp32").ok


@pytest.mark.parametrize("rel", ["step.fp16.onnx", "step.int8.onnx"])
def test_every_attention_block_is_in_the_fusable_pattern(quantized: Path, tiny_bundle: Any, rel: str) -> None:
    """The default recipe's step graphs (fused-fp16): all `depth` blocks in TensorRT's MHA pattern, recorded."""
    from f5build.attention_pattern import check_attention
    from f5rt.manifest import load_manifest

    depth, heads = tiny_bundle.arch["depth"], tiny_bundle.arch["heads"]
    rep = check_attention(onnx.load(str(quantized / rel)), "fused-fp16", depth, heads)
    assert rep.fused and len(rep.blocks) == depth, rep.problems()
    assert all(b.mask and b.head_size == tiny_bundle.arch["dim"] // heads for b in rep.blocks)
    meta = load_manifest(quantized).files[rel]
    assert (meta["attention_form"], meta["attention_fused"]) == ("fused-fp16", True)
    placement = load_manifest(quantized).data["stages"]["quantize"]["placement"][rel]
    assert placement["attention_pattern"]["fused"] is True and placement["attention_pattern"]["fusable_blocks"] == depth
    # the FP32 graph is not: TensorRT's MHA kernels take FP16/BF16 matmul inputs
    assert not check_attention(onnx.load(str(quantized / "step.onnx")), "fused-fp16", depth, heads).fused


def test_cost_projects_the_checked_attention_state(quantized: Path, tmp_path: Path) -> None:
    """The cost model's fused / unfused follows the pattern check: fp16 and int8 fused, fp32 not."""
    from f5build.cost import CostOptions, compute

    rep = compute(CostOptions(quantized, tmp_path, buckets=("n256_b1",), nfe=(7,)), log=lambda *_: None)
    assert {p: a.fused for p, a in rep.attention.items()} == {"fp32": False, "fp16": True, "int8": True}
    assert rep.fused("int8") and rep.fused("fp16") and not rep.fused("fp32")
    head = {p.deployment: p for p in rep.headline()}
    assert head["int8"].fused_attention and not head["fp32"].fused_attention
    assert all(s.fused_attention == rep.fused(s.deployment) for s in rep.streaming)


def test_int8_step_matches_fp32_on_held_out_inputs(quantized: Path) -> None:
    """ONNX Runtime: the INT8+FP16 step's velocity is within cosine 0.999 of FP32 on held-out sampler states."""
    import onnxruntime as ort

    z = np.load(quantized / "calibration" / "step.npz")
    names = [str(n) for n in z["inputs"]]
    sess = {
        p: ort.InferenceSession(str(quantized / f), providers=["CPUExecutionProvider"])
        for p, f in (("fp32", "step.onnx"), ("int8", "step.int8.onnx"), ("fp16", "step.fp16.onnx"))
    }
    for i in np.flatnonzero(z["meta_split"] == 1)[:4]:
        feed = {n: z[f"s{i:05d}.{n}"] for n in names}
        v = {}
        for p, s in sess.items():
            (x_next,) = s.run(None, feed)
            v[p] = ((x_next - feed["x"]) / feed["dt"][:, None, None])[feed["mask"]].astype(np.float64).ravel()
        for p, bound in (("int8", 0.999), ("fp16", 0.9999)):
            cos = v["fp32"] @ v[p] / np.linalg.norm(v["fp32"]) / np.linalg.norm(v[p])
            assert cos >= bound, (p, i, cos)


def test_quantize_rerun_is_noop_and_recorded(quantized: Path) -> None:
    from f5build.cli import main
    from f5rt.manifest import load_manifest

    m = load_manifest(quantized)
    for prec in ("fp16", "int8"):
        meta = m.files[f"step.{prec}.onnx"]
        assert (meta["graph"], meta["precision"], meta["kind"], meta["stage"]) == ("step", prec, "onnx", "quantize")
        m.verify(f"step.{prec}.onnx")
    assert m.precisions("step") == ["fp32", "fp16", "int8", "cpu-fp32", "cpu-int8"]
    assert m.precisions("text_encoder") == ["fp32"]
    before = {p.name: p.stat().st_mtime_ns for p in quantized.glob("*.onnx")}
    assert main(["quantize", "--model", "tiny", "--artifacts-root", str(quantized.parent)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in quantized.glob("*.onnx")} == before
    assert not [p for p in quantized.iterdir() if p.name.startswith(".quant-")]  # no temp folders left


def test_recipe_errors(tmp_path: Path) -> None:
    import yaml

    from f5build.placement import load_recipe

    base = yaml.safe_load((ROOT / "config" / "precision.yaml").read_text())
    bad = dict(base, graphs={**base["graphs"], "step": {**base["graphs"]["step"], "variants": ["int4"]}})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"graphs.step.variants: unknown \['int4'\]"):
        load_recipe(path)
    bad = dict(base, calibration={**base["calibration"], "method": "percentile"})
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="calibration.method"):
        load_recipe(path)
    bad = dict(
        base,
        graphs={
            **base["graphs"],
            "step": {**base["graphs"]["step"], "int8": {"op_types": ["MatMul"], "exclude": ["("]}},
        },
    )
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="bad regex"):
        load_recipe(path)
    step = base["graphs"]["step"]
    for bits in (9, True, "7"):
        path.write_text(
            yaml.safe_dump(
                dict(base, graphs={**base["graphs"], "step": {**step, "cpu": {**step["cpu"], "weight_bits": bits}}})
            )
        )
        with pytest.raises(ValueError, match="graphs.step.cpu.weight_bits: expected 7 or 8"):
            load_recipe(path)
    for attention, msg in (
        (
            {**step["attention"], "form": "fused-int8"},
            r"graphs.step.attention.form: expected one of fused-fp16, fused-bf16, fp32-softmax, got 'fused-int8'",
        ),
        ({**step["attention"], "matmuls": "fp16"}, r"graphs.step.attention.matmuls: replaced by 'form'"),
        ({**step["attention"], "softmax": "fp32"}, r"fp16 matmuls with an fp32 softmax is form: fp32-softmax"),
        ({**step["attention"], "extra": 1}, r"graphs.step.attention: unknown key\(s\) \['extra'\]"),
        ({"form": "fused-fp16"}, r"graphs.step.attention: expected a mapping with 'nodes'"),
    ):
        path.write_text(yaml.safe_dump(dict(base, graphs={**base["graphs"], "step": {**step, "attention": attention}})))
        with pytest.raises(ValueError, match=msg):
            load_recipe(path)
    rec = load_recipe(ROOT / "config" / "precision.yaml").graphs["step"]
    assert rec.attention.form == "fused-fp16" and rec.attention.fused
    assert (rec.attention.matmuls, rec.attention.softmax) == ("fp16", "fp16")
    assert "Softmax" not in rec.keep_fp32_op_types() and rec.attention.nodes not in rec.keep_fp32_nodes()
    import dataclasses

    old = dataclasses.replace(rec, attention=dataclasses.replace(rec.attention, form="fp32-softmax"))
    assert (old.attention.softmax, old.attention.fused) == ("fp32", False) and "Softmax" in old.keep_fp32_op_types()
    bf = dataclasses.replace(rec.attention, form="fused-bf16")
    assert (bf.matmuls, bf.softmax, bf.fused) == ("bf16", "bf16", True)


def test_modelopt_does_not_touch_the_fp32_graph(quantized: Path) -> None:
    """ModelOpt rewrites its input in place (shape inference); the stage hands it a private copy."""
    from f5rt.manifest import load_manifest

    m = load_manifest(quantized)
    for g in ("step", "vocoder", "text_encoder"):
        m.verify(f"{g}.onnx")
    assert os.path.getsize(quantized / "step.onnx") == m.files["step.onnx"]["bytes"]


# -- Q/DQ adjacency: what TensorRT fuses ----------------------------------------------------------


def _dq_into_matmul(g: Any) -> tuple[Any, Any]:
    """The first activation DQ of the step graph and the MatMul it feeds."""
    for dq in (n for n in g.nodes if n.op == "DequantizeLinear"):
        q = dq.inputs[0].inputs[0] if dq.inputs[0].inputs else None
        if q is not None and q.op == "QuantizeLinear" and type(q.inputs[0]).__name__ != "Constant":
            mm = next((c for c in dq.outputs[0].outputs if c.op == "MatMul"), None)
            if mm is not None and "/attn/to_out" in mm.name:
                return dq, mm
    raise AssertionError("no activation DQ -> to_out MatMul in the graph")


@pytest.mark.parametrize("between", ["Cast", "Reshape", "Identity"])
def test_placement_refuses_an_op_between_dq_and_its_matmul(quantized: Path, between: str) -> None:
    import onnx_graphsurgeon as gs

    from f5build.placement import check_placement, load_recipe

    recipe = load_recipe(ROOT / "config" / "precision.yaml").graphs["step"]
    g = gs.import_onnx(onnx.load(str(quantized / "step.int8.onnx")))
    dq, mm = _dq_into_matmul(g)
    mid = gs.Variable(f"{dq.name}_mid", dtype=np.float16)
    inputs, attrs = [dq.outputs[0]], {}
    if between == "Cast":
        attrs = {"to": onnx.TensorProto.FLOAT16}
    elif between == "Reshape":
        inputs.append(gs.Constant(f"{dq.name}_shape", np.array([0, 0, -1], dtype=np.int64)))
    g.nodes.append(gs.Node(between, f"{dq.name}_{between}", attrs=attrs, inputs=inputs, outputs=[mid]))
    mm.inputs[mm.inputs.index(dq.outputs[0])] = mid
    rep = check_placement(g, recipe, "int8")
    assert not rep.ok
    named = [e for e in rep.errors if dq.name in e or f"{dq.name}_{between}" in e]
    assert named, rep.errors
    if between == "Cast":
        assert any("cast before the QuantizeLinear instead" in e for e in named)
    else:
        assert any(f"Q/DQ on an input of {between}" in e for e in rep.errors)


def test_placement_refuses_shape_readers_and_scale_types_of_dequantized_tensors(quantized: Path) -> None:
    import onnx_graphsurgeon as gs

    from f5build.placement import check_placement, load_recipe

    recipe = load_recipe(ROOT / "config" / "precision.yaml").graphs["step"]
    g = gs.import_onnx(onnx.load(str(quantized / "step.int8.onnx")))
    dq, _ = _dq_into_matmul(g)
    shape = gs.Variable(f"{dq.name}_shape_out", dtype=np.int64)
    g.nodes.append(gs.Node("Shape", f"{dq.name}_Shape", inputs=[dq.outputs[0]], outputs=[shape]))
    g.outputs.append(shape)
    rep = check_placement(g, recipe, "int8")
    assert any(f"Shape {dq.name}_Shape reads the dequantized tensor" in e and "unquantized" in e for e in rep.errors)

    g = gs.import_onnx(onnx.load(str(quantized / "step.int8.onnx")))
    dq, mm = _dq_into_matmul(g)
    scale = dq.inputs[1]
    dq.inputs[1] = gs.Constant(f"{scale.name}_as_fp32", np.asarray(scale.values, dtype=np.float32))
    dq.outputs[0].dtype = np.float32
    rep = check_placement(g, recipe, "int8")
    assert any(dq.name in e and "scale must be in the consumer's type" in e for e in rep.errors), rep.errors


def test_the_stage_leaves_every_dq_feeding_its_int8_op_directly(quantized: Path) -> None:
    """Defect: autocast left DQ -> Cast -> MatMul (6 in the tiny graphs) and DQ -> Cast -> Shape."""
    for rel in ("step.int8.onnx", "vocoder.int8.onnx"):
        m = _model(quantized, rel, infer=False)
        cons = _consumers(m)
        dqs = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
        assert dqs
        for dq in dqs:
            ops = {c.op_type for c in cons.get(dq.output[0], [])}
            assert ops and ops <= {"MatMul", "Gemm", "Conv"}, f"{rel}: {dq.name} feeds {ops}"
    manifest = json.loads((quantized / "manifest.json").read_text())
    info = manifest["stages"]["quantize"]
    assert info  # the rewrite is recorded per variant
    text = json.dumps(info)
    assert "casts_moved" in text and "shape_readers_rewired" in text


def _qdq_cast_graph() -> onnx.ModelProto:
    """x fp32 -> Q -> DQ (fp32 scale) -> Cast fp16 -> MatMul (fp16 DQ weight), plus DQ -> Cast fp32 -> Shape."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.integers(-100, 100, (16, 8)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
        numpy_helper.from_array(w, "wq"),
        numpy_helper.from_array(np.full(8, 0.01, np.float16), "ws"),
        numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="Q"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="DQ"),
        helper.make_node("Cast", ["xd"], ["xh"], name="DQ_cast_to_fp16", to=onnx.TensorProto.FLOAT16),
        helper.make_node("Cast", ["xd"], ["xf"], name="DQ_cast_to_fp32", to=onnx.TensorProto.FLOAT),
        helper.make_node("Shape", ["xf"], ["shape"], name="Shape"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="W_DQ", axis=1),
        helper.make_node("MatMul", ["xh", "wd"], ["y"], name="MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 16])],
        [
            helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, ["n", 8]),
            helper.make_tensor_value_info("shape", onnx.TensorProto.INT64, [2]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_rewrite_moves_the_cast_before_the_q_and_rewires_shape_readers(tmp_path: Path) -> None:
    import onnxruntime as ort

    from f5build.qdq_rewrite import rewrite_qdq

    model = _qdq_cast_graph()
    onnx.checker.check_model(model)
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)

    def run(m: onnx.ModelProto) -> list[np.ndarray]:
        path = tmp_path / "m.onnx"
        onnx.save(m, str(path))
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    def with_dq_output(m: onnx.ModelProto, elem_type: int) -> onnx.ModelProto:
        out = onnx.ModelProto()
        out.CopyFrom(m)
        out.graph.output.append(onnx.helper.make_tensor_value_info("xd", elem_type, ["n", 16]))
        return out

    before = run(with_dq_output(model, onnx.TensorProto.FLOAT))
    report = rewrite_qdq(model)
    onnx.checker.check_model(model)
    assert report.casts_moved == ["DQ_cast_to_fp16"] and report.shape_readers_rewired == ["Shape"]
    cons = _consumers(model)
    assert [c.op_type for c in cons["xd"]] == ["MatMul"]  # the DQ feeds the MatMul directly
    prod = _producers(model)
    assert prod[prod["xq"].input[0]].op_type == "Cast"  # cast before the Q
    assert {i.name: i.data_type for i in model.graph.initializer}[prod["xd"].input[1]] == onnx.TensorProto.FLOAT16
    assert next(n for n in model.graph.node if n.op_type == "Shape").input == ["x"]
    assert "xs" not in {i.name for i in model.graph.initializer}  # the FP32 scale it replaced is gone
    after = run(with_dq_output(model, onnx.TensorProto.FLOAT16))  # the DQ now gives FP16
    np.testing.assert_array_equal(after[1], before[1])
    # The same grid on the FP16-rounded input: an input within FP16 rounding of a step boundary may
    # land one step over (a few %), every other dequantized value is equal up to FP16 rounding.
    step = np.abs(after[2].astype(np.float32) - before[2]) / 0.02
    assert step.max() <= 1.01 and np.mean(step > 0.5) <= 0.05, (step.max(), np.mean(step > 0.5))
    assert step[step < 0.5].max() <= 0.1  # FP16 rounding of the dequantized value, not another step


def test_a_saved_graph_is_the_same_bytes_whatever_order_its_value_info_came_in(tmp_path: Path):
    """ModelOpt's autocast lists value_info in set order (it varies with the hash seed); save_model sorts
    it, so the same graph has the same sha256 on every run and nothing keyed on it is redone."""
    from onnx import TensorProto, helper

    from f5build.modelopt_calls import save_model

    def graph(order: list[str]) -> onnx.ModelProto:
        nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
                 helper.make_node("Abs", ["b"], ["y"])]  # fmt: skip
        infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in order]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
        return helper.make_model(helper.make_graph(nodes, "g", [x], [y], value_info=infos))

    save_model(graph(["b", "a"]), tmp_path / "one.onnx")
    save_model(graph(["a", "b"]), tmp_path / "two.onnx")
    assert (tmp_path / "one.onnx").read_bytes() == (tmp_path / "two.onnx").read_bytes()
    assert [v.name for v in onnx.load(str(tmp_path / "one.onnx")).graph.value_info] == ["a", "b"]
