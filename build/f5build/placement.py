"""The check that a produced graph follows the precision recipe (f5build.recipe): Q/DQ and precision placement.

ModelOpt decides where Q/DQ and casts go from our options, but its defaults and heuristics change
between releases (its default placement also quantizes Add/Mul/LayerNorm inputs and attention
matmuls). So every graph the quantize stage writes is inspected with onnx-graphsurgeon before it is
recorded, and the stage fails when:

* a DequantizeLinear feeds anything but an input of a recipe op type (MatMul/Gemm/Conv) that no
  exclusion pattern matches, or a quantized node has only some of its data inputs quantized
  (TensorRT would not pick an INT8 kernel);
* a DequantizeLinear does not feed its quantized op directly: a Cast, Reshape or any other op in
  between (TensorRT fuses DQ -> MatMul into one INT8 GEMM only when adjacent: cast before the Q
  instead), a DQ output type (its scale's type) other than the consumer's compute type, or a Shape /
  Size reading a dequantized tensor (shape readers read the unquantized one);
* a QuantizeLinear is not paired with a DequantizeLinear, a zero point is not 0 (symmetric), a
  weight scale is not one value per output channel, or an activation scale is not one value;
* a guarded op (LayerNorm/ReduceMean norms, Softmax, attention score/value matmuls, time embedding,
  rotary angles, input/output projections, Vocos exp/ISTFT, the CFG/Euler update) reads a
  dequantized tensor or has a float input or output that is not FP32.

Attention matmuls are also found structurally (the MatMul feeding each Softmax and the one reading
it), so a renamed node cannot slip past the name patterns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from f5build.onnx_graph import (
    METADATA_OPS,
    PASSTHROUGH,
    attention_matmuls,
    consumers_of,
    load_graph,
    op_of,
    producer,
    scale_values,
    tensor_dtypes,
    through_casts_up,
    weight_axis,
)

# The recipe lives in f5build.recipe; its names stay importable from here, where the tests and the
# CPU-variant builder look for them.
from f5build.recipe import (
    ATTENTION_FORMS,
    CALIB_METHODS,
    CPU_PRECISIONS,
    GRAPHS,
    PRECISIONS,
    AttentionRule,
    CalibrationBudget,
    CpuRule,
    Fp16Rule,
    GraphRecipe,
    Guard,
    Int8Rule,
    Recipe,
    load_recipe,
    matches,
    unmatched_patterns,
)

__all__ = [
    "ATTENTION_FORMS",
    "CALIB_METHODS",
    "CPU_PRECISIONS",
    "GRAPHS",
    "PRECISIONS",
    "AttentionRule",
    "CalibrationBudget",
    "CpuRule",
    "Fp16Rule",
    "GraphRecipe",
    "Guard",
    "Int8Rule",
    "PlacementReport",
    "Recipe",
    "attention_matmuls",
    "check_placement",
    "load_graph",
    "load_recipe",
    "matches",
    "tensor_dtypes",
    "unmatched_patterns",
]


@dataclass
class PlacementReport:
    """What the check found in one graph; `ok` is False when any error was recorded."""

    graph: str
    precision: str
    errors: list[str] = field(default_factory=list)
    quantized: dict[str, int] = field(default_factory=dict)  # op type -> nodes with INT8 inputs
    qdq_pairs: int = 0
    weight_qdq: int = 0  # per output channel
    activation_qdq: int = 0  # per tensor
    fp16_nodes: dict[str, int] = field(default_factory=dict)  # op type -> nodes computing in FP16
    fp32_nodes: dict[str, int] = field(default_factory=dict)  # op type -> float nodes computing in FP32
    guarded: dict[str, int] = field(default_factory=dict)  # op type -> guard nodes verified (FP32, no DQ)
    attention_matmuls: int = 0
    unmatched_patterns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        q = ", ".join(f"{k} {v}" for k, v in sorted(self.quantized.items())) or "none"
        h = sum(self.fp16_nodes.values())
        f = sum(self.fp32_nodes.values())
        return (
            f"{self.graph}.{self.precision}: {self.qdq_pairs} Q/DQ pairs ({self.weight_qdq} weights per channel, "
            f"{self.activation_qdq} activations per tensor); INT8 nodes: {q}; {h} FP16 / {f} FP32 float nodes; "
            f"{sum(self.guarded.values())} guarded nodes FP32; {'ok' if self.ok else f'{len(self.errors)} errors'}"
        )


def check_placement(model: Any, recipe: GraphRecipe, precision: str, max_errors: int = 50) -> PlacementReport:
    """Check a graph (path, ModelProto or graphsurgeon Graph) against the recipe for `precision`."""
    import onnx_graphsurgeon as gs

    graph = model if isinstance(model, gs.Graph) else load_graph(model)
    graph.toposort()
    rep = PlacementReport(recipe.graph, precision)
    err = rep.errors.append
    dtypes = tensor_dtypes(graph)
    rule = recipe.int8 if precision == "int8" else None
    names = [n.name for n in graph.nodes]

    # 1. Q/DQ pairs, zero points, scale shapes, and who reads the dequantized tensors
    quantized_inputs: dict[str, set[int]] = {}
    node_by_name = {n.name: n for n in graph.nodes}
    for dq in (n for n in graph.nodes if n.op == "DequantizeLinear"):
        q = producer(dq.inputs[0])
        source = dq.inputs[0]
        is_weight = False
        if q is not None and q.op == "QuantizeLinear":
            rep.qdq_pairs += 1
            is_weight = isinstance(q.inputs[0], gs.Constant) or op_of(producer(q.inputs[0])) == "Constant"
            source = q.inputs[0]
            for t in q.outputs[0].outputs:
                if t.op != "DequantizeLinear":
                    err(f"QuantizeLinear {q.name} feeds {t.op} {t.name}, not a DequantizeLinear")
            zps = [q.inputs[2] if len(q.inputs) > 2 else None]
        elif isinstance(dq.inputs[0], gs.Constant):
            is_weight = True  # pre-quantized weight
            zps = []
        else:
            err(f"DequantizeLinear {dq.name} is not fed by a QuantizeLinear")
            zps = []
        zps.append(dq.inputs[2] if len(dq.inputs) > 2 else None)
        for zp in zps:
            v = scale_values(zp) if zp is not None else None
            if v is not None and np.any(v != 0):
                err(f"{dq.name}: zero point {v.ravel()[:4]} is not 0 (quantization must be symmetric)")
        scale = scale_values(dq.inputs[1])
        for c in dq.outputs[0].outputs:  # what TensorRT fuses: the DQ must feed its INT8 op directly
            if c.op in METADATA_OPS:
                err(
                    f"{c.op} {c.name} reads the dequantized tensor of {dq.name}: shape readers must read the "
                    f"unquantized tensor {source.name}"
                )
            elif c.op in PASSTHROUGH:
                after = ", ".join(f"{n.op} {n.name}" for n in c.outputs[0].outputs) or "nothing"
                err(
                    f"DequantizeLinear {dq.name} feeds {c.op} {c.name} (then {after}): TensorRT fuses a DQ into its "
                    "INT8 op only when it feeds it directly; cast before the QuantizeLinear instead, with the "
                    "scale in the consumer's type"
                )
            elif rule is not None and c.op in rule.op_types:
                out_dt = next((dtypes.get(t.name) for t in c.outputs if dtypes.get(t.name) is not None), None)
                dq_dt = dtypes.get(dq.outputs[0].name)
                if out_dt is not None and dq_dt is not None and out_dt != dq_dt:
                    err(
                        f"DequantizeLinear {dq.name} gives {dq_dt} but {c.op} {c.name} computes in {out_dt}: the "
                        "scale must be in the consumer's type"
                    )
        consumers = consumers_of(dq.outputs[0])
        if not consumers:
            err(f"DequantizeLinear {dq.name} has no consumer")
        for c in consumers:
            idx = next((i for i, t in enumerate(c.inputs) if through_casts_up(t) is dq), None)
            if rule is None:
                err(f"{c.op} {c.name} reads a dequantized tensor in a {precision} graph (no Q/DQ expected)")
                continue
            if c.op not in rule.op_types:
                err(f"Q/DQ on an input of {c.op} {c.name}: only {', '.join(rule.op_types)} inputs may be quantized")
            elif matches(c.name, rule.exclude):
                err(f"Q/DQ on {c.op} {c.name}, which an exclusion pattern matches")
            if idx is not None:
                quantized_inputs.setdefault(c.name, set()).add(idx)
            if scale is None or idx is None:
                continue
            if is_weight:
                w = scale_values(source)
                shape = tuple(getattr(source, "shape", None) or (w.shape if w is not None else ()))
                axis = weight_axis(c, idx, len(shape))
                ax = dq.attrs.get("axis", 1)
                if axis is None or not shape:
                    err(f"{dq.name}: weight Q/DQ on an unexpected input {idx} of {c.op} {c.name}")
                elif scale.size != shape[axis] or (ax % len(shape)) != axis:
                    err(
                        f"{dq.name}: weight scale has {scale.size} values on axis {ax}, expected one per output "
                        f"channel ({shape[axis]} on axis {axis})"
                    )
            elif scale.size != 1:
                err(f"{dq.name}: activation scale has {scale.size} values, expected 1 (per tensor)")
        if is_weight:
            rep.weight_qdq += 1
        else:
            rep.activation_qdq += 1
    for q in (n for n in graph.nodes if n.op == "QuantizeLinear"):
        if not q.outputs[0].outputs:
            err(f"QuantizeLinear {q.name} has no consumer")

    counts: Counter[str] = Counter()
    for name, idxs in quantized_inputs.items():
        node = node_by_name[name]
        counts[node.op] += 1
        want = {0, 1}
        if not want <= idxs:
            err(f"{node.op} {name}: only input(s) {sorted(idxs)} quantized; INT8 needs both data and weight inputs")
    rep.quantized = dict(sorted(counts.items()))
    if rule is not None:
        for node in graph.nodes:
            if node.op in rule.op_types and not matches(node.name, rule.exclude) and node.name not in quantized_inputs:
                err(f"{node.op} {node.name} should be INT8 (recipe op type, not excluded) but has no Q/DQ")

    # 2. precision of every float node; guarded nodes must be FP32 and never read a dequantized tensor
    attn = attention_matmuls(graph)
    rep.attention_matmuls = len(attn)
    attn_names = {n for _, n in attn}
    att = recipe.attention
    fp32_attention = (
        not att.nodes
    )  # no attention entry: the old rule (FP32); else the form's (f5build.attention_pattern)
    guard_types = recipe.guard_op_types()
    guarded: Counter[str] = Counter()
    fp16: Counter[str] = Counter()
    fp32: Counter[str] = Counter()
    for node in graph.nodes:
        if node.op in ("QuantizeLinear", "DequantizeLinear", "Cast", "Constant"):
            continue
        floats = [dtypes.get(t.name) for t in [*node.inputs, *node.outputs] if t.name]
        floats = [d for d in floats if d is not None and d.kind == "f"]
        if floats:
            (fp16 if any(d == np.float16 for d in floats) else fp32)[node.op] += 1
        reduced = precision != "fp32" and bool(floats) and any(d != np.float16 for d in floats)
        if reduced and not fp32_attention and node.name in attn_names:
            err(
                f"attention {node.op} {node.name} computes in {floats[0]}, the recipe's attention form {att.form} "
                f"computes it in {att.matmuls}"
            )
        if reduced and att.nodes and att.softmax != "fp32" and node.op == "Softmax":
            err(
                f"Softmax {node.name} computes in {floats[0]}, the recipe's attention form {att.form} computes it in {att.softmax}"
            )
        is_guard = (
            node.op in guard_types
            or matches(node.name, recipe.guard.nodes)
            or (fp32_attention and node.name in attn_names)
        )
        if not is_guard:
            continue
        bad = [d for d in floats if d != np.float32]
        reads_dq = [
            t.name for t in node.inputs if (p := through_casts_up(t)) is not None and p.op == "DequantizeLinear"
        ]
        if bad:
            err(f"guarded {node.op} {node.name} computes in {bad[0]} (must stay FP32)")
        if reads_dq:
            err(f"guarded {node.op} {node.name} reads dequantized tensor {reads_dq[0]} (no Q/DQ allowed)")
        guarded[node.op] += 1
    rep.fp16_nodes = dict(sorted(fp16.items()))
    rep.fp32_nodes = dict(sorted(fp32.items()))
    rep.guarded = dict(sorted(guarded.items()))
    if precision == "fp16" and not fp16:
        err("no node computes in FP16: the FP16 conversion did nothing")
    if precision == "int8" and rep.qdq_pairs == 0:
        err("no Q/DQ pair found in an int8 graph")

    pats = list(recipe.guard.nodes) + (list(rule.exclude) if rule else [])
    rep.unmatched_patterns = unmatched_patterns(names, pats)
    if len(rep.errors) > max_errors:
        extra = len(rep.errors) - max_errors
        del rep.errors[max_errors:]
        rep.errors.append(f"… and {extra} more")
    return rep
