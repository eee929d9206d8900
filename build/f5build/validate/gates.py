"""The accuracy gates (config/gates.yaml), their checks, and the per-precision verdicts.

A gate names a graph (or `e2e`), a precision and a metric with its bound: `min_*` gates need the
worst value at or above the bound, `max_*` at or below. A value that cannot be measured (NaN, a
metric a library could not compute) fails its gate rather than passing silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from f5build.inputs import BuildInputError, read_yaml
from f5build.validate.struct import GateCheck, GraphComparison, Utterance
from f5rt.manifest import Manifest

GRAPH_METRICS = ("min_cosine", "min_snr_db", "max_max_abs", "max_mean_abs", "min_polygraphy_pass")
E2E_METRICS = ("min_mel_snr_db", "max_mcd_db", "min_stoi", "min_pesq", "max_duration_diff_s")
POLYGRAPHY_DEFAULT: dict[str, Any] = {"atol": 0.05, "rtol": 0.05, "stat": "mean"}
# graph gate -> the row field it reads
_ROW_FIELD = {"min_cosine": "cosine", "min_snr_db": "snr_db", "max_max_abs": "max_abs", "max_mean_abs": "mean_abs"}
VERDICT_GRAPHS = ("text_encoder", "step", "vocoder")


def load_gates(path: Path) -> dict[str, Any]:
    """config/gates.yaml, with every metric name checked (a typo would otherwise gate nothing)."""
    data = read_yaml(path, "gates file")
    if not {"graphs", "e2e"} & set(data):
        raise BuildInputError(path, "expected 'graphs' and/or 'e2e' sections (gates file); it gates nothing as it is")
    for graph, precs in (data.get("graphs") or {}).items():
        for prec, metrics in (precs or {}).items():
            for m in metrics or {}:
                if m not in (*GRAPH_METRICS, "polygraphy"):
                    raise ValueError(f"{path}: graphs.{graph}.{prec}.{m}: unknown metric (known: {GRAPH_METRICS})")
    for prec, metrics in (data.get("e2e") or {}).items():
        for m in metrics or {}:
            if m not in E2E_METRICS:
                raise ValueError(f"{path}: e2e.{prec}.{m}: unknown metric (known: {E2E_METRICS})")
    return data


def graph_spec(gates: Mapping[str, Any], graph: str, precision: str) -> dict[str, Any]:
    """The gates of `graph` at `precision`; a TensorRT engine ("trt-int8") is held to its precision's."""
    return dict((gates.get("graphs", {}).get(graph, {}) or {}).get(precision.removeprefix("trt-")) or {})


def step_bounds(path: Path, precision: str) -> dict[str, float]:
    """The step graph's cosine and SNR lower bounds at `precision`, read from the gates file at `path`
    (what the measuring tools judge a variant by, as validate does)."""
    spec = graph_spec(load_gates(path), "step", precision)
    return {k: float(v) for k, v in spec.items() if k in ("min_cosine", "min_snr_db")}


def polygraphy_tolerances(gates: Mapping[str, Any], graph: str, precision: str) -> dict[str, Any]:
    """atol / rtol / stat of Polygraphy's compare_accuracy for this graph and precision."""
    return {**POLYGRAPHY_DEFAULT, **(graph_spec(gates, graph, precision).get("polygraphy") or {})}


def check(name: str, bound: float, value: float | None, where: str) -> GateCheck:
    kind = name.split(".")[-1].split("_", 1)[0]  # min | max
    if value is None or (isinstance(value, float) and math.isnan(value)):
        ok = False
        where = f"{where}; not measurable".lstrip("; ")
    else:
        ok = value >= bound if kind == "min" else value <= bound
    return GateCheck(gate=name, bound=bound, value=value, passed=bool(ok), where=where)


def graph_gates(result: GraphComparison, gates: Mapping[str, Any]) -> list[GateCheck]:
    """Each gate of the comparison's graph and precision against its worst row (or Polygraphy's rate)."""
    graph, prec = result.graph, result.precision
    checks: list[GateCheck] = []
    if not result.rows:
        return checks
    for metric, bound in graph_spec(gates, graph, prec).items():
        if metric == "polygraphy":
            continue
        name = f"{graph}.{prec}.{metric}"
        if metric == "min_polygraphy_pass":
            if result.polygraphy is None:
                continue
            checks.append(check(name, float(bound), result.polygraphy.pass_rate, "held-out samples"))
            continue
        field = _ROW_FIELD[metric]
        pick = min if metric.startswith("min") else max
        r = pick(result.rows, key=lambda x: x[field])
        checks.append(check(name, float(bound), r[field], r.where()))
    return checks


def e2e_gates(prec: str, utterances: Sequence[Utterance], gates: Mapping[str, Any]) -> list[GateCheck]:
    """Each end-to-end gate of `prec` against its worst utterance."""
    spec = (gates.get("e2e") or {}).get(prec) or {}
    checks: list[GateCheck] = []
    for metric, bound in spec.items():
        field = metric.split("_", 1)[1]
        vals = [(u.precisions[prec].get(field), u) for u in utterances]
        known = [(v, u) for v, u in vals if v is not None]
        if not known:
            checks.append(check(f"e2e.{prec}.{metric}", float(bound), None, "no utterance measurable"))
            continue
        v, u = (min if metric.startswith("min") else max)(known, key=lambda x: x[0])
        checks.append(check(f"e2e.{prec}.{metric}", float(bound), float(v), f"{u.voice}: {u.text[:40]}"))
    return checks


def precision_verdicts(manifest: Manifest, checks: Sequence[GateCheck]) -> dict[str, dict[str, Any]]:
    """Per precision: whether every gate naming it passed, and the files it was measured on.

    Recorded in the manifest as `stages.validate.precisions[prec] = {passed, gates, files}`. The
    runtime's `auto` (f5rt.precision) picks a CPU variant only when this says passed for the same
    file hashes, so a rebuilt graph is not trusted on an old verdict: keep this format as it is.
    """
    out: dict[str, dict[str, Any]] = {}
    for prec in sorted({c.precision for c in checks}):
        mine = [c for c in checks if c.precision == prec]
        files = {}
        for graph in VERDICT_GRAPHS:
            p = prec.removeprefix("trt-")
            p = p if p in manifest.precisions(graph) else "fp32"
            for rel, meta in manifest.files.items():
                if meta.get("graph") == graph and meta.get("precision") == p and meta.get("kind") == "onnx":
                    files[rel] = meta["sha256"]
                    for extra in meta.get("external_data", []):
                        files[extra] = manifest.files.get(extra, {}).get("sha256")
        out[prec] = {"passed": all(c.passed for c in mine), "gates": len(mine), "files": files}
    return out
