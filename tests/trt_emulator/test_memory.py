"""Device and pinned memory: bounds, sizes, pageable host memory, copy directions, poisoned reads,
use after free, invalid frees, out of memory, alignment."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import emulation
from emulation import ContractViolation, EmulatorConfig
from trt_emulator.emukit import Rig, cudart, ok, only, pinned, status


def test_copy_outside_every_allocation_is_refused(dev: Any) -> None:
    rt = cudart()
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    d, h = ok(rt.cudaMalloc(256)), ok(rt.cudaMallocHost(256))
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    assert status(rt.cudaMemcpyAsync(d + 4096, h, 16, kind, stream)) == rt.cudaError_t.cudaErrorInvalidValue
    only(dev, "out-of-bounds")
    assert "lies in no device allocation" in dev.violations[0].detail


@pytest.mark.parametrize("side", ["destination", "source"])
def test_copy_larger_than_its_source_or_destination_is_refused(dev: Any, side: str) -> None:
    rt = cudart()
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    small_d, big_d = ok(rt.cudaMalloc(256)), ok(rt.cudaMalloc(8192))
    small_h, big_h = ok(rt.cudaMallocHost(256)), ok(rt.cudaMallocHost(8192))
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    dst, src = (small_d, big_h) if side == "destination" else (big_d, small_h)
    assert status(rt.cudaMemcpyAsync(dst, src, 1024, kind, stream)) == rt.cudaError_t.cudaErrorInvalidValue
    only(dev, "copy-size")
    assert side in dev.violations[0].detail


def test_memset_past_the_end_is_refused(dev: Any) -> None:
    rt = cudart()
    d = ok(rt.cudaMalloc(256))
    assert status(rt.cudaMemsetAsync(d + 128, 0, 256, 0)) == rt.cudaError_t.cudaErrorInvalidValue
    only(dev, "copy-size")


def test_pageable_host_memory_is_refused(dev: Any) -> None:
    rt = cudart()
    d = ok(rt.cudaMalloc(256))
    pageable = np.zeros(64, np.float32)
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    assert status(rt.cudaMemcpyAsync(d, pageable.ctypes.data, 256, kind, 0)) == rt.cudaError_t.cudaErrorInvalidValue
    only(dev, "pageable-host")


def test_copy_direction_must_match_the_memory(dev: Any) -> None:
    rt = cudart()
    d1, d2 = ok(rt.cudaMalloc(256)), ok(rt.cudaMalloc(256))
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice  # but the source is device memory
    assert status(rt.cudaMemcpyAsync(d1, d2, 256, kind, 0)) == rt.cudaError_t.cudaErrorInvalidValue
    only(dev, "wrong-memory-kind")
    assert status(rt.cudaMemcpyAsync(d1, d2, 256, 9, 0)) == rt.cudaError_t.cudaErrorInvalidMemcpyDirection
    assert dev.rules()[-1] == "invalid-value"


def test_reading_device_memory_never_written_is_a_fault(dev: Any, plan: bytes) -> None:
    rig, rt = Rig(plan, 2), cudart()
    rig.bind()
    ok(rt.cudaMemsetAsync(rig.x, 0, 32, rig.stream))  # x written, s never
    assert rig.ctx.execute_async_v3(rig.sp)  # enqueue cannot know
    with pytest.raises(ContractViolation, match="poisoned-read"):
        rt.cudaStreamSynchronize(rig.stream)
    only(dev, "poisoned-read")
    assert "input 's'" in dev.violations[0].detail
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    ok(rt.cudaMemcpyAsync(rig.host, rig.y, 32, kind, rig.stream))  # y was never written either
    with pytest.raises(ContractViolation, match="poisoned-read"):
        rt.cudaStreamSynchronize(rig.stream)


def test_memory_used_or_freed_after_free_is_refused(dev: Any, plan: bytes) -> None:
    rt = cudart()
    d, h = ok(rt.cudaMalloc(256)), ok(rt.cudaMallocHost(256))
    ok(rt.cudaFree(d))
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    assert status(rt.cudaMemcpyAsync(d, h, 16, kind, 0)) == rt.cudaError_t.cudaErrorInvalidValue
    assert status(rt.cudaFree(d)) == rt.cudaError_t.cudaErrorInvalidValue  # double free
    ok(rt.cudaFreeHost(h))
    assert (pinned(h, 4) != 0).all()  # a stale view of freed pinned memory reads poison
    assert dev.rules() == ["use-after-free", "use-after-free"]


def test_graph_replayed_after_its_buffer_was_freed_faults(dev: Any, plan: bytes) -> None:
    rt = cudart()
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    d, h = ok(rt.cudaMalloc(256)), ok(rt.cudaMallocHost(256))
    ok(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
    ok(rt.cudaMemcpyAsync(d, h, 256, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
    exe = ok(rt.cudaGraphInstantiate(ok(rt.cudaStreamEndCapture(stream)), 0))
    ok(rt.cudaFree(d))
    ok(rt.cudaGraphLaunch(exe, stream))  # the graph still holds the freed address
    with pytest.raises(ContractViolation, match="use-after-free"):
        rt.cudaStreamSynchronize(stream)
    only(dev, "use-after-free")


def test_freeing_a_pointer_no_allocation_returned_is_refused(dev: Any) -> None:
    rt = cudart()
    d = ok(rt.cudaMalloc(1024))
    assert status(rt.cudaFree(d + 256)) == rt.cudaError_t.cudaErrorInvalidValue
    assert status(rt.cudaFreeHost(12345)) == rt.cudaError_t.cudaErrorInvalidValue
    assert dev.rules() == ["invalid-free", "invalid-free"]


def test_allocation_beyond_the_gpu_memory_is_refused() -> None:
    with emulation.installed(EmulatorConfig(total_memory=1 << 20)) as device:
        rt = cudart()
        ok(rt.cudaMalloc(1 << 19))
        assert rt.cudaMalloc(1 << 20) == (rt.cudaError_t.cudaErrorMemoryAllocation, None)
        only(device, "out-of-memory")


def test_device_pointers_are_aligned_and_not_host_addresses(dev: Any) -> None:
    rt = cudart()
    ptrs = [ok(rt.cudaMalloc(n)) for n in (1, 100, 4096)]
    assert all(p % 256 == 0 and p >= 0xD000_0000_0000 for p in ptrs)
    assert ok(rt.cudaMallocHost(100)) % 4096 == 0
    assert ok(rt.cudaMalloc(0)) == 0
    dev.assert_clean()
