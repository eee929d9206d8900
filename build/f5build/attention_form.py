"""Give a step graph's attention the recipe's form after autocast: the BF16 attention core, and its CPU stand-in.

Autocast (ModelOpt) makes the FP16 graph: with `fused-fp16` the whole attention core is FP16 and
nothing else is needed; with `fp32-softmax` autocast keeps Softmax FP32 (Casts around it). For
`fused-bf16` this module retypes each attention block found by f5build.attention_pattern: Casts to
BF16 on the score matmul's q and k^T, on the key mask and on V (all (B, H, N, d) or (B, 1, 1, N)
tensors), the matmuls, mask Add and Softmax in BF16, and one Cast back to FP16 after the value
matmul, so no Cast ever touches a (B, H, N, N) tensor and the pattern stays fusable.

ONNX Runtime's CPU provider has no BF16 MatMul / Add / Softmax kernels (NOT_IMPLEMENTED, checked
with onnxruntime 1.32), so a BF16 graph cannot be run here. `simulate_bf16` makes its CPU stand-in:
the same graph with each BF16 op computed in FP32 and its inputs and outputs rounded to BF16 through
a Cast pair (BF16 storage, FP32 accumulation: what a BF16 tensor-core kernel does). The quantize
stage smoke-runs the stand-in, and validate measures it in place of the BF16 file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import onnx
from onnx import TensorProto, helper

from f5build.attention_pattern import check_attention


def _cast(src: str, dst: str, to: int, name: str) -> onnx.NodeProto:
    return helper.make_node("Cast", [src], [dst], to=to, name=name)


def _drop_value_info(model: onnx.ModelProto, names: Iterable[str]) -> None:
    drop = set(names)
    keep = [v for v in model.graph.value_info if v.name not in drop]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)


def retype_attention_bf16(
    model: onnx.ModelProto,
    depth: int | None = None,
    heads: int | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> int:
    """Make every attention block of an FP16 (fused-fp16 shaped) step graph compute in BF16, in place.

    Returns the number of blocks retyped; raises ValueError naming the block when one is not in the
    fused-fp16 pattern to begin with (nothing is changed then).
    """
    report = check_attention(model, "fused-fp16", depth, heads, shapes=shapes)
    if not report.fused:
        raise ValueError(
            f"cannot make the attention BF16: the FP16 graph is not in the fused pattern ({report.reason()})"
        )
    by_name = {n.name: n for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # insert before the named node
    after: dict[str, list[onnx.NodeProto]] = {}  # insert after the named node
    retyped: list[str] = []
    cast_once: set[str] = set()  # a tensor read by several blocks (the key mask) is cast once

    def to_bf16(t: str, before: str, name: str) -> str:
        if t not in cast_once:
            cast_once.add(t)
            new_nodes.setdefault(before, []).append(_cast(t, f"{t}__bf16", TensorProto.BFLOAT16, name))
        return f"{t}__bf16"

    for b in report.blocks:
        assert b.score_matmul and b.value_matmul
        s, sm, v = by_name[b.score_matmul], by_name[b.softmax], by_name[b.value_matmul]
        for k in (0, 1):
            s.input[k] = to_bf16(s.input[k], s.name, f"{s.name}/to_bf16_{k}")
        if b.mask:
            add = by_name[b.mask]
            k = next(i for i, x in enumerate(add.input) if producer.get(x) is not s)
            add.input[k] = to_bf16(add.input[k], s.name, f"{add.name}/mask_to_bf16")
            retyped.append(add.output[0])
        v.input[1] = to_bf16(v.input[1], s.name, f"{v.name}/to_bf16_1")
        out = v.output[0]
        v.output[0] = f"{out}__bf16"
        after[v.name] = [_cast(f"{out}__bf16", out, TensorProto.FLOAT16, f"{v.name}/to_fp16")]
        retyped += [s.output[0], sm.output[0]]
    nodes = []
    for n in model.graph.node:
        nodes += new_nodes.get(n.name, [])
        nodes.append(n)
        nodes += after.get(n.name, [])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_value_info(model, retyped)
    return len(report.blocks)


def has_bf16_compute(model: onnx.ModelProto) -> bool:
    """True when some node casts to BF16 (the graph needs a BF16-capable provider)."""
    return any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.BFLOAT16 for a in n.attribute)
        for n in model.graph.node
    )


def simulate_bf16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy ONNX Runtime's CPU provider runs: every Cast to BF16 becomes a round trip BF16 -> FP32,
    and every op reading such a tensor computes in FP32 with its float outputs rounded to BF16 the same
    way, up to the Casts back to FP16. Values are those of BF16 storage with FP32 arithmetic."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    bf16: set[str] = set()
    nodes: list[onnx.NodeProto] = []
    changed: list[str] = []
    for n in g.node:
        is_cast = n.op_type == "Cast"
        to = next((a.i for a in n.attribute if a.name == "to"), None) if is_cast else None
        if is_cast and to == TensorProto.BFLOAT16:
            o = n.output[0]
            n.output[0] = f"{o}__rounded"
            nodes += [n, _cast(f"{o}__rounded", o, TensorProto.FLOAT, f"{n.name}/to_fp32")]
            bf16.add(o)
            changed += [o]
            continue
        if not is_cast and any(i in bf16 for i in n.input):
            nodes.append(n)
            for k, o in enumerate(list(n.output)):
                n.output[k] = f"{o}__fp32"
                nodes += [
                    _cast(f"{o}__fp32", f"{o}__bf16r", TensorProto.BFLOAT16, f"{n.name}/round_{k}"),
                    _cast(f"{o}__bf16r", o, TensorProto.FLOAT, f"{n.name}/round_{k}_fp32"),
                ]
                bf16.add(o)
                changed.append(o)
            continue
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    _drop_value_info(out, changed)
    return out
