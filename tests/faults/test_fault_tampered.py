"""A copied or tampered artifacts folder: `f5rt info` and the loaders verify every recorded file's
hash and name the first one missing or changed (ONNX graphs, engines, the Triton repository,
calibration data), with the stage that rebuilds it."""

from __future__ import annotations

import shutil

import pytest

from f5rt.cli import main as f5rt
from f5rt.errors import ManifestError
from f5rt.manifest import file_entry, load_manifest, update_manifest


@pytest.fixture
def copied(tmp_path, reference):
    """The reference folder copied as a user copies it to a device."""
    return shutil.copytree(reference, tmp_path / "tiny")


def info(root, capsys) -> tuple[int, str]:
    rc = f5rt(["info", "--artifacts", str(root)])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_info_verifies_every_recorded_file(copied, capsys):
    rc, out = info(copied, capsys)
    assert rc == 0, out
    n = len(load_manifest(copied).files)
    assert f"files       {n} recorded in the manifest, all present and matching their sha256" in out


@pytest.mark.parametrize(
    ("rel", "stage"),
    [
        ("step.cpu-int8.onnx", "quantize"),
        ("triton/f5tts/config.pbtxt", "triton"),
        ("calibration/step.npz", "calibrate"),
        ("vocab.txt", "export"),
    ],
)
def test_info_names_a_changed_file(copied, capsys, rel, stage):
    path = copied / rel
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    rc, out = info(copied, capsys)
    assert rc == 2
    assert f"{path}: sha256" in out and "does not match the manifest" in out and f"nox -s {stage}" in out
    assert out.count("\n") == 1 and "Traceback" not in out


def test_info_names_the_first_missing_file(copied, capsys):
    (copied / "triton" / "f5tts" / "config.pbtxt").unlink()
    rc, out = info(copied, capsys)
    assert rc == 2 and "config.pbtxt: recorded in the manifest but missing" in out and "nox -s triton" in out


def test_engines_and_triton_repository_verified_by_kind(copied):
    """An engine recorded by the compile stage, then changed on the device: verify_all(kind=...)
    (what the TensorRT backend's select_engines does per engine) refuses it by name."""
    engine = copied / "engines" / "step.int8.n512.plan"
    engine.parent.mkdir(exist_ok=True)
    engine.write_bytes(b"serialized engine" * 64)
    entry = file_entry(copied, "engines/step.int8.n512.plan", graph="step", precision="int8", kind="engine")
    update_manifest(
        copied, lambda d: d["files"].__setitem__("engines/step.int8.n512.plan", {**entry, "stage": "compile"})
    )
    m = load_manifest(copied)
    assert m.verify_all(kind="engine") == 1
    assert m.verify_all(stage="triton") >= 4
    engine.write_bytes(b"another engine" * 64)
    with pytest.raises(ManifestError, match=r"step\.int8\.n512\.plan: sha256 .*nox -s compile"):
        load_manifest(copied).verify_all(kind="engine")
