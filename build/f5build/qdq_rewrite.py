"""Put Q/DQ where TensorRT fuses them: a DequantizeLinear feeds its quantized op directly.

ModelOpt quantizes in FP32 and autocast then makes the graph FP16 around the Q/DQ pairs. Where the
quantized tensor comes from a region kept in FP32 (attention core, GELU), autocast leaves
`DQ (FP32 scale) -> Cast(to FP16) -> MatMul`: TensorRT fuses DQ -> MatMul into one INT8 GEMM only
when the DQ feeds the MatMul directly, so with a Cast in between it runs separate quantize and
dequantize kernels and an FP16 GEMM, with no INT8 gain. Autocast also leaves shape readers on
dequantized tensors (`DQ (FP16 scale) -> Cast(to FP32) -> Shape`), the pattern of Myelin's "could not
infer output types for operation: dequantize" failures with strongly typed builds on Orin.

`rewrite_qdq(model)` fixes both, in place:

* `x -> Q -> DQ -> Cast(T) -> ops` becomes `x -> Cast(T) -> Q -> DQ -> ops` with the Q and DQ scales
  in T (the consumer's type; FP16 scales need opset >= 19): the same quantization grid, computed on
  the T-rounded input;
* a Shape/Size reading a DQ output (directly, or through a Cast that only feeds shape readers) reads
  the Q's unquantized input instead; the Cast goes.

The placement check (f5build.placement) then refuses any DQ that still feeds anything but a quantized op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SHAPE_OPS = ("Shape", "Size")


@dataclass
class RewriteReport:
    """What `rewrite_qdq` changed (node names), for the stage log and the manifest."""

    casts_moved: list[str] = field(default_factory=list)
    shape_readers_rewired: list[str] = field(default_factory=list)


def _index(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for o in graph.output:
        consumers.setdefault(o.name, []).append(None)  # a graph output is a consumer we cannot rewire
    return producers, consumers


def _replace_input(node: Any, old: str, new: str) -> None:
    for k, name in enumerate(node.input):
        if name == old:
            node.input[k] = new


def _scale_as(graph: Any, name: str, elem_type: int, cache: dict[tuple[str, int], str]) -> str | None:
    """An initializer holding scale `name` converted to `elem_type` (made once); None if not a constant."""
    from onnx import helper, numpy_helper

    key = (name, elem_type)
    if key in cache:
        return cache[key]
    init = next((i for i in graph.initializer if i.name == name), None)
    if init is None:
        return None
    if init.data_type == elem_type:
        cache[key] = name
        return name
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    value = numpy_helper.to_array(init).astype(dtype)
    if not np.all(np.isfinite(value)) or np.any(value == 0):
        return None  # the scale does not survive the conversion: leave the pair (the check will say so)
    new = f"{name}_{np.dtype(dtype).name}"
    graph.initializer.append(numpy_helper.from_array(value, new))
    cache[key] = new
    return new


def rewrite_qdq(model: Any) -> RewriteReport:
    """Move Casts from after a DQ to before its Q, and point shape readers at unquantized tensors."""
    from onnx import helper

    graph = model.graph
    report = RewriteReport()
    scales: dict[tuple[str, int], str] = {}
    producers, consumers = _index(graph)
    dead: set[int] = set()
    inserts: list[tuple[Any, Any]] = []  # (new Cast, the Q it must precede)
    stale_types: set[str] = set()
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        x, out = q.input[0], dq.output[0]
        # 1. shape readers of the dequantized tensor read the unquantized one
        for c in list(consumers.get(out, [])):
            if c is None:
                continue
            readers = [c] if c.op_type in SHAPE_OPS else []
            if (
                c.op_type == "Cast"
                and consumers.get(c.output[0])
                and all(r is not None and r.op_type in SHAPE_OPS for r in consumers[c.output[0]])
            ):
                readers = list(consumers[c.output[0]])
                dead.add(id(c))
            for r in readers:
                _replace_input(r, c.output[0] if r is not c else out, x)
                report.shape_readers_rewired.append(r.name)
        live = [c for c in consumers.get(out, []) if c is None or id(c) not in dead]
        live = [c for c in live if c is None or c.op_type not in SHAPE_OPS]
        # 2. DQ -> Cast(T) -> ops, with the Cast as the DQ's only consumer: cast before the Q instead
        if len(live) != 1 or live[0] is None or live[0].op_type != "Cast":
            continue
        cast = live[0]
        to = next(a.i for a in cast.attribute if a.name == "to")
        q_scale = _scale_as(graph, q.input[1], to, scales)
        dq_scale = _scale_as(graph, dq.input[1], to, scales)
        if q_scale is None or dq_scale is None or None in consumers.get(cast.output[0], []):
            continue
        cast_in = f"{x}_cast_to_{helper.tensor_dtype_to_np_dtype(to).name}_for_{q.name}"
        new_cast = helper.make_node("Cast", [x], [cast_in], name=f"{q.name}_input_cast", to=to)
        inserts.append((new_cast, q))
        q.input[0], q.input[1], dq.input[1] = cast_in, q_scale, dq_scale
        for c in consumers.get(cast.output[0], []):
            _replace_input(c, cast.output[0], out)
        dead.add(id(cast))
        stale_types.add(out)
        report.casts_moved.append(cast.name)
    nodes = [n for n in graph.node if id(n) not in dead]
    for new_cast, q in inserts:
        nodes.insert(next(i for i, n in enumerate(nodes) if n is q), new_cast)
    copies = []
    for n in nodes:  # copy before clearing: entries of a repeated field do not outlive their removal
        c = type(n)()
        c.CopyFrom(n)
        copies.append(c)
    del graph.node[:]
    graph.node.extend(copies)
    # scales replaced by their converted copies and read by nothing else any more
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    replaced = {old for (old, _), new in scales.items() if new != old}
    keep_init = [i for i in graph.initializer if i.name in used or i.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    # the dequantized tensors changed type: drop their stale value_info (shape inference redoes it)
    keep = [v for v in graph.value_info if v.name not in stale_types]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    return report
