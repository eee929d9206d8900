"""SmoothQuant-style per-channel smoothing of the INT8 MatMuls' inputs, folded into the graph exactly.

A trained DiT's residual stream grows a few outlier channels (channels 2 and 10 reach 15-20 while the
median channel peaks near 4 in f5tts-small-en at step 20,000): a per-tensor INT8 activation scale
then spends most of its 255 levels on them and the other channels lose bits. Smoothing divides each
input channel j of a quantized MatMul by s_j and multiplies the weight's row j by s_j, so x @ W is
unchanged in exact arithmetic while the activation's channel peaks move towards one another; the
weights, quantized per OUTPUT channel, absorb the larger rows. With
s_j = amax_x[j] ** alpha / amax_W[j] ** (1 - alpha) (SmoothQuant, Xiao et al. 2023), alpha 0.5.

Where 1/s goes (no new op on a (B, N, C) tensor, so TensorRT sees the same graph shape):

* AdaLN-modulated LayerNorm inputs (to_q/to_k/to_v after attn_norm, ff.0 after ff_norm): the pattern
  Add(Mul(LayerNorm(x, gamma, beta), 1 + scale), shift). gamma and beta become gamma / s and
  beta / s (the LayerNorm stays FP32, guarded), and the shift, a (B, 1, C) tensor from the FP32
  modulation linear, gets a Mul by 1 / s on its way to the Add. The LayerNorm is kept; every
  consumer of the smoothed tensor must be a quantized MatMul with a constant weight (true for
  f5-tts' DiT; anything else is left alone).
* Nothing else: the feed-forward's second linear reads a GELU output (no linear op before it to fold
  into), and the attention output's channel peaks are already flat (max / median ~2).

The scales come from the calibration split of the recorded step inputs (per-channel abs-max over
the real frames of every call, both CFG branches), never from held-out data. The rewrite changes
FP32 results only by rounding (checked by `smooth_graph`'s caller on a recorded input).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from f5build.recipe import SmoothRule

SHAPE_READERS = ("Shape", "Size")


@dataclass
class SmoothGroup:
    """One smoothed tensor: the LayerNorm -> modulation -> MatMul(s) chain that feeds it."""

    tensor: str
    layernorm: str
    shift_add: str
    shift_input: int  # which input of the Add is the shift
    matmuls: list[str]
    amax_before: float = 0.0
    amax_after: float = 0.0


@dataclass
class SmoothReport:
    alpha: float
    groups: list[SmoothGroup] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    fp32_rel_error: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "tensors": len(self.groups),
            "matmuls": sum(len(g.matmuls) for g in self.groups),
            "amax_before_after": {g.tensor: [round(g.amax_before, 3), round(g.amax_after, 3)] for g in self.groups},
            "skipped": self.skipped,
            "fp32_rel_error": float(f"{self.fp32_rel_error:.3g}"),
        }


def _const(model: Any, name: str) -> np.ndarray | None:
    """The value of `name` when it is an initializer or a Constant node's output, else None."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def find_groups(model: Any, rule: SmoothRule, exclude: Sequence[str] = ()) -> tuple[list[SmoothGroup], list[str]]:
    """The smoothable inputs of the MatMuls `rule.nodes` names (and `exclude` does not): every
    consumer a weight MatMul, producer Add(Mul(LayerNorm, m), shift). Returns (groups, skipped)."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    cons: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)

    def picked(n: Any) -> bool:
        return (
            n.op_type == "MatMul"
            and len(n.input) == 2
            and n.input[1] in inits
            and any(re.match(p, n.name) for p in rule.nodes)
            and not any(re.match(p, n.name) for p in exclude)
        )

    groups, skipped, seen = [], [], set()
    for n in g.node:
        if not picked(n) or n.input[0] in seen:
            continue
        t = n.input[0]
        seen.add(t)
        users = [u for u in cons.get(t, []) if u.op_type not in SHAPE_READERS]  # shapes do not change
        why = None
        if not all(picked(u) for u in users):
            why = "a consumer is not a smoothed weight MatMul"
        add = prod.get(t)
        if why is None and (add is None or add.op_type != "Add"):
            why = "not produced by an Add"
        mul = ln = None
        k = -1
        if why is None:
            for k in (0, 1):
                cand = prod.get(add.input[k])
                if cand is not None and cand.op_type == "Mul":
                    lns = [prod.get(x) for x in cand.input]
                    ln = next((x for x in lns if x is not None and x.op_type == "LayerNormalization"), None)
                    if ln is not None:
                        mul = cand
                        break
            if mul is None or ln is None:
                why = "no Mul(LayerNormalization, modulation) before the Add"
            elif len(cons.get(ln.output[0], [])) != 1 or len(cons.get(mul.output[0], [])) != 1:
                why = "the LayerNorm or modulation output has other readers"
            elif len(ln.input) < 2 or _const(model, ln.input[1]) is None:
                why = "the LayerNorm scale is not a constant"
        if why is not None:
            skipped.append(f"{t}: {why}")
            continue
        groups.append(SmoothGroup(t, ln.name, add.name, 1 - k, [u.name for u in users]))
    return groups, skipped


def channel_amax(
    model: Any, tensors: Sequence[str], feeds: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-channel abs-max (last axis) of `tensors` over the feeds' real frames (mask), FP32 graph."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    for t in tensors:
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out: dict[str, np.ndarray] = {}
    for feed in feeds:
        vals = sess.run(list(tensors), dict(feed))
        mask = np.asarray(feed["mask"], dtype=bool) if "mask" in feed else None
        for t, v in zip(tensors, vals, strict=True):
            v = np.abs(v)
            if mask is not None and v.ndim == 3 and v.shape[1] == mask.shape[1] and v.shape[0] % mask.shape[0] == 0:
                v = v[np.tile(mask, (v.shape[0] // mask.shape[0], 1))]  # both CFG branches, real frames
            a = v.reshape(-1, v.shape[-1]).max(axis=0)
            out[t] = a if t not in out else np.maximum(out[t], a)
    return out


def smooth_graph(
    model: Any, rule: SmoothRule, feeds: Sequence[Mapping[str, np.ndarray]], exclude: Sequence[str] = ()
) -> SmoothReport:
    """Smooth `model` (FP32, modified in place) on the calibration `feeds`; see the module docstring."""
    from onnx import helper, numpy_helper

    report = SmoothReport(rule.alpha)
    groups, report.skipped = find_groups(model, rule, exclude)
    if not groups:
        return report
    amax = channel_amax(model, [gr.tensor for gr in groups], feeds)
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for gr in groups:
        weights = [numpy_helper.to_array(inits[nodes[mm].input[1]]) for mm in gr.matmuls]
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        xmax = np.maximum(amax[gr.tensor], 1e-5)
        s = (xmax**rule.alpha / np.maximum(wmax, 1e-5) ** (1.0 - rule.alpha)).astype(np.float32)
        s = np.clip(s, 1e-2, 1e2)
        s /= np.float32(np.exp(np.mean(np.log(s))))  # geometric mean 1: only the channels' ratios matter
        gr.amax_before, gr.amax_after = float(xmax.max()), float((xmax / s).max())
        for mm, w in zip(gr.matmuls, weights, strict=True):  # weight rows x s (a private copy per MatMul)
            name = f"{nodes[mm].input[1]}_smoothed"
            model.graph.initializer.append(numpy_helper.from_array((w * s[:, None]).astype(w.dtype), name))
            nodes[mm].input[1] = name
        ln = nodes[gr.layernorm]
        for k in (1, 2):  # LayerNorm gamma, beta / s
            if len(ln.input) > k and ln.input[k]:
                v = _const(model, ln.input[k])
                assert v is not None or k == 2
                if v is not None:
                    name = f"{gr.layernorm}/smooth_{'scale' if k == 1 else 'bias'}"
                    model.graph.initializer.append(numpy_helper.from_array((v / s).astype(np.float32), name))
                    ln.input[k] = name
        add = nodes[gr.shift_add]
        inv = f"{gr.shift_add}/smooth_inv_scale"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        scaled = f"{add.input[gr.shift_input]}_smoothed"
        mul = helper.make_node(
            "Mul", [add.input[gr.shift_input], inv], [scaled], name=f"{gr.shift_add.rsplit('/', 1)[0]}/smooth_shift/Mul"
        )
        idx = list(model.graph.node).index(add)
        model.graph.node.insert(idx, mul)
        add.input[gr.shift_input] = scaled
        report.groups.append(gr)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]  # the unsmoothed weights go
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return report


FP32_TOLERANCE = 1e-4  # max |smoothed - original| / max |original| of the FP32 output on a recorded input


def smooth_file(
    src: Any,
    dst: Any,
    rule: SmoothRule,
    feeds: Sequence[Mapping[str, np.ndarray]],
    check: Mapping[str, np.ndarray],
    exclude: Sequence[str] = (),
) -> SmoothReport:
    """Smooth the FP32 graph `src` into `dst`, and refuse (ValueError) unless its output on `check` is
    the original's to FP32 rounding, or unless every MatMul `rule.nodes` names was smoothed."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(src))
    report = smooth_graph(model, rule, feeds, exclude)
    if report.skipped:
        raise ValueError(f"smooth: {len(report.skipped)} input(s) cannot be smoothed exactly, e.g. {report.skipped[0]}")
    if not report.groups:
        raise ValueError(f"smooth: the patterns {list(rule.nodes)} name no quantized MatMul")
    onnx.save(model, str(dst))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    ref = ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"]).run(None, dict(check))
    out = ort.InferenceSession(str(dst), opts, providers=["CPUExecutionProvider"]).run(None, dict(check))
    for r, o in zip(ref, out, strict=True):
        r, o = np.asarray(r, dtype=np.float64), np.asarray(o, dtype=np.float64)
        err = float(np.abs(r - o).max() / max(float(np.abs(r).max()), 1e-12))
        if not err <= FP32_TOLERANCE:
            raise ValueError(f"smooth: the smoothed FP32 graph differs from the original by {err:.3g} (relative)")
        report.fp32_rel_error = max(report.fp32_rel_error, err)
    return report
