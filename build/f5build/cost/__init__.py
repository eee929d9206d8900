"""Cost model: FLOPs by precision from the ONNX graphs, projected onto a Jetson AGX Orin -> reports/cost.*

For every graph (text_encoder, step, vocoder), every ONNX variant the manifest records (fp32, fp16,
int8) and every bucket of its table, count the tensor-op FLOPs by the precision TensorRT can run them
in (INT8 / FP16 / FP32, the FP32 ones TF32-eligible), the other ops roughly and the bytes moved, from
the graph itself at the bucket's input shapes (f5build.cost.count). Then project the time of one
request (a `--cost-ref-seconds` reference + `--cost-gen-seconds` of speech, batch 1, in the smallest
bucket that holds it) for each deployment of the precision recipe at each `--cost-nfe`, on the Orin's
dense peaks at a stated utilisation (f5build.cost.orin), next to the seed's measured PyTorch RTF.
Writes cost.md, cost.json and cost.png to `--cost-reports`. Needs only the ONNX files: no TensorRT.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from f5build.context import ROOT, artifacts_dir
from f5build.cost.count import count_model
from f5build.cost.counts import OpCounts
from f5build.cost.orin import ORIN_AGX_64GB, Device, Projection, Utilisation, Workload, graph_seconds, project
from f5build.cost.shapes import Skeleton, dims_by_role, load_skeleton, parse_bucket
from f5rt.backends.trt.contract import GRAPH_INPUTS
from f5rt.buckets import Bucket
from f5rt.errors import ManifestError
from f5rt.manifest import GRAPHS, Manifest, load_manifest

RECIPE = ROOT / "config" / "precision.yaml"
VARIANTS = ("fp32", "fp16", "int8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cost (FLOPs by precision, Jetson AGX Orin projection)")
    g.add_argument("--cost-reports", type=Path, default=ROOT / "reports", help="where cost.{md,json,png} go")
    g.add_argument(
        "--cost-buckets", default="", help="comma list of buckets to count, e.g. n512_b1,n1536_b2 (default: all)"
    )
    g.add_argument("--cost-precisions", default="", help="comma list of ONNX variants (default: every one present)")
    g.add_argument("--cost-nfe", default="7,16", help="NFE values to project (default 7,16)")
    g.add_argument(
        "--cost-math-util", type=float, default=0.35, help="fraction of the dense math peaks reached (default 0.35)"
    )
    g.add_argument(
        "--cost-bw-util", type=float, default=0.7, help="fraction of the DRAM bandwidth reached (default 0.7)"
    )
    g.add_argument("--cost-ref-seconds", type=float, default=6.0, help="reference audio of the projected request")
    g.add_argument("--cost-gen-seconds", type=float, default=6.0, help="generated speech of the projected request")
    g.add_argument("--cost-recipe", type=Path, default=RECIPE, help="recipe with the `deployments` table (YAML)")
    g.add_argument(
        "--cost-first-piece-seconds",
        type=float,
        default=1.5,
        help="first streamed piece of the time-to-first-audio projection (after the same reference; default 1.5)",
    )


def _csv(s: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(x.strip() for x in s.split(",") if x.strip()))


@dataclass(frozen=True)
class CostOptions:
    artifacts: Path
    reports: Path
    buckets: tuple[str, ...] = ()  # empty: every bucket of the manifest's table
    precisions: tuple[str, ...] = ()  # empty: every variant present
    nfe: tuple[int, ...] = (7, 16)
    util: Utilisation = field(default_factory=Utilisation)
    ref_seconds: float = 6.0
    gen_seconds: float = 6.0
    recipe: Path = RECIPE
    first_piece_seconds: float = 1.5

    def __post_init__(self) -> None:
        for b in self.buckets:
            parse_bucket(b)
        bad = [p for p in self.precisions if p not in VARIANTS]
        if bad:
            raise ValueError(f"--cost-precisions: unknown {bad} (choose from {', '.join(VARIANTS)})")
        if not self.nfe or any(n <= 0 for n in self.nfe):
            raise ValueError(f"--cost-nfe must list positive step counts, got {list(self.nfe)}")
        if self.ref_seconds < 0 or self.gen_seconds <= 0:
            raise ValueError("--cost-gen-seconds must be > 0 and --cost-ref-seconds >= 0")
        if self.first_piece_seconds <= 0:
            raise ValueError(f"--cost-first-piece-seconds must be > 0, got {self.first_piece_seconds}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CostOptions:
        try:
            nfe = tuple(int(x) for x in _csv(args.cost_nfe))
        except ValueError:
            raise ValueError(f"--cost-nfe: expected a comma list of integers, got {args.cost_nfe!r}") from None
        return cls(
            artifacts=artifacts_dir(args),
            reports=Path(args.cost_reports),
            buckets=_csv(args.cost_buckets),
            precisions=_csv(args.cost_precisions),
            nfe=nfe,
            util=Utilisation(float(args.cost_math_util), float(args.cost_bw_util)),
            ref_seconds=float(args.cost_ref_seconds),
            gen_seconds=float(args.cost_gen_seconds),
            recipe=Path(args.cost_recipe),
            first_piece_seconds=float(getattr(args, "cost_first_piece_seconds", 1.5)),
        )


@dataclass(frozen=True)
class GraphCost:
    """One graph variant at one input shape."""

    graph: str
    precision: str
    file: str
    bucket: str  # bucket name, or "workload" for the projected request's vocoder frames
    frames: int
    batch: int
    input_shapes: Mapping[str, tuple[int, ...]]
    shape_method: str
    counts: OpCounts
    tensor_flops: int
    tf32_flops: int
    fp32_share: float


@dataclass(frozen=True)
class AttentionState:
    """Whether a step variant's attention is projected fused: the attention pattern check decides."""

    precision: str
    form: str  # the form checked (the manifest's attention_form, else fused-fp16)
    fused: bool
    reason: str
    blocks: int
    fusable_blocks: int


