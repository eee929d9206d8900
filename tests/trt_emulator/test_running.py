"""Running engines, the positive path: results equal ONNX Runtime's, work runs only when
synchronized, events, graph replays and user-managed scratch memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from trt_emulator.emukit import Rig, affine_model, cudart, inputs, ok, only, pinned, status


def test_engine_runs_both_profiles_and_matches_onnxruntime(dev: Any, plan: bytes) -> None:
    sess = ort.InferenceSession(affine_model().SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (2, 4):
        rig = Rig(plan, batch)
        rig.bind()
        assert tuple(rig.ctx.get_tensor_shape("y")) == (batch, 4) and rig.ctx.infer_shapes() == []
        x, s = inputs(batch, seed=batch)
        np.testing.assert_array_equal(rig.run(x, s), sess.run(["y"], {"x": x, "s": s})[0])
        assert rig.ctx.active_optimization_profile == rig.profile
    dev.assert_clean()


def test_output_shape_is_unknown_until_the_inputs_are_set(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    assert tuple(rig.ctx.get_tensor_shape("y")) == (-1, 4)
    assert sorted(rig.ctx.infer_shapes()) == ["s", "x"]
    rig.select()
    assert tuple(rig.ctx.get_tensor_shape("y")) == (2, 4)
    dev.assert_clean()


def test_stream_work_runs_only_when_synchronized(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    rig.bind()
    x, s = inputs(2)
    rig.stage(x, s)
    rig.h2d()
    assert rig.ctx.execute_async_v3(rig.sp)
    rig.d2h()
    assert np.isnan(rig.result()).all()  # uninitialised pinned memory: nothing ran yet
    ok(rig.rt.cudaStreamSynchronize(rig.stream))
    np.testing.assert_allclose(rig.result(), 2 * x + s)
    dev.assert_clean()


def test_event_synchronize_runs_the_queue_up_to_the_event_and_times_it(dev: Any, plan: bytes) -> None:
    rig, rt = Rig(plan, 2), cudart()
    rig.bind()
    x, s = inputs(2)
    rig.stage(x, s)
    start, mid = ok(rt.cudaEventCreate()), ok(rt.cudaEventCreate())
    ok(rt.cudaEventRecord(start, rig.stream))
    rig.h2d()
    assert rig.ctx.execute_async_v3(rig.sp)
    rig.d2h()
    ok(rt.cudaEventRecord(mid, rig.stream))
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    ok(rt.cudaMemcpyAsync(rig.x, rig.host + 3072, 32, kind, rig.stream))  # after the event: stays queued
    ok(rt.cudaEventSynchronize(mid))
    np.testing.assert_allclose(rig.result(), 2 * x + s)
    assert ok(rt.cudaEventElapsedTime(start, mid)) >= 0.0
    dev.assert_clean()
    pinned(rig.host + 2048, 8)[:] = 0.0
    rig.d2h()  # this copy has not run: the later copy of x is still queued ahead of it
    end = ok(rt.cudaEventCreate())
    ok(rt.cudaEventRecord(end, rig.stream))
    assert rt.cudaEventElapsedTime(start, end) == (rt.cudaError_t.cudaErrorNotReady, None)
    only(dev, "event-not-ready")
    assert rt.cudaGetLastError() == (rt.cudaError_t.cudaSuccess,)  # not-ready is no error state
    ok(rt.cudaStreamSynchronize(rig.stream))
    assert ok(rt.cudaEventElapsedTime(start, end)) >= ok(rt.cudaEventElapsedTime(start, mid))


def test_graph_replays_captured_work_with_baked_addresses_and_live_contents(dev: Any, plan: bytes) -> None:
    rig, rt = Rig(plan, 2), cudart()
    rig.bind()
    x0, s0 = inputs(2, seed=0)
    rig.run(x0, s0)  # one eager enqueue: TensorRT's lazy set-up happens outside the capture
    ok(rt.cudaStreamBeginCapture(rig.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    assert ok(rt.cudaStreamIsCapturing(rig.stream)) == rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusActive
    rig.h2d()
    assert rig.ctx.execute_async_v3(rig.sp)
    rig.d2h()
    graph = ok(rt.cudaStreamEndCapture(rig.stream))
    exe = ok(rt.cudaGraphInstantiate(graph, 0))
    ok(rt.cudaGraphUpload(exe, rig.stream))
    other = ok(rt.cudaMalloc(32))
    assert rig.ctx.set_tensor_address("y", other)  # rebinding after capture does not change the graph
    for seed in (1, 2):
        x, s = inputs(2, seed)
        rig.stage(x, s)
        pinned(rig.host + 2048, 8)[:] = 0.0
        ok(rt.cudaGraphLaunch(exe, rig.stream))
        assert (rig.result() == 0).all()  # queued, not run
        ok(rt.cudaStreamSynchronize(rig.stream))
        np.testing.assert_allclose(rig.result(), 2 * x + s)
    ok(rt.cudaGraphExecDestroy(exe))
    ok(rt.cudaGraphDestroy(graph))
    assert status(rt.cudaGraphLaunch(exe, rig.stream)) == rt.cudaError_t.cudaErrorInvalidResourceHandle
    only(dev, "invalid-handle")


def test_user_managed_context_runs_on_shared_scratch(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2, "USER_MANAGED")
    size = rig.engine.device_memory_size_v2
    scratch = ok(rig.rt.cudaMalloc(size))
    rig.ctx.set_device_memory(scratch, size)
    rig.bind()
    x, s = inputs(2)
    np.testing.assert_allclose(rig.run(x, s), 2 * x + s)
    dev.assert_clean()
