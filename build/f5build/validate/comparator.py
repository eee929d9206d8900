"""Graph comparison: FP32 against each reduced-precision variant on the held-out recorded inputs.

Polygraphy runs the graphs (`OnnxrtRunner` + `SessionFromOnnx`; `TrtRunner` per optimization profile
of a compiled engine where TensorRT exists) and gives its own verdict (`Comparator.compare_accuracy`);
each output is also measured on the request's real frames (f5build.metrics.tensor_errors) and grouped
per bucket and, for the step graph, per timestep along the ODE.

CPU variants (cpu-fp32, cpu-int8) run unmasked attention, exact only without padding, so they (and
their FP32 reference) are compared on each recorded call's rows at their real length, and never in
the same Polygraphy run as the TensorRT precisions (whose reference sees the padded calls).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from f5build.metrics import tensor_errors
from f5build.recipe import CPU_PRECISIONS
from f5build.recordings import RecordedSamples
from f5build.validate.gates import polygraphy_tolerances
from f5build.validate.struct import GraphComparison, GroupStats, PolygraphyVerdict, SampleRow
from f5rt.buckets import BucketTable
from f5rt.manifest import Manifest

_SNR_CAP_DB = 300.0  # an exact match has infinite SNR: cap it in means


class RecordedLoader:
    """Polygraphy data loader over recorded held-out feeds (iterable of name -> array dicts)."""

    def __init__(self, samples: RecordedSamples, idx: Sequence[int]) -> None:
        self.samples, self.idx = samples, list(idx)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in self.idx:
            yield self.samples.feed(i)

    def __len__(self) -> int:
        return len(self.idx)


def exact_rows(feed: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """A recorded (padded) step call split into B = 1 calls at each row's real length.

    The CPU variants' unmasked attention is exact only without padding, and the ONNX Runtime backend
    runs them so (row by row when a batch is padded): compare them, and their FP32 reference, on
    exactly those calls.
    """
    rows = []
    for r in range(feed["mask"].shape[0]):
        n = int(feed["mask"][r].sum())
        if n:
            rows.append({k: (v[r : r + 1, :n] if v.ndim >= 2 else v[r : r + 1]) for k, v in feed.items()})
    return rows


class ExactRowLoader(RecordedLoader):
    """RecordedLoader yielding every recorded call's rows as exact-length B = 1 feeds (`exact_rows`)."""

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in self.idx:
            yield from exact_rows(self.samples.feed(i))

    def feeds(self) -> list[tuple[int, int, dict[str, np.ndarray]]]:
        """(sample, row, feed) in iteration order."""
        return [(i, r, f) for i in self.idx for r, f in enumerate(exact_rows(self.samples.feed(i)))]

    def __len__(self) -> int:
        return len(self.feeds())


def onnx_runner(path: Any, name: str) -> Any:
    """A Polygraphy ONNX Runtime runner; a graph with BF16 attention (fused-bf16) runs as its CPU stand-in
    (BF16 storage, FP32 arithmetic: f5build.attention_form.simulate_bf16), since ONNX Runtime's CPU provider
    has no BF16 MatMul / Softmax kernels."""
    import onnx
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    from f5build.attention_form import has_bf16_compute, simulate_bf16

    if has_bf16_compute(onnx.load(str(path), load_external_data=False)):
        model = simulate_bf16(onnx.load(str(path)))
        return OnnxrtRunner(
            SessionFromOnnx(model.SerializeToString(), providers=["cpu"]), name=f"{name} (bf16 simulated)"
        )
    return OnnxrtRunner(SessionFromOnnx(str(path), providers=["cpu"]), name=name)


def trt_runners(manifest: Manifest, graph: str, precision: str) -> list[tuple[dict[str, Any], Any]]:
    """(profile, TrtRunner) per optimization profile of the compiled engine, where TensorRT exists."""
    from f5rt.backends.trt.backend import unavailable_reason

    if unavailable_reason() is not None:
        return []
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    out = []
    for rel, meta in manifest.files.items():
        if meta.get("kind") == "engine" and meta.get("graph") == graph and meta.get("precision") == precision:
            engine = EngineFromBytes(BytesFromPath(str(manifest.verify(rel))))
            for prof in meta.get("profiles", []):
                out.append((prof, TrtRunner(engine, name=f"trt-{precision}", optimization_profile=int(prof["index"]))))
    return out


