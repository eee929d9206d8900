"""The quantize stage's ONNX Runtime-only variants (cpu-fp32, cpu-int8): built, checked and smoke-run.

They need no calibration data (f5build.cpu_variant: fused attention, dynamic INT8 for cpu-int8), so
they are built apart from the ModelOpt variants; their smoke run uses a held-out recorded call at its
real length where a recording exists, since their unmasked attention is exact only without padding.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from f5build.common import log
from f5build.modelopt_calls import smoke_run
from f5build.placement import PlacementReport
from f5build.recipe import CpuRule, Recipe, unmatched_patterns
from f5build.recordings import RecordedSamples, calibration_file
from f5rt.files import replace_into
from f5rt.manifest import Manifest


def smoke_feed(manifest: Manifest, graph: str, path: Path) -> dict[str, np.ndarray]:
    """One input for the smoke run of a CPU variant: a held-out recorded call's first row at its real
    length when calibration data exists (unmasked attention is exact only without padding), else
    seeded random values at a small size."""
    calib = calibration_file(manifest, graph)
    if calib is not None:
        with RecordedSamples(calib) as samples:
            idx = samples.indices(split=1)[:1] or samples.indices()[:1]
            if idx:
                feed = samples.feed(idx[0])
                n = int(feed["mask"][0].sum()) if "mask" in feed else None
                return {k: (v[:1, :n] if n is not None and v.ndim >= 2 else v[:1]) for k, v in feed.items()}
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else (1 if k == 0 else 64) for k, d in enumerate(i.shape)]
        if i.type == "tensor(bool)":
            feed[i.name] = np.ones(shape, dtype=bool)
        elif i.type.startswith("tensor(int"):
            feed[i.name] = np.zeros(shape, dtype=np.int32 if "32" in i.type else np.int64)
        else:
            feed[i.name] = rng.standard_normal(shape).astype(np.float32) * 0.5
    return feed


def smoothed_source(manifest: Manifest, graph: str, src: Path, tmp: Path, rule: CpuRule) -> tuple[Path, dict[str, Any]]:
    """The FP32 graph smoothed for cpu-int8 (f5build.smooth) on the calibration split of its recording."""
    from f5build.quantize import calibration_split, smooth_source

    assert rule.smooth is not None
    calib = calibration_file(manifest, graph)
    if calib is None:
        raise ValueError(f"{graph}.cpu-int8: the recipe smooths it, which needs calibration data; run calibrate first")
    with RecordedSamples(calib) as samples:
        cal_idx, check_idx = calibration_split(samples, calib)
        dst = tmp / f"{graph}.smooth.onnx"
        info = smooth_source(src, dst, rule.smooth, rule.exclude, samples, cal_idx, check_idx)
    return dst, info


def build_cpu(
    root: Path, manifest: Manifest, graph: str, precision: str, recipe: Recipe
) -> tuple[PlacementReport, list[str], dict[str, Any]]:
    """Make the ONNX Runtime-only <graph>.<precision>.onnx (f5build.cpu_variant): no calibration needed."""
    import onnx

    from f5build.cpu_variant import build_cpu_variant

    gr = recipe.graphs[graph]
    if gr.cpu is None:
        raise ValueError(f"graphs.{graph}: {precision} needs a 'cpu' section in the recipe")
    names = [n.name for n in onnx.load(str(manifest.find(graph, "fp32")), load_external_data=False).graph.node]
    stale = unmatched_patterns(names, list(gr.cpu.exclude))
    if stale:
        raise ValueError(
            f"recipe: graphs.{graph}.cpu.exclude pattern(s) {stale} match no node of {graph}.onnx (stale recipe?)"
        )
    heads = int((manifest.data.get("model") or {}).get("heads", 0))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=root, prefix=f".quant-{graph}-{precision}-") as tmp_s:
        tmp = Path(tmp_s)
        log(
            f"  {graph}.{precision}: {'ONNX Runtime dynamic INT8 + ' if precision == 'cpu-int8' else ''}fused attention and GELU …"
        )
        src = manifest.find(graph, "fp32")
        smooth_info = None
        if precision == "cpu-int8" and gr.cpu.smooth is not None:
            src, smooth_info = smoothed_source(manifest, graph, src, tmp, gr.cpu)
        out, extras, report, info = build_cpu_variant(src, tmp, gr.cpu, precision, graph, heads)
        if smooth_info is not None:
            info["smooth"] = smooth_info
        info["seconds"] = round(time.perf_counter() - t0, 1)
        log(f"  {report.summary()}")
        if not report.ok:
            for e in report.errors[:20]:
                log(f"    placement: {e}")
            raise ValueError(f"{graph}.{precision}: placement violates the recipe's cpu section")
        smoke_run(out, smoke_feed(manifest, graph, out))
        for name in [*extras, out.name]:  # data file first: the .onnx appears last
            replace_into(tmp / name, root / name)
    return report, extras, info