@dataclass(frozen=True)
class StreamProjection:
    """Time to first audio of a streamed request: text encoder + NFE steps + vocoder of the first piece."""

    deployment: str
    nfe: int
    fused_attention: bool
    bucket: str
    text_encoder_s: float
    step_s: float
    vocoder_s: float
    ttfa_s: float


@dataclass(frozen=True)
class BatchScaling:
    """Step time at B = 2 / 4 relative to B = 1 in one bucket (what batching requests there buys)."""

    deployment: str
    bucket_frames: int
    fused_attention: bool
    step_s: Mapping[int, float]  # batch -> seconds

    def ratio(self, batch: int) -> float:
        return self.step_s[batch] / self.step_s[1]


# The architecture the seed's PyTorch baseline was measured on (F5TTS_v1_Base): only a model of these
# dims is set beside it as comparable.
FULL_SIZE = {"dim": 1024, "depth": 22, "heads": 16}


def is_full_size(model: Mapping[str, Any]) -> bool:
    return all(model.get(k) == v for k, v in FULL_SIZE.items())


@dataclass(frozen=True)
class CostReport:
    artifacts: str
    name: str
    model: Mapping[str, Any]
    device: Device
    utilisation: Utilisation
    workload: Workload
    results: tuple[GraphCost, ...]
    workload_costs: tuple[GraphCost, ...]  # each graph variant at the projected request's shapes
    projections: tuple[Projection, ...]
    deployments: Mapping[str, Mapping[str, str]]
    notes: tuple[str, ...]  # deployments projected with FP32 for a missing variant
    seconds: float
    attention: Mapping[str, AttentionState] = field(default_factory=dict)  # step variant -> check
    first_piece: Workload | None = None
    streaming: tuple[StreamProjection, ...] = ()
    batch_scaling: tuple[BatchScaling, ...] = ()

    @property
    def comparable_to_pytorch(self) -> bool:
        """The seed's PyTorch figures are for the full-size architecture: comparable only to that."""
        return is_full_size(self.model)

    def fused(self, deployment: str) -> bool:
        """The attention state the checks give the deployment's step variant."""
        state = self.attention.get(self.deployments[deployment]["step"])
        return bool(state and state.fused)

    def headline(self) -> tuple[Projection, ...]:
        """TF32-on projections at each deployment's checked attention state."""
        return tuple(p for p in self.projections if p.tf32 and p.fused_attention == self.fused(p.deployment))


# The seed's PyTorch RTF on the Orin, as the task brief gives it (not measured here).
PYTORCH_RTF = {"nfe7": 0.212, "nfe6_8": (0.18, 0.25)}
PYTORCH_NOTE = (
    "seed's measured f5-tts PyTorch RTF on the Jetson AGX Orin, as given in the brief (not measured here): "
    "0.212 at NFE 7, about 0.18-0.25 at NFE 6-8 (full-size F5-TTS v1 Base + Vocos); no figure was given for NFE 16"
)


