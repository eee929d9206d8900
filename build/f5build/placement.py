"""The precision recipe (config/precision.yaml) and the check that a produced graph follows it.

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

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from f5rt._fs import sha256_json

PRECISIONS = ("fp16", "int8")
GRAPHS = ("text_encoder", "step", "vocoder")
CALIB_METHODS = ("max", "entropy")
_PASSTHROUGH = ("Cast",)  # follow a dequantized tensor through these to its real consumer
_METADATA_OPS = ("Shape", "Size")  # consumers that read only the shape
# Ops between an attention score MatMul and its Softmax, or between Softmax and the value MatMul.
_ATTN_CHAIN = ("Cast", "Mul", "Div", "Add", "Where", "Pow", "Sub", "Transpose", "Reshape", "Identity")
_BOOL_OPS = ("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf")
_INT64_OPS = ("Shape", "Size", "NonZero", "ArgMax", "ArgMin")


# -- recipe ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8Rule:
    op_types: tuple[str, ...]
    exclude: tuple[str, ...]


@dataclass(frozen=True)
class Fp16Rule:
    keep_fp32_op_types: tuple[str, ...]
    keep_fp32: tuple[str, ...]


@dataclass(frozen=True)
class Guard:
    op_types: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttentionRule:
    """Where attention computes in the reduced-precision variants (a recipe entry, measured by validate).

    `nodes`: the attention core (everything but the q/k/v/out projections); `matmuls`: precision of
    the score (q k^T) and value (p v) matmuls; `softmax`: precision of the Softmax. FP32 entries are
    kept FP32 by autocast and guarded by the check; FP16 ones must really compute in FP16.
    """

    nodes: str = ""
    matmuls: str = "fp32"
    softmax: str = "fp32"


@dataclass(frozen=True)
class GraphRecipe:
    graph: str
    variants: tuple[str, ...]
    int8: Int8Rule | None
    fp16: Fp16Rule | None
    guard: Guard
    attention: AttentionRule = AttentionRule()

    def keep_fp32_op_types(self) -> list[str]:
        """Op types autocast keeps FP32: the recipe's, plus Softmax when attention says so."""
        own = list(self.fp16.keep_fp32_op_types) if self.fp16 else []
        return [*own, "Softmax"] if self.attention.nodes and self.attention.softmax == "fp32" else own

    def keep_fp32_nodes(self) -> list[str]:
        """Node patterns autocast keeps FP32: the recipe's, plus the attention core when its matmuls are FP32."""
        own = list(self.fp16.keep_fp32) if self.fp16 else []
        return [*own, self.attention.nodes] if self.attention.nodes and self.attention.matmuls == "fp32" else own

    def guard_op_types(self) -> tuple[str, ...]:
        extra = ("Softmax",) if self.attention.nodes and self.attention.softmax == "fp32" else ()
        return (*self.guard.op_types, *extra)


@dataclass(frozen=True)
class CalibrationBudget:
    nfe: int
    method: str
    step_samples: int
    requests: int
    heldout_requests: int
    heldout_samples: int
    text_encoder_samples: int
    vocoder_samples: int
    max_frames: int
    batch_cycle: tuple[int, ...]
    max_mb: float
    seed: int


@dataclass(frozen=True)
class Recipe:
    calibration: CalibrationBudget
    graphs: dict[str, GraphRecipe]
    sha256: str
    quant_sha256: str  # hash of the graph rules only (what the quantize stage depends on)


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of strings")
    return tuple(value)


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    out = _strs(value, where)
    for p in out:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"{where}: bad regex {p!r} ({e})") from None
    return out


def _positive_int(data: dict[str, Any], key: str, where: str, minimum: int = 1) -> int:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{where}.{key}: expected an integer >= {minimum}, got {v!r}")
    return v


