"""FLOPs and bytes by precision, counted from an ONNX graph at concrete input shapes.

Tensor ops (MatMul, Gemm, Conv, ConvTranspose, Einsum) are counted exactly from their shapes, 2 FLOPs
a multiply-add (the formulas: f5build.cost.flops). A tensor op's precision is what TensorRT can run
it in, read from the graph:

- int8: every data input is the output of a DequantizeLinear of an int8/uint8 tensor, the
  activation DIRECTLY (TensorRT fuses DQ -> op into an INT8 kernel only when they are adjacent), the
  weight possibly through Cast/Transpose/Reshape (constant-folded at build time);
- fp16: every float data input is float16 (or bfloat16);
- fp32: anything else. These are what TensorRT may run on TF32 tensor cores when TF32 is on
  (the compile stage's default), so the "tf32" number is the FP32 tensor-op count.

An activation that reaches an int8 DequantizeLinear through a Cast or another op is counted at its
float precision and listed in `int8_blocked` (the Q/DQ then runs as separate kernels, no INT8 gain).

Everything else is "other", counted roughly as one operation per output element, except what a
static-shape engine folds away at build time (constants, weight Cast/DQ/Transpose, shape arithmetic:
anything computed only from initializers, Constant nodes and Shape/Size outputs), views (Reshape,
Squeeze, Unsqueeze, Flatten, Identity) and Q/DQ pairs fused into their INT8 op.

Bytes: a tensor op reads its weights (stored dtype: 1 byte for int8-quantized weights) and its
activations (1 byte for an INT8 op's quantized input) and writes its output. An "other" op writes its
output and its consumer reads it back (2x the output bytes), except an output whose only consumer is
a pointwise op: TensorRT fuses pointwise chains into one kernel, so that one never reaches DRAM.
`OpCounts.other_unfused_bytes` is the no-fusion upper bound (2x every output).

This module walks the graph; the records it fills (ClassCount, OpCounts) are f5build.cost.counts.
Shapes come from f5build.cost.shapes (ONNX shape inference, then fallbacks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx
from onnx import TensorProto

from f5build.cost.counts import ClassCount, OpCounts
from f5build.cost.flops import tensor_op_flops
from f5build.cost.shapes import (
    METHODS,
    TENSOR_OPS,
    ShapeMap,
    Skeleton,
    itemsize,
    resolve_shapes,
    skeleton,
)

PRECISIONS = ("int8", "fp16", "fp32")
# Data inputs of each tensor op (bias inputs are counted as weights bytes only).
_DATA_INPUTS = {"MatMul": (0, 1), "Gemm": (0, 1), "Conv": (0, 1), "ConvTranspose": (0, 1)}
_BIAS_INPUT = {"Gemm": 2, "Conv": 2, "ConvTranspose": 2}
# Ops that only move or relabel data: free (views) or folded in a static-shape engine.
_VIEWS = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Constant", "Shape", "Size"}
# Ops a weight may pass through on its way to a tensor op (constant-folded by TensorRT).
_PASS = {"Identity", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"}
# Elementwise ops TensorRT fuses into one kernel with their pointwise producers.
POINTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Erf", "Tanh", "Sigmoid",
    "Softplus", "Relu", "LeakyRelu", "Gelu", "Neg", "Abs", "Where", "Cast", "Clip", "Not", "And", "Or",
    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Sin", "Cos", "Max", "Min", "Floor",
    "Ceil", "Round", "Mod", "Sign", "QuantizeLinear", "DequantizeLinear", "Identity",
}  # fmt: skip
_INT8_TYPES = {TensorProto.INT8, TensorProto.UINT8}
_FP16_TYPES = {TensorProto.FLOAT16, TensorProto.BFLOAT16}


@dataclass(frozen=True)
class _Graph:
    producer: Mapping[str, onnx.NodeProto]
    consumers: Mapping[str, list[onnx.NodeProto]]
    static: frozenset[str]  # tensors known at engine build time (weights, shapes and what follows)
    weights: frozenset[str]  # initializers and Constant outputs


def _index(skel: Skeleton) -> _Graph:
    producer: dict[str, onnx.NodeProto] = {}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    static = set(skel.weights)
    for n in skel.model.graph.node:
        for o in n.output:
            producer[o] = n
        for i in n.input:
            consumers.setdefault(i, []).append(n)
        if n.op_type in ("Shape", "Size", "Constant") or all((not i) or i in static for i in n.input):
            static.update(n.output)
    return _Graph(producer, consumers, frozenset(static), frozenset(skel.weights))


def _int8_dq(name: str, g: _Graph, smap: ShapeMap) -> bool:
    p = g.producer.get(name)
    return p is not None and p.op_type == "DequantizeLinear" and smap.types.get(p.input[0]) in _INT8_TYPES


def _trace(name: str, g: _Graph, smap: ShapeMap) -> tuple[bool, bool, str]:
    """(is a weight, reaches an int8 DQ, the name the chain starts from) through pass-through ops.

    A weight is an initializer, a Constant or anything computed from constants only (folded)."""
    seen = name
    int8 = False
    while True:
        if seen in g.weights:
            return True, int8, seen
        p = g.producer.get(seen)
        if p is None:
            return False, int8, seen
        if p.op_type == "DequantizeLinear":
            int8 = int8 or smap.types.get(p.input[0]) in _INT8_TYPES
            seen = p.input[0]
        elif p.op_type in _PASS or p.op_type == "QuantizeLinear":
            seen = p.input[0]
        else:
            return seen in g.static, int8, seen


def count_graph(skel: Skeleton, smap: ShapeMap) -> OpCounts:
    """Count every node of the graph at the shapes in `smap`."""
    g = _index(skel)
    classes: dict[str, ClassCount] = {c: ClassCount() for c in (*PRECISIONS, "other")}
    blocked: list[str] = []
    fused_dq: set[str] = set()
    act_ops: dict[str, tuple[onnx.NodeProto, str]] = {}  # output -> activation x activation tensor op
    for node in skel.model.graph.node:
        if node.op_type not in TENSOR_OPS:
            continue
        data = list(node.input) if node.op_type == "Einsum" else [node.input[i] for i in _DATA_INPUTS[node.op_type]]
        direct = [_int8_dq(x, g, smap) for x in data]
        traced = [_trace(x, g, smap) for x in data]
        is_w = [t[0] for t in traced]
        int8 = all(d or (w and t[1]) for d, w, t in zip(direct, is_w, traced, strict=True)) and any(direct)
        if not int8 and any((not w) and t[1] and not d for d, w, t in zip(direct, is_w, traced, strict=True)):
            blocked.append(node.name or node.output[0])
        if int8:
            prec = "int8"
            fused_dq.update(x for x, d in zip(data, direct, strict=True) if d)
        elif all(smap.types.get(x, TensorProto.FLOAT) in _FP16_TYPES for x in data):
            prec = "fp16"
        else:
            prec = "fp32"
        flops = tensor_op_flops(node, smap)
        wbytes = abytes = 0
        for x, d, w, t in zip(data, direct, is_w, traced, strict=True):
            size = 1 if (int8 and (d or t[1])) else itemsize(smap.types.get(x, TensorProto.FLOAT))
            if w:
                wbytes += smap.numel(x) * size
            else:
                abytes += smap.numel(x) * size
        bias = _BIAS_INPUT.get(node.op_type)
        if bias is not None and len(node.input) > bias and node.input[bias]:
            wbytes += smap.nbytes(node.input[bias])
        abytes += sum(smap.nbytes(o) for o in node.output if o)
        classes[prec] += ClassCount(flops, wbytes + abytes, wbytes, 1, 0 if any(is_w) else flops)
        if not any(is_w):
            act_ops[node.output[0]] = (node, prec)
    # Q nodes whose every consumer is a DQ fused into an INT8 op are fused too.
    fused_q = {
        p.output[0]
        for x in fused_dq
        if (p := g.producer.get(g.producer[x].input[0])) is not None and p.op_type == "QuantizeLinear"
        if all(c.output[0] in fused_dq for c in g.consumers.get(p.output[0], []))
    }
    graph_outputs = {o.name for o in skel.model.graph.output}
    region = _attention_region(g, act_ops)
    attention = dict.fromkeys((*PRECISIONS, "other"), 0)
    for out, (node, prec) in act_ops.items():
        attention[prec] += smap.nbytes(out) if out in region else 0
        attention[prec] += sum(smap.nbytes(x) for x in node.input if x in region)
    unfused = 0
    for node in skel.model.graph.node:
        if node.op_type in TENSOR_OPS or node.op_type in _VIEWS:
            continue
        outs = [o for o in node.output if o and o not in g.static and o not in fused_dq and o not in fused_q]
        if not outs:
            continue
        elements = sum(smap.numel(o) for o in outs)
        written = sum(smap.nbytes(o) for o in outs if not _fused_into_consumer(o, g, graph_outputs))
        unfused += 2 * sum(smap.nbytes(o) for o in outs)
        classes["other"] += ClassCount(elements, 2 * written, 0, 1, 0)
        if any(o in region for o in outs):
            attention["other"] += 2 * written
    return OpCounts(
        classes["int8"], classes["fp16"], classes["fp32"], classes["other"], tuple(blocked), unfused,
        {k: v for k, v in attention.items() if v},
    )  # fmt: skip


def _attention_region(g: _Graph, act_ops: Mapping[str, tuple[onnx.NodeProto, str]]) -> set[str]:
    """Tensors between an activation x activation op (q k^T) and the next one (p v), through
    non-tensor ops only (scale, mask, softmax): what a fused attention kernel never writes out."""
    consumers_act = {id(n) for n, _ in act_ops.values()}
    region: set[str] = set()
    for start in act_ops:
        seen, frontier, ends = {start}, [start], False
        while frontier:
            for c in g.consumers.get(frontier.pop(), []):
                if c.op_type in TENSOR_OPS:
                    ends = ends or id(c) in consumers_act
                    continue
                for o in c.output:
                    if o and o not in seen:
                        seen.add(o)
                        frontier.append(o)
        if ends:
            region |= seen
    return region


def _fused_into_consumer(name: str, g: _Graph, graph_outputs: set[str]) -> bool:
    """True when `name` feeds exactly one op, a pointwise one (the chain runs as one kernel)."""
    users = g.consumers.get(name, [])
    return name not in graph_outputs and len(users) == 1 and users[0].op_type in POINTWISE


def count_model(
    model: onnx.ModelProto | Skeleton, shapes: Mapping[str, Sequence[int]], methods: Sequence[str] = METHODS
) -> tuple[OpCounts, str]:
    """(counts, shape method) of a model at concrete input shapes."""
    skel = model if isinstance(model, Skeleton) else skeleton(model)
    smap = resolve_shapes(skel, shapes, methods)
    return count_graph(skel, smap), smap.method
