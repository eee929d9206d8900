"""Helpers of the fault-injection suite: a client of the build host, and checks of a folder's state."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST = Path(__file__).with_name("buildhost.py")
# the checkout's own sources first, whatever the environment's editable installs point at
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT / "build"), os.environ.get("PYTHONPATH", "")]),
    "PYTHONHASHSEED": "0",
    "PYTHONUNBUFFERED": "1",
}
ENV.pop("F5BUILD_FAULT", None)

# The smallest calibration that still records every graph in both splits (seconds on the tiny model).
CALIB = [
    "--calib-requests", "1", "--calib-samples", "4", "--calib-nfe", "4", "--calib-heldout-requests", "1",
    "--calib-heldout-samples", "2", "--calib-max-frames", "384", "--calib-generator", "synthetic",
]  # fmt: skip
QUANT = ["--quant-graphs", "step", "--quant-variants", "cpu-fp32,cpu-int8"]
COMPILE = ["--trt-precision", "fp32"]  # the FP32 deployment: the quantized graphs above are CPU-only
VALIDATE = ["--val-no-e2e", "--val-precisions", "cpu-fp32,cpu-int8"]


@dataclass
class Result:
    status: int  # exit code, or -signal when a signal ended it
    log: str

    @property
    def lines(self) -> list[str]:
        return self.log.splitlines()


class BuildHost:
    """Client of buildhost.py (see its docstring)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.proc = subprocess.Popen(
            [sys.executable, str(HOST)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV, text=True, cwd=ROOT
        )
        ready = self._read()
        assert "ready" in ready, ready
        self.count = 0

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the build host exited")
        return json.loads(line)

    def _ask(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def start(self, argv: list[str], fault: str | None = None, fsize: int | None = None) -> tuple[int, Path]:
        self.count += 1
        log = self.logs / f"{self.count:03d}-{argv[0]}.log"
        env = {"F5BUILD_FAULT": fault} if fault else {}
        pid = self._ask({"op": "start", "argv": argv, "env": env, "log": str(log), "fsize": fsize})["pid"]
        return pid, log

    def wait(self, pid: int, log: Path, timeout: float = 300) -> Result:
        status = self._ask({"op": "wait", "pid": pid, "timeout": timeout})["status"]
        if status is None:
            os.kill(pid, signal.SIGKILL)
            self._ask({"op": "wait", "pid": pid, "timeout": 30})
            raise AssertionError(f"build {pid} ran past {timeout} s:\n{log.read_text()[-3000:]}")
        return Result(status, log.read_text(encoding="utf-8", errors="replace"))

    def run(self, argv: list[str], fault: str | None = None, fsize: int | None = None, timeout: float = 300) -> Result:
        pid, log = self.start(argv, fault, fsize)
        return self.wait(pid, log, timeout)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_stopped(pid: int, timeout: float = 120) -> None:
    """Until `pid` is stopped (state T in /proc): a build that sent itself SIGSTOP."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not stop")


def manifest_hashes(root: Path, stage: str | None = None) -> dict[str, str]:
    """{file: sha256} of what the manifest records (of one stage), after verifying every file as f5rt does."""
    from f5rt.manifest import load_manifest

    m = load_manifest(root)
    m.verify_all()
    return {rel: meta["sha256"] for rel, meta in m.files.items() if stage is None or meta.get("stage") == stage}


def calibration_content(root: Path) -> dict[str, object]:
    """The calibrate stage's result without its timings: recordings by hash, the index minus the
    seconds each sampler run took (the one thing in it that differs between identical runs)."""
    hashes = manifest_hashes(root, "calibrate")
    index = json.loads((root / "calibration" / "index.json").read_text())
    for req in index.get("requests", []):
        req.pop("seconds", None)
    return {**{k: v for k, v in hashes.items() if k.endswith(".npz")}, "index": index}


def leftovers(root: Path) -> list[str]:
    """Temp files and folders a killed writer leaves (what the next run must sweep)."""
    from f5build.buildlock import TEMP_DIR_PREFIXES
    from f5rt.files import is_temp_name

    return sorted(
        str(p.relative_to(root))
        for p in root.rglob(".*")
        if is_temp_name(p.name) or p.name.startswith(TEMP_DIR_PREFIXES)
    )


def common(root: Path) -> list[str]:
    return ["--model", "tiny", "--artifacts-root", str(root.parent), "--name", root.name]


def copy_stage_input(reference: Path, dest: Path, keep: tuple[str, ...]) -> Path:
    """`dest` holding the reference's files of the stages in `keep` only (the state before a stage runs)."""
    from f5rt.manifest import MANIFEST_NAME

    shutil.copytree(reference, dest)
    data = json.loads((dest / MANIFEST_NAME).read_text())
    drop = [rel for rel, meta in data["files"].items() if meta.get("stage") not in keep]
    for rel in drop:
        (dest / rel).unlink(missing_ok=True)
        del data["files"][rel]
    data["stages"] = {k: v for k, v in data.get("stages", {}).items() if k in keep}
    for stage, folder in (("compile", "engines"), ("triton", "triton")):  # outputs not all recorded
        if stage not in keep:
            shutil.rmtree(dest / folder, ignore_errors=True)
    data.pop("deployments", None) if "compile" not in keep else None
    (dest / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
    return dest


@contextmanager
def lock_held_elsewhere(root: Path) -> Iterator[int]:
    """`root`'s build lock, held by another live process for the block: yields that process' pid."""
    code = (
        "import time; from pathlib import Path; from f5build.buildlock import BuildLock\n"
        f"BuildLock(Path({str(root)!r})).acquire(); print('held', flush=True); time.sleep(120)"
    )
    env = {**ENV, "PYTHONPATH": os.pathsep.join([ENV["PYTHONPATH"], *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
