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
import contextlib
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from f5build.cli import ROOT, artifacts_dir
from f5build.common import log, peak_rss_mb, source_hash, tool_versions
from f5build.placement import (
    PRECISIONS,
    GraphRecipe,
    PlacementReport,
    Recipe,
    check_placement,
    load_recipe,
    unmatched_patterns,
)
from f5build.qdq_rewrite import rewrite_qdq
from f5rt._fs import sha256_json
from f5rt.errors import ManifestError
from f5rt.manifest import Manifest, file_entry, load_manifest, update_manifest

QUANT_TOOLS = ("onnx", "onnxruntime", "nvidia-modelopt", "onnx-graphsurgeon", "onnxconverter-common")
FP16_DATA_MAX = 512.0  # autocast keeps nodes whose |values| exceed this in FP32 (ModelOpt's default)
# autocast's data_max check runs the graph with every tensor marked as an output and keeps them all:
# ~10 GB per 128-frame sample for the full-size DiT (the stage was OOM-killed at 21 GB). Above this
# size the check is skipped by default and FP16 safety rests on the recipe's keep-FP32 rules plus
# validate's gates; --quant-ref-samples N forces it.
REF_CHECK_MAX_MB = 256
DEFAULT_REF_SAMPLES = 2
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with margin


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantize (ModelOpt INT8 Q/DQ + FP16)")
    g.add_argument(
        "--quant-recipe", type=Path, default=ROOT / "config" / "precision.yaml", help="precision recipe (YAML)"
    )
    g.add_argument("--quant-variants", default="", help="comma list of precisions to build (default: the recipe's)")
    g.add_argument("--quant-graphs", default="", help="comma list of graphs (default: every graph with variants)")
    g.add_argument("--quant-method", choices=("max", "entropy"), help="override the recipe's calibration method")
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
    g.add_argument("--quant-force", action="store_true", help="rebuild even when up to date")


# -- calibration data ------------------------------------------------------------------------------


class RecordedSamples:
    """Recorded graph inputs from the calibrate stage's .npz (one feed dict per recorded call).

    Layout (written by f5build.calibrate): `meta_split` (0 = calibration, 1 = held out), `meta_*`
    per-sample metadata, and `s{i:05d}.{input}` arrays. Arrays are read lazily, one sample at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._z = np.load(self.path, allow_pickle=False)
        self.meta = {k[5:]: self._z[k] for k in self._z.files if k.startswith("meta_")}
        self.inputs = [str(x) for x in self._z["inputs"]] if "inputs" in self._z.files else []
        self.count = int(len(self.meta.get("split", [])))

    def indices(self, split: int | None = None, limit: int | None = None) -> list[int]:
        idx = [i for i in range(self.count) if split is None or int(self.meta["split"][i]) == split]
        if limit is not None and 0 < limit < len(idx):
            pick = np.linspace(0, len(idx) - 1, limit).round().astype(int)
            idx = [idx[i] for i in sorted(set(pick.tolist()))]
        return idx

    def feed(self, i: int) -> dict[str, np.ndarray]:
        return {name: self._z[f"s{i:05d}.{name}"] for name in self.inputs}

    def close(self) -> None:
        self._z.close()


def crop_feed(feed: dict[str, np.ndarray], frames: int) -> dict[str, np.ndarray]:
    """The first `frames` frames of a recorded feed (rows keep their real start).

    Activation magnitudes hardly depend on the sequence length, memory does (quadratically in the
    attention maps), so the FP16 overflow check runs on crops. The vocoder's mel (B, C, F) is
    cropped on its last axis.
    """
    out = {}
    for name, a in feed.items():
        if name in ("x", "cond", "text_cond", "text_uncond", "mask", "text_ids") and a.ndim >= 2:
            out[name] = a[:, :frames]
        elif name == "mel":
            out[name] = a[..., :frames]
        else:
            out[name] = a
    if "mask" in out:
        out["mask"] = out["mask"].copy()
        out["mask"][:, 0] = True  # a row needs at least one valid frame
    return out


def _reader(samples: RecordedSamples, idx: list[int]) -> Any:
    """An onnxruntime CalibrationDataReader over recorded samples (feeds of different shapes are fine)."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.pos = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.pos >= len(idx):
                return None
            self.pos += 1
            return samples.feed(idx[self.pos - 1])

        def get_first(self) -> dict[str, np.ndarray]:
            return samples.feed(idx[0])

        def rewind(self) -> None:
            self.pos = 0

        def __len__(self) -> int:
            return len(idx)

    return Reader()


def calibration_file(manifest: Manifest, graph: str) -> Path | None:
    for rel, meta in manifest.files.items():
        if meta.get("kind") == "calibration" and meta.get("graph") == graph:
            return manifest.verify(rel)
    return None


# -- ModelOpt calls --------------------------------------------------------------------------------


