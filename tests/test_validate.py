"""The validate stage (Polygraphy + end-to-end audio, gated) and the metrics it reports."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytest.importorskip("modelopt.onnx.quantization", reason="nvidia-modelopt is not installed")

from test_quantize import _BUILT, build_quantized  # shares the session's quantized artifacts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def quantized_v(tmp_path_factory: pytest.TempPathFactory, tiny_artifacts: Path) -> Path:
    return build_quantized(tmp_path_factory, tiny_artifacts)


def _validate(root: Path, reports: Path, *extra: str) -> int:
    from f5build.cli import main

    return main(
        [
            "validate",
            "--model",
            "tiny",
            "--artifacts-root",
            str(root.parent),
            "--val-reports",
            str(reports),
            "--val-voices",
            str(_BUILT["voices"]),
            *extra,
        ]
    )


def test_validate_passes_and_reports(quantized_v: Path, tmp_path: Path) -> None:
    """Tiny model: fp16 step cosine >= 0.9999 and int8 >= 0.999 at every held-out bucket and timestep;
    end-to-end int8 mel SNR >= 20 dB; reports and plots written; the manifest records the pass."""
    from f5rt.manifest import load_manifest

    reports = tmp_path / "reports"
    assert _validate(quantized_v, reports, "--val-e2e-lines", "2", "--val-e2e-nfe", "8") == 0
    rep = json.loads((reports / "accuracy.json").read_text())
    assert rep["passed"] is True
    step = rep["graphs"]["step"]
    z = np.load(quantized_v / "calibration" / "step.npz")
    held = z["meta_split"] == 1
    assert len(step["int8"]["rows"]) == int(held.sum())
    for prec, bound in (("fp16", 0.9999), ("int8", 0.999)):
        assert step[prec]["by_bucket"] and step[prec]["by_step"]
        for group in (*step[prec]["by_bucket"].values(), *step[prec]["by_step"].values()):
            assert group["min_cosine"] >= bound, (prec, group)
        assert step[prec]["polygraphy"]["pass_rate"] == 1.0
    # held-out timesteps reach both ends of the ODE
    ts = sorted(g["t"] for g in step["int8"]["by_step"].values())
    assert ts[0] == 0.0 and ts[-1] > 0.7
    # int8 is measurably worse than fp16: the comparison is not vacuous
    assert min(r["snr_db"] for r in step["int8"]["rows"]) < min(r["snr_db"] for r in step["fp16"]["rows"]) - 10
    utts = rep["e2e"]["utterances"]
    assert len(utts) == 2
    for u in utts:
        assert u["precisions"]["int8"]["mel_snr_db"] >= 20.0
        assert u["precisions"]["int8"]["duration_diff_s"] == 0.0
        assert 0.0 <= u["precisions"]["int8"]["mcd_db"] < 3.0
        # FP32 at another seed is far further from FP32 than any precision is: the scale is real
        assert u["seed_floor"]["mcd_db"] > 10 * max(m["mcd_db"] for m in u["precisions"].values())
    names = {g["gate"] for g in rep["gates"]}
    assert {"step.int8.min_cosine", "step.fp16.min_cosine", "e2e.fp16.min_mel_snr_db"} <= names
    assert {"e2e.int8.max_median_mcd_db", "e2e.int8.max_mcd_db_seed_ratio"} <= names
    for png in ("accuracy_buckets.png", "accuracy_timesteps.png", "accuracy_e2e.png"):
        assert (reports / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (reports / "accuracy.md").read_text()
    assert "step.int8.min_cosine" in md and "all gates passed" in md
    assert load_manifest(quantized_v).data["stages"]["validate"]["passed"] is True
    # cpu-int8's verdict says which INT8 arithmetic it was measured with (f5build.int8_arithmetic)
    from f5build.int8_arithmetic import probe

    here = probe()
    assert rep["int8_arithmetic"]["kind"] == here.kind and here.describe() in md
    verdicts = load_manifest(quantized_v).data["stages"]["validate"]["precisions"]
    assert verdicts["cpu-int8"]["int8_arithmetic"] == here.kind


def _corrupt_scale(path: Path) -> str:
    """Shrink the scale of one activation QuantizeLinear 100x (values clip at 1% of their range)."""
    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits and node.input[1] in inits:
            init = inits[node.input[1]]
            arr = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array((arr * 0.01).astype(arr.dtype), init.name))
            onnx.save(m, str(path))
            return node.name
    raise AssertionError("no activation QuantizeLinear with an initializer scale found")


def test_corrupted_scale_fails_the_gate(quantized_v: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from f5rt.manifest import file_entry, update_manifest

    root = tmp_path / "art" / "tiny"
    shutil.copytree(quantized_v, root)
    _corrupt_scale(root / "step.int8.onnx")
    # re-record the hash: the gate, not the manifest check, must catch the damage
    entry = file_entry(root, "step.int8.onnx")
    update_manifest(root, lambda d: d["files"]["step.int8.onnx"].update(entry))
    reports = tmp_path / "reports"
    assert _validate(root, reports, "--val-no-e2e", "--val-precisions", "int8") == 1
    out = capsys.readouterr().out
    assert "validate: gate step.int8.min_cosine failed" in out
    rep = json.loads((reports / "accuracy.json").read_text())
    assert rep["passed"] is False
    failed = {g["gate"] for g in rep["gates"] if not g["passed"]}
    assert "step.int8.min_cosine" in failed and "vocoder.int8.min_cosine" not in failed


def test_a_partial_run_keeps_other_verdicts_and_no_record_keeps_all(quantized_v: Path, tmp_path: Path) -> None:
    """--val-precisions replaces only the verdicts it measured; --val-no-record (another processor's
    arithmetic, nox -s avx2) reports and leaves every verdict as it was."""
    from f5rt.manifest import load_manifest, update_manifest

    root = tmp_path / "art" / "tiny"
    shutil.copytree(quantized_v, root)
    marker = {"passed": False, "gates": 1, "files": {"step.int8.onnx": "earlier"}}
    update_manifest(root, lambda d: d.setdefault("stages", {}).setdefault("validate", {}).update(
        precisions={"int8": dict(marker), "cpu-int8": dict(marker)}
    ))  # fmt: skip
    assert _validate(root, tmp_path / "r1", "--val-no-e2e", "--val-precisions", "cpu-fp32") == 0
    verdicts = load_manifest(root).data["stages"]["validate"]["precisions"]
    assert verdicts["int8"] == marker and verdicts["cpu-int8"] == marker  # not measured: kept
    assert verdicts["cpu-fp32"]["passed"] is True
    assert "int8_arithmetic" not in json.loads((tmp_path / "r1" / "accuracy.json").read_text())

    before = load_manifest(root).data["stages"]["validate"]
    assert _validate(root, tmp_path / "r2", "--val-no-e2e", "--val-precisions", "cpu-int8", "--val-no-record") == 0
    assert load_manifest(root).data["stages"]["validate"] == before
    assert json.loads((tmp_path / "r2" / "accuracy.json").read_text())["passed"] is True


def test_cpu_int8_in_avx2_arithmetic(quantized_v: Path, tmp_path: Path) -> None:
    """nox -s avx2 on the tiny model: saturation counted per MatMulInteger on the held-out calls, and
    validate run on a copy whose cpu-int8 graph computes AVX2's arithmetic; the artifacts untouched."""
    from f5build.int8_arithmetic import EMULATED, measure_saturation, validate_in_avx2_arithmetic

    graph = onnx.load(str(quantized_v / "step.cpu-int8.onnx"), load_external_data=False)
    names = [n.name for n in graph.graph.node if n.op_type == "MatMulInteger"]
    stats = measure_saturation(quantized_v, per_bucket=1)
    assert [s.node for s in stats] == names and all(s.pairs > 0 and s.rows > 0 for s in stats)
    assert all((s.saturated == 0) == math.isinf(s.snr_db) for s in stats)
    assert all((s.saturated == 0) == (s.max_pair <= 32767) for s in stats)
    # the recipe's 7-bit weights (graphs.step.cpu.weight_bits): no pair can reach 16 bits
    assert all(s.saturated == 0 and s.max_pair <= 2 * 255 * 64 and math.isinf(s.snr_db) for s in stats)

    before = (quantized_v / "manifest.json").read_text()
    reports = tmp_path / "avx2"
    rc = validate_in_avx2_arithmetic(quantized_v, reports, e2e_lines=1, e2e_nfe=4, voices=_BUILT["voices"])
    rep = json.loads((reports / "accuracy.json").read_text())
    assert rc == 0 and rep["passed"]  # 7-bit weights: AVX2 computes the integers VNNI does
    assert rep["int8_arithmetic"]["text"] == EMULATED and EMULATED in (reports / "accuracy.md").read_text()
    assert set(rep["graphs"]["step"]) == {"cpu-int8"} and rep["e2e"]["utterances"]
    assert (quantized_v / "manifest.json").read_text() == before
    assert not list(quantized_v.parent.glob(".*avx2-*"))  # the copy is gone


