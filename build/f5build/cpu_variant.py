"""CPU variants of a graph for ONNX Runtime: `cpu-fp32` (fused attention) and `cpu-int8` (dynamic INT8).

Why a variant of its own: the static Q/DQ graphs made for TensorRT run *slower* than FP32 on ONNX
Runtime's CPU provider (it executes every Q/DQ pair as written), while ORT's dynamic quantization
(`onnxruntime.quantization.quantize_dynamic`: weights INT8 per output channel, activations UINT8
per tensor with the scale computed per call, MatMulInteger fused into DynamicQuantizeMatMul by the
session) runs the DiT's MatMuls on VNNI / AVX-512 integer kernels at about twice the FP32 speed,
with a quarter of the weight memory, and needs no calibration data. The recipe's `cpu` section
(config/precision.yaml) names what is quantized and what stays FP32.

Order matters: quantize first (on the plain FP32 graph, which ONNX's shape inference understands),
then fuse attention (f5build.ort_attention) and the feed-forward's tanh GELU (f5build.ort_gelu); the
attention's own MatMuls are always excluded from quantization (both operands are activations).
Graphs are written with their weights as external data (`<name>.data`): ONNX Runtime then reads the
weights straight into its tensors instead of parsing a 1.3 GB protobuf and copying it, which took
the FP32 step session's load peak from 2.0 GB to 1.4 GB on f5tts-v1-base (the peak RSS the bench
measures).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from f5build.ort_attention import MS_DOMAIN, attention_ops, find_attention, fuse_attention
from f5build.ort_gelu import fast_gelu_ops, find_tanh_gelu, fuse_fast_gelu
from f5build.placement import CPU_PRECISIONS, CpuRule, PlacementReport

QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "ConvInteger", "QLinearMatMul")


def weight_nodes(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[str]:
    """Nodes of `op_types` whose second input is a constant (an initializer): the ones with weights."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in inits]


def excluded_nodes(model: onnx.ModelProto, rule: CpuRule) -> list[str]:
    """Weight nodes the recipe keeps FP32 (re.match, as the int8 recipe applies its patterns)."""
    return [n for n in weight_nodes(model, rule.op_types) if any(re.match(p, n) for p in rule.exclude)]


