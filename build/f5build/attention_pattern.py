"""The check that every attention block of a step graph is in the pattern TensorRT 10.3 fuses into one MHA kernel.

What TensorRT documents and what was seen (the sources this check encodes):

* TensorRT fuses `MatMul (BMM1) -> [mask] -> Softmax -> MatMul (BMM2)` into one multi-head attention
  kernel when SM >= 7.5 (the Orin's SM 8.7 included), both batched matmuls take FP16 or BF16 inputs
  (INT8 only with head size 16/32/64 and sequence lengths <= 512) and the head size H satisfies
  16 <= H <= 256, H % 8 == 0; TensorRT may still decline on performance grounds. The restriction list
  of the developer guide's "Multi-Head Attention Fusion" section, quoted for TensorRT 10.x in
  NVIDIA/TensorRT#4167 and #2981; on TensorRT 10.3 / JetPack 6.1 (Orin) `--fp16` attention ran as
  `_gemm_mha_v2` while `--int8` did not fuse (#4167).
* The scale belongs on Q or K before BMM1 ("TensorRT requires Q or K to be multiplied with the
  attention scale ... before the first Batched Matrix Multiply", docs "Fused Attention"); the mask may
  be "an add mask offsetting Q * K^T" (same page), and maintainers say masked attention should still
  fuse (NVIDIA/TensorRT#4410). Only an additive key-padding mask broadcast over heads and queries
  ((B, 1, 1, N)) is accepted here: anything computed on the (B, H, N, N) scores is not a mask.
* FP32 softmax sections defeat the fusion in practice (a Cast to FP32 around Softmax: 0 fused layers,
  96 once removed, Stability-AI/stable-audio-3#79), and so does an explicit max subtraction
  (ReduceMax/Sub before Softmax, tier4/autoware-ml#95). No INT8 (Q/DQ) inside attention: TensorRT has
  no fused INT8 MHA above sequence length 512 (NVIDIA/TensorRT#3724) and our buckets reach 2816.
* The ONNX `Attention` op / IAttention need TensorRT >= 10.14: not used (JetPack 6 has 10.3).

So per Softmax of the graph, the check walks to its score MatMul and its value MatMul and refuses,
naming the node: a Cast, Q/DQ, reduction, Sub, scale or any op other than one key-mask Add between
BMM1 and Softmax; anything but BMM2 reading the probabilities; a second reader of any (B, H, N, N)
tensor; matmul inputs that are not the form's type (FP16 / BF16); a Softmax not over the last axis;
a head size outside 16..256 or not a multiple of 8. The graph passes when every block is fusable and
their number is the model's depth. `fp32-softmax` graphs are checked the same way and reported not
fusable, with the reason: that is what the cost model projects for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx
from onnx import TensorProto

from f5build.cost.shapes import ShapeMap, Skeleton, dims_by_role, resolve_shapes, skeleton
from f5rt.backends.trt.contract import GRAPH_INPUTS

FORM_TYPES = {
    "fused-fp16": TensorProto.FLOAT16,
    "fused-bf16": TensorProto.BFLOAT16,
    "fp32-softmax": TensorProto.FLOAT16,
}
HEAD_MIN, HEAD_MAX, HEAD_MULTIPLE = 16, 256, 8
# ops that say what went wrong when found between BMM1 and Softmax or after Softmax
_WHY = {
    "Cast": "a Cast on the scores (an FP32 softmax section defeats TensorRT's MHA fusion)",
    "QuantizeLinear": "Q/DQ inside attention (no fused INT8 MHA above sequence length 512, NVIDIA/TensorRT#3724)",
    "DequantizeLinear": "Q/DQ inside attention (no fused INT8 MHA above sequence length 512, NVIDIA/TensorRT#3724)",
    "ReduceMax": "an explicit max subtraction (ReduceMax/Sub) before Softmax breaks the pattern",
    "Sub": "an explicit max subtraction (ReduceMax/Sub) before Softmax breaks the pattern",
    "Mul": "a scale on the scores: fold it into Q or K before the first MatMul",
    "Div": "a scale on the scores: fold it into Q or K before the first MatMul",
}
_BLOCK = re.compile(r"^(.*?/attn)/")


def type_name(elem: int | None) -> str:
    return TensorProto.DataType.Name(elem).lower() if elem else "unknown"


@dataclass(frozen=True)
class AttentionBlock:
    """One attention (one Softmax) of the graph and whether TensorRT can fuse it."""

    block: str  # name scope, e.g. /transformer_blocks.3/attn
    softmax: str
    score_matmul: str | None
    value_matmul: str | None
    mask: str | None  # the key-padding mask Add, when there is one
    head_size: int | None
    dtype: str  # type of the score matmul's inputs
    problems: tuple[str, ...] = ()

    @property
    def fusable(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class AttentionPatternReport:
    """Every attention block of a graph against the fusable pattern of one attention form."""

    form: str
    expected_blocks: int | None
    blocks: tuple[AttentionBlock, ...]
    errors: tuple[str, ...] = ()  # graph-level problems (block count)

    @property
    def fusable_blocks(self) -> int:
        return sum(b.fusable for b in self.blocks)

    @property
    def fused(self) -> bool:
        """All blocks in the pattern, as many as the model has: what the cost model projects as fused."""
        return bool(self.blocks) and not self.errors and all(b.fusable for b in self.blocks)

    def problems(self) -> list[str]:
        return [*(f"{b.block}: {p}" for b in self.blocks for p in b.problems), *self.errors]

    def reason(self) -> str:
        """One line: why the graph is (not) projected fused."""
        if self.fused:
            return (
                f"all {len(self.blocks)} attention blocks in TensorRT's fusable MHA pattern "
                f"(MatMul -> key-mask Add -> Softmax -> MatMul, {self.blocks[0].dtype}, head size {self.blocks[0].head_size})"
            )
        probs = self.problems()
        more = f" (and {len(probs) - 1} more)" if len(probs) > 1 else ""
        return f"{self.fusable_blocks} of {self.expected_blocks or len(self.blocks)} attention blocks fusable: {probs[0]}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "fused": self.fused,
            "fusable_blocks": self.fusable_blocks,
            "reason": self.reason(),
        }

    def summary(self) -> str:
        return f"attention ({self.form}): {self.reason()}"


@dataclass
class _Index:
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)


def _index(model: onnx.ModelProto) -> _Index:
    ix = _Index()
    for n in model.graph.node:
        for o in n.output:
            ix.producer[o] = n
        for i in n.input:
            if i:
                ix.consumers.setdefault(i, []).append(n)
    return ix


def _is_scores(shape: tuple[int, ...] | None, heads: int | None) -> bool:
    """A (B, H, N, N) tensor: rank 4, square in the last two axes, H heads (when known)."""
    return bool(shape) and len(shape) == 4 and shape[-1] == shape[-2] and (heads is None or shape[1] == heads)


def _check_block(sm: onnx.NodeProto, ix: _Index, smap: ShapeMap, want: int, heads: int | None) -> AttentionBlock:
    problems: list[str] = []
    bad = problems.append
    name = sm.name or sm.output[0]
    scope = _BLOCK.match(name)
    block = scope.group(1) if scope else name
    shape_in = smap.shapes.get(sm.input[0])
    axis = next((onnx.helper.get_attribute_value(a) for a in sm.attribute if a.name == "axis"), -1)
    if shape_in and axis not in (-1, len(shape_in) - 1):
        bad(f"Softmax {name} over axis {axis}, not the last (keys) axis")
    if not _is_scores(shape_in, heads):
        bad(f"Softmax {name} input has shape {shape_in}, not (B, heads, N, N)")
    if smap.types.get(sm.input[0]) != want:
        bad(f"Softmax {name} computes in {type_name(smap.types.get(sm.input[0]))}, the form needs {type_name(want)}")
    # upstream: [Add(key mask)] then the score MatMul, nothing else
    mask = score = None
    t = sm.input[0]
    p = ix.producer.get(t)
    if p is not None and p.op_type == "Add":
        others = [x for x in p.input if x != _score_input(p, ix)]
        m_shape = smap.shapes.get(others[0]) if others else None
        if not (m_shape and len(m_shape) == 4 and m_shape[1] == 1 and m_shape[2] == 1):
            bad(f"Add {p.name} adds a {m_shape} tensor: only a key-padding mask (B, 1, 1, N) stays inside the pattern")
        mask = p.name
        t = _score_input(p, ix) or p.input[0]
        p = ix.producer.get(t)
    if p is None or p.op_type != "MatMul":
        op = p.op_type if p is not None else "a graph input"
        why = _WHY.get(op, f"{op} between the score MatMul and Softmax is not part of TensorRT's MHA pattern")
        bad(f"{op} {p.name if p is not None else t} before Softmax {name}: {why}")
        # look further up for the score MatMul, to name it
        seen = 0
        while p is not None and p.op_type != "MatMul" and seen < 12:
            p = ix.producer.get(p.input[0])
            seen += 1
    head = None
    if p is not None and p.op_type == "MatMul":
        score = p.name
        problems += _matmul_inputs(p, ix, smap, want, "score")
        a = smap.shapes.get(p.input[0])
        head = int(a[-1]) if a else None
        readers = [c for c in ix.consumers.get(p.output[0], []) if c.op_type not in ("Shape", "Size")]
        if len(readers) != 1:
            bad(
                f"score tensor {p.output[0]} is read by {len(readers)} nodes ({', '.join(c.op_type for c in readers)}); only the mask Add / Softmax may"
            )
    if head is None:
        bad("head size unknown (no score MatMul input shape)")
    elif not (HEAD_MIN <= head <= HEAD_MAX and head % HEAD_MULTIPLE == 0):
        bad(f"head size {head}: TensorRT's fused MHA needs {HEAD_MIN} <= H <= {HEAD_MAX} and H % {HEAD_MULTIPLE} == 0")
    # downstream: exactly the value MatMul reads the probabilities
    value = None
    readers = [c for c in ix.consumers.get(sm.output[0], []) if c.op_type not in ("Shape", "Size")]
    if len(readers) != 1 or readers[0].op_type != "MatMul":
        for c in readers:
            if c.op_type != "MatMul":
                why = _WHY.get(c.op_type, "not part of TensorRT's MHA pattern")
                bad(f"{c.op_type} {c.name} reads the probabilities of Softmax {name}: {why}")
        if len(readers) > 1:
            bad(f"probabilities of Softmax {name} read by {len(readers)} nodes; only the value MatMul may")
    vm = next((c for c in readers if c.op_type == "MatMul"), None)
    if vm is None:
        # through a Cast (the FP32 softmax section) to name the value MatMul anyway
        for c in readers:
            vm = next((d for d in ix.consumers.get(c.output[0], []) if d.op_type == "MatMul"), vm)
    if vm is not None:
        value = vm.name
        problems += _matmul_inputs(vm, ix, smap, want, "value", skip=0)
        v = smap.shapes.get(vm.input[1])
        if v and head is not None and int(v[-1]) != head:
            bad(f"value MatMul {vm.name}: V head size {v[-1]} differs from Q/K's {head}")
    else:
        bad(f"no value MatMul reads Softmax {name}")
    a = ix.producer.get(sm.input[0])
    score_node = ix.producer.get(a.input[0]) if a is not None and a.op_type == "Add" else a
    dtype = (
        type_name(smap.types.get(score_node.input[0]))
        if score_node is not None and score_node.op_type == "MatMul"
        else "unknown"
    )
    return AttentionBlock(block, name, score, value, mask, head, dtype, tuple(dict.fromkeys(problems)))


def _score_input(add: onnx.NodeProto, ix: _Index) -> str | None:
    """The Add input that comes (directly) from a MatMul: the scores; the other one is the mask."""
    return next((x for x in add.input if (p := ix.producer.get(x)) is not None and p.op_type == "MatMul"), None)


def _matmul_inputs(
    mm: onnx.NodeProto, ix: _Index, smap: ShapeMap, want: int, role: str, skip: int | None = None
) -> list[str]:
    out = []
    for k, x in enumerate(mm.input):
        if k == skip:
            continue  # the probabilities: checked as the Softmax output
        p = ix.producer.get(x)
        if p is not None and p.op_type in ("DequantizeLinear", "QuantizeLinear"):
            out.append(f"{role} MatMul {mm.name} input {k} comes from {p.op_type} {p.name}: {_WHY['DequantizeLinear']}")
        got = smap.types.get(x)
        if got != want:
            out.append(f"{role} MatMul {mm.name} input {k} is {type_name(got)}, the form needs {type_name(want)}")
    return out


def check_attention(
    model: onnx.ModelProto | Skeleton,
    form: str,
    expected_blocks: int | None = None,
    heads: int | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    frames: int = 37,
) -> AttentionPatternReport:
    """Check every Softmax of a step graph (ModelProto or Skeleton) against `form`'s fusable pattern.

    Shapes are resolved at B = 1 and `frames` frames (or at `shapes`, input name -> shape), so the
    head size and the (B, H, N, N) tensors are concrete; the default 37 is odd so that no (B, H, N, d)
    tensor can look square (head sizes are multiples of 8). `expected_blocks` is the model's depth.
    """
    if form not in FORM_TYPES:
        raise ValueError(f"attention form {form!r}: expected one of {', '.join(FORM_TYPES)}")
    skel = model if isinstance(model, Skeleton) else skeleton(model)
    if shapes is None:
        shapes = dims_by_role(skel, GRAPH_INPUTS["step"], {"B": 1, "N": frames})
    smap = resolve_shapes(skel, shapes)
    ix = _index(skel.model)
    want = FORM_TYPES[form]
    blocks = tuple(_check_block(n, ix, smap, want, heads) for n in skel.model.graph.node if n.op_type == "Softmax")
    errors = []
    if expected_blocks is not None and len(blocks) != expected_blocks:
        errors.append(f"{len(blocks)} attention blocks (Softmax nodes) found, the model's depth is {expected_blocks}")
    if not blocks:
        errors.append("no attention block (Softmax) in the graph")
    # any other node producing a (B, H, N, N) tensor is outside every pattern (an extra pass over the scores)
    inside = {x for b in blocks for x in (b.softmax, b.score_matmul, b.mask) if x}
    n_frames = next((s[1] for s in shapes.values() if len(s) >= 2), None)
    for node in skel.model.graph.node:
        if node.name in inside or node.op_type in ("Shape", "Size", "Constant"):
            continue
        for o in node.output:
            s = smap.shapes.get(o)
            if _is_scores(s, heads) and (n_frames is None or s[-1] == n_frames) and s[1] > 1:
                errors.append(
                    f"{node.op_type} {node.name} writes a (B, heads, N, N) tensor {s} outside the fused pattern"
                )
    return AttentionPatternReport(form, expected_blocks, blocks, tuple(errors))