def test_gates_file_errors(tmp_path: Path) -> None:
    from f5build.validate import load_gates

    p = tmp_path / "g.yaml"
    p.write_text("graphs:\n  step:\n    int8:\n      min_cosin: 0.9\n")
    with pytest.raises(ValueError, match=r"graphs.step.int8.min_cosin: unknown metric"):
        load_gates(p)
    assert load_gates(ROOT / "config" / "gates.yaml")["graphs"]["step"]["int8"]["min_cosine"] == 0.999


# -- metrics --------------------------------------------------------------------------------------


def test_tensor_errors_known_values() -> None:
    from f5build.metrics import tensor_errors

    ref = np.ones((4, 10))
    e = tensor_errors(ref, ref + 0.1)
    assert math.isclose(e["snr_db"], 20.0, abs_tol=1e-9)
    assert math.isclose(e["max_abs"], 0.1) and math.isclose(e["max_rel"], 0.1)
    assert math.isclose(e["cosine"], 1.0)
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert tensor_errors(a, b)["cosine"] == 0.0
    valid = np.array([[True] * 5 + [False] * 5] * 4)
    out = ref.copy()
    out[~valid] = 100.0  # errors on padding do not count
    assert tensor_errors(ref, out, valid)["max_abs"] == 0.0
    assert tensor_errors(ref, np.full_like(ref, np.nan))["finite"] == 0.0


