"""The validate package's pieces without running a graph: typed results, gates, verdicts, options."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from f5build.validate.comparator import exact_rows, group
from f5build.validate.gates import check, e2e_gates, graph_gates
from f5build.validate.struct import AccuracyReport, GateCheck, GraphComparison, PolygraphyVerdict, SampleRow, Utterance

GATES = {
    "graphs": {"step": {"int8": {"min_cosine": 0.999, "max_max_abs": 0.5, "min_polygraphy_pass": 0.9}}},
    "e2e": {"int8": {"min_mel_snr_db": 20.0, "min_pesq": 3.0}},
}


def _row(i: int, cosine: float, max_abs: float, step: int, bucket: str = "n256_b1") -> SampleRow:
    errors = {"cosine": cosine, "snr_db": 40.0 + i, "max_abs": max_abs, "mean_abs": max_abs / 10, "max_rel": 0.01}
    return SampleRow(i, bucket, errors, step=step, t=step / 32, nfe=32)


def _comparison(precision: str = "int8", polygraphy: bool = True) -> GraphComparison:
    rows = (_row(0, 0.9999, 0.1, 0), _row(1, 0.9985, 0.2, 5, "n512_b2"), _row(2, 0.9995, 0.7, 5))
    return GraphComparison(
        "step",
        precision,
        rows,
        group(rows, "bucket"),
        group(rows, "step"),
        PolygraphyVerdict(1.0, 0.05, 0.05, "mean") if polygraphy else None,
        1.5 if polygraphy else None,
    )


def test_graph_gates_name_the_worst_row() -> None:
    checks = {c.gate: c for c in graph_gates(_comparison(), GATES)}
    cos = checks["step.int8.min_cosine"]
    assert not cos.passed and cos.value == 0.9985 and cos.where == "bucket n512_b2, step 5 (t=0.156)"
    assert not checks["step.int8.max_max_abs"].passed and checks["step.int8.max_max_abs"].value == 0.7
    assert checks["step.int8.min_polygraphy_pass"].passed
    # an engine is held to its precision's gates, without Polygraphy's own verdict
    trt = {c.gate for c in graph_gates(_comparison("trt-int8", polygraphy=False), GATES)}
    assert trt == {"step.trt-int8.min_cosine", "step.trt-int8.max_max_abs"}


def test_unmeasurable_values_fail() -> None:
    c = check("e2e.int8.min_pesq", 3.0, float("nan"), "")
    assert not c.passed and c.where == "not measurable"
    u = Utterance("hello", "en", "en_f2", 1.0, {"int8": {"mel_snr_db": 25.0, "pesq": None}})
    got = {c.gate: c for c in e2e_gates("int8", [u], GATES)}
    assert got["e2e.int8.min_mel_snr_db"].passed and got["e2e.int8.min_mel_snr_db"].where == "en_f2: hello"
    assert not got["e2e.int8.min_pesq"].passed and got["e2e.int8.min_pesq"].value is None


def _line(text: str, mcd: float | None, floor: float | None = 70.0, snr: float = 30.0) -> Utterance:
    seed_floor = None if floor is None else {"mcd_db": floor, "mel_snr_db": 2.0}
    return Utterance(text, "en", "en_f2", 2.0, {"int8": {"mcd_db": mcd, "mel_snr_db": snr}}, seed_floor)


def test_e2e_gates_read_the_worst_the_median_or_the_seed_ratio() -> None:
    # one line whose trajectories parted (5.0 dB), two typical ones
    lines = [_line("a", 1.0), _line("b", 5.0, floor=60.0), _line("c", 2.0, snr=24.0)]
    spec = {"max_mcd_db": 3.0, "max_median_mcd_db": 3.0, "min_median_mel_snr_db": 25.0, "max_mcd_db_seed_ratio": 0.1}
    got = {c.gate.split(".")[-1]: c for c in e2e_gates("int8", lines, {"e2e": {"int8": spec}})}
    assert not got["max_mcd_db"].passed and got["max_mcd_db"].where == "en_f2: b"
    assert got["max_median_mcd_db"].passed and got["max_median_mcd_db"].value == 2.0
    assert got["max_median_mcd_db"].where == "median of 3 lines"
    assert got["min_median_mel_snr_db"].passed and got["min_median_mel_snr_db"].value == 30.0
    ratio = got["max_mcd_db_seed_ratio"]
    assert ratio.passed and math.isclose(ratio.value, 5.0 / 60.0) and ratio.where.startswith("en_f2: b (5.00 of")
    # a precision as far from FP32 as another seed is fails the ratio whatever its absolute figure
    far = e2e_gates("int8", [_line("a", 65.0, floor=70.0)], {"e2e": {"int8": {"max_mcd_db_seed_ratio": 0.1}}})
    assert not far[0].passed and math.isclose(far[0].value, 65.0 / 70.0)


def test_e2e_gates_fail_on_a_line_they_cannot_measure() -> None:
    spec = {"e2e": {"int8": {"max_median_mcd_db": 3.0, "max_mcd_db_seed_ratio": 0.1}}}
    # no seed floor recorded (a report from before it existed): the ratio cannot be judged
    got = {c.gate.split(".")[-1]: c for c in e2e_gates("int8", [_line("a", 1.0), _line("b", 1.0, None)], spec)}
    assert got["max_median_mcd_db"].passed
    assert not got["max_mcd_db_seed_ratio"].passed and got["max_mcd_db_seed_ratio"].where == "en_f2: b; not measurable"
    # one unmeasured line fails the gate even though every other line would pass it
    got = {c.gate.split(".")[-1]: c for c in e2e_gates("int8", [_line("a", 1.0), _line("b", None)], spec)}
    assert not got["max_median_mcd_db"].passed and got["max_median_mcd_db"].value is None


@pytest.mark.parametrize(
    "name",
    [
        "min_mcd_db",
        "max_mel_snr_db",
        "max_median_stoi",
        "max_mel_snr_db_seed_ratio",
        "min_mcd_db_seed_ratio",
        "max_median_mcd_db_seed_ratio",
        "mcd_db",
    ],
)
def test_e2e_metric_names_that_mean_nothing_are_refused(name: str, tmp_path: Path) -> None:
    from f5build.validate.gates import E2EMetric, load_gates

    with pytest.raises(ValueError, match="unknown end-to-end metric"):
        E2EMetric.parse(name)
    p = tmp_path / "g.yaml"
    p.write_text(f"e2e:\n  int8:\n    {name}: 1.0\n")
    with pytest.raises(ValueError, match=rf"e2e.int8.{name}: unknown end-to-end metric"):
        load_gates(p)
    assert E2EMetric.parse("max_median_mcd_db") == E2EMetric("max_median_mcd_db", "mcd_db", "median")


def test_groupings_and_json_layout() -> None:
    comp = _comparison()
    assert list(comp.by_bucket) == ["n256_b1", "n512_b2"]  # sorted by frames, then batch
    assert list(comp.by_step) == ["0", "5"]
    assert comp.by_step["5"].n == 2 and comp.by_step["5"].min_cosine == 0.9985
    d = comp.to_dict()
    assert set(d) == {"rows", "polygraphy", "by_bucket", "by_step", "seconds"}
    assert set(d["rows"][0]) == {
        "sample",
        "bucket",
        "step",
        "t",
        "nfe",
        "cosine",
        "snr_db",
        "max_abs",
        "mean_abs",
        "max_rel",
    }
    assert set(_comparison("trt-int8", polygraphy=False).to_dict()) == {"rows", "by_bucket", "by_step"}
    rep = AccuracyReport("tiny", "/a", "now", {}, {}, graphs={"step": {"int8": comp}})
    rep.gates = [GateCheck("step.int8.min_cosine", 0.9, 0.95, True, "x")]
    out = rep.to_dict()
    assert out["passed"] is True and out["graphs"]["step"]["int8"]["polygraphy"]["pass_rate"] == 1.0
    assert set(out) == {"model", "artifacts", "date", "files", "graphs", "gates", "tools", "placement", "passed"}
    with pytest.raises(ValueError, match="errors lack"):
        SampleRow(0, "n1_b1", {"cosine": 1.0})


def test_exact_rows_drop_padding() -> None:
    import numpy as np

    mask = np.array([[True] * 6 + [False] * 2, [True] * 3 + [False] * 5])
    feed = {"x": np.zeros((2, 8, 3)), "mask": mask, "t": np.array([0.1, 0.1])}
    rows = exact_rows(feed)
    assert [r["x"].shape for r in rows] == [(1, 6, 3), (1, 3, 3)] and rows[1]["t"].shape == (1,)


def test_options_are_built_at_the_boundary(tmp_path: Path) -> None:
    from f5build import validate
    from f5build.context import add_common

    p = argparse.ArgumentParser()
    add_common(p)
    validate.add_arguments(p)
    args = p.parse_args(["--artifacts-root", str(tmp_path), "--val-precisions", "int8, fp16", "--val-no-e2e"])
    opts = validate.Options.from_args(args)
    assert opts.root == tmp_path / "tiny" and opts.precisions == ("int8", "fp16") and opts.e2e is False
    assert opts.voices_dir == opts.corpus / "voices"
    with pytest.raises(ValueError, match="--val-e2e-nfe"):
        validate.ValidateOptions(root=tmp_path, e2e_nfe=0)
    assert math.isclose(opts.e2e_nfe, 32)


def test_end_to_end_lines_are_those_the_model_can_spell():
    """An English-only vocab reads Mandarin as unknown tokens: such lines are left out of the comparison."""
    from f5build.validate.end_to_end import MIN_COVERAGE, vocab_coverage
    from f5rt.text import load_vocab

    english = load_vocab(Path(__file__).resolve().parents[1] / "models" / "f5tts-small-en" / "vocab.txt")
    assert vocab_coverage("Hello chat, welcome to the stream!", english) == 1.0
    assert vocab_coverage("谢谢大家的支持！", english) == 0.0
    assert vocab_coverage("这个app的UI做得很漂亮。", english) < MIN_COVERAGE
    assert vocab_coverage("", english) == 0.0