class _DropNvml(logging.Filter):
    """ModelOpt logs an ERROR when it cannot count GPUs through NVML; on a CPU box that is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NVML" not in record.getMessage()


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """ModelOpt, ORT's quantizer and shape inference are chatty: keep errors, drop the rest."""
    buf = io.StringIO()
    names = (
        "",
        "modelopt",
        "modelopt.onnx",
        "modelopt.onnx.autocast",
        "onnxruntime",
        "onnxruntime.tools.symbolic_shape_infer",
    )
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    drop = _DropNvml()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
        lg.addFilter(drop)
        for h in lg.handlers:
            h.addFilter(drop)
    try:
        with contextlib.redirect_stdout(buf):
            yield buf
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
            lg.removeFilter(drop)
            for h in lg.handlers:
                h.removeFilter(drop)


def autocast_fp16(src: Path, recipe: GraphRecipe, ref_dir: Path | None, extra_fp32: list[str]) -> Any:
    """FP16 everywhere except the recipe's keep-FP32 rules (and autocast's own overflow findings)."""
    from modelopt.onnx.autocast import convert_to_mixed_precision

    assert recipe.fp16 is not None
    with _quiet():
        return convert_to_mixed_precision(
            onnx_path=str(src),
            low_precision_type="fp16",
            keep_io_types=True,
            op_types_to_exclude=recipe.keep_fp32_op_types(),
            nodes_to_exclude=[*recipe.keep_fp32_nodes(), *extra_fp32],
            data_max=FP16_DATA_MAX if ref_dir is not None else np.inf,
            calibration_data=str(ref_dir) if ref_dir is not None else None,
            providers=["cpu"],
        )


def quantize_int8(
    src: Path, out: Path, recipe: GraphRecipe, reader: Any, method: str, extra_exclude: list[str]
) -> None:
    from modelopt.onnx.quantization import quantize

    assert recipe.int8 is not None
    with _quiet():
        quantize(
            onnx_path=str(src),
            quantize_mode="int8",
            calibration_data_reader=reader,
            calibration_method=method,
            calibration_eps=["cpu"],
            op_types_to_quantize=list(recipe.int8.op_types),
            nodes_to_exclude=[*recipe.int8.exclude, *extra_exclude],
            high_precision_dtype="fp32",
            output_path=str(out),
            log_level="ERROR",
        )
    if not out.is_file():
        raise RuntimeError(f"ModelOpt wrote no model for {src.name} (no node selected for quantization?)")


def _escape_names(names: list[str]) -> list[str]:
    import re

    return [re.escape(n) + "$" for n in names]


def save_model(model: Any, path: Path) -> list[str]:
    """Save beside `path` (fsynced); graphs over protobuf's limit get `<name>.data`. Returns extra files.

    Written into the stage's temp folder inside artifacts/<name>, then moved over the old files with
    os.replace after the smoke run, so a reader never sees a half-written graph.
    """
    import onnx

    extras: list[str] = []
    if model.ByteSize() > EXTERNAL_DATA_BYTES:
        extras.append(path.name + ".data")
        onnx.save_model(model, str(path), save_as_external_data=True, location=extras[0])
    else:
        onnx.save(model, str(path))
    for name in [path.name, *extras]:
        with open(path.parent / name, "rb+") as f:
            os.fsync(f.fileno())
    return extras


def smoke_run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One ONNX Runtime run: a graph that does not load or gives non-finite output is not recorded."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, feed)
    for o, meta in zip(outs, sess.get_outputs(), strict=True):
        if np.issubdtype(np.asarray(o).dtype, np.floating) and not np.all(np.isfinite(o)):
            raise ValueError(f"{path.name}: output {meta.name} is not finite on a recorded input")
    return outs


# -- the stage -------------------------------------------------------------------------------------


