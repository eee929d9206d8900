"""Quantize: FP16 and INT8 Q/DQ + FP16 variants of the graphs with NVIDIA ModelOpt, recipe-checked.

For every graph and variant the recipe (config/precision.yaml) lists:

* int8: `modelopt.onnx.quantization.quantize(quantize_mode="int8", op_types_to_quantize=[MatMul, Gemm,
  Conv], nodes_to_exclude=[recipe regexes], high_precision_dtype="fp32", calibration_eps=["cpu"])`
  calibrated on the recorded inputs of the calibrate stage (every NFE step, both CFG branches, the
  buckets used), then `modelopt.onnx.autocast.convert_to_mixed_precision(keep_io_types=True, ...)`
  for FP16 everywhere the recipe does not keep FP32. Quantizing in FP32 first matters: ModelOpt's
  own FP16 pass would cast the time embedding and rotary angles too. Autocast leaves a Cast between
  some DQs and their MatMuls (and shape readers on dequantized tensors): `f5build.qdq_rewrite` moves
  those Casts before the Q, so every DQ feeds its INT8 op directly, as TensorRT fuses it.
* fp16: the same autocast pass on the FP32 graph.

Autocast's overflow guard (data_max) runs the graph on a few recorded samples (short crops) and
keeps any node whose values exceed FP16's comfortable range in FP32; it holds every intermediate
tensor in memory, so graphs over REF_CHECK_MAX_MB (the full-size DiT) skip it by default and rely
on the recipe's keep-FP32 rules and validate's gates. ModelOpt rewrites its input file in place
(shape inference), so it always gets a private copy of the FP32 graph. Every produced graph goes through the
placement check (f5build.placement) and one ONNX Runtime run before it is written; a violation
fails the stage and nothing is recorded. Outputs: <graph>.<precision>.onnx, recorded in the
manifest (graph, precision, kind "onnx", stage "quantize") with the inputs' hash, so a re-run with
unchanged graphs, calibration data, recipe and tools is a no-op.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from f5build.attention_form import has_bf16_compute, retype_attention_bf16, simulate_bf16
from f5build.attention_pattern import AttentionPatternReport, check_attention
from f5build.common import log, peak_rss_mb, source_hash, tool_versions
from f5build.context import add_shared, artifacts_dir, csv_list
from f5build.modelopt_calls import (
    autocast_fp16,
    calibration_reader,
    quantize_int8,
    save_model,
    smoke_run,
)
from f5build.placement import PlacementReport, check_placement
from f5build.qdq_rewrite import rewrite_qdq
from f5build.quantize_cpu import build_cpu
from f5build.recipe import (
    CALIB_METHODS,
    CPU_PRECISIONS,
    PRECISIONS,
    TRT_ATTENTION_FORMS,
    Recipe,
    SmoothRule,
    load_recipe,
    rule_dict,
    unmatched_patterns,
)
from f5build.recordings import RecordedSamples, calibration_file, crop_feed
from f5build.space import require_space
from f5rt.errors import ManifestError
from f5rt.files import replace_into, sha256_json
from f5rt.manifest import Manifest, file_entry, load_manifest, update_manifest

QUANT_TOOLS = ("onnx", "onnxruntime", "nvidia-modelopt", "onnx-graphsurgeon", "onnxconverter-common")
# autocast's data_max check runs the graph with every tensor marked as an output and keeps them all:
# ~10 GB per 128-frame sample for the full-size DiT (the stage was OOM-killed at 21 GB). Above this
# size the check is skipped by default and FP16 safety rests on the recipe's keep-FP32 rules plus
# validate's gates; --quant-ref-samples N forces it.
REF_CHECK_MAX_MB = 256
DEFAULT_REF_SAMPLES = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantize (ModelOpt INT8 Q/DQ + FP16)")
    add_shared(g, "quant", "recipe")
    g.add_argument("--quant-variants", default="", help="comma list of precisions to build (default: the recipe's)")
    g.add_argument("--quant-graphs", default="", help="comma list of graphs (default: every graph with variants)")
    g.add_argument("--quant-method", choices=CALIB_METHODS, help="override the recipe's calibration method")
    g.add_argument("--quant-samples", type=int, help="calibrate on at most N recorded samples per graph")
    g.add_argument(
        "--quant-ref-samples",
        type=int,
        help="recorded samples for autocast's FP16 overflow check (default: 2 for graphs under "
        f"{REF_CHECK_MAX_MB} MB, 0 above: the check holds every intermediate tensor in memory)",
    )
    g.add_argument(
        "--quant-ref-frames", type=int, default=128, help="frames of each overflow-check sample (crops of real inputs)"
    )
    g.add_argument(
        "--quant-attention-form",
        choices=TRT_ATTENTION_FORMS,
        help="build the fp16/int8 step graphs with this attention form instead of the recipe's (to measure the "
        "forms against each other with validate; docs/attention.md)",
    )
    add_shared(g, "quant", "force", force="rebuild even when up to date")


@dataclass(frozen=True)
class QuantizeOptions:
    """One quantize run. Empty `graphs` / `variants`: all the recipe has (and a full run drops the
    variants the recipe no longer lists). `method` None: the recipe's calibration method."""

    root: Path
    recipe: Path
    graphs: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    method: str | None = None
    samples: int | None = None
    ref_samples: int | None = None
    ref_frames: int = 128
    force: bool = False
    attention_form: str | None = None  # None: the recipe's

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in CALIB_METHODS:
            raise ValueError(f"--quant-method: expected one of {', '.join(CALIB_METHODS)}, got {self.method!r}")
        for name, v in (("samples", self.samples), ("ref-samples", self.ref_samples)):
            if v is not None and v < 0:
                raise ValueError(f"--quant-{name}: must be >= 0, got {v}")
        if self.ref_frames < 1:
            raise ValueError(f"--quant-ref-frames: must be positive, got {self.ref_frames}")
        if self.attention_form is not None and self.attention_form not in TRT_ATTENTION_FORMS:
            raise ValueError(
                f"--quant-attention-form: expected one of {', '.join(TRT_ATTENTION_FORMS)}, got {self.attention_form!r}"
            )

    @property
    def full(self) -> bool:
        return not self.graphs and not self.variants

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> QuantizeOptions:
        return cls(
            root=artifacts_dir(args),
            recipe=Path(args.quant_recipe),
            graphs=csv_list(args.quant_graphs),
            variants=csv_list(args.quant_variants),
            method=args.quant_method,
            samples=args.quant_samples,
            ref_samples=args.quant_ref_samples,
            ref_frames=int(args.quant_ref_frames),
            force=bool(args.quant_force),
            attention_form=getattr(args, "quant_attention_form", None),
        )


