"""Run a program (a console script, `module:function`, or a module) under the emulation.

    PYTHONPATH=tests python -m emulation.launch [options] [--] TARGET [ARGS...]

    TARGET  f5rt               a console script: its entry point (f5rt -> f5rt.cli:main) is called
            pkg.mod:function   that function is called
            pkg.mod            the module runs as __main__
    ARGS    become sys.argv[1:] for the target.

Options set the emulated machine (EmulatorConfig): --trt-version, --sm X.Y, --gpu-name,
--total-memory, --cuda-runtime, --cuda-driver, --cuda-python, --device-count; --report PATH writes
the violations and TensorRT log as JSON. The exit status is the target's, except that a recorded
contract violation turns success into VIOLATION_EXIT (with the violations listed on stderr).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import runpy
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .device import EmulatedDevice, EmulatorConfig
from .install import install, uninstall

VIOLATION_EXIT = 3


def _parser() -> argparse.ArgumentParser:
    d = EmulatorConfig()
    p = argparse.ArgumentParser(prog="python -m emulation.launch", description=__doc__.splitlines()[0])
    p.add_argument("--trt-version", default=d.tensorrt_version)
    p.add_argument("--sm", default=f"{d.sm[0]}.{d.sm[1]}", help="compute capability X.Y")
    p.add_argument("--gpu-name", default=d.gpu_name)
    p.add_argument("--total-memory", type=int, default=d.total_memory, help="bytes")
    p.add_argument("--cuda-runtime", type=int, default=d.cuda_runtime_version, help="e.g. 12060")
    p.add_argument("--cuda-driver", type=int, default=d.cuda_driver_version, help="e.g. 12060")
    p.add_argument("--cuda-python", default=d.cuda_python_version, help="cuda-python version, e.g. 12.6.2")
    p.add_argument("--device-count", type=int, default=d.device_count)
    p.add_argument("--report", type=Path, help="write violations and TensorRT log messages here (JSON)")
    p.add_argument("target", help="console script, module:function, or module")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the target")
    return p


def _config(a: argparse.Namespace) -> EmulatorConfig:
    major, minor = (int(x) for x in a.sm.split("."))
    return EmulatorConfig(
        tensorrt_version=a.trt_version,
        sm=(major, minor),
        gpu_name=a.gpu_name,
        total_memory=a.total_memory,
        cuda_runtime_version=a.cuda_runtime,
        cuda_driver_version=a.cuda_driver,
        cuda_python_version=a.cuda_python,
        device_count=a.device_count,
    )


def _resolve(target: str) -> Callable[[], Any]:
    """A zero-argument callable that runs the target with sys.argv already set."""
    spec = target
    if ":" not in target:
        found = importlib.metadata.entry_points(group="console_scripts", name=target)
        ep = next(iter(found), None)
        if ep is not None:
            spec = ep.value
    if ":" in spec:
        module, _, attr = spec.partition(":")
        fn = importlib.import_module(module)
        for part in attr.split("."):
            fn = getattr(fn, part)
        return fn  # type: ignore[return-value]

    def run_module() -> None:
        runpy.run_module(spec, run_name="__main__", alter_sys=True)

    return run_module


def _exit_code(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


def _report(device: EmulatedDevice, path: Path | None, rc: int) -> None:
    if path is not None:
        data = {
            "config": asdict(device.config),
            "exit_code": rc,
            "violations": [asdict(v) for v in device.violations],
            "tensorrt_log": [asdict(r) for r in device.logs],
        }
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(raw)
    args = list(a.args)
    if args[:1] == ["--"]:
        args = args[1:]
    if a.target == "--":  # `launch -- f5rt ...`
        if not args:
            _parser().error("no target after --")
        a.target, args = args[0], args[1:]
    device = install(_config(a))
    saved_argv = sys.argv
    sys.argv = [a.target, *args]
    try:
        try:
            rc = _exit_code(_resolve(a.target)())
        except SystemExit as e:
            rc = _exit_code(e.code)
    finally:
        sys.argv = saved_argv
        uninstall()
    if device.violations:
        print(f"emulation: {len(device.violations)} contract violation(s):", file=sys.stderr)
        for v in device.violations:
            print(f"  - {v}", file=sys.stderr)
        rc = rc or VIOLATION_EXIT
    _report(device, a.report, rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