def _speech(seconds: float, seed: int) -> np.ndarray:
    from conftest import speechlike

    return speechlike(seconds, 24000, seed)


def test_audio_metrics_against_references() -> None:
    """MCD equals the textbook formula on scipy's orthonormal DCT; identical audio scores perfectly."""
    from scipy.fft import dct

    from f5build import metrics
    from f5rt.audio import log_mel

    a = _speech(2.0, 0)
    rng = np.random.default_rng(0)
    b = (a + 0.01 * rng.standard_normal(len(a))).astype(np.float32)
    la, lb = log_mel(a), log_mel(b)
    ca, cb = dct(la, type=2, norm="ortho", axis=0)[1:14], dct(lb, type=2, norm="ortho", axis=0)[1:14]
    want = 10 / np.log(10) * np.mean(np.sqrt(2 * np.sum((ca - cb) ** 2, axis=0)))
    assert math.isclose(metrics.mcd_db(a, b), want, rel_tol=1e-6)  # float32 log-mel in the reference
    assert metrics.mcd_db(a, a) == 0.0 and metrics.mel_snr_db(a, a) == math.inf
    want_snr = 10 * np.log10(np.sum((la - la.mean()) ** 2) / np.sum((la.astype(np.float64) - lb) ** 2))
    assert math.isclose(metrics.mel_snr_db(a, b), want_snr, rel_tol=1e-6)
    assert metrics.mel_snr_db(a, b) < metrics.mel_snr_db(
        a, (a + 0.001 * rng.standard_normal(len(a))).astype(np.float32)
    )
    m = metrics.audio_metrics(a, a, 24000)
    if m["stoi"] is not None:
        assert m["stoi"] > 0.99
    if m["pesq"] is not None:
        assert m["pesq"] > 4.0
        worse: Any = metrics.audio_metrics(a, (a + 0.05 * rng.standard_normal(len(a))).astype(np.float32), 24000)
        assert worse["pesq"] < m["pesq"]
    assert m["duration_diff_s"] == 0.0
