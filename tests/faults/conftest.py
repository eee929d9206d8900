"""Fixtures of the fault-injection suite (helpers in faultkit.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from faults.faultkit import CALIB, COMPILE, QUANT, VALIDATE, BuildHost, common


@pytest.fixture(scope="session")
def host(tmp_path_factory: pytest.TempPathFactory):
    h = BuildHost(tmp_path_factory.mktemp("build-logs"))
    yield h
    h.close()


@pytest.fixture(scope="session")
def voices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-voices")


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_artifacts: Path, voices: Path, host: BuildHost) -> Path:
    """An uninterrupted run of every stage the suite kills (export is the session's tiny_artifacts):
    what each interrupted-then-rerun stage must equal."""
    root = tmp_path_factory.mktemp("reference") / "tiny"
    shutil.copytree(tiny_artifacts, root)
    reports = root.parent / "reports"
    for argv in (
        ["calibrate", *common(root), *CALIB, "--calib-voices", str(voices)],
        ["quantize", *common(root), *QUANT],
        ["compile", *common(root), *COMPILE],
        ["validate", *common(root), *VALIDATE, "--val-reports", str(reports), "--val-voices", str(voices)],
        ["triton", *common(root)],
    ):
        r = host.run(argv)
        assert r.status == 0, r.log[-3000:]
    return root