Options = QuantizeOptions


def _wanted(items: Sequence[str], allowed: tuple[str, ...], what: str) -> list[str]:
    items = list(items)
    bad = [x for x in items if x not in allowed]
    if bad:
        raise ValueError(f"--quant-{what}: unknown {bad} (choose from {', '.join(allowed)})")
    return items


def plan(recipe: Recipe, graphs: Sequence[str] = (), variants: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(graph, precision) pairs to build, in a fixed order (empty: every graph / variant of the recipe)."""
    graphs = _wanted(graphs, tuple(recipe.graphs), "graphs") or list(recipe.graphs)
    variants = _wanted(variants, PRECISIONS, "variants")
    out = []
    for g in graphs:
        for v in recipe.graphs[g].variants:
            if not variants or v in variants:
                out.append((g, v))
    return out


def calibration_split(samples: RecordedSamples, calib: Path, limit: int | None = None) -> tuple[list[int], list[int]]:
    """(calibration indices, at most `limit`; one check index: the first held-out sample, else the
    first calibration one) of a recording; refuses one with no calibration samples."""
    cal_idx = samples.indices(split=0, limit=limit)
    if not cal_idx:
        raise ManifestError(f"{calib}: no calibration samples (split 0); re-run `nox -s calibrate`")
    return cal_idx, samples.indices(split=1)[:1] or cal_idx[:1]


def needs_calibration(recipe: Recipe, graph: str, precision: str) -> bool:
    """Whether the variant is computed from the recorded inputs: int8 (its scales) and a smoothed
    cpu-int8 (its smoothing factors); the other CPU variants and fp16 need none."""
    cpu = recipe.graphs[graph].cpu
    if precision == "cpu-int8":
        return cpu is not None and cpu.smooth is not None
    return precision not in CPU_PRECISIONS


def fingerprint(
    manifest: Manifest,
    graph: str,
    precision: str,
    recipe: Recipe,
    method: str,
    calib: Path | None,
    opts: QuantizeOptions,
) -> str:
    """Everything a variant depends on: source graph, recording, recipe, method, build code, tools."""
    gr = recipe.graphs[graph]
    return sha256_json(
        {
            "source": manifest.files[f"{graph}.onnx"]["sha256"],
            "calibration": manifest.files[calib.relative_to(manifest.root).as_posix()]["sha256"] if calib else None,
            "recipe": {
                "int8": rule_dict(gr.int8),
                "fp16": rule_dict(gr.fp16),
                "attention": rule_dict(gr.attention),
                **({"cpu": rule_dict(gr.cpu)} if precision in CPU_PRECISIONS and gr.cpu else {}),
            },
            "method": method if precision == "int8" else None,
            "samples": opts.samples if precision == "int8" else None,
            "ref_samples": [opts.ref_samples, opts.ref_frames],
            "precision": precision,
            "code": source_hash(),
            "tools": tool_versions(QUANT_TOOLS),
        }
    )


def _up_to_date(manifest: Manifest, rel: str, fp: str) -> bool:
    meta = manifest.files.get(rel)
    if not meta or meta.get("inputs_sha256") != fp:
        return False
    try:
        manifest.verify(rel)
    except ManifestError:
        return False
    return True


def build_variant(
    root: Path,
    manifest: Manifest,
    graph: str,
    precision: str,
    recipe: Recipe,
    method: str,
    opts: QuantizeOptions,
) -> tuple[PlacementReport, list[str], dict[str, Any]]:
    """Make <graph>.<precision>.onnx; returns the placement report, extra files and stage info."""
    import onnx

    gr = recipe.graphs[graph]
    src = manifest.find(graph, "fp32")
    calib = calibration_file(manifest, graph)
    if calib is None:
        raise ManifestError(f"{root}: no calibration data for '{graph}'; run `nox -s calibrate` first")
    samples = RecordedSamples(calib)
    info: dict[str, Any] = {}
    try:
        cal_idx, check_idx = calibration_split(samples, calib, opts.samples)
        names = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node]
        pats = [*gr.guard.nodes]
        if gr.int8 is not None:
            pats += list(gr.int8.exclude)
        if gr.fp16 is not None:
            pats += list(gr.fp16.keep_fp32)
        if gr.attention.nodes:
            pats.append(gr.attention.nodes)
        stale = unmatched_patterns(names, pats)
        if stale:
            raise ValueError(f"{opts.recipe}: pattern(s) {stale} match no node of {graph}.onnx (stale recipe?)")

        with tempfile.TemporaryDirectory(dir=root, prefix=f".quant-{graph}-{precision}-") as tmp_s:
            tmp = Path(tmp_s)
            # A private copy, never a link: ModelOpt rewrites its input in place (shape inference via
            # onnx.shape_inference.infer_shapes_path(path)) and writes intermediates beside it.
            link = tmp / f"{graph}.onnx"
            shutil.copyfile(src, link)
            for extra in manifest.files[f"{graph}.onnx"].get("external_data", []):
                shutil.copyfile(root / extra, tmp / Path(extra).name)
            ref_dir = tmp / "ref"
            ref_dir.mkdir()
            # autocast's overflow check keeps every intermediate tensor of every reference sample in
            # memory (8 GB per N=384 sample for the full DiT): give it short crops of real inputs
            n_ref = opts.ref_samples
            if n_ref is None:
                big = src.stat().st_size > REF_CHECK_MAX_MB * 1e6
                n_ref = 0 if big else DEFAULT_REF_SAMPLES
                if big:
                    log(f"  {graph}.onnx is over {REF_CHECK_MAX_MB} MB: skipping autocast's overflow check (memory)")
            spread = samples.indices(split=0, limit=n_ref) if n_ref > 0 else []
            info["overflow_check_samples"] = len(spread)
            for j, i in enumerate(spread):
                np.savez(ref_dir / f"{j:03d}.npz", **crop_feed(samples.feed(i), opts.ref_frames))  # type: ignore[arg-type]
            ref = ref_dir if any(ref_dir.iterdir()) else None
            t0 = time.perf_counter()
            if precision == "int8" and gr.int8 is not None and gr.int8.smooth is not None:
                smoothed = tmp / f"{graph}.smooth.onnx"
                info["smooth"] = smooth_source(
                    link, smoothed, gr.int8.smooth, gr.int8.exclude, samples, cal_idx, check_idx
                )
                link = smoothed
            if precision == "int8":
                qpath = tmp / f"{graph}.q.onnx"
                log(f"  {graph}.int8: ModelOpt INT8 calibration ({method}) on {len(cal_idx)} recorded samples …")
                quantize_int8(link, qpath, gr, calibration_reader(samples, cal_idx), method, [])
                info["calibration_seconds"] = round(time.perf_counter() - t0, 1)
                log(f"  {graph}.int8: calibrated in {info['calibration_seconds']:.1f} s; FP16 autocast …")
                model = autocast_fp16(qpath, gr, ref, [])
                moved = rewrite_qdq(model)  # DQ feeds its MatMul directly; shape readers skip the Q/DQ
                info["qdq_rewrite"] = asdict(moved)
                log(
                    f"  {graph}.int8: {len(moved.casts_moved)} Cast(s) moved before their Q, "
                    f"{len(moved.shape_readers_rewired)} shape reader(s) rewired"
                )
                info["calibration_samples"] = len(cal_idx)
                info["method"] = method
            else:
                log(f"  {graph}.fp16: autocast …")
                model = autocast_fp16(link, gr, ref, [])
            if gr.attention.nodes and gr.attention.form == "fused-bf16":
                n = retype_attention_bf16(model, manifest.model.get("depth"), manifest.model.get("heads"))
                log(f"  {graph}.{precision}: {n} attention blocks retyped to BF16")
            info["seconds"] = round(time.perf_counter() - t0, 1)
            report = check_placement(model, gr, precision)
            log(f"  {report.summary()}")
            if not report.ok:
                for e in report.errors[:20]:
                    log(f"    placement: {e}")
                raise ValueError(f"{graph}.{precision}: Q/DQ / precision placement violates {opts.recipe}")
            if gr.attention.nodes:
                pattern = attention_check(model, gr.attention.form, manifest)
                info["attention_pattern"] = pattern.to_dict()
                log(f"  {graph}.{precision} {pattern.summary()}")
                if gr.attention.fused and not pattern.fused:
                    for e in pattern.problems()[:20]:
                        log(f"    attention: {e}")
                    raise ValueError(
                        f"{graph}.{precision}: attention form {gr.attention.form} ({opts.recipe}) is not in the pattern "
                        f"TensorRT fuses: {pattern.reason()}"
                    )
            out = root / f"{graph}.{precision}.onnx"
            extras = save_model(model, tmp / out.name)
            if has_bf16_compute(model):  # no BF16 kernels in ONNX Runtime's CPU provider: run the stand-in
                save_model(simulate_bf16(model), tmp / "bf16-simulated.onnx")
                smoke = tmp / "bf16-simulated.onnx"
            else:
                smoke = tmp / out.name
            del model
            smoke_run(smoke, samples.feed(check_idx[0]))
            for name in [*extras, out.name]:  # data file first: the .onnx appears last
                replace_into(tmp / name, root / name)
    finally:
        samples.close()
    return report, extras, info


def smooth_source(
    src: Path,
    dst: Path,
    rule: SmoothRule,
    exclude: Sequence[str],
    samples: RecordedSamples,
    cal_idx: Sequence[int],
    check_idx: Sequence[int],
) -> dict[str, Any]:
    """The FP32 graph `src` smoothed into `dst` (f5build.smooth) on the calibration samples, checked
    against `src` on a held-out one; returns the stage info."""
    from f5build.smooth import smooth_file

    t0 = time.perf_counter()
    feeds = [samples.feed(i) for i in cal_idx]
    rep = smooth_file(src, dst, rule, feeds, samples.feed(check_idx[0]), exclude)
    info = {**rep.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}
    log(
        f"  {src.stem}: smoothed {info['tensors']} MatMul input(s) (alpha {rule.alpha}), channel peak "
        f"{max(g.amax_before for g in rep.groups):.1f} -> {max(g.amax_after for g in rep.groups):.1f}; "
        f"FP32 output unchanged to {rep.fp32_rel_error:.1e}"
    )
    return info


def _record_variant(
    root: Path, rel: str, graph: str, precision: str, fp: str, extras: list[str], report: dict[str, Any]
) -> Callable[[dict[str, Any]], None]:
    """The manifest update that records one finished variant (its files, hashes and placement report)."""

    def mutate(data: dict[str, Any]) -> None:
        files = data.setdefault("files", {})
        for extra in extras:
            files[extra] = file_entry(root, extra, kind="onnx-data", stage="quantize")
        files[rel] = file_entry(
            root,
            rel,
            graph=graph,
            precision=precision,
            kind="onnx",
            stage="quantize",
            inputs_sha256=fp,
            **({"external_data": extras} if extras else {}),
            # ONNX Runtime-only graphs: how their attention runs (the backend reads it)
            **({"attention": report["attention"]["form"]} if "attention" in report else {}),
            # TensorRT variants: the attention form and whether every block is in the fusable pattern
            **(
                {"attention_form": att["form"], "attention_fused": att["fused"]}
                if (att := report.get("attention_pattern"))
                else {}
            ),
            # dynamic INT8 scales each activation over the whole call: a row's output depends on
            # the rows batched with it, so the backend runs such a graph one row per call
            **({"rows_independent": False} if report.get("method") == "onnxruntime.quantize_dynamic" else {}),
        )
        data.setdefault("stages", {}).setdefault("quantize", {}).setdefault("placement", {})[rel] = report

    return mutate


def with_attention_form(recipe: Recipe, form: str | None) -> Recipe:
    """The recipe with the step graph's attention form replaced (None: unchanged)."""
    step = recipe.graphs.get("step")
    if form is None or step is None or not step.attention.nodes:
        return recipe
    att = dataclasses.replace(step.attention, form=form)
    return dataclasses.replace(recipe, graphs={**recipe.graphs, "step": dataclasses.replace(step, attention=att)})


def attention_check(model: Any, form: str, manifest: Manifest) -> AttentionPatternReport:
    """Every attention block of a step graph against `form`'s fusable pattern (count = the model's depth)."""
    depth, heads = manifest.model.get("depth"), manifest.model.get("heads")
    return check_attention(model, form, int(depth) if depth else None, int(heads) if heads else None)


def run(opts: QuantizeOptions) -> int:
    t_start = time.perf_counter()
    root = opts.root
    manifest = load_manifest(root)
    recipe = with_attention_form(load_recipe(opts.recipe), opts.attention_form)
    method = opts.method or recipe.calibration.method
    todo = plan(recipe, opts.graphs, opts.variants)
    if not todo:
        log("the recipe lists no variants: nothing to do")
        return 0
    reports: dict[str, Any] = {}
    built: list[str] = []
    for graph, precision in todo:
        rel = f"{graph}.{precision}.onnx"
        calib = calibration_file(manifest, graph) if needs_calibration(recipe, graph, precision) else None
        fp = fingerprint(manifest, graph, precision, recipe, method, calib, opts)
        if not opts.force and _up_to_date(manifest, rel, fp):
            log(f"{rel}: up to date (inputs unchanged)")
            continue
        log(f"building {rel}")
        # a private copy of the FP32 graph (and its data) plus the variant, at most as large
        src_bytes = sum(
            (root / r).stat().st_size
            for r in (f"{graph}.onnx", *manifest.files.get(f"{graph}.onnx", {}).get("external_data", []))
            if (root / r).is_file()
        )
        require_space(root, 2 * src_bytes, f"{rel} (a copy of {graph}.onnx and the variant)")
        if precision in CPU_PRECISIONS:
            report, extras, info = build_cpu(root, manifest, graph, precision, recipe)
        else:
            report, extras, info = build_variant(root, manifest, graph, precision, recipe, method, opts)
        reports[rel] = {**report.to_dict(), **info}
        # recorded at once: a run stopped later (killed, out of space) keeps this variant, and the
        # rerun finds it up to date instead of building it again
        update_manifest(root, _record_variant(root, rel, graph, precision, fp, extras, reports[rel]))
        built.append(rel)
        log(f"  wrote {rel} ({(root / rel).stat().st_size / 1e6:.1f} MB, peak RSS {peak_rss_mb():.0f} MB)")
    if not built:
        log(f"{root}: quantized graphs up to date, nothing to do")
        return 0
    wanted = {f"{g}.{p}.onnx" for g, p in todo}
    seconds = round(time.perf_counter() - t_start, 1)

    def mutate(data: dict[str, Any]) -> None:
        files = data.setdefault("files", {})
        if opts.full:  # a full run drops variants the recipe no longer has
            for rel in [r for r, m in files.items() if m.get("stage") == "quantize" and m.get("kind") == "onnx"]:
                if rel not in wanted:
                    for extra in files[rel].get("external_data", []):
                        files.pop(extra, None)
                    files.pop(rel)
        stage = data.setdefault("stages", {}).setdefault("quantize", {})
        stage.update(
            {
                "recipe": str(opts.recipe),
                "recipe_sha256": recipe.quant_sha256,
                "method": method,
                "seconds": seconds,
                "peak_rss_mb": round(peak_rss_mb()),
                "tools": tool_versions(QUANT_TOOLS),
            }
        )

    update_manifest(root, mutate)
    log(f"quantize: {len(built)} graph(s) in {seconds:.1f} s, peak RSS {peak_rss_mb():.0f} MB")
    return 0