def sample_rows(graph: str, samples: RecordedSamples, idx: Sequence[int], buckets: BucketTable) -> list[SampleRow]:
    """Where each recorded sample comes from (bucket, timestep), errors still empty."""
    rows = []
    empty = dict.fromkeys(("cosine", "snr_db", "max_abs", "mean_abs", "max_rel"), math.nan)
    for i in idx:
        m = {k: v[i] for k, v in samples.meta.items()}
        frames, batch = int(m.get("frames", 0)), int(m.get("batch", 1))
        if graph == "vocoder":  # vocodes exactly the generated frames: group by the bucket holding them
            n = next((f for f in buckets.frames if f >= frames), buckets.max_frames)
            bucket = f"n{n}_b{batch}"
        else:
            bucket = f"n{frames}_b{batch}"
        if "step" in m:
            rows.append(SampleRow(i, bucket, empty, step=int(m["step"]), t=float(m["t"]), nfe=int(m["nfe"])))
        else:
            rows.append(SampleRow(i, bucket, empty))
    return rows


def sample_errors(graph: str, feed: Mapping[str, np.ndarray], ref: Any, out: Any) -> dict[str, float]:
    """Errors of one call's outputs on the request's real frames (worst output by cosine).

    Step graph: measured on the velocity v = (x_next - x) / dt the DiT + CFG computed, with the state
    x_next's own errors kept as state_*: x_next = x + v / 32 or so, so its error hides behind x and
    would look ~30 dB better than the network really is.
    """
    if graph == "step":
        valid = feed["mask"][..., None]
        x = feed["x"].astype(np.float64)
        dt = feed["dt"].astype(np.float64)[:, None, None]
        v_ref = (np.asarray(ref["x_next"], dtype=np.float64) - x) / dt
        v_out = (np.asarray(out["x_next"], dtype=np.float64) - x) / dt
        errs = tensor_errors(v_ref, v_out, valid)
        state = tensor_errors(ref["x_next"], out["x_next"], valid)
        return {
            **errs,
            "state_cosine": state["cosine"],
            "state_snr_db": state["snr_db"],
            "state_max_abs": state["max_abs"],
        }
    per_output = [tensor_errors(ref[name], out[name]) for name in ref]
    return min(per_output, key=lambda e: e["cosine"] if not math.isnan(e["cosine"]) else -1.0)


def bucket_key(name: str) -> tuple[int, int]:
    try:
        n, b = name[1:].split("_b")
        return int(n), int(b)
    except ValueError:
        return (0, 0)


def group(rows: Sequence[SampleRow], key: str) -> dict[str, GroupStats]:
    """Rows grouped by `bucket` (sorted by frames, batch) or `step` (sorted by index)."""
    groups: dict[Any, list[SampleRow]] = defaultdict(list)
    for r in rows:
        k = getattr(r, key)
        if k is not None:
            groups[k].append(r)
    out = {}
    for k in sorted(groups, key=lambda x: (str(type(x)), x) if not isinstance(x, str) else (0, bucket_key(x))):
        rs = groups[k]
        out[str(k)] = GroupStats(
            n=len(rs),
            t=rs[0].t,
            min_cosine=min(r["cosine"] for r in rs),
            min_snr_db=min(r["snr_db"] for r in rs),
            mean_snr_db=float(np.mean([min(r["snr_db"], _SNR_CAP_DB) for r in rs])),
            max_abs=max(r["max_abs"] for r in rs),
            mean_abs=float(np.mean([r["mean_abs"] for r in rs])),
            max_rel=max(r["max_rel"] for r in rs),
        )
    return out


def _comparison(
    graph: str,
    prec: str,
    rows: list[SampleRow],
    polygraphy: PolygraphyVerdict | None = None,
    seconds: float | None = None,
) -> GraphComparison:
    return GraphComparison(
        graph=graph,
        precision=prec,
        rows=tuple(rows),
        by_bucket=group(rows, "bucket"),
        by_step=group(rows, "step") if graph == "step" else {},
        polygraphy=polygraphy,
        seconds=seconds,
    )


