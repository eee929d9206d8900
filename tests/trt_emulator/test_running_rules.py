"""Running engines against TensorRT's rules: addresses, shapes, profiles, scratch memory, stale
errors, capture before an eager enqueue, data-dependent output shapes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from emulation import ContractViolation
from trt_emulator.emukit import Rig, build, cudart, inputs, logged_error, nonzero_model, ok, only, pinned, trt


def test_unaligned_tensor_address_is_refused(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    assert rig.ctx.set_tensor_address("x", rig.x + 4) is False
    only(dev, "alignment")
    assert logged_error(dev, "256-byte aligned")
    assert rig.ctx.get_tensor_address("x") == 0


def test_io_tensor_without_address_is_refused_at_execute(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    rig.select()
    assert rig.ctx.set_tensor_address("x", rig.x) and rig.ctx.set_tensor_address("s", rig.s)
    assert rig.ctx.execute_async_v3(rig.sp) is False
    only(dev, "unset-address")


def test_unset_input_shape_is_refused_at_execute(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    for name in ("x", "s", "y"):
        assert rig.ctx.set_tensor_address(name, getattr(rig, name))
    assert rig.ctx.execute_async_v3(rig.sp) is False
    only(dev, "shape-unset")


@pytest.mark.parametrize("shape", [(3, 4), (2, 5), (2, 4, 1)])
def test_input_shape_outside_the_profile_or_of_another_rank_is_refused(dev: Any, plan: bytes, shape: tuple) -> None:
    rig = Rig(plan, 2)
    assert rig.ctx.set_input_shape("x", shape) is False
    only(dev, "shape-outside-profile")


def test_context_on_one_profile_refuses_another_profiles_shapes(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    rig.select()  # profile 0, batch 2
    assert rig.ctx.set_optimization_profile_async(1, rig.sp)
    assert sorted(rig.ctx.infer_shapes()) == ["s", "x"]  # a profile change drops the shapes
    assert rig.ctx.set_input_shape("x", (2, 4)) is False  # profile 0's shape on profile 1
    only(dev, "shape-outside-profile")
    for name in ("x", "s", "y"):
        rig.ctx.set_tensor_address(name, getattr(rig, name))
    assert rig.ctx.execute_async_v3(rig.sp) is False
    assert dev.rules()[-1] == "shape-unset"


def test_names_that_are_no_input_are_refused(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    assert rig.ctx.set_input_shape("y", (2, 4)) is False  # an output
    assert rig.ctx.set_tensor_address("nope", rig.x) is False
    assert rig.engine.get_tensor_profile_shape("y", 0) == []
    assert dev.rules() == ["unknown-tensor"] * 3


def test_profile_index_out_of_range_is_refused(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    assert rig.ctx.set_optimization_profile_async(2, rig.sp) is False
    assert rig.engine.get_tensor_profile_shape("x", 5) == []
    assert dev.rules() == ["profile-index"] * 2


def test_output_bound_to_a_too_small_buffer_is_refused(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    rig.bind()
    small = ok(rig.rt.cudaMalloc(16))  # y needs 32 bytes
    assert rig.ctx.set_tensor_address("y", small)
    assert rig.ctx.execute_async_v3(rig.sp) is False
    only(dev, "out-of-bounds")
    assert "run past the end" in dev.violations[0].detail


def test_tensor_bound_to_pinned_host_memory_is_refused(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    rig.bind()
    assert rig.ctx.set_tensor_address("x", rig.host)  # aligned, but host memory
    assert rig.ctx.execute_async_v3(rig.sp) is False
    only(dev, "wrong-memory-kind")


def test_output_overlapping_an_input_is_refused(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2)
    rig.bind()
    assert rig.ctx.set_tensor_address("y", rig.x)  # in place
    assert rig.ctx.execute_async_v3(rig.sp) is False
    only(dev, "io-overlap")


def test_user_managed_context_without_scratch_is_refused(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2, "USER_MANAGED")
    rig.bind()
    assert rig.ctx.execute_async_v3(rig.sp) is False
    only(dev, "device-memory-unset")


def test_bad_scratch_memory_is_refused(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2, "USER_MANAGED")
    size = rig.engine.device_memory_size_v2
    scratch = ok(rig.rt.cudaMalloc(2 * size))
    rig.ctx.set_device_memory(scratch + 16, size)  # unaligned
    rig.ctx.set_device_memory(scratch, size - 256)  # too small
    rig.ctx.set_device_memory(scratch + size + 256, size)  # runs past the allocation
    assert dev.rules() == ["alignment", "device-memory-invalid", "device-memory-invalid"]
    static = Rig(plan, 2)
    static.ctx.set_device_memory(scratch, size)  # a STATIC context owns its memory
    assert dev.rules()[-1] == "device-memory-invalid"


def test_tensor_inside_the_scratch_memory_is_refused(dev: Any, plan: bytes) -> None:
    rig = Rig(plan, 2, "USER_MANAGED")
    size = rig.engine.device_memory_size_v2
    scratch = ok(rig.rt.cudaMalloc(size))
    rig.ctx.set_device_memory(scratch, size)
    rig.bind()
    assert rig.ctx.set_tensor_address("s", scratch)
    assert rig.ctx.execute_async_v3(rig.sp) is False
    only(dev, "scratch-overlap")


def test_stale_cuda_error_fails_execute_until_cleared(dev: Any, plan: bytes) -> None:
    rig, rt = Rig(plan, 2), cudart()
    rig.bind()
    x, s = inputs(2)
    rig.stage(x, s)
    rig.h2d()
    rt.cudaMalloc(-1)  # some earlier call failed and nobody read the error
    assert rig.ctx.execute_async_v3(rig.sp) is False
    assert dev.rules() == ["invalid-value", "stale-error"]
    assert rt.cudaGetLastError() == (rt.cudaError_t.cudaErrorInvalidValue,)
    assert rig.ctx.execute_async_v3(rig.sp)
    rig.d2h()
    ok(rt.cudaStreamSynchronize(rig.stream))
    np.testing.assert_allclose(rig.result(), 2 * x + s)


def test_capture_before_any_eager_enqueue_is_refused_and_breaks_the_capture(dev: Any, plan: bytes) -> None:
    """The defect-2 story: the capture fails, and the eager fallback fails too until the error is cleared."""
    rig, rt = Rig(plan, 2), cudart()
    rig.bind()
    ok(rt.cudaStreamBeginCapture(rig.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    assert rig.ctx.execute_async_v3(rig.sp) is False
    only(dev, "capture-before-enqueue")
    assert rt.cudaStreamEndCapture(rig.stream) == (rt.cudaError_t.cudaErrorStreamCaptureInvalidated, None)
    x, s = inputs(2)
    rig.stage(x, s)
    rig.h2d()
    assert rig.ctx.execute_async_v3(rig.sp) is False  # eager fallback without clearing the error
    assert dev.rules()[-1] == "stale-error"
    assert rt.cudaGetLastError() == (rt.cudaError_t.cudaErrorStreamCaptureInvalidated,)
    assert rig.ctx.execute_async_v3(rig.sp)
    rig.d2h()
    ok(rt.cudaStreamSynchronize(rig.stream))
    np.testing.assert_allclose(rig.result(), 2 * x + s)


def test_shape_change_needs_a_new_eager_enqueue_before_capture(dev: Any, plan: bytes) -> None:
    rig, rt = Rig(plan, 2), cudart()
    rig.bind()
    rig.run(*inputs(2))
    assert rig.ctx.set_input_shape("x", (1, 4)) and rig.ctx.set_input_shape("s", (1, 1))
    ok(rt.cudaStreamBeginCapture(rig.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    assert rig.ctx.execute_async_v3(rig.sp) is False
    only(dev, "capture-before-enqueue")


def test_data_dependent_output_shape_is_a_fault(dev: Any) -> None:
    data = build(nonzero_model(), profiles=(((1, 8), 8),), shapes={"x": ()})
    t, rt = trt(), cudart()
    ctx = t.Runtime(t.Logger()).deserialize_cuda_engine(bytes(data)).create_execution_context()
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    x, y, host = ok(rt.cudaMalloc(32)), ok(rt.cudaMalloc(256)), ok(rt.cudaMallocHost(256))
    pinned(host, 8)[:] = [0, 1, 0, 2, 0, 0, 3, 0]
    ok(rt.cudaMemcpyAsync(x, host, 32, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
    assert ctx.set_input_shape("x", (8,))
    assert tuple(ctx.get_tensor_shape("y")) == (1, 0)  # what zeros give: all the context can announce
    assert ctx.set_tensor_address("x", x) and ctx.set_tensor_address("y", y)
    assert ctx.execute_async_v3(int(stream))
    with pytest.raises(ContractViolation, match="output-shape"):
        rt.cudaStreamSynchronize(stream)
    only(dev, "output-shape")
