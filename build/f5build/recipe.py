"""The precision recipe (config/precision.yaml): what each graph's variants may quantize, keep in FP16
or FP32, and how much calibration data to record.

Parsed strictly into frozen dataclasses: an unknown key, a wrong type or an empty pattern list is an
error naming its place in the file, because a typo in a recipe would otherwise silently quantize a
guarded op. Node patterns use re.match semantics (anchored at the start), as ModelOpt applies
`nodes_to_exclude`; `unmatched_patterns` finds patterns that match no node (a stale recipe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from f5build.inputs import read_yaml
from f5rt.files import sha256_json

PRECISIONS = ("fp16", "int8", "cpu-fp32", "cpu-int8")
# ONNX Runtime-only precisions (f5build.cpu_variant): never compiled for TensorRT.
CPU_PRECISIONS = ("cpu-fp32", "cpu-int8")
ATTENTION_FORMS = ("unmasked", "masked")  # the CPU variants' fused attention (com.microsoft.MultiHeadAttention)
# How the step graph's attention computes in the TensorRT variants (fp16, int8): f5build.attention_pattern
# checks the graph against the form, the cost model projects it fused or not from that check.
TRT_ATTENTION_FORMS = ("fused-fp16", "fused-bf16", "fp32-softmax")
GRAPHS = ("text_encoder", "step", "vocoder")
CALIB_METHODS = ("max", "entropy")


@dataclass(frozen=True)
class SmoothRule:
    """SmoothQuant-style smoothing of quantized MatMul inputs (f5build.smooth), folded into the FP32
    graph before quantization: `nodes` (re.match patterns) name the MatMuls whose input channels are
    rescaled, `alpha` the migration strength (s_j = amax_x[j]^alpha / amax_W[j]^(1 - alpha))."""

    nodes: tuple[str, ...] = ()
    alpha: float = 0.5


@dataclass(frozen=True)
class Int8Rule:
    op_types: tuple[str, ...]
    exclude: tuple[str, ...]
    smooth: SmoothRule | None = None


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
    """How the attention core computes in the TensorRT variants (fp16, int8): a recipe entry, measured by validate.

    `nodes`: the attention core (everything but the q/k/v/out projections); `form`, one of
    TRT_ATTENTION_FORMS:

    * `fused-fp16`: score matmul, key mask, Softmax and value matmul all FP16 with nothing else on the
      (B, heads, N, N) tensors: the pattern TensorRT fuses into one MHA kernel;
    * `fused-bf16`: the same in BF16 (Casts FP16 <-> BF16 only on the (B, heads, N, d) q/k/v and
      output tensors);
    * `fp32-softmax`: FP16 matmuls with Casts to FP32 around the Softmax (not fusable: the scores go
      through DRAM in FP32).

    FP32 entries are kept FP32 by autocast and guarded by the check; reduced ones must really
    compute in their type.
    """

    nodes: str = ""
    form: str = "fp32-softmax"

    @property
    def matmuls(self) -> str:
        """Precision of the score (q k^T) and value (p v) matmuls."""
        return "bf16" if self.form == "fused-bf16" else "fp16"

    @property
    def softmax(self) -> str:
        return {"fused-fp16": "fp16", "fused-bf16": "bf16"}.get(self.form, "fp32")

    @property
    def fused(self) -> bool:
        """Whether the form is meant to be fused by TensorRT (the attention pattern check decides)."""
        return self.form.startswith("fused-")


@dataclass(frozen=True)
class CpuRule:
    """The CPU variants (ONNX Runtime only): dynamic INT8 and the fused attention form.

    `op_types` / `exclude`: which nodes `cpu-int8` quantizes dynamically (weights INT8 per output
    channel, activations UINT8 per tensor, scaled at run time) and which stay FP32; `attention`:
    `unmasked` (flash attention, rows run at their exact length) or `masked` (key padding mask).
    """

    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    exclude: tuple[str, ...] = ()
    attention: str = "unmasked"
    smooth: SmoothRule | None = None  # cpu-int8 only (cpu-fp32 is never smoothed)
    # 7: s8 weights in 7 bits (ONNX Runtime's reduce_range), so no u8 x s8 pair sum can reach AVX2's
    # 16-bit saturation (255 x 64 x 2 < 32767); 8: full 8-bit weights, exact only on VNNI-class CPUs
    weight_bits: int = 8


@dataclass(frozen=True)
class GraphRecipe:
    graph: str
    variants: tuple[str, ...]
    int8: Int8Rule | None
    fp16: Fp16Rule | None
    guard: Guard
    attention: AttentionRule = AttentionRule()
    cpu: CpuRule | None = None

    def keep_fp32_op_types(self) -> list[str]:
        """Op types autocast keeps FP32: the recipe's, plus Softmax when attention says so."""
        own = list(self.fp16.keep_fp32_op_types) if self.fp16 else []
        return [*own, "Softmax"] if self.attention.nodes and self.attention.softmax == "fp32" else own

    def keep_fp32_nodes(self) -> list[str]:
        """Node patterns autocast keeps FP32 (the attention core never is: every form has reduced matmuls)."""
        return list(self.fp16.keep_fp32) if self.fp16 else []

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