def load_recipe(path: str | Path) -> Recipe:
    """Parse and check config/precision.yaml; one clear ValueError line per problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"precision recipe {path} not found") from None
    if not isinstance(data, dict) or "graphs" not in data or "calibration" not in data:
        raise ValueError(f"{path}: expected a mapping with 'calibration' and 'graphs'")
    c = data["calibration"]
    w = f"{path}: calibration"
    if not isinstance(c, dict):
        raise ValueError(f"{w}: expected a mapping")
    if c.get("method") not in CALIB_METHODS:
        raise ValueError(f"{w}.method: expected one of {CALIB_METHODS}, got {c.get('method')!r}")
    cycle = c.get("batch_cycle", [1])
    if not isinstance(cycle, list) or not cycle or not all(isinstance(b, int) and b >= 1 for b in cycle):
        raise ValueError(f"{w}.batch_cycle: expected a non-empty list of positive integers")
    budget = CalibrationBudget(
        nfe=_positive_int(c, "nfe", w),
        method=str(c["method"]),
        step_samples=_positive_int(c, "step_samples", w),
        requests=_positive_int(c, "requests", w),
        heldout_requests=_positive_int(c, "heldout_requests", w, 0),
        heldout_samples=_positive_int(c, "heldout_samples", w, 0),
        text_encoder_samples=_positive_int(c, "text_encoder_samples", w),
        vocoder_samples=_positive_int(c, "vocoder_samples", w),
        max_frames=_positive_int(c, "max_frames", w),
        batch_cycle=tuple(cycle),
        max_mb=float(c.get("max_mb", 512)),
        seed=int(c.get("seed", 0)),
    )
    graphs: dict[str, GraphRecipe] = {}
    if not isinstance(data["graphs"], dict):
        raise ValueError(f"{path}: graphs: expected a mapping")
    for name, g in data["graphs"].items():
        w = f"{path}: graphs.{name}"
        if name not in GRAPHS:
            raise ValueError(f"{w}: unknown graph (expected one of {GRAPHS})")
        g = g or {}
        variants = _strs(g.get("variants", []), f"{w}.variants")
        bad = [v for v in variants if v not in PRECISIONS]
        if bad:
            raise ValueError(f"{w}.variants: unknown {bad} (expected {PRECISIONS})")
        int8 = fp16 = None
        if "int8" in g:
            int8 = Int8Rule(
                _strs(g["int8"].get("op_types"), f"{w}.int8.op_types"),
                _patterns(g["int8"].get("exclude"), f"{w}.int8.exclude"),
            )
            if not int8.op_types:
                raise ValueError(f"{w}.int8.op_types: empty")
        if "fp16" in g:
            fp16 = Fp16Rule(
                _strs(g["fp16"].get("keep_fp32_op_types"), f"{w}.fp16.keep_fp32_op_types"),
                _patterns(g["fp16"].get("keep_fp32"), f"{w}.fp16.keep_fp32"),
            )
        if "int8" in variants and (int8 is None or fp16 is None):
            raise ValueError(f"{w}: variant int8 needs both an 'int8' and an 'fp16' section")
        if "fp16" in variants and fp16 is None:
            raise ValueError(f"{w}: variant fp16 needs an 'fp16' section")
        att = g.get("attention") or {}
        attention = AttentionRule()
        if att:
            if not isinstance(att, dict) or not isinstance(att.get("nodes"), str):
                raise ValueError(f"{w}.attention: expected a mapping with 'nodes' (regex), 'matmuls', 'softmax'")
            _patterns([att["nodes"]], f"{w}.attention.nodes")
            for key in ("matmuls", "softmax"):
                if att.get(key, "fp32") not in ("fp32", "fp16"):
                    raise ValueError(f"{w}.attention.{key}: expected fp32 or fp16, got {att.get(key)!r}")
            attention = AttentionRule(att["nodes"], att.get("matmuls", "fp32"), att.get("softmax", "fp32"))
        gd = g.get("guard") or {}
        guard = Guard(_strs(gd.get("op_types"), f"{w}.guard.op_types"), _patterns(gd.get("nodes"), f"{w}.guard.nodes"))
        graphs[name] = GraphRecipe(name, variants, int8, fp16, guard, attention)
    return Recipe(budget, graphs, sha256_json(data), sha256_json(data["graphs"]))


# -- graph analysis -------------------------------------------------------------------------------


def matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """re.match semantics (anchored at the start), as ModelOpt applies nodes_to_exclude."""
    return any(re.match(p, name) for p in patterns)


def unmatched_patterns(node_names: list[str], patterns: tuple[str, ...] | list[str]) -> list[str]:
    return [p for p in patterns if not any(re.match(p, n) for n in node_names)]


def load_graph(model: Any) -> Any:
    """A graphsurgeon graph from a path or ModelProto (weights are read lazily, never copied)."""
    import onnx
    import onnx_graphsurgeon as gs

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=True)
    return gs.import_onnx(model)


def _np_dtype(t: Any) -> np.dtype | None:
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
        declared = _np_dtype(t)
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
            elif node.op in _BOOL_OPS:
                dt = np.dtype(bool)
            elif node.op in _INT64_OPS:
                dt = np.dtype(np.int64)
            elif node.op == "Constant":
                v = node.attrs.get("value")
                dt = _np_dtype(v) if v is not None else None
            elif node.op == "ConstantOfShape":
                v = node.attrs.get("value")
                dt = _np_dtype(v) if v is not None else np.dtype(np.float32)
            elif node.op == "Where":
                dt = out.get(node.inputs[1].name)
            elif node.op in ("LayerNormalization",) and i > 0:
                dt = np.dtype(np.float32)
            else:
                dt = first_float or first
            if dt is not None:
                out[o.name] = dt
    return out


def _consumers(tensor: Any) -> list[Any]:
    """Compute nodes reading `tensor`, looking through Casts and ignoring shape-only readers."""
    found = []
    for node in tensor.outputs:
        if node.op in _PASSTHROUGH:
            found.extend(_consumers(node.outputs[0]))
        elif node.op not in _METADATA_OPS:
            found.append(node)
    return found


def _producer(tensor: Any) -> Any | None:
    return tensor.inputs[0] if getattr(tensor, "inputs", None) else None


def _op(node: Any | None) -> str | None:
    return None if node is None else str(node.op)


def _through_casts_up(tensor: Any) -> Any | None:
    node = _producer(tensor)
    while node is not None and node.op in _PASSTHROUGH:
        node = _producer(node.inputs[0])
    return node


def attention_matmuls(graph: Any) -> list[tuple[str, str]]:
    """(role, node name) of the score and value MatMuls around every Softmax, found by structure."""
    found: list[tuple[str, str]] = []
    for sm in (n for n in graph.nodes if n.op == "Softmax"):
        # upstream: follow the first data input through mask/scale/cast ops to a MatMul
        node = _producer(sm.inputs[0])
        seen = 0
        while node is not None and node.op != "MatMul" and node.op in _ATTN_CHAIN and seen < 16:
            data_inputs = [t for t in node.inputs if _op(_producer(t)) not in (None, "Constant")]
            node = _producer(data_inputs[0]) if data_inputs else None
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
                elif n.op in _ATTN_CHAIN:
                    nxt.extend(n.outputs[0].outputs)
            frontier, depth = nxt, depth + 1
    return found


def _scale_values(tensor: Any) -> np.ndarray | None:
    import onnx_graphsurgeon as gs

    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = _producer(tensor)
    if node is not None and node.op == "Constant":
        return np.asarray(node.attrs["value"].values)
    return None


def _weight_axis(consumer: Any, input_index: int, rank: int) -> int | None:
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
        q = _producer(dq.inputs[0])
        source = dq.inputs[0]
        is_weight = False
        if q is not None and q.op == "QuantizeLinear":
            rep.qdq_pairs += 1
            is_weight = isinstance(q.inputs[0], gs.Constant) or _op(_producer(q.inputs[0])) == "Constant"
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
            v = _scale_values(zp) if zp is not None else None
            if v is not None and np.any(v != 0):
                err(f"{dq.name}: zero point {v.ravel()[:4]} is not 0 (quantization must be symmetric)")
        scale = _scale_values(dq.inputs[1])
        for c in dq.outputs[0].outputs:  # what TensorRT fuses: the DQ must feed its INT8 op directly
            if c.op in _METADATA_OPS:
                err(
                    f"{c.op} {c.name} reads the dequantized tensor of {dq.name}: shape readers must read the "
                    f"unquantized tensor {source.name}"
                )
            elif c.op in _PASSTHROUGH:
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
        consumers = _consumers(dq.outputs[0])
        if not consumers:
            err(f"DequantizeLinear {dq.name} has no consumer")
        for c in consumers:
            idx = next((i for i, t in enumerate(c.inputs) if _through_casts_up(t) is dq), None)
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
                w = _scale_values(source)
                shape = tuple(getattr(source, "shape", None) or (w.shape if w is not None else ()))
                axis = _weight_axis(c, idx, len(shape))
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
    fp32_attention = not att.nodes or att.matmuls == "fp32"  # no attention entry: the old rule (FP32)
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
            err(f"attention {node.op} {node.name} computes in {floats[0]}, the recipe's attention.matmuls is fp16")
        if reduced and att.nodes and att.softmax == "fp16" and node.op == "Softmax":
            err(f"Softmax {node.name} computes in {floats[0]}, the recipe's attention.softmax is fp16")
        is_guard = (
            node.op in guard_types
            or matches(node.name, recipe.guard.nodes)
            or (fp32_attention and node.name in attn_names)
        )
        if not is_guard:
            continue
        bad = [d for d in floats if d != np.float32]
        reads_dq = [
            t.name for t in node.inputs if (p := _through_casts_up(t)) is not None and p.op == "DequantizeLinear"
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
