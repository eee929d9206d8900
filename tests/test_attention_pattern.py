"""The TensorRT MHA pattern check (f5build.attention_pattern) and the BF16 attention form, on small hand-made graphs.

Each rule the check claims to enforce is broken once here and seen refused, naming the block: a Cast
on the scores, Q/DQ inside attention, an explicit max subtraction (ReduceMax/Sub), a scale on the
scores, FP32 matmul inputs, a head size TensorRT's fused kernel does not take, a second reader of the
scores, a block count other than the model's depth. The real step graphs are checked in
test_quantize.py (every variant the quantize stage makes must pass with count = depth).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from f5build.attention_form import has_bf16_compute, retype_attention_bf16, simulate_bf16
from f5build.attention_pattern import check_attention

H16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT
N = 37  # frames: odd, so no (B, H, N, d) tensor looks square


def attention_graph(
    depth: int = 2,
    heads: int = 2,
    head: int = 64,
    elem: int = H16,
    mutate: Callable[[int, list[onnx.NodeProto], dict[str, str]], None] | None = None,
    extra: tuple[onnx.TensorProto, ...] = (),
) -> onnx.ModelProto:
    """x (1, N, heads*head) -> `depth` attention blocks in the fused pattern (scale on q, key mask Add).

    `mutate(block, nodes, names)` may edit a block's node list before it is chained; `names` maps
    'scores', 'masked', 'probs' to the block's tensor names."""
    dim = heads * head
    np_t = np.float16 if elem == H16 else np.float32
    inits = [
        numpy_helper.from_array(np.array([1, N, heads, head], np.int64), "split_shape"),
        numpy_helper.from_array(np.array([1, N, dim], np.int64), "merge_shape"),
        numpy_helper.from_array(np.array(head**-0.5, np_t), "scale"),
        numpy_helper.from_array(np.array([0.0], np_t), "zero"),
        numpy_helper.from_array(np.array([-np.inf], np_t), "neg_inf"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "unsq_axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
        *extra,
    ]
    nodes = [
        helper.make_node("Where", ["keep", "zero", "neg_inf"], ["bias2"], name="/mask_bias/Where"),
        helper.make_node("Unsqueeze", ["bias2", "unsq_axes"], ["bias"], name="/mask_bias/Unsqueeze"),
    ]
    h = "x"
    for i in range(depth):
        p = f"/transformer_blocks.{i}/attn"
        w = {k: f"{p}/{k}" for k in ("wq", "wk", "wv")}
        for k in w.values():
            inits.append(
                numpy_helper.from_array((np.random.default_rng(i).standard_normal((dim, dim)) * 0.05).astype(np_t), k)
            )
        names = {"scores": f"{p}/scores", "masked": f"{p}/masked", "probs": f"{p}/probs"}
        blk = []
        for r in ("q", "k", "v"):
            blk += [
                helper.make_node("MatMul", [h, w[f"w{r}"]], [f"{p}/{r}0"], name=f"{p}/to_{r}/MatMul"),
                helper.make_node("Reshape", [f"{p}/{r}0", "split_shape"], [f"{p}/{r}1"], name=f"{p}/Reshape_{r}"),
            ]
        blk += [
            helper.make_node("Transpose", [f"{p}/q1"], [f"{p}/q"], perm=[0, 2, 1, 3], name=f"{p}/Transpose_q"),
            helper.make_node("Transpose", [f"{p}/k1"], [f"{p}/kt"], perm=[0, 2, 3, 1], name=f"{p}/Transpose_k"),
            helper.make_node("Transpose", [f"{p}/v1"], [f"{p}/v"], perm=[0, 2, 1, 3], name=f"{p}/Transpose_v"),
            helper.make_node("Mul", [f"{p}/q", "scale"], [f"{p}/qs"], name=f"{p}/Mul"),
            helper.make_node("MatMul", [f"{p}/qs", f"{p}/kt"], [names["scores"]], name=f"{p}/MatMul"),
            helper.make_node("Add", [names["scores"], "bias"], [names["masked"]], name=f"{p}/Add"),
            helper.make_node("Softmax", [names["masked"]], [names["probs"]], axis=-1, name=f"{p}/Softmax"),
            helper.make_node("MatMul", [names["probs"], f"{p}/v"], [f"{p}/o"], name=f"{p}/MatMul_1"),
            helper.make_node("Transpose", [f"{p}/o"], [f"{p}/o1"], perm=[0, 2, 1, 3], name=f"{p}/Transpose_o"),
            helper.make_node("Reshape", [f"{p}/o1", "merge_shape"], [f"{p}/out"], name=f"{p}/Reshape_o"),
        ]
        if mutate is not None:
            mutate(i, blk, names)
        nodes += blk
        h = f"{p}/out"
    nodes.append(helper.make_node("Identity", [h], ["y"], name="/out"))
    g = helper.make_graph(
        nodes,
        "attn",
        [
            helper.make_tensor_value_info("x", elem, [1, N, dim]),
            helper.make_tensor_value_info("keep", TensorProto.BOOL, [1, N]),
        ],
        [helper.make_tensor_value_info("y", elem, [1, N, dim])],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    return m


SHAPES = {"x": (1, N, 128), "keep": (1, N)}


def check(m: onnx.ModelProto, form: str = "fused-fp16", depth: int | None = 2, heads: int | None = 2, shapes=None):
    return check_attention(
        m,
        form,
        depth,
        heads,
        shapes=shapes or {"x": (1, N, m.graph.input[0].type.tensor_type.shape.dim[2].dim_value), "keep": (1, N)},
    )


def _replace(blk: list[onnx.NodeProto], name: str, *new: onnx.NodeProto) -> None:
    k = next(i for i, n in enumerate(blk) if n.name == name)
    blk[k : k + 1] = list(new)


def test_plain_pattern_passes_with_count_and_head_size() -> None:
    rep = check(attention_graph())
    assert rep.fused, rep.problems()
    assert len(rep.blocks) == 2 and rep.fusable_blocks == 2
    b = rep.blocks[1]
    assert (b.block, b.score_matmul, b.value_matmul, b.mask) == (
        "/transformer_blocks.1/attn",
        "/transformer_blocks.1/attn/MatMul",
        "/transformer_blocks.1/attn/MatMul_1",
        "/transformer_blocks.1/attn/Add",
    )
    assert b.head_size == 64 and b.dtype == "float16"
    assert "all 2 attention blocks" in rep.reason()
    assert rep.to_dict()["fused"] is True


def test_block_count_must_equal_depth() -> None:
    rep = check(attention_graph(depth=2), depth=3)
    assert not rep.fused
    assert "2 attention blocks (Softmax nodes) found, the model's depth is 3" in rep.reason()


def test_cast_around_softmax_refused() -> None:
    """The FP32 softmax section (issue 12's recipe): Casts on the (B, H, N, N) tensors."""

    def fp32_softmax(i: int, blk: list[onnx.NodeProto], n: dict[str, str]) -> None:
        if i != 1:
            return
        _replace(
            blk,
            "/transformer_blocks.1/attn/Softmax",
            helper.make_node("Cast", [n["masked"]], ["m32"], to=F32, name="/transformer_blocks.1/attn/Cast"),
            helper.make_node("Softmax", ["m32"], ["p32"], axis=-1, name="/transformer_blocks.1/attn/Softmax"),
            helper.make_node("Cast", ["p32"], [n["probs"]], to=H16, name="/transformer_blocks.1/attn/Cast_1"),
        )

    rep = check(attention_graph(mutate=fp32_softmax))
    assert not rep.fused and rep.fusable_blocks == 1
    bad = rep.blocks[1]
    assert any("Cast /transformer_blocks.1/attn/Cast before Softmax" in p and "FP32 softmax" in p for p in bad.problems)
    assert any("Cast /transformer_blocks.1/attn/Cast_1 reads the probabilities" in p for p in bad.problems)
    assert rep.reason().startswith("1 of 2 attention blocks fusable: /transformer_blocks.1/attn:")
    assert bad.score_matmul == "/transformer_blocks.1/attn/MatMul"  # still named, through the Cast


def test_qdq_inside_attention_refused() -> None:
    def qdq_probs(i: int, blk: list[onnx.NodeProto], n: dict[str, str]) -> None:
        if i != 0:
            return
        k = next(j for j, x in enumerate(blk) if x.name.endswith("/MatMul_1"))
        blk[k].input[0] = "p_dq"
        blk[k:k] = [
            helper.make_node("QuantizeLinear", [n["probs"], "qs", "qz"], ["p_q"], name="/transformer_blocks.0/attn/Q"),
            helper.make_node("DequantizeLinear", ["p_q", "qs", "qz"], ["p_dq"], name="/transformer_blocks.0/attn/DQ"),
        ]

    scales = (
        numpy_helper.from_array(np.array(1 / 127, np.float16), "qs"),
        numpy_helper.from_array(np.array(0, np.int8), "qz"),
    )
    m = attention_graph(mutate=qdq_probs, extra=scales)
    rep = check(m)
    assert not rep.fused
    assert any(
        "QuantizeLinear /transformer_blocks.0/attn/Q reads the probabilities" in p and "512" in p
        for p in rep.blocks[0].problems
    )


def test_reducemax_sub_before_softmax_refused() -> None:
    def max_subtract(i: int, blk: list[onnx.NodeProto], n: dict[str, str]) -> None:
        p = f"/transformer_blocks.{i}/attn"
        sm = next(x for x in blk if x.op_type == "Softmax")
        sm.input[0] = f"{p}/shifted"
        k = blk.index(sm)
        blk[k:k] = [
            helper.make_node("ReduceMax", [n["masked"], "last_axis"], [f"{p}/mx"], keepdims=1, name=f"{p}/ReduceMax"),
            helper.make_node("Sub", [n["masked"], f"{p}/mx"], [f"{p}/shifted"], name=f"{p}/Sub"),
        ]

    rep = check(attention_graph(mutate=max_subtract))
    assert rep.fusable_blocks == 0
    assert all(any("Sub " in p and "ReduceMax/Sub" in p for p in b.problems) for b in rep.blocks)
    assert any("Sub /transformer_blocks.0/attn/Sub writes a (B, heads, N, N) tensor" in e for e in rep.errors)


def test_scale_on_scores_refused() -> None:
    def scale_scores(i: int, blk: list[onnx.NodeProto], n: dict[str, str]) -> None:
        p = f"/transformer_blocks.{i}/attn"
        mul = next(x for x in blk if x.name == f"{p}/Mul")
        mm = next(x for x in blk if x.name == f"{p}/MatMul")
        mm.input[0] = f"{p}/q"  # unscaled q ...
        add = next(x for x in blk if x.op_type == "Add")
        mul.input[:] = [n["scores"], "scale"]  # ... and the scale on the (B, H, N, N) scores instead
        mul.output[0] = f"{p}/scaled"
        add.input[0] = f"{p}/scaled"
        blk.remove(mul)
        blk.insert(blk.index(add), mul)

    rep = check(attention_graph(mutate=scale_scores))
    assert rep.fusable_blocks == 0
    assert any("fold it into Q or K" in p for p in rep.blocks[0].problems), rep.blocks[0].problems


def test_fp32_matmul_inputs_refused() -> None:
    rep = check(attention_graph(elem=F32))
    assert rep.fusable_blocks == 0
    assert any("score MatMul" in p and "input 0 is float, the form needs float16" in p for p in rep.blocks[0].problems)
    assert any("value MatMul" in p and "is float, the form needs float16" in p for p in rep.blocks[0].problems)
    # the same FP16 graph is not what the BF16 form asks for
    rep = check(attention_graph(), form="fused-bf16")
    assert not rep.fused and any("the form needs bfloat16" in p for p in rep.blocks[0].problems)


@pytest.mark.parametrize(
    ("heads", "head", "ok"), [(2, 64, True), (2, 60, False), (1, 264, False), (4, 8, False), (8, 16, True)]
)
def test_head_size_rule(heads: int, head: int, ok: bool) -> None:
    m = attention_graph(heads=heads, head=head)
    rep = check(m, heads=heads, shapes={"x": (1, N, heads * head), "keep": (1, N)})
    assert rep.fused is ok, rep.problems()
    if not ok:
        assert any(
            f"head size {head}: TensorRT's fused MHA needs 16 <= H <= 256 and H % 8 == 0" in p for p in rep.problems()
        )


def test_non_key_mask_add_refused() -> None:
    """Adding a full (B, H, N, N) bias (not a key-padding mask) is outside the pattern."""

    def full_bias(i: int, blk: list[onnx.NodeProto], n: dict[str, str]) -> None:
        if i == 0:
            next(x for x in blk if x.op_type == "Add").input[1] = n["scores"]

    rep = check(attention_graph(mutate=full_bias))
    assert not rep.blocks[0].fusable
    assert any("only a key-padding mask (B, 1, 1, N)" in p for p in rep.blocks[0].problems)


def test_bf16_retype_is_fusable_and_its_cpu_stand_in_runs() -> None:
    import onnxruntime as ort

    m = attention_graph()
    assert not has_bf16_compute(m)
    assert retype_attention_bf16(m, 2, 2, SHAPES) == 2
    assert has_bf16_compute(m)
    rep = check(m, form="fused-bf16")
    assert rep.fused, rep.problems()
    assert rep.blocks[0].dtype == "bfloat16"
    # no Cast on a (B, H, N, N) tensor: the casts sit on q, k^T, V, the mask and the output
    onnx.checker.check_model(m)
    # ONNX Runtime's CPU provider has no BF16 MatMul: the stand-in runs, close to the FP16 graph
    with pytest.raises(Exception, match="NOT_IMPLEMENTED|Could not find an implementation"):
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    sim = simulate_bf16(m)
    readers = {i: n for n in sim.graph.node for i in n.input}
    to_bf16 = [n for n in sim.graph.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.BFLOAT16]
    assert to_bf16 and all(readers[n.output[0]].op_type == "Cast" for n in to_bf16)  # only rounding, no BF16 op
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((1, N, 128)).astype(np.float16), "keep": (np.arange(N) < 30)[None]}
    y_bf = ort.InferenceSession(sim.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    y16 = ort.InferenceSession(attention_graph().SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feed
    )[0]
    assert np.all(np.isfinite(y_bf))
    err = np.abs(y_bf.astype(np.float32) - y16.astype(np.float32)).max() / np.abs(y16).max()
    assert 1e-4 < err < 3e-2, err  # BF16 rounding is visible (it is not the FP16 graph) but small


def test_retype_refuses_a_graph_outside_the_pattern() -> None:
    with pytest.raises(ValueError, match="not in the fused pattern"):
        retype_attention_bf16(attention_graph(elem=F32), 2, 2, SHAPES)