def _smooth(value: Any, where: str) -> SmoothRule | None:
    """A `smooth` entry: {nodes: [regex, ...], alpha: 0..1}; absent: None."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"nodes", "alpha"}:
        raise ValueError(f"{where}: expected a mapping with 'nodes' (regex list) and 'alpha'")
    nodes = _patterns(value.get("nodes"), f"{where}.nodes")
    if not nodes:
        raise ValueError(f"{where}.nodes: empty (name the MatMuls whose inputs are smoothed)")
    alpha = value.get("alpha", 0.5)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"{where}.alpha: expected a number strictly between 0 and 1, got {alpha!r}")
    return SmoothRule(nodes, float(alpha))


def _positive_int(data: dict[str, Any], key: str, where: str, minimum: int = 1) -> int:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{where}.{key}: expected an integer >= {minimum}, got {v!r}")
    return v


def load_recipe(path: str | Path) -> Recipe:
    """Parse and check config/precision.yaml; one clear ValueError line per problem."""
    path = Path(path)
    data = read_yaml(path, "precision recipe", keys=("calibration", "graphs"))
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
                _smooth(g["int8"].get("smooth"), f"{w}.int8.smooth"),
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
                raise ValueError(f"{w}.attention: expected a mapping with 'nodes' (regex) and 'form'")
            _patterns([att["nodes"]], f"{w}.attention.nodes")
            old = [k for k in ("matmuls", "softmax") if k in att]
            if old:
                raise ValueError(
                    f"{w}.attention.{old[0]}: replaced by 'form' ({', '.join(TRT_ATTENTION_FORMS)}); "
                    "fp16 matmuls with an fp32 softmax is form: fp32-softmax"
                )
            unknown = sorted(set(att) - {"nodes", "form"})
            if unknown:
                raise ValueError(f"{w}.attention: unknown key(s) {unknown} (expected 'nodes' and 'form')")
            form = att.get("form")
            if form not in TRT_ATTENTION_FORMS:
                raise ValueError(f"{w}.attention.form: expected one of {', '.join(TRT_ATTENTION_FORMS)}, got {form!r}")
            attention = AttentionRule(att["nodes"], form)
        cpu = None
        if "cpu" in g:
            c = g["cpu"] or {}
            if not isinstance(c, dict):
                raise ValueError(f"{w}.cpu: expected a mapping with 'op_types', 'exclude', 'attention'")
            form = c.get("attention", "unmasked")
            if form not in ATTENTION_FORMS:
                raise ValueError(f"{w}.cpu.attention: expected one of {ATTENTION_FORMS}, got {form!r}")
            cpu = CpuRule(
                _strs(c.get("op_types", ["MatMul", "Gemm"]), f"{w}.cpu.op_types"),
                _patterns(c.get("exclude"), f"{w}.cpu.exclude"),
                form,
                _smooth(c.get("smooth"), f"{w}.cpu.smooth"),
                c.get("weight_bits", 8),
            )
            if cpu.weight_bits not in (7, 8) or isinstance(cpu.weight_bits, bool):
                raise ValueError(f"{w}.cpu.weight_bits: expected 7 or 8, got {cpu.weight_bits!r}")
            bad_ops = [o for o in cpu.op_types if o not in ("MatMul", "Gemm")]
            if not cpu.op_types or bad_ops:
                raise ValueError(f"{w}.cpu.op_types: expected MatMul and/or Gemm, got {list(cpu.op_types)}")
        if any(v in CPU_PRECISIONS for v in variants) and cpu is None:
            raise ValueError(f"{w}: variants {[v for v in variants if v in CPU_PRECISIONS]} need a 'cpu' section")
        gd = g.get("guard") or {}
        guard = Guard(_strs(gd.get("op_types"), f"{w}.guard.op_types"), _patterns(gd.get("nodes"), f"{w}.guard.nodes"))
        graphs[name] = GraphRecipe(name, variants, int8, fp16, guard, attention, cpu)
    return Recipe(budget, graphs, sha256_json(data), sha256_json(data["graphs"]))


def rule_dict(rule: Any) -> dict[str, Any] | None:
    """A rule dataclass (nested ones included) as plain JSON-able data, for stage fingerprints."""
    from dataclasses import asdict

    return asdict(rule) if rule is not None else None


def matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """re.match semantics (anchored at the start), as ModelOpt applies nodes_to_exclude."""
    return any(re.match(p, name) for p in patterns)


def unmatched_patterns(node_names: list[str], patterns: tuple[str, ...] | list[str]) -> list[str]:
    return [p for p in patterns if not any(re.match(p, n) for n in node_names)]