def _wanted(arg: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [x.strip() for x in arg.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad:
        raise ValueError(f"--quant-{what}: unknown {bad} (choose from {', '.join(allowed)})")
    return items


def plan(recipe: Recipe, graphs_arg: str = "", variants_arg: str = "") -> list[tuple[str, str]]:
    """(graph, precision) pairs to build, in a fixed order."""
    graphs = _wanted(graphs_arg, tuple(recipe.graphs), "graphs") or list(recipe.graphs)
    variants = _wanted(variants_arg, PRECISIONS, "variants")
    out = []
    for g in graphs:
        for v in recipe.graphs[g].variants:
            if not variants or v in variants:
                out.append((g, v))
    return out


def fingerprint(
    manifest: Manifest,
    graph: str,
    precision: str,
    recipe: Recipe,
    method: str,
    calib: Path | None,
    args: argparse.Namespace,
) -> str:
    gr = recipe.graphs[graph]
    return sha256_json(
        {
            "source": manifest.files[f"{graph}.onnx"]["sha256"],
            "calibration": manifest.files[calib.relative_to(manifest.root).as_posix()]["sha256"] if calib else None,
            "recipe": {
                "int8": gr.int8.__dict__ if gr.int8 else None,
                "fp16": gr.fp16.__dict__ if gr.fp16 else None,
                "attention": gr.attention.__dict__,
            },
            "method": method if precision == "int8" else None,
            "samples": args.quant_samples if precision == "int8" else None,
            "ref_samples": [args.quant_ref_samples, args.quant_ref_frames],
            "precision": precision,
            "code": source_hash("quantize", "placement", "qdq_rewrite"),
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
    args: argparse.Namespace,
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
        cal_idx = samples.indices(split=0, limit=args.quant_samples)
        if not cal_idx:
            raise ManifestError(f"{calib}: no calibration samples (split 0); re-run `nox -s calibrate`")
        check_idx = samples.indices(split=1)[:1] or cal_idx[:1]
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
            raise ValueError(f"{args.quant_recipe}: pattern(s) {stale} match no node of {graph}.onnx (stale recipe?)")

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
            n_ref = args.quant_ref_samples
            if n_ref is None:
                big = src.stat().st_size > REF_CHECK_MAX_MB * 1e6
                n_ref = 0 if big else DEFAULT_REF_SAMPLES
                if big:
                    log(f"  {graph}.onnx is over {REF_CHECK_MAX_MB} MB: skipping autocast's overflow check (memory)")
            spread = samples.indices(split=0, limit=n_ref) if n_ref > 0 else []
            info["overflow_check_samples"] = len(spread)
            for j, i in enumerate(spread):
                np.savez(ref_dir / f"{j:03d}.npz", **crop_feed(samples.feed(i), args.quant_ref_frames))  # type: ignore[arg-type]
            ref = ref_dir if any(ref_dir.iterdir()) else None
            t0 = time.perf_counter()
            if precision == "int8":
                qpath = tmp / f"{graph}.q.onnx"
                log(f"  {graph}.int8: ModelOpt INT8 calibration ({method}) on {len(cal_idx)} recorded samples …")
                quantize_int8(link, qpath, gr, _reader(samples, cal_idx), method, [])
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
            info["seconds"] = round(time.perf_counter() - t0, 1)
            report = check_placement(model, gr, precision)
            log(f"  {report.summary()}")
            if not report.ok:
                for e in report.errors[:20]:
                    log(f"    placement: {e}")
                raise ValueError(f"{graph}.{precision}: Q/DQ / precision placement violates {args.quant_recipe}")
            out = root / f"{graph}.{precision}.onnx"
            extras = save_model(model, tmp / out.name)
            del model
            smoke_run(tmp / out.name, samples.feed(check_idx[0]))
            for name in [*extras, out.name]:  # data file first: the .onnx appears last
                os.replace(tmp / name, root / name)
    finally:
        samples.close()
    return report, extras, info


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    root = artifacts_dir(args)
    manifest = load_manifest(root)
    recipe = load_recipe(args.quant_recipe)
    method = args.quant_method or recipe.calibration.method
    todo = plan(recipe, args.quant_graphs, args.quant_variants)
    if not todo:
        log("the recipe lists no variants: nothing to do")
        return 0
    reports: dict[str, Any] = {}
    built: dict[str, tuple[str, str, str, list[str]]] = {}
    for graph, precision in todo:
        rel = f"{graph}.{precision}.onnx"
        calib = calibration_file(manifest, graph)
        fp = fingerprint(manifest, graph, precision, recipe, method, calib, args)
        if not args.quant_force and _up_to_date(manifest, rel, fp):
            log(f"{rel}: up to date (inputs unchanged)")
            continue
        log(f"building {rel}")
        report, extras, info = build_variant(root, manifest, graph, precision, recipe, method, args)
        reports[rel] = {**report.to_dict(), **info}
        built[rel] = (graph, precision, fp, extras)
        log(f"  wrote {rel} ({(root / rel).stat().st_size / 1e6:.1f} MB, peak RSS {peak_rss_mb():.0f} MB)")
    if not built:
        log(f"{root}: quantized graphs up to date, nothing to do")
        return 0
    seconds = round(time.perf_counter() - t_start, 1)
    wanted = {f"{g}.{p}.onnx" for g, p in todo}

    def mutate(data: dict[str, Any]) -> None:
        files = data.setdefault("files", {})
        for rel, (graph, precision, fp, extras) in built.items():
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
            )
        if not args.quant_graphs and not args.quant_variants:  # a full run drops variants the recipe no longer has
            for rel in [r for r, m in files.items() if m.get("stage") == "quantize" and m.get("kind") == "onnx"]:
                if rel not in wanted:
                    for extra in files[rel].get("external_data", []):
                        files.pop(extra, None)
                    files.pop(rel)
        stage = data.setdefault("stages", {}).setdefault("quantize", {})
        stage.update(
            {
                "recipe": str(args.quant_recipe),
                "recipe_sha256": recipe.quant_sha256,
                "method": method,
                "seconds": seconds,
                "peak_rss_mb": round(peak_rss_mb()),
                "tools": tool_versions(QUANT_TOOLS),
            }
        )
        stage.setdefault("placement", {}).update(reports)

    update_manifest(root, mutate)
    log(f"quantize: {len(built)} graph(s) in {seconds:.1f} s, peak RSS {peak_rss_mb():.0f} MB")
    return 0