PYTORCH_NOT_COMPARABLE = (
    "the seed's PyTorch RTF was measured on the full-size F5-TTS v1 Base (dim 1024, depth 22, heads 16); "
    "this model is smaller, so its projection is not comparable with it (run the cost stage on "
    "`--model f5tts-v1-base` for that comparison)"
)


class _Counter:
    """Loads each variant once and counts it at any shape."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._skel: dict[tuple[str, str], tuple[Skeleton, str]] = {}

    def skeleton(self, graph: str, prec: str) -> tuple[Skeleton, str]:
        if (graph, prec) not in self._skel:
            path = self.manifest.find(graph, prec)
            self._skel[(graph, prec)] = (load_skeleton(path), path.name)
        return self._skel[(graph, prec)]

    def cost(self, graph: str, prec: str, bucket: str, frames: int, batch: int) -> GraphCost:
        skel, rel = self.skeleton(graph, prec)
        shapes = dims_by_role(skel, GRAPH_INPUTS[graph], {"B": batch, "N": frames, "F": frames})
        counts, method = count_model(skel, shapes)
        return GraphCost(
            graph, prec, rel, bucket, frames, batch, shapes, method, counts,
            counts.tensor_flops, counts.tf32_flops, counts.fp32_share,
        )  # fmt: skip


def read_deployments(path: Path) -> dict[str, dict[str, str]]:
    """{name: {graph: precision}} of the recipe (empty when it has no table)."""
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    table = dict(data.get("deployments") or {})
    table.pop("default", None)
    out = {}
    for name, graphs in table.items():
        if not isinstance(graphs, Mapping) or set(graphs) != set(GRAPHS):
            raise ValueError(f"{path}: deployment {name!r} must give a precision for each of {', '.join(GRAPHS)}")
        out[str(name)] = {g: str(graphs[g]) for g in GRAPHS}
    return out


def workload_for(manifest: Manifest, opts: CostOptions, gen_seconds: float | None = None) -> Workload:
    audio = manifest.audio
    per_s = float(audio["sample_rate"]) / float(audio["hop_length"])
    gen = opts.gen_seconds if gen_seconds is None else gen_seconds
    total = math.ceil((opts.ref_seconds + gen) * per_s - 1e-9)
    bucket = manifest.buckets.choose(total, 1)
    return Workload(opts.ref_seconds, gen, total, math.ceil(gen * per_s - 1e-9), bucket.frames, 1)


def attention_state(manifest: Manifest, skel: Skeleton, precision: str, file: str) -> AttentionState:
    """Check a step variant's attention against TensorRT's fusable MHA pattern (f5build.attention_pattern).

    FP32 attention never fuses (TensorRT's MHA kernels take FP16/BF16/INT8); the reduced variants are
    checked with the form the quantize stage recorded for the file (fused-fp16 when it recorded none).
    """
    from f5build.attention_pattern import check_attention  # (it imports f5build.cost.shapes)

    form = str(manifest.files.get(file, {}).get("attention_form") or "fused-fp16")
    depth, heads = manifest.model.get("depth"), manifest.model.get("heads")
    rep = check_attention(skel, form, int(depth) if depth else None, int(heads) if heads else None)
    reason = rep.reason()
    if precision == "fp32":
        reason = f"FP32 attention (TensorRT fuses MHA only with FP16/BF16 matmul inputs): {reason}"
    return AttentionState(precision, form, rep.fused, reason, len(rep.blocks), rep.fusable_blocks)


def chosen_buckets(manifest: Manifest, opts: CostOptions) -> list[Bucket]:
    table = list(manifest.buckets)
    if not opts.buckets:
        return table
    have = {b.name: b for b in table}
    bad = [b for b in opts.buckets if b not in have]
    if bad:
        raise ValueError(
            f"--cost-buckets: {bad} not in the manifest's table ({', '.join(have)}); "
            "re-export with another --buckets file to count other shapes"
        )
    return [have[b] for b in opts.buckets]


def compute(opts: CostOptions, device: Device = ORIN_AGX_64GB, log: Any = print) -> CostReport:
    """Count every graph variant and bucket, then project each deployment (no files written)."""
    t0 = time.perf_counter()
    manifest = load_manifest(opts.artifacts)
    buckets = chosen_buckets(manifest, opts)
    work = workload_for(manifest, opts)
    counter = _Counter(manifest)
    variants: dict[str, list[str]] = {}
    skipped: list[str] = []
    for graph in GRAPHS:
        have = manifest.precisions(graph)
        skipped += [f"{graph} {p}: not a TensorRT precision variant, not counted" for p in have if p not in VARIANTS]
        have = [p for p in have if p in VARIANTS]
        if "fp32" not in have:
            raise ManifestError(
                f"{manifest.root}: no FP32 ONNX for graph '{graph}'; run the export stage "
                "(`nox -s export` or `python -m f5build export`)"
            )
        if opts.precisions:
            missing = [p for p in opts.precisions if p not in have and p != "fp32"]
            if missing and graph == "step":
                raise ManifestError(
                    f"{manifest.root}: no {', '.join(missing)} ONNX for graph 'step' (have {', '.join(have)}); "
                    "run the quantize stage (`nox -s quantize` or `python -m f5build quantize`)"
                )
            have = [p for p in have if p in opts.precisions or p == "fp32"]
        variants[graph] = have
    results, wl = [], []
    for graph in GRAPHS:
        for prec in variants[graph]:
            t = time.perf_counter()
            for b in buckets:
                results.append(counter.cost(graph, prec, b.name, b.frames, b.batch))
            wname = Bucket(work.bucket_frames, work.batch).name
            frames = work.vocoder_frames if graph == "vocoder" else work.bucket_frames
            hit = [r for r in results if r.graph == graph and r.precision == prec and r.bucket == wname]
            if graph != "vocoder" and hit:
                wl.append(hit[0])
            else:
                wl.append(counter.cost(graph, prec, "workload" if graph == "vocoder" else wname, frames, work.batch))
            log(f"  {graph}.{prec}: {len(buckets)} buckets counted in {time.perf_counter() - t:.1f} s")
    # The recipe's deployments; without one, each step variant with the same variant of the other
    # graphs where it exists (else their FP32).
    deployments = read_deployments(opts.recipe) or {
        p: {g: (p if p in variants[g] else "fp32") for g in GRAPHS} for p in variants["step"]
    }
    usable = {}
    for name, graphs in deployments.items():
        if graphs["step"] not in variants["step"]:
            skipped.append(f"deployment {name}: no step {graphs['step']} ONNX (run the quantize stage); not projected")
            continue
        absent = [f"{g} {p}" for g, p in graphs.items() if p not in variants[g]]
        if absent:
            skipped.append(f"deployment {name}: no ONNX for {', '.join(absent)}; projected with FP32 there")
        usable[name] = {g: (p if p in variants[g] else "fp32") for g, p in graphs.items()}
    by_key = {(c.graph, c.precision): c.counts for c in wl}
    attention = {}
    for prec in variants["step"]:
        skel, rel = counter.skeleton("step", prec)
        attention[prec] = attention_state(manifest, skel, prec, rel)
        log(f"  step.{prec} attention: {'fused' if attention[prec].fused else 'not fused'} ({attention[prec].reason})")
    projections = []
    for name, graphs in usable.items():
        counts = {g: by_key[(g, p)] for g, p in graphs.items()}
        for nfe in opts.nfe:
            for tf32 in (True, False):
                for fused in (False, True):
                    projections.append(project(name, graphs, counts, work, nfe, device, opts.util, tf32, fused))
    # streamed time to first audio (the reference + a short first piece) and batch scaling in its bucket
    first = workload_for(manifest, opts, opts.first_piece_seconds)
    fname = Bucket(first.bucket_frames, 1).name
    streaming, scaling = [], []
    for name, graphs in usable.items():
        fused = attention[graphs["step"]].fused
        te = counter.cost("text_encoder", graphs["text_encoder"], fname, first.bucket_frames, 1).counts
        voc = counter.cost("vocoder", graphs["vocoder"], "first piece", first.vocoder_frames, 1).counts
        step_by_b = {}
        for b in sorted({1, *(x for x in (2, 4) if x in manifest.buckets.batch)}):
            c = counter.cost("step", graphs["step"], Bucket(first.bucket_frames, b).name, first.bucket_frames, b)
            step_by_b[b] = graph_seconds(c.counts, device, opts.util, True, fused)
        scaling.append(BatchScaling(name, first.bucket_frames, fused, step_by_b))
        te_s = graph_seconds(te, device, opts.util, True, fused)
        voc_s = graph_seconds(voc, device, opts.util, True, fused)
        for nfe in opts.nfe:
            total = te_s + nfe * step_by_b[1] + voc_s
            streaming.append(StreamProjection(name, nfe, fused, fname, te_s, step_by_b[1], voc_s, total))
    return CostReport(
        str(opts.artifacts), manifest.name, manifest.model, device, opts.util, work, tuple(results), tuple(wl),
        tuple(projections), usable, tuple(skipped), time.perf_counter() - t0, attention, first, tuple(streaming),
        tuple(scaling),
    )  # fmt: skip


Options = CostOptions  # f5build.cli builds it once from the command line and calls run(options)


def run(opts: CostOptions) -> int:
    from f5build.cost.report import write_reports

    report = compute(opts)
    paths = write_reports(report, opts)
    for line in summary_lines(report):
        print(line)
    print(f"wrote {', '.join(str(p) for p in paths)} in {report.seconds:.1f} s")
    return 0


def step_share(report: CostReport) -> dict[str, float]:
    """FP32 share of the step's tensor-op FLOPs per variant at the projected request's bucket."""
    return {c.precision: c.fp32_share for c in report.workload_costs if c.graph == "step"}


def summary_lines(report: CostReport) -> list[str]:
    out = []
    for prec, share in step_share(report).items():
        out.append(
            f"  step.{prec}: FP32 share {100 * share:.1f} % of the tensor-op FLOPs (n{report.workload.bucket_frames}_b1)"
        )
    for prec, a in report.attention.items():
        out.append(f"  step.{prec} attention {'fused' if a.fused else 'NOT fused'}: {a.reason}")
    for p in report.headline():
        off, other = find(report, p, tf32=False), find(report, p, fused_attention=not p.fused_attention)
        out.append(
            f"  {p.deployment} NFE {p.nfe}: step {1e3 * p.step_s:.2f} ms, request {p.total_s:.3f} s, RTF {p.rtf:.4f} "
            f"(attention {'fused' if p.fused_attention else 'not fused'}, TF32 on; off {off.rtf:.4f}; "
            f"if attention were {'not ' if p.fused_attention else ''}fused {other.rtf:.4f})"
        )
    for s in report.streaming:
        out.append(f"  {s.deployment} NFE {s.nfe}: streamed time to first audio {s.ttfa_s:.3f} s ({s.bucket})")
    for b in report.batch_scaling:
        ratios = ", ".join(f"B={k} {b.ratio(k):.2f}x" for k in b.step_s if k != 1)
        out.append(f"  {b.deployment} step in n{b.bucket_frames}: {ratios} the B=1 step time")
    if not report.comparable_to_pytorch:
        out.append(f"  (not the full-size architecture: {PYTORCH_NOT_COMPARABLE})")
    return out


def find(report: CostReport, p: Projection, **change: bool) -> Projection:
    """The projection like `p` with `tf32` / `fused_attention` changed."""
    want = {"tf32": p.tf32, "fused_attention": p.fused_attention, **change}
    return next(
        q
        for q in report.projections
        if q.deployment == p.deployment and q.nfe == p.nfe and (q.tf32, q.fused_attention) == tuple(want.values())
    )


def report_dict(report: CostReport, opts: CostOptions) -> dict[str, Any]:
    d = asdict(report)
    d["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    d["fp32_share"] = {
        "step": {
            prec: {
                "workload_bucket": share,
                "by_bucket": {
                    c.bucket: c.fp32_share for c in report.results if c.graph == "step" and c.precision == prec
                },
            }
            for prec, share in step_share(report).items()
        },
        "goal": 0.05,
        "definition": "FP32 (TF32-eligible) FLOPs / all tensor-op FLOPs (MatMul, Gemm, Conv, ConvTranspose, Einsum)",
    }
    d["pytorch_reference"] = {
        "rtf": PYTORCH_RTF,
        "note": PYTORCH_NOTE,
        "comparable": report.comparable_to_pytorch,
        **({} if report.comparable_to_pytorch else {"why_not": PYTORCH_NOT_COMPARABLE}),
    }
    d["headline"] = [asdict(p) for p in report.headline()]
    d["batch_ratios"] = {b.deployment: {f"b{k}": b.ratio(k) for k in b.step_s if k != 1} for b in report.batch_scaling}
    return d


__all__ = [
    "AttentionState",
    "BatchScaling",
    "CostOptions",
    "CostReport",
    "GraphCost",
    "StreamProjection",
    "add_arguments",
    "compute",
    "is_full_size",
    "run",
]
