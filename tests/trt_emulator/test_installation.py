"""Installing the emulation: modules substituted and restored, cuda-python versions, the API subset,
and the rule table itself."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

import emulation
from emulation import RULES, EmulatorConfig
from trt_emulator.emukit import cudart, ok, status, trt


def _cuda_and_trt_modules() -> dict[str, Any]:
    return {n: m for n, m in sys.modules.items() if n.split(".")[0] in ("cuda", "tensorrt")}


def test_install_substitutes_the_modules_and_uninstall_restores_them() -> None:
    real = pytest.importorskip("cuda.bindings.runtime")
    before = _cuda_and_trt_modules()
    with emulation.installed() as device:
        rt, t = cudart(), trt()
        assert rt is not real and rt.__name__ == "cuda.bindings.runtime"
        assert importlib.import_module("cuda.bindings").__version__ == "12.6.2"
        assert t.__version__ == "10.3.0.30" and device.config.sm == (8, 7)
        assert emulation.current_device() is device is emulation.active_device()
        with pytest.raises(ImportError):  # other cuda-python modules do not leak through
            importlib.import_module("cuda.bindings.driver")
    assert sys.modules["cuda.bindings.runtime"] is real
    assert _cuda_and_trt_modules() == before
    assert emulation.active_device() is None
    with pytest.raises(RuntimeError, match="not installed"):
        emulation.current_device()


def test_a_second_install_is_refused() -> None:
    with emulation.installed(), pytest.raises(RuntimeError, match="already installed"):
        emulation.install()
    emulation.uninstall()  # idempotent


def test_cuda_python_before_12_6_1_has_no_cuda_bindings() -> None:
    with emulation.installed(EmulatorConfig(cuda_python_version="12.6.0")):
        importlib.import_module("cuda")
        with pytest.raises(ImportError):
            importlib.import_module("cuda.bindings.runtime")


def test_bindings_newer_than_the_driver_answer_insufficient_driver() -> None:
    """cuda-python 13 on a CUDA 12.6 driver: every call fails, as the real bindings do; no misuse recorded."""
    with emulation.installed(EmulatorConfig(cuda_python_version="13.0.1")) as device:
        rt = cudart()
        assert status(rt.cudaGetDeviceCount()) == rt.cudaError_t.cudaErrorInsufficientDriver
        assert rt.cudaGetDeviceCount()[1] is None
        assert rt.cudaGetLastError() == (rt.cudaError_t.cudaErrorInsufficientDriver,)
        assert ok(rt.cudaDriverGetVersion()) == 12060  # the driver query itself works
        device.assert_clean()


def test_api_outside_the_subset_is_absent(dev: Any, plan: bytes) -> None:
    rt, t = cudart(), trt()
    assert not hasattr(rt, "cudaMallocManaged") and not hasattr(rt, "cudaStreamQuery")
    engine = t.Runtime(t.Logger()).deserialize_cuda_engine(plan)
    assert not hasattr(engine, "create_runtime_config")  # TensorRT 10.11+, not 10.3
    with pytest.raises(TypeError):  # the 10.3 overload takes a strategy, nothing else
        engine.create_execution_context(object())


def test_every_rule_is_documented_tested_here_and_ids_are_checked() -> None:
    source = "".join(p.read_text(encoding="utf-8") for p in sorted(Path(__file__).parent.glob("*.py")))
    assert all(rule and text for rule, text in RULES.items())
    assert [r for r in RULES if f'"{r}"' not in source] == []  # each rule id is asserted by some test
    with pytest.raises(ValueError):
        emulation.Violation("no-such-rule", "x")
