"""Killed stages: each stage is stopped by a real signal at several points (early, while its largest
output is half written, while the manifest is being replaced); the folder never records a partial
file, f5rt never loads one, and a plain rerun completes, reuses what was complete and gives the same
files as an uninterrupted run: the same sha256 for every graph, recording, plan and repository file;
calibration's index is compared without the run times it records, validate by its verdicts (its
reports hold timings).

The signal is sent by the build to itself at the named point (f5build.faults: the temp file is cut
to half first, as a writer killed mid-write leaves it), so the point is exact and the test is fast.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from f5rt.errors import ManifestError
from f5rt.manifest import MANIFEST_NAME, load_manifest
from faults.faultkit import (
    CALIB,
    COMPILE,
    QUANT,
    VALIDATE,
    calibration_content,
    common,
    copy_stage_input,
    leftovers,
    manifest_hashes,
)

KILLED = -9  # the status of a process ended by SIGKILL


def assert_stopped_cleanly(r, signame: str, code: int) -> None:
    assert r.status == code, r.log[-3000:]
    assert f"stopped by {signame}" in r.log and "rerun the same command" in r.log, r.log[-2000:]
    assert "Traceback" not in r.log


def assert_rerun_completes(host, argv, root: Path, took_over: bool) -> str:
    r = host.run(argv)
    assert r.status == 0, r.log[-3000:]
    assert ("taking over the lock of pid" in r.log) == took_over, r.log[:2000]
    assert leftovers(root) == [], "the rerun left temp files behind"
    return r.log


def test_export_killed_at_each_point_then_rerun(host, tmp_path, tiny_artifacts):
    root = tmp_path / "tiny"
    argv = ["export", *common(root)]
    # SIGTERM before anything is read, SIGINT while the first (small) file is written: clean stops
    assert_stopped_cleanly(host.run(argv, "SIGTERM@stage:export"), "SIGTERM", 143)
    assert_stopped_cleanly(host.run(argv, "SIGINT@vocab.txt"), "SIGINT", 130)
    assert not (root / "vocab.txt").exists() and leftovers(root) == [], "SIGINT must discard the half-written file"
    # SIGKILL while the step graph (the largest output) is half written: its temp file stays behind
    r = host.run(argv, "SIGKILL@step.onnx")
    assert r.status == KILLED
    assert [p for p in leftovers(root) if p.startswith(".step.onnx.")], leftovers(root)
    assert not (root / "step.onnx").exists() and not (root / MANIFEST_NAME).exists()
    with pytest.raises(ManifestError, match="no manifest"):
        load_manifest(root)  # f5rt sees nothing, not a folder that looks built
    # SIGKILL while the manifest itself is being replaced: every graph is written, none is recorded
    r = host.run(argv, "SIGKILL@manifest.json")
    assert r.status == KILLED and (root / "step.onnx").is_file() and not (root / MANIFEST_NAME).exists()
    assert_rerun_completes(host, argv, root, took_over=True)
    assert manifest_hashes(root) == manifest_hashes(tiny_artifacts), "rerun differs from an uninterrupted export"


def test_reexport_killed_keeps_the_previous_manifest_consistent(host, tmp_path, tiny_artifacts):
    """A forced re-export killed after replacing one graph: the old manifest still stands and the
    replaced graph is byte-identical (deterministic export), so the folder still verifies."""
    root = tmp_path / "tiny"
    shutil.copytree(tiny_artifacts, root)
    before = manifest_hashes(root)
    r = host.run(["export", *common(root), "--force"], "SIGKILL@vocoder.onnx")
    assert r.status == KILLED
    assert manifest_hashes(root) == before
    assert_rerun_completes(host, ["export", *common(root)], root, took_over=True)
    assert manifest_hashes(root) == before


def test_calibrate_killed_then_rerun(host, tmp_path, reference, voices):
    root = copy_stage_input(reference, tmp_path / "tiny", ("export",))
    argv = ["calibrate", *common(root), *CALIB, "--calib-voices", str(voices)]
    assert_stopped_cleanly(host.run(argv, "SIGTERM@stage:calibrate"), "SIGTERM", 143)
    r = host.run(argv, "SIGKILL@step.npz")  # the step recordings: the largest output
    assert r.status == KILLED and leftovers(root), r.log[-2000:]
    assert "calibrate" not in load_manifest(root).data.get("stages", {})
    r = host.run(argv, "SIGKILL@manifest.json")
    assert r.status == KILLED
    assert "calibrate" not in load_manifest(root).data.get("stages", {}), "a killed manifest write recorded data"
    assert_rerun_completes(host, argv, root, took_over=True)
    assert calibration_content(root) == calibration_content(reference)


def test_quantize_killed_then_rerun_reuses_finished_variants(host, tmp_path, reference):
    root = copy_stage_input(reference, tmp_path / "tiny", ("export", "calibrate"))
    argv = ["quantize", *common(root), *QUANT]
    assert_stopped_cleanly(host.run(argv, "SIGINT@stage:quantize"), "SIGINT", 130)
    # the second variant killed while being moved into place: the first one is already recorded
    r = host.run(argv, "SIGKILL@step.cpu-int8.onnx")
    assert r.status == KILLED
    recorded = load_manifest(root).files
    assert "step.cpu-fp32.onnx" in recorded and "step.cpu-int8.onnx" not in recorded
    log = assert_rerun_completes(host, argv, root, took_over=True)
    assert "step.cpu-fp32.onnx: up to date" in log, "the finished variant was built again"
    assert manifest_hashes(root, "quantize") == manifest_hashes(reference, "quantize")


def test_quantize_killed_at_its_manifest_update(host, tmp_path, reference):
    root = copy_stage_input(reference, tmp_path / "tiny", ("export", "calibrate"))
    argv = ["quantize", *common(root), *QUANT]
    r = host.run(argv, "SIGKILL@manifest.json#2")  # the second variant's record
    assert r.status == KILLED
    assert "step.cpu-int8.onnx" not in load_manifest(root).files
    assert_rerun_completes(host, argv, root, took_over=True)
    assert manifest_hashes(root, "quantize") == manifest_hashes(reference, "quantize")


def test_compile_plan_killed_then_rerun(host, tmp_path, reference):
    root = copy_stage_input(reference, tmp_path / "tiny", ("export", "calibrate", "quantize"))
    argv = ["compile", *common(root), *COMPILE]
    assert_stopped_cleanly(host.run(argv, "SIGTERM@build_plan.json"), "SIGTERM", 143)
    assert not (root / "engines" / "build_plan.json").exists()
    r = host.run(argv, "SIGKILL@manifest.json")
    assert r.status == KILLED
    assert "compile" not in load_manifest(root).data.get("stages", {})
    assert_rerun_completes(host, argv, root, took_over=True)
    for rel in ("engines/build_plan.json", "engines/build_engines.sh"):
        assert (root / rel).read_bytes() == (reference / rel).read_bytes(), rel
    assert (
        load_manifest(root).data["stages"]["compile"]["status"]
        == load_manifest(reference).data["stages"]["compile"]["status"]
    )


def test_validate_killed_then_rerun(host, tmp_path, reference, voices):
    root = copy_stage_input(reference, tmp_path / "tiny", ("export", "calibrate", "quantize"))
    reports = tmp_path / "reports"
    argv = ["validate", *common(root), *VALIDATE, "--val-reports", str(reports), "--val-voices", str(voices)]
    assert_stopped_cleanly(host.run(argv, "SIGTERM@stage:validate"), "SIGTERM", 143)
    r = host.run(argv, "SIGKILL@accuracy.json")
    assert r.status == KILLED and not (reports / "accuracy.json").exists()
    r = host.run(argv, "SIGKILL@manifest.json")
    assert r.status == KILLED
    assert "validate" not in load_manifest(root).data.get("stages", {}), "verdicts recorded by a killed write"
    assert_rerun_completes(host, argv, root, took_over=True)
    got, want = (load_manifest(r).data["stages"]["validate"] for r in (root, reference))
    assert (got["precisions"], got["passed"], got["gates"]) == (want["precisions"], want["passed"], want["gates"])
    assert json.loads((reports / "accuracy.json").read_text())["model"] == "tiny"


def test_triton_killed_then_rerun(host, tmp_path, reference):
    root = copy_stage_input(reference, tmp_path / "tiny", ("export", "calibrate", "quantize", "compile", "validate"))
    argv = ["triton", *common(root)]
    r = host.run(argv, "SIGKILL@config.pbtxt")
    assert r.status == KILLED
    assert "triton" not in load_manifest(root).data.get("stages", {})
    assert_stopped_cleanly(host.run(argv, "SIGTERM@manifest.json"), "SIGTERM", 143)
    assert "triton" not in load_manifest(root).data.get("stages", {})
    assert_rerun_completes(host, argv, root, took_over=False)  # SIGTERM released the lock itself
    assert manifest_hashes(root, "triton") == manifest_hashes(reference, "triton")