def compare_graph(
    manifest: Manifest,
    graph: str,
    precisions: Sequence[str],
    samples: RecordedSamples,
    idx: Sequence[int],
    gates: Mapping[str, Any],
) -> dict[str, GraphComparison]:
    """Polygraphy run of FP32 and each variant on the held-out samples; metrics per sample.

    `precisions` must be all CPU precisions or none (see the module docstring). The result maps each
    precision, and `trt-<precision>` where a compiled engine was compared too, to its comparison.
    """
    from polygraphy.comparator import Comparator, CompareFunc
    from polygraphy.logger import G_LOGGER

    runners = [onnx_runner(manifest.find(graph, "fp32"), "fp32")]
    runners += [onnx_runner(manifest.find(graph, p), p) for p in precisions]
    exact = graph == "step" and any(p in CPU_PRECISIONS for p in precisions)
    if exact and not all(p in CPU_PRECISIONS for p in precisions):
        raise ValueError(f"compare CPU precisions and TensorRT precisions separately, got {list(precisions)}")
    loader: RecordedLoader = ExactRowLoader(samples, idx) if exact else RecordedLoader(samples, idx)
    t0 = time.perf_counter()
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        results = Comparator.run(runners, data_loader=loader)
    seconds = time.perf_counter() - t0
    if not results:
        raise RuntimeError(f"{graph}: Polygraphy could not run the graphs on the recorded inputs")
    by_name = {name: iters for name, iters in results}
    base_rows = sample_rows(graph, samples, idx, manifest.buckets)
    if exact:
        assert isinstance(loader, ExactRowLoader)
        by_sample = {r.sample: r for r in base_rows}
        row_feeds = loader.feeds()
        base_rows = [
            SampleRow(**{**by_sample[i].__dict__, "row": r, "frames": int(f["mask"].shape[1])}) for i, r, f in row_feeds
        ]
        feeds = [f for _, _, f in row_feeds]
    else:
        feeds = [samples.feed(i) for i in idx]
    out: dict[str, GraphComparison] = {}
    for k, prec in enumerate(precisions, start=1):
        pg = polygraphy_tolerances(gates, graph, prec)
        func = CompareFunc.simple(atol=float(pg["atol"]), rtol=float(pg["rtol"]), check_error_stat=str(pg["stat"]))
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            acc = Comparator.compare_accuracy(results, comparisons=[(0, k)], compare_func=func)
        pass_rate = float(acc[0].percentage()) if len(acc) else float("nan")
        rows = [
            row.with_errors(sample_errors(graph, feed, by_name["fp32"][j], by_name[prec][j]))
            for j, (row, feed) in enumerate(zip(base_rows, feeds, strict=True))
        ]
        verdict = PolygraphyVerdict(pass_rate, pg["atol"], pg["rtol"], pg["stat"])
        out[prec] = _comparison(graph, prec, rows, verdict, round(seconds, 2))
        trt = None if exact else trt_compare(manifest, graph, prec, samples, idx, base_rows)
        if trt is not None:
            out[trt.precision] = trt
    return out


def trt_compare(
    manifest: Manifest,
    graph: str,
    prec: str,
    samples: RecordedSamples,
    idx: Sequence[int],
    base_rows: Sequence[SampleRow],
) -> GraphComparison | None:
    """The compiled engine at `prec` against FP32 ONNX Runtime, one Polygraphy run per profile."""
    runners = trt_runners(manifest, graph, prec)
    if not runners:
        return None
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    rows = []
    ref = onnx_runner(manifest.find(graph, "fp32"), "fp32")
    for prof, runner in runners:
        mine = [(r, i) for r, i in zip(base_rows, idx, strict=True) if r.bucket == prof.get("bucket")]
        if not mine:
            continue
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            results = Comparator.run([ref, runner], data_loader=RecordedLoader(samples, [i for _, i in mine]))
        its = {name: iters for name, iters in results}
        for j, (row, i) in enumerate(mine):
            rows.append(row.with_errors(sample_errors(graph, samples.feed(i), its["fp32"][j], its[runner.name][j])))
    return _comparison(graph, f"trt-{prec}", rows)