@dataclass(frozen=True)
class Int8Format:
    """How ONNX Runtime's dynamic quantization stores the weights of cpu-int8.

    weights: "s8" (QInt8; ONNX Runtime runs u8 activations x s8 weights) or "u8" (QUInt8; u8 x u8).
    reduce_range: weights in 7 bits. On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) the
    u8 x s8 kernels multiply byte pairs into 16-bit sums that saturate (255 * 127 * 2 > 32767);
    7-bit weights keep every pair sum in range (255 * 64 * 2 < 32767), at one bit of weight precision.
    per_channel: one weight scale per output channel (else one per tensor).
    """

    weights: str = "s8"
    reduce_range: bool = False
    per_channel: bool = True

    def __post_init__(self) -> None:
        if self.weights not in ("s8", "u8"):
            raise ValueError(f"int8 weights must be s8 or u8, got {self.weights!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_dynamic_int8(src: Path, out: Path, rule: CpuRule, fmt: Int8Format | None = None) -> dict[str, Any]:
    """ORT dynamic INT8 of `src` into `out` under `rule`; returns what was excluded and why."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fmt = fmt or Int8Format(reduce_range=rule.weight_bits == 7)
    model = onnx.load(str(src), load_external_data=False)
    keep = excluded_nodes(model, rule)
    attn = sorted({n.name for n in model.graph.node if n.op_type == "MatMul"} - set(weight_nodes(model, ("MatMul",))))
    del model
    quantize_dynamic(
        str(src),
        str(out),
        op_types_to_quantize=list(rule.op_types),
        per_channel=fmt.per_channel,
        reduce_range=fmt.reduce_range,
        weight_type=QuantType.QInt8 if fmt.weights == "s8" else QuantType.QUInt8,
        # ORT's quantizer first rewrites every Gemm as `<name>_MatMul` + `<name>_Add`, then matches
        # nodes_to_exclude against the new names: name both forms
        nodes_to_exclude=[*keep, *(f"{k}_MatMul" for k in keep), *attn],
    )
    return {"kept_fp32": keep, "activation_matmuls_kept": len(attn), "int8_format": fmt.to_dict()}


def check_cpu_placement(
    model: onnx.ModelProto, source: onnx.ModelProto, rule: CpuRule, precision: str, graph: str
) -> PlacementReport:
    """The produced CPU graph against the recipe; `source` is the FP32 graph it was made from.

    Rules: every weight node the recipe excludes is still there, as the same FP32 op; in cpu-int8
    every other weight node of `op_types` was quantized (none is left FP32 by accident) and no
    activation x activation MatMul was; cpu-fp32 has no quantized op at all; every explicit
    attention of the source became one MultiHeadAttention and no Softmax is left behind; every
    tanh GELU of the source became one FastGelu and none is left as plain ops; with `weight_bits` 7 no
    s8 weight exceeds 64 in magnitude (so no u8 x s8 pair sum can saturate AVX2's 16 bits).
    """
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"not a CPU precision: {precision!r} (expected one of {CPU_PRECISIONS})")
    rep = PlacementReport(graph, precision)
    err = rep.errors.append
    ops = {n.name: n.op_type for n in model.graph.node}
    keep = set(excluded_nodes(source, rule))
    for name in sorted(keep):
        # a Gemm comes back from ORT's quantizer as `<name>_MatMul` + `<name>_Add`, still FP32
        if ops.get(name) not in rule.op_types and ops.get(f"{name}_MatMul") != "MatMul":
            found = ops.get(name) or ops.get(f"{name}_MatMul_quant") or "no such node"
            err(f"{name}: the recipe keeps it FP32, but the graph has {found}")
    kept_names = keep | {f"{k}_MatMul" for k in keep}
    left = [n for n in weight_nodes(model, rule.op_types) if n not in kept_names]
    if precision == "cpu-int8" and left:
        err(f"{len(left)} weight node(s) left FP32 that the recipe quantizes, e.g. {left[:3]}")
    quantized = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    if precision == "cpu-fp32" and quantized:
        err(f"cpu-fp32 holds quantized op(s), e.g. {quantized[0].name} ({quantized[0].op_type})")
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "MatMulInteger" and n.input[1] not in inits:
            err(f"{n.name}: an activation x activation MatMul was quantized (input {n.input[1]})")
        elif n.op_type == "MatMulInteger" and rule.weight_bits == 7:
            w = onnx.numpy_helper.to_array(inits[n.input[1]])  # the model is in memory, its data loaded
            if w.dtype == np.int8 and int(np.abs(w.astype(np.int16)).max(initial=0)) > 64:
                err(f"{n.name}: s8 weights reach {int(np.abs(w.astype(np.int16)).max())}, over the 7 bits "
                    "the recipe asks for (weight_bits: 7): AVX2's 16-bit pair sums can saturate")  # fmt: skip
    want = len(find_attention(source.graph))
    att = attention_ops(model)
    rep.attention_matmuls = int(att["fused"])
    if att["fused"] != want:
        err(f"{att['fused']} MultiHeadAttention node(s) for {want} attention(s) in the source graph")
    if att["softmax_left"]:
        err(f"{att['softmax_left']} Softmax left outside the fused attention")
    if want and att["form"] != rule.attention:
        err(f"attention form {att['form']}, the recipe asks for {rule.attention}")
    want_gelu, left_gelu = len(find_tanh_gelu(source.graph)), len(find_tanh_gelu(model.graph))
    got_gelu = fast_gelu_ops(model)
    if got_gelu != want_gelu or left_gelu:
        err(f"{got_gelu} FastGelu node(s) and {left_gelu} tanh GELU chain(s) left unfused, for "
            f"{want_gelu} GELU(s) in the source graph")  # fmt: skip
    for n in quantized:
        rep.quantized[n.op_type] = rep.quantized.get(n.op_type, 0) + 1
    for n in model.graph.node:
        if n.op_type in rule.op_types:
            rep.fp32_nodes[n.op_type] = rep.fp32_nodes.get(n.op_type, 0) + 1
    rep.guarded = {"kept_fp32": len(keep)}
    return rep


def save_external(model: onnx.ModelProto, path: Path) -> list[str]:
    """Save with every weight in `<name>.data` (fsynced); returns the extra file names."""
    data = path.name + ".data"
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024
    )
    for name in (data, path.name):
        with open(path.parent / name, "rb+") as f:
            os.fsync(f.fileno())
    return [data]


def build_cpu_variant(
    src: Path, tmp: Path, rule: CpuRule, precision: str, graph: str, heads: int, int8: Int8Format | None = None
) -> tuple[Path, list[str], PlacementReport, dict[str, Any]]:
    """Make `<graph>.<precision>.onnx` in `tmp`; returns (path, extra files, placement report, info)."""
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"not a CPU precision: {precision!r} (expected one of {CPU_PRECISIONS})")
    source = onnx.load(str(src))
    info: dict[str, Any] = {"method": "onnxruntime.quantize_dynamic" if precision == "cpu-int8" else None}
    if precision == "cpu-int8":
        qpath = tmp / f"{graph}.dynq.onnx"
        info.update(quantize_dynamic_int8(src, qpath, rule, int8))
        info["kept_fp32"] = len(info["kept_fp32"])
        model = onnx.load(str(qpath))
        qpath.unlink()
    else:
        model = onnx.load(str(src))
    model, fused = fuse_attention(model, heads, masked=rule.attention == "masked")
    info["attention"] = {"fused": fused, "form": rule.attention, "op": f"{MS_DOMAIN}.MultiHeadAttention"}
    model, gelus = fuse_fast_gelu(model)
    info["gelu"] = {"fused": gelus, "op": f"{MS_DOMAIN}.FastGelu"}
    report = check_cpu_placement(model, source, rule, precision, graph)
    del source
    out = tmp / f"{graph}.{precision}.onnx"
    extras = save_external(model, out)
    return out, extras, report, info
