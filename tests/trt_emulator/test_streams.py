"""Streams, events and capture: calls prohibited during capture, capture modes and states, handles
that are unknown or destroyed, flags."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from trt_emulator.emukit import Rig, cudart, ok, only, status

PROHIBITED = [
    "cudaStreamSynchronize",
    "cudaEventSynchronize",
    "cudaDeviceSynchronize",
    "cudaMalloc",
    "cudaFree",
    "cudaMallocHost",
    "cudaFreeHost",
    "cudaMemcpy",
]


@pytest.mark.parametrize("call", PROHIBITED)
def test_prohibited_calls_during_capture_are_refused_and_invalidate_it(dev: Any, call: str) -> None:
    rt = cudart()
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    other = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    d, h, ev = ok(rt.cudaMalloc(256)), ok(rt.cudaMallocHost(256)), ok(rt.cudaEventCreate())
    ok(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    ok(rt.cudaMemsetAsync(d, 0, 256, stream))
    args = {
        "cudaStreamSynchronize": (other,),
        "cudaEventSynchronize": (ev,),
        "cudaDeviceSynchronize": (),
        "cudaMalloc": (64,),
        "cudaFree": (d,),
        "cudaMallocHost": (64,),
        "cudaFreeHost": (h,),
        "cudaMemcpy": (h, d, 16, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost),
    }
    assert status(getattr(rt, call)(*args[call])) == rt.cudaError_t.cudaErrorStreamCaptureUnsupported
    only(dev, "capture-prohibited")
    status_now = ok(rt.cudaStreamIsCapturing(stream))
    assert status_now == rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusInvalidated
    assert status(rt.cudaMemsetAsync(d, 0, 256, stream)) == rt.cudaError_t.cudaErrorStreamCaptureInvalidated
    assert rt.cudaStreamEndCapture(stream) == (rt.cudaError_t.cudaErrorStreamCaptureInvalidated, None)
    assert dev.rules() == ["capture-prohibited"]  # consequences are not counted twice


def test_synchronizing_the_capturing_stream_is_refused_even_when_relaxed(dev: Any) -> None:
    rt = cudart()
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    ok(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeRelaxed))
    ok(rt.cudaFree(ok(rt.cudaMalloc(64))))  # relaxed: allowed
    assert status(rt.cudaStreamSynchronize(stream)) == rt.cudaError_t.cudaErrorStreamCaptureUnsupported
    only(dev, "capture-prohibited")


def test_capture_modes_decide_what_other_threads_may_do(dev: Any) -> None:
    rt = cudart()
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))

    def malloc_elsewhere() -> Any:
        out: list[Any] = []
        worker = threading.Thread(target=lambda: out.append(status(rt.cudaMalloc(64))))
        worker.start()
        worker.join()
        return out[0]

    ok(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    assert malloc_elsewhere() == rt.cudaError_t.cudaSuccess
    ok(rt.cudaStreamEndCapture(stream))
    dev.assert_clean()
    ok(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
    assert malloc_elsewhere() == rt.cudaError_t.cudaErrorStreamCaptureUnsupported
    only(dev, "capture-prohibited")
    assert int(status(rt.cudaStreamEndCapture(stream))) == 0  # another thread's call does not break it


def test_capture_begun_or_ended_in_the_wrong_state_is_refused(dev: Any) -> None:
    rt = cudart()
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    assert rt.cudaStreamEndCapture(stream) == (rt.cudaError_t.cudaErrorIllegalState, None)
    mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    ok(rt.cudaStreamBeginCapture(stream, mode))
    assert status(rt.cudaStreamBeginCapture(stream, mode)) == rt.cudaError_t.cudaErrorIllegalState
    assert status(rt.cudaStreamBeginCapture(0, mode)) == rt.cudaError_t.cudaErrorStreamCaptureUnsupported
    assert status(rt.cudaStreamDestroy(stream)) == rt.cudaError_t.cudaErrorIllegalState
    assert dev.rules() == ["capture-state"] * 4


def test_capture_ended_from_another_thread_is_refused(dev: Any) -> None:
    rt = cudart()
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    ok(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(rt.cudaStreamEndCapture(stream)))
    worker.start()
    worker.join()
    assert out == [(rt.cudaError_t.cudaErrorStreamCaptureWrongThread, None)]
    only(dev, "capture-wrong-thread")
    ok(rt.cudaStreamEndCapture(stream))


def test_unknown_or_destroyed_handles_are_refused(dev: Any, plan: bytes) -> None:
    rt = cudart()
    assert status(rt.cudaStreamSynchronize(rt.cudaStream_t(0xDEAD0))) == rt.cudaError_t.cudaErrorInvalidResourceHandle
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    ok(rt.cudaStreamDestroy(stream))
    assert (
        status(rt.cudaMemsetAsync(ok(rt.cudaMalloc(256)), 0, 256, stream))
        == rt.cudaError_t.cudaErrorInvalidResourceHandle
    )
    ev = ok(rt.cudaEventCreate())
    ok(rt.cudaEventDestroy(ev))
    assert status(rt.cudaEventRecord(ev, 0)) == rt.cudaError_t.cudaErrorInvalidResourceHandle
    rig = Rig(plan, 2)
    rig.bind()
    assert rig.ctx.execute_async_v3(int(stream)) is False  # TensorRT given a destroyed stream
    assert dev.rules() == ["invalid-handle"] * 4


def test_unknown_flags_are_refused(dev: Any) -> None:
    rt = cudart()
    assert rt.cudaStreamCreateWithFlags(8) == (rt.cudaError_t.cudaErrorInvalidValue, None)
    only(dev, "invalid-value")
