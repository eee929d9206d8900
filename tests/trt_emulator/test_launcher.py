"""The launcher (python -m emulation.launch): a target run on the configured machine, a recorded
violation failing the run, console scripts resolved."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from trt_emulator.emukit import TESTS

TARGET = """
import importlib, sys

def clean():
    rt = importlib.import_module("cuda.bindings.runtime")
    err, prop = rt.cudaGetDeviceProperties(0)
    print("sm", prop.major, prop.minor, importlib.import_module("tensorrt").__version__, sys.argv[1:])
    return 0

def broken():
    rt = importlib.import_module("cuda.bindings.runtime")
    _, p = rt.cudaMalloc(256)
    rt.cudaMemcpyAsync(p, p + 256, 512, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, 0)
    return 0
"""


def _launch(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "emu_target.py").write_text(textwrap.dedent(TARGET), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "emulation.launch", *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_launcher_runs_a_target_on_the_configured_machine(tmp_path: Path) -> None:
    r = _launch(tmp_path, "--sm", "8.6", "--trt-version", "10.3.0.26", "--", "emu_target:clean", "a", "--b")
    assert r.returncode == 0, r.stderr
    assert "sm 8 6 10.3.0.26 ['a', '--b']" in r.stdout


def test_launcher_fails_when_a_violation_was_recorded(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    r = _launch(tmp_path, "--report", str(report), "--", "emu_target:broken")
    assert r.returncode == 3
    assert "1 contract violation" in r.stderr and "out-of-bounds" in r.stderr
    assert '"rule": "out-of-bounds"' in report.read_text(encoding="utf-8")


def test_launcher_resolves_console_scripts(tmp_path: Path) -> None:
    r = _launch(tmp_path, "--", "f5rt", "--help")  # the entry point f5rt.cli:main
    assert r.returncode == 0, r.stderr
    assert "usage: f5rt" in r.stdout
