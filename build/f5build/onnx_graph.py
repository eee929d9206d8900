"""Walking an ONNX graph as onnx-graphsurgeon sees it: tensor dtypes, producers and consumers through
casts, Q/DQ scales, and the attention MatMuls found by structure (the one feeding each Softmax and the
one reading it), so a renamed node cannot slip past name patterns. Used by the placement check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PASSTHROUGH = ("Cast",)  # follow a dequantized tensor through these to its real consumer
METADATA_OPS = ("Shape", "Size")  # consumers that read only the shape
# Ops between an attention score MatMul and its Softmax, or between Softmax and the value MatMul.
ATTN_CHAIN = ("Cast", "Mul", "Div", "Add", "Where", "Pow", "Sub", "Transpose", "Reshape", "Identity")
BOOL_OPS = ("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf")
INT64_OPS = ("Shape", "Size", "NonZero", "ArgMax", "ArgMin")


def load_graph(model: Any) -> Any:
    """A graphsurgeon graph from a path or ModelProto (weights are read lazily, never copied)."""
    import onnx
    import onnx_graphsurgeon as gs

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=True)
    return gs.import_onnx(model)


def np_dtype(t: Any) -> np.dtype | None:
    dt = getattr(t, "dtype", None)
    if dt is None:
        return None
    try:
        return np.dtype(dt)
    except TypeError:
        import onnx

        try:  # graphsurgeon may keep an onnx enum for types numpy lacks
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(dt)))
        except (TypeError, ValueError, KeyError):
            return None


def tensor_dtypes(graph: Any) -> dict[str, np.dtype]:
    """Element type of every tensor: declared (value_info, initializers) or propagated op by op."""
    import onnx

    out: dict[str, np.dtype] = {}
    for name, t in graph.tensors().items():
        declared = np_dtype(t)
        if declared is not None:
            out[name] = declared
    for node in graph.nodes:  # graph.nodes is topologically sorted after toposort()
        known = [out.get(t.name) for t in node.inputs if t.name]
        first_float = next((d for d in known if d is not None and d.kind == "f"), None)
        first = next((d for d in known if d is not None), None)
        for i, o in enumerate(node.outputs):
            if o.name in out:
                continue
            dt: np.dtype | None
            if node.op == "Cast":
                dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))
            elif node.op == "QuantizeLinear":
                zp = node.inputs[2] if len(node.inputs) > 2 else None
                dt = out.get(zp.name) if zp is not None else np.dtype(np.uint8)
            elif node.op == "DequantizeLinear":
                dt = out.get(node.inputs[1].name)
            elif node.op in BOOL_OPS:
                dt = np.dtype(bool)
            elif node.op in INT64_OPS:
                dt = np.dtype(np.int64)
            elif node.op == "Constant":
                v = node.attrs.get("value")
                dt = np_dtype(v) if v is not None else None
            elif node.op == "ConstantOfShape":
                v = node.attrs.get("value")
                dt = np_dtype(v) if v is not None else np.dtype(np.float32)
            elif node.op == "Where":
                dt = out.get(node.inputs[1].name)
            elif node.op in ("LayerNormalization",) and i > 0:
                dt = np.dtype(np.float32)
            else:
                dt = first_float or first
            if dt is not None:
                out[o.name] = dt
    return out


def consumers_of(tensor: Any) -> list[Any]:
    """Compute nodes reading `tensor`, looking through Casts and ignoring shape-only readers."""
    found = []
    for node in tensor.outputs:
        if node.op in PASSTHROUGH:
            found.extend(consumers_of(node.outputs[0]))
        elif node.op not in METADATA_OPS:
            found.append(node)
    return found


def producer(tensor: Any) -> Any | None:
    return tensor.inputs[0] if getattr(tensor, "inputs", None) else None


def op_of(node: Any | None) -> str | None:
    return None if node is None else str(node.op)


def through_casts_up(tensor: Any) -> Any | None:
    node = producer(tensor)
    while node is not None and node.op in PASSTHROUGH:
        node = producer(node.inputs[0])
    return node


def attention_matmuls(graph: Any) -> list[tuple[str, str]]:
    """(role, node name) of the score and value MatMuls around every Softmax, found by structure."""
    found: list[tuple[str, str]] = []
    for sm in (n for n in graph.nodes if n.op == "Softmax"):
        # upstream: follow the first data input through mask/scale/cast ops to a MatMul
        node = producer(sm.inputs[0])
        seen = 0
        while node is not None and node.op != "MatMul" and node.op in ATTN_CHAIN and seen < 16:
            data_inputs = [t for t in node.inputs if op_of(producer(t)) not in (None, "Constant")]
            node = producer(data_inputs[0]) if data_inputs else None
            seen += 1
        if node is not None and node.op == "MatMul":
            found.append(("score", node.name))
        # downstream: the MatMul that reads the probabilities
        frontier, depth = list(sm.outputs[0].outputs), 0
        while frontier and depth < 8:
            nxt = []
            for n in frontier:
                if n.op == "MatMul":
                    found.append(("value", n.name))
                elif n.op in ATTN_CHAIN:
                    nxt.extend(n.outputs[0].outputs)
            frontier, depth = nxt, depth + 1
    return found


def scale_values(tensor: Any) -> np.ndarray | None:
    import onnx_graphsurgeon as gs

    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is not None and node.op == "Constant":
        return np.asarray(node.attrs["value"].values)
    return None


def weight_axis(consumer: Any, input_index: int, rank: int) -> int | None:
    """Output-channel axis of a weight input: MatMul B [in, out] -> last; Gemm B -> 0 if transB; Conv W -> 0."""
    if consumer.op == "MatMul" and input_index == 1:
        return rank - 1
    if consumer.op == "Gemm" and input_index == 1:
        return 0 if int(consumer.attrs.get("transB", 0)) else 1
    if consumer.op == "Gemm" and input_index == 0 and int(consumer.attrs.get("transA", 0)):
        return None
    if consumer.op in ("Conv",) and input_index == 1:
        return 0
    if consumer.op == "ConvTranspose" and input_index == 1:
        return 1
    return None
