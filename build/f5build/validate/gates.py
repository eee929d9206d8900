"""The accuracy gates (config/gates.yaml), their checks, and the per-precision verdicts.

A gate names a graph (or `e2e`), a precision and a metric with its bound: `min_*` gates need the
worst value at or above the bound, `max_*` at or below. A value that cannot be measured (NaN, a
metric a library could not compute) fails its gate rather than passing silently.

End-to-end gates read one of three statistics over the held-out lines (E2EMetric):
- `min_<field>` / `max_<field>`: the worst line;
- `min_median_<field>` / `max_median_<field>`: the median line;
- `max_<field>_seed_ratio`: the worst line's distortion as a fraction of the distortion between two
  FP32 samples of the same line with different seeds (Utterance.seed_floor).
The last two exist because a model whose sampling trajectories part easily (one that does not yet
say its text, or any model on an unlucky line) makes the worst line's absolute figure measure where
two trajectories parted, not the precision: the median says what the precision does to a typical
line, the seed ratio bounds every line by what "unrelated audio" means for this very model.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from f5build.inputs import BuildInputError, read_yaml
from f5build.validate.struct import GateCheck, GraphComparison, Utterance
from f5rt.manifest import Manifest

GRAPH_METRICS = ("min_cosine", "min_snr_db", "max_max_abs", "max_mean_abs", "min_polygraphy_pass")
# end-to-end fields (metrics.audio_metrics) -> whether a larger value is better
E2E_FIELDS = {"mel_snr_db": True, "mcd_db": False, "stoi": True, "pesq": True, "duration_diff_s": False}
E2E_RATIO_FIELDS = ("mcd_db",)  # distortions: 0 for identical audio, so a fraction of the seed floor means something
POLYGRAPHY_DEFAULT: dict[str, Any] = {"atol": 0.05, "rtol": 0.05, "stat": "mean"}
# graph gate -> the row field it reads
_ROW_FIELD = {"min_cosine": "cosine", "min_snr_db": "snr_db", "max_max_abs": "max_abs", "max_mean_abs": "mean_abs"}
VERDICT_GRAPHS = ("text_encoder", "step", "vocoder")


@dataclass(frozen=True)
class E2EMetric:
    """An end-to-end gate's metric name, parsed: which field, which statistic over the lines."""

    name: str
    field: str
    statistic: Literal["worst", "median", "seed_ratio"]

    @property
    def lower_bound(self) -> bool:
        return self.name.startswith("min_")

    @classmethod
    def parse(cls, name: str) -> E2EMetric:
        """`min_mel_snr_db`, `max_median_mcd_db`, `max_mcd_db_seed_ratio`, ...; ValueError names the
        forms when `name` is none of them."""
        kind, _, rest = name.partition("_")
        if kind in ("min", "max"):
            stat: Literal["worst", "median", "seed_ratio"] = "median" if rest.startswith("median_") else "worst"
            field = rest.removeprefix("median_")
            if field.endswith("_seed_ratio"):  # the worst line's only: max_<field>_seed_ratio
                stat, field = "seed_ratio", field.removesuffix("_seed_ratio")
                ok = field in E2E_RATIO_FIELDS and kind == "max" and not rest.startswith("median_")
            else:
                ok = field in E2E_FIELDS and kind == ("min" if E2E_FIELDS[field] else "max")
            if ok:
                return cls(name, field, stat)
        bounds = ", ".join(f"{'min' if up else 'max'}_{f}" for f, up in E2E_FIELDS.items())
        ratios = ", ".join(f"max_{f}_seed_ratio" for f in E2E_RATIO_FIELDS)
        raise ValueError(
            f"unknown end-to-end metric {name!r}: the worst line is {bounds}; the median line inserts "
            f"'median_' after min_/max_; the worst fraction of the seed floor is {ratios}"
        )


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
            try:
                E2EMetric.parse(m)
            except ValueError as e:
                raise ValueError(f"{path}: e2e.{prec}.{m}: {e}") from None
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
    """Each end-to-end gate of `prec` against its statistic over the utterances (E2EMetric)."""
    spec = (gates.get("e2e") or {}).get(prec) or {}
    return [_e2e_check(prec, E2EMetric.parse(m), float(bound), utterances) for m, bound in spec.items()]


def _e2e_check(prec: str, metric: E2EMetric, bound: float, utterances: Sequence[Utterance]) -> GateCheck:
    name = f"e2e.{prec}.{metric.name}"
    if metric.statistic == "seed_ratio":
        vals = [(_seed_ratio(u, prec, metric.field), u) for u in utterances]
    else:
        vals = [(u.precisions[prec].get(metric.field), u) for u in utterances]
    if not vals:
        return check(name, bound, None, "no utterance measurable")
    # a line that cannot be measured is not a line that passed (check() fails a None or NaN value)
    missing = next((u for v, u in vals if v is None or math.isnan(float(v))), None)
    if missing is not None:
        return check(name, bound, None, f"{missing.voice}: {missing.text[:40]}")
    known = [(float(v), u) for v, u in vals if v is not None]
    if metric.statistic == "median":
        value = float(statistics.median(v for v, _ in known))
        return check(name, bound, value, f"median of {len(known)} lines")
    v, u = (min if metric.lower_bound else max)(known, key=lambda x: x[0])
    where = f"{u.voice}: {u.text[:40]}"
    if metric.statistic == "seed_ratio":
        floor = (u.seed_floor or {})[metric.field]
        where += f" ({u.precisions[prec][metric.field]:.2f} of the seed floor's {floor:.2f})"
    return check(name, bound, v, where)


def _seed_ratio(u: Utterance, prec: str, field: str) -> float | None:
    """The precision's distortion over the seed floor's on line `u`; None when either is unmeasured."""
    mine, floor = u.precisions[prec].get(field), (u.seed_floor or {}).get(field)
    if mine is None or floor is None:
        return None
    return float(mine) / float(floor) if floor > 0 else (0.0 if mine == 0 else math.inf)


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
