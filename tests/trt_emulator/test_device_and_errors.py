"""Device queries, CUDA's per-thread last error, and the device's violation record."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import emulation
from emulation import EmulatorConfig
from trt_emulator.emukit import cudart, ok, only, status


def test_device_queries_report_the_configured_machine() -> None:
    cfg = EmulatorConfig(sm=(8, 6), gpu_name="RTX A4000 (emulated)", cuda_runtime_version=12040)
    with emulation.installed(cfg) as device:
        rt = cudart()
        assert ok(rt.cudaGetDeviceCount()) == 1
        ok(rt.cudaSetDevice(0))
        ok(rt.cudaFree(0))
        prop = ok(rt.cudaGetDeviceProperties(0))
        assert prop.name.split(b"\0")[0] == b"RTX A4000 (emulated)" and len(prop.name) == 256
        assert (prop.major, prop.minor, prop.totalGlobalMem) == (8, 6, cfg.total_memory)
        assert ok(rt.cudaRuntimeGetVersion()) == 12040 and ok(rt.cudaDriverGetVersion()) == 12060
        device.assert_clean()
        assert status(rt.cudaSetDevice(1)) == rt.cudaError_t.cudaErrorInvalidDevice
        only(device, "invalid-device")


def test_no_device_answers_no_device() -> None:
    with emulation.installed(EmulatorConfig(device_count=0)) as device:
        rt = cudart()
        assert status(rt.cudaGetDeviceCount()) == rt.cudaError_t.cudaErrorNoDevice
        device.assert_clean()


def test_last_error_is_per_call_peeked_and_cleared(dev: Any) -> None:
    rt = cudart()
    assert rt.cudaGetLastError() == (rt.cudaError_t.cudaSuccess,)
    assert rt.cudaMalloc(-1) == (rt.cudaError_t.cudaErrorInvalidValue, None)
    only(dev, "invalid-value")
    assert rt.cudaPeekAtLastError() == (rt.cudaError_t.cudaErrorInvalidValue,)
    assert rt.cudaGetLastError() == (rt.cudaError_t.cudaErrorInvalidValue,)
    assert rt.cudaGetLastError() == (rt.cudaError_t.cudaSuccess,)
    assert ok(rt.cudaGetErrorString(rt.cudaError_t.cudaErrorInvalidValue)) == b"invalid argument"
    seen: list[Any] = []
    worker = threading.Thread(target=lambda: seen.append((rt.cudaMalloc(-2), rt.cudaGetLastError())))
    worker.start()
    worker.join()
    assert seen[0][1] == (rt.cudaError_t.cudaErrorInvalidValue,)
    assert rt.cudaGetLastError() == (rt.cudaError_t.cudaSuccess,)  # the last error is per host thread


def test_assert_clean_and_reset(dev: Any) -> None:
    rt = cudart()
    p = ok(rt.cudaMalloc(256))
    dev.assert_clean()
    rt.cudaSetDevice(7)
    with pytest.raises(AssertionError, match="invalid-device"):
        dev.assert_clean()
    dev.reset()
    dev.assert_clean()
    assert dev.logs == [] and dev.memory.in_use == 0
    assert status(rt.cudaFree(p)) == rt.cudaError_t.cudaErrorInvalidValue  # reset freed everything
    assert dev.rules() == ["use-after-free"]
