"""The step graph's attention as ONNX Runtime's fused `com.microsoft.MultiHeadAttention`, for the CPU.

Why: the exported attention is explicit (q k^T -> + key bias -> Softmax -> p v), which TensorRT
fuses itself but ONNX Runtime's CPU provider runs as written: every block materialises the
(2B, heads, N, N) scores three times over (MatMul, Add, Softmax outputs: 3 x 134 MB per block at
N = 1024, B = 1) and streams them through memory. ORT's MultiHeadAttention runs MLAS' flash
attention on the CPU (tiles sized to the L2 cache, no N x N tensor at all) when it is given no key
mask and no bias, and its plain path (with a key mask) still keeps one score buffer, not three.

Two forms, chosen by `masked`:
- `masked=False` (the CPU variants' default): no key mask, so the flash path runs. It is exact only
  for rows without padded frames, which is how the ONNX Runtime backend runs (at each request's
  exact size); the manifest records `attention: unmasked` and the backend runs a padded batch row by
  row rather than feed padding to it (f5rt.backends.onnxruntime).
- `masked=True`: the graph's key mask becomes MHA's `key_padding_mask`: exact for any batch, but
  the flash path is off.

The TensorRT graphs are never rewritten: this is an ONNX Runtime-only form (the `ms` domain is not
TensorRT's), applied by `f5build quantize` to the CPU variants only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx
from onnx import helper

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class AttentionSite:
    """One explicit attention of the exported step graph, found by its dataflow.

    `query` is the scaled q (B, heads, N, d), `key` the rotated k (B, heads, N, d) (the input of the
    k^T Transpose), `value` v (B, heads, N, d), `bias` the additive key bias of the scores (None when
    the scores go straight to Softmax) and `output` the (B, heads, N, d) product of the
    probabilities with v. `nodes` are the nodes the fused op replaces.
    """

    query: str
    key: str
    value: str
    bias: str | None
    output: str
    nodes: tuple[str, ...]


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _perm(node: onnx.NodeProto) -> list[int]:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return []


def find_attention(graph: onnx.GraphProto) -> list[AttentionSite]:
    """Every Softmax whose input is q k^T (+ bias) and whose output multiplies v.

    The match is structural (MatMul with a [0, 1, 3, 2] Transpose as its right operand, optional
    Add, Softmax over the last axis, MatMul), so it does not depend on node names; a Softmax that
    does not fit the pattern is left as it is.
    """
    prod, cons = producers(graph), consumers(graph)
    sites = []
    for sm in graph.node:
        if sm.op_type != "Softmax":
            continue
        axis = next((a.i for a in sm.attribute if a.name == "axis"), -1)
        if axis not in (-1, 3):
            continue
        pre = prod.get(sm.input[0])
        bias = None
        nodes = [sm.name]
        if pre is not None and pre.op_type == "Add":
            bias_idx = next(
                (i for i in (0, 1) if (p := prod.get(pre.input[i])) is not None and p.op_type == "MatMul"), None
            )
            if bias_idx is None:
                continue
            bias = pre.input[1 - bias_idx]
            nodes.append(pre.name)
            pre = prod[pre.input[bias_idx]]
        if pre is None or pre.op_type != "MatMul" or len(cons.get(pre.output[0], [])) != 1:
            continue
        kt = prod.get(pre.input[1])
        if kt is None or kt.op_type != "Transpose" or _perm(kt) != [0, 1, 3, 2]:
            continue
        after = cons.get(sm.output[0], [])
        if len(after) != 1 or after[0].op_type != "MatMul" or after[0].input[0] != sm.output[0]:
            continue
        pv = after[0]
        nodes += [pre.name, pv.name]
        if len(cons.get(kt.output[0], [])) == 1:
            nodes.append(kt.name)
        sites.append(AttentionSite(pre.input[0], kt.input[0], pv.input[1], bias, pv.output[0], tuple(nodes)))
    return sites


def key_padding_mask_source(graph: onnx.GraphProto, bias: str) -> str:
    """The boolean (2B, N) key mask an exported bias is made from: Where(mask, 0, -inf) [-> Cast] -> Unsqueeze x2."""
    prod = producers(graph)
    name = bias
    while (p := prod.get(name)) is not None and p.op_type in ("Unsqueeze", "Cast", "Reshape"):
        name = p.input[0]
    p = prod.get(name)
    if p is None or p.op_type != "Where":
        raise ValueError(f"attention bias {bias!r} is not Where(mask, 0, -inf): cannot turn it into a key padding mask")
    return p.input[0]


def fuse_attention(model: onnx.ModelProto, heads: int, *, masked: bool) -> tuple[onnx.ModelProto, int]:
    """Replace every explicit attention with com.microsoft.MultiHeadAttention; return (model, count).

    q, k, v go in as (B, N, heads * d) (ORT transposes them to BNSH itself; handing k and v over in
    BNSH would select its KV-cache path, which never runs flash attention); the output is reshaped
    back to (B, heads, N, d) so the graph after the attention is untouched (ORT's transpose
    optimizer folds the back-to-back Transposes). q is already scaled by d^-0.5 in the export, so
    the op's scale is 1.
    """
    if heads <= 0:
        raise ValueError(f"heads must be positive, got {heads}")
    graph = model.graph
    sites = find_attention(graph)
    if not sites:
        raise ValueError("no explicit attention (MatMul -> [Add] -> Softmax -> MatMul) found in the graph")
    drop = {n for s in sites for n in s.nodes}
    new: dict[str, list[onnx.NodeProto]] = {}  # inserted before the first node that is dropped for a site
    consts = [
        helper.make_tensor("ortattn_perm_shape_bnhd", onnx.TensorProto.INT64, [3], [0, 0, -1]),
        helper.make_tensor("ortattn_shape_bnhd", onnx.TensorProto.INT64, [4], [0, 0, heads, -1]),
    ]
    mask_i32: str | None = None
    mask_nodes: list[onnx.NodeProto] = []
    for k, s in enumerate(sites):
        p = f"/ort_attention.{k}"
        nodes: list[onnx.NodeProto] = []

        def to_bnd(src: str, tag: str, p: str = p, nodes: list[onnx.NodeProto] = nodes) -> str:
            t = f"{p}/{tag}_bnhd"
            nodes.append(helper.make_node("Transpose", [src], [t], name=f"{p}/{tag}_transpose", perm=[0, 2, 1, 3]))
            out = f"{p}/{tag}_bnd"
            nodes.append(helper.make_node("Reshape", [t, "ortattn_perm_shape_bnhd"], [out], name=f"{p}/{tag}_reshape"))
            return out

        q, kk, v = to_bnd(s.query, "q"), to_bnd(s.key, "k"), to_bnd(s.value, "v")
        inputs = [q, kk, v]
        if masked and s.bias is not None:
            if mask_i32 is None:
                src = key_padding_mask_source(graph, s.bias)
                mask_i32 = "/ort_attention/key_padding_mask"
                mask_nodes.append(
                    helper.make_node(
                        "Cast", [src], [mask_i32], name="/ort_attention/mask_cast", to=onnx.TensorProto.INT32
                    )
                )
            inputs += ["", mask_i32]
        out = f"{p}/out_bnd"
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                inputs,
                [out],
                name=f"{p}/MultiHeadAttention",
                domain=MS_DOMAIN,
                num_heads=heads,
                scale=1.0,
            )
        )
        back = f"{p}/out_bnhd"
        nodes.append(helper.make_node("Reshape", [out, "ortattn_shape_bnhd"], [back], name=f"{p}/out_reshape"))
        nodes.append(helper.make_node("Transpose", [back], [s.output], name=f"{p}/out_transpose", perm=[0, 2, 1, 3]))
        first = next(n.name for n in graph.node if n.name in s.nodes)
        new[first] = nodes
    body: list[onnx.NodeProto] = []
    for n in graph.node:
        if n.name in new:
            body += new[n.name]
        if n.name not in drop:
            body.append(n)
    if mask_nodes:
        # the mask source is computed near the graph's start (a concat of the input mask): put the
        # cast right after its producer so topological order holds
        src = mask_nodes[0].input[0]
        at = next((i + 1 for i, n in enumerate(body) if src in n.output), 0)
        body[at:at] = mask_nodes
    graph.initializer.extend(consts)
    replace_nodes(model, body)
    return model, len(sites)


def replace_nodes(model: onnx.ModelProto, body: list[onnx.NodeProto]) -> None:
    """Make `body` the graph's nodes, drop what nothing reads any more, and import the ms domain."""
    del model.graph.node[:]
    model.graph.node.extend(body)
    drop_dead(model.graph)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def drop_dead(graph: onnx.GraphProto) -> None:
    """Remove nodes (the old bias chains) whose outputs nothing reads any more."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(keep)


def attention_ops(model: onnx.ModelProto) -> dict[str, Any]:
    """What the graph's attention is, for the manifest: fused count, whether keys are masked, Softmax left."""
    mha = [n for n in model.graph.node if n.op_type == "MultiHeadAttention" and n.domain == MS_DOMAIN]
    masked = any(len(n.input) > 4 and n.input[4] for n in mha)
    return {
        "fused": len(mha),
        "form": "none" if not mha else ("masked" if masked else "unmasked"),
        "softmax_left": sum(n.op_type == "Softmax" for n in model.graph.node),
    }
