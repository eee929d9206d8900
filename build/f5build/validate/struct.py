"""Typed results of the validate stage: what a comparison measured and what a gate decided.

Small frozen dataclasses, passed between the comparison, gate and report modules instead of loose
dicts (in the manner of Polygraphy's comparator/struct.py). Each has `to_dict()`, which writes the
exact layout of reports/accuracy.json (the README and the tests read that file); the markdown report
is rendered from the same dict, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# How reports and logs name Utterance.seed_floor (FP32 at a second seed against FP32).
SEED_FLOOR_LABEL = "fp32, another seed"

# Row fields the gates and groupings read (every row has them: metrics.tensor_errors).
ROW_METRICS = ("cosine", "snr_db", "max_abs", "mean_abs", "max_rel")


@dataclass(frozen=True)
class SampleRow:
    """One compared call: where it comes from and its errors against FP32 (metrics.tensor_errors).

    `step`, `t` and `nfe` are set for the step graph; `row` and `frames` when a padded call was split
    into exact-length B = 1 rows (CPU variants, see comparator.exact_rows).
    """

    sample: int
    bucket: str
    errors: Mapping[str, float]
    step: int | None = None
    t: float | None = None
    nfe: int | None = None
    row: int | None = None
    frames: int | None = None

    def __post_init__(self) -> None:
        missing = [m for m in ROW_METRICS if m not in self.errors]
        if missing:
            raise ValueError(f"sample {self.sample}: errors lack {missing}")

    def __getitem__(self, name: str) -> float:
        """An error metric by name (cosine, snr_db, max_abs, ...)."""
        return float(self.errors[name])

    def where(self) -> str:
        s = f"bucket {self.bucket}"
        if self.step is not None:
            s += f", step {self.step} (t={self.t:.3f})"
        return s

    def with_errors(self, errors: Mapping[str, float]) -> SampleRow:
        return SampleRow(self.sample, self.bucket, dict(errors), self.step, self.t, self.nfe, self.row, self.frames)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sample": self.sample, "bucket": self.bucket}
        if self.step is not None:
            out.update(step=self.step, t=self.t, nfe=self.nfe)
        if self.row is not None:
            out.update(row=self.row, frames=self.frames)
        out.update(self.errors)
        return out


@dataclass(frozen=True)
class GroupStats:
    """Worst and mean errors of the rows of one bucket or one timestep."""

    n: int
    t: float | None
    min_cosine: float
    min_snr_db: float
    mean_snr_db: float
    max_abs: float
    mean_abs: float
    max_rel: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PolygraphyVerdict:
    """Polygraphy's own `compare_accuracy` result: share of samples within atol/rtol on `stat`."""

    pass_rate: float
    atol: float
    rtol: float
    stat: str

    def to_dict(self) -> dict[str, Any]:
        return {"pass_rate": self.pass_rate, "atol": self.atol, "rtol": self.rtol, "stat": self.stat}


@dataclass(frozen=True)
class GraphComparison:
    """One precision of one graph against FP32 on the held-out samples.

    `polygraphy` and `seconds` are None for a TensorRT engine's comparison (rows only, per profile).
    """

    graph: str
    precision: str
    rows: tuple[SampleRow, ...]
    by_bucket: Mapping[str, GroupStats]
    by_step: Mapping[str, GroupStats]
    polygraphy: PolygraphyVerdict | None = None
    seconds: float | None = None

    def worst(self, metric: str) -> SampleRow:
        """The row with the worst `metric` (lowest for cosine/SNR, highest for errors)."""
        pick = min if metric in ("cosine", "snr_db") else max
        return pick(self.rows, key=lambda r: r[metric])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": [r.to_dict() for r in self.rows]}
        if self.polygraphy is not None:
            out["polygraphy"] = self.polygraphy.to_dict()
        out["by_bucket"] = {k: g.to_dict() for k, g in self.by_bucket.items()}
        out["by_step"] = {k: g.to_dict() for k, g in self.by_step.items()}
        if self.seconds is not None:
            out["seconds"] = self.seconds
        return out


@dataclass(frozen=True)
class Utterance:
    """One held-out line synthesized at FP32 and every precision; `precisions` maps each to its audio
    metrics against the FP32 audio (metrics.audio_metrics)."""

    text: str
    lang: str
    voice: str
    seconds: float
    precisions: Mapping[str, Mapping[str, Any]]
    seed_floor: Mapping[str, Any] | None = None
    """The same metrics for FP32 at another seed against FP32: how far apart two equally valid
    samples of this line are, the scale a precision's drift is judged on (`*_seed_ratio` gates)."""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "text": self.text,
            "lang": self.lang,
            "voice": self.voice,
            "seconds": self.seconds,
            "precisions": {p: dict(m) for p, m in self.precisions.items()},
        }
        if self.seed_floor is not None:
            out["seed_floor"] = dict(self.seed_floor)
        return out


@dataclass(frozen=True)
class EndToEndComparison:
    """The runtime's audio at each precision against its FP32 audio, same seed per utterance."""

    nfe: int
    utterances: tuple[Utterance, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"nfe": self.nfe, "utterances": [u.to_dict() for u in self.utterances]}


@dataclass(frozen=True)
class GateCheck:
    """One gate of config/gates.yaml against its measured value; `where` names the worst case."""

    gate: str
    bound: float
    value: float | None
    passed: bool
    where: str

    @property
    def precision(self) -> str:
        """The precision the gate names (`step.int8.min_cosine` -> int8, `e2e.trt-int8....` -> trt-int8)."""
        return self.gate.split(".")[1]

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "bound": self.bound, "value": self.value, "passed": self.passed, "where": self.where}


@dataclass
class AccuracyReport:
    """Everything reports/accuracy.json holds."""

    model: str
    artifacts: str
    date: str
    files: Mapping[str, str]
    tools: Mapping[str, str]
    graphs: dict[str, dict[str, GraphComparison]] = field(default_factory=dict)
    e2e: EndToEndComparison | None = None
    placement: Mapping[str, Any] = field(default_factory=dict)
    gates: list[GateCheck] = field(default_factory=list)
    int8_arithmetic: Mapping[str, Any] | None = None  # f5build.int8_arithmetic, when cpu-int8 was compared

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.gates)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "artifacts": self.artifacts,
            "date": self.date,
            "files": dict(self.files),
            "graphs": {g: {p: c.to_dict() for p, c in precs.items()} for g, precs in self.graphs.items()},
            "gates": [c.to_dict() for c in self.gates],
            "tools": dict(self.tools),
        }
        if self.e2e is not None:
            out["e2e"] = self.e2e.to_dict()
        out["placement"] = dict(self.placement)
        if self.int8_arithmetic is not None:
            out["int8_arithmetic"] = dict(self.int8_arithmetic)
        out["passed"] = self.passed
        return out
