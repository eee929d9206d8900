"""The TensorRT / CUDA emulation (tests/emulation) runs real API calls and refuses what the real APIs refuse.

Every rule the emulator enforces has a test here that breaks it and sees the refusal: the return
value or status the real API gives (False/None from TensorRT, a cudaError_t from the runtime, a
ContractViolation from the synchronizing call for faults in queued work) and the recorded rule id.
The positive tests pin the semantics the backend relies on: engines built and executed through
ONNX Runtime, work that runs only when synchronized, and graph replays with baked addresses.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import emulation
from emulation import RULES, ContractViolation, EmulatorConfig, engine_file

TESTS = Path(__file__).resolve().parent
PROFILES = (((1, 2), 2), ((3, 4), 4))  # (batch min..max, opt) per profile of the affine engine


# --- helpers --------------------------------------------------------------------------------------


def trt() -> Any:
    return importlib.import_module("tensorrt")


def cudart() -> Any:
    return importlib.import_module("cuda.bindings.runtime")


def ok(result: tuple) -> Any:
    """The value(s) of a successful cuda.bindings call."""
    assert int(result[0]) == 0, f"CUDA call failed: {result[0]!r}"
    return result[1] if len(result) == 2 else (result[1:] or None)


def status(result: tuple) -> Any:
    return result[0]


def pinned(ptr: int, count: int, dtype: Any = np.float32) -> np.ndarray:
    """A numpy view of pinned host memory, exactly as the runtime makes one."""
    n = count * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_ubyte * n).from_address(ptr), dtype=dtype, count=count)


def affine_model(opset: int = 17, static_batch: int | None = None) -> onnx.ModelProto:
    """y = 2 x + s with x (B, 4), s (B, 1): two inputs, one output, a dynamic batch axis."""
    b: Any = static_batch or "B"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [b, 4])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [b, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, 4])
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("Mul", ["x", "two"], ["m"]), helper.make_node("Add", ["m", "s"], ["y"])]
    graph = helper.make_graph(nodes, "affine", [x, s], [y], [two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def nonzero_model() -> onnx.ModelProto:
    """y = NonZero(x): an output shape that depends on the data, which TensorRT cannot announce."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1, "M"])
    graph = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "nonzero", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def build(
    model: onnx.ModelProto | bytes | None = None,
    profiles: Any = PROFILES,
    *,
    strongly_typed: bool = True,
    flags: tuple[str, ...] = (),
    shapes: dict[str, Any] | None = None,
) -> Any:
    """Parse and build with the emulated Builder (emulation installed); the IHostMemory or None."""
    t = trt()
    logger = t.Logger(t.Logger.INTERNAL_ERROR)
    builder = t.Builder(logger)
    network = builder.create_network(1 << int(t.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0)
    parser = t.OnnxParser(network, logger)
    raw = (model or affine_model()).SerializeToString() if not isinstance(model, bytes) else model
    assert parser.parse(raw), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    for f in flags:
        config.set_flag(getattr(t.BuilderFlag, f))
    for (lo, hi), opt in profiles:
        p = builder.create_optimization_profile()
        for name, shape in (shapes or {"x": (4,), "s": (1,)}).items():
            p.set_shape(name, (lo, *shape), (opt, *shape), (hi, *shape))
        config.add_optimization_profile(p)
    return builder.build_serialized_network(network, config)


@pytest.fixture(scope="module")
def plan() -> bytes:
    """The affine engine, built once under the default emulated machine."""
    with emulation.installed():
        data = build()
    assert data is not None
    return bytes(data)


@pytest.fixture
def dev() -> Any:
    with emulation.installed() as device:
        yield device


class Rig:
    """One engine, one context, a non-blocking stream, device buffers for `batch` rows, pinned staging."""

    def __init__(self, plan: bytes, batch: int = 2, strategy: str = "STATIC") -> None:
        self.trt, self.rt = trt(), cudart()
        self.logger = self.trt.Logger(self.trt.Logger.INTERNAL_ERROR)
        self.engine = self.trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        assert self.engine is not None
        self.ctx = self.engine.create_execution_context(getattr(self.trt.ExecutionContextAllocationStrategy, strategy))
        self.stream = ok(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking))
        self.batch = batch
        self.profile = 0 if batch <= 2 else 1
        self.x = ok(self.rt.cudaMalloc(batch * 16))
        self.s = ok(self.rt.cudaMalloc(batch * 4))
        self.y = ok(self.rt.cudaMalloc(batch * 16))
        self.host = ok(self.rt.cudaMallocHost(4096))  # x at 0, s at 1024, y at 2048

    @property
    def sp(self) -> int:
        return int(self.stream)

    def select(self) -> None:
        assert self.ctx.set_optimization_profile_async(self.profile, self.sp)
        assert self.ctx.set_input_shape("x", (self.batch, 4))
        assert self.ctx.set_input_shape("s", (self.batch, 1))

    def bind(self) -> None:
        self.select()
        for name in ("x", "s", "y"):
            assert self.ctx.set_tensor_address(name, getattr(self, name))

    def h2d(self) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        ok(self.rt.cudaMemcpyAsync(self.x, self.host, self.batch * 16, kind, self.stream))
        ok(self.rt.cudaMemcpyAsync(self.s, self.host + 1024, self.batch * 4, kind, self.stream))

    def d2h(self) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        ok(self.rt.cudaMemcpyAsync(self.host + 2048, self.y, self.batch * 16, kind, self.stream))

    def stage(self, x: np.ndarray, s: np.ndarray) -> None:
        pinned(self.host, x.size)[:] = x.ravel()
        pinned(self.host + 1024, s.size)[:] = s.ravel()

    def result(self) -> np.ndarray:
        return pinned(self.host + 2048, self.batch * 4).reshape(self.batch, 4).copy()

    def run(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        self.stage(x, s)
        self.h2d()
        assert self.ctx.execute_async_v3(self.sp)
        self.d2h()
        ok(self.rt.cudaStreamSynchronize(self.stream))
        return self.result()


def inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 4), dtype=np.float32), rng.standard_normal((batch, 1), dtype=np.float32)


def only(device: Any, rule: str) -> None:
    """Exactly one violation was recorded, and it broke `rule`."""
    assert device.rules() == [rule], device.violations


def logged_error(device: Any, text: str) -> bool:
    return any(r.severity == "ERROR" and text in r.message for r in device.logs)


# --- installation ---------------------------------------------------------------------------------


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
    source = Path(__file__).read_text(encoding="utf-8")
    assert all(rule and text for rule, text in RULES.items())
    assert [r for r in RULES if f'"{r}"' not in source] == []  # each rule id is asserted by some test
    with pytest.raises(ValueError):
        emulation.Violation("no-such-rule", "x")


# --- device and errors ----------------------------------------------------------------------------


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


# --- building -------------------------------------------------------------------------------------


def test_built_engine_round_trips_with_its_profiles_and_io(dev: Any, plan: bytes) -> None:
    t = trt()
    engine = t.Runtime(t.Logger()).deserialize_cuda_engine(plan)
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    assert names == ["x", "s", "y"]
    assert [engine.get_tensor_mode(n) for n in names] == [t.TensorIOMode.INPUT] * 2 + [t.TensorIOMode.OUTPUT]
    assert engine.get_tensor_mode("nope") == t.TensorIOMode.NONE
    assert np.dtype(t.nptype(engine.get_tensor_dtype("y"))) == np.float32
    assert tuple(engine.get_tensor_shape("x")) == (-1, 4)
    assert engine.num_optimization_profiles == 2
    lo, opt, hi = engine.get_tensor_profile_shape("x", 1)
    assert (tuple(lo), tuple(opt), tuple(hi)) == ((3, 4), (4, 4), (4, 4)) and len(lo) == 2 and lo[0] == 3
    assert engine.device_memory_size_v2 % 256 == 0 and engine.device_memory_size_v2 >= 256
    dev.assert_clean()


def test_builder_records_flags_and_fills_the_timing_cache(dev: Any) -> None:
    t = trt()
    builder = t.Builder(t.Logger())
    network = builder.create_network(1 << int(t.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert t.OnnxParser(network, t.Logger()).parse(affine_model().SerializeToString())
    assert network.num_inputs == 2 and network.get_input(0).name == "x" and tuple(network.get_input(0).shape) == (-1, 4)
    assert network.num_outputs == 1 and network.get_output(0).dtype == t.DataType.FLOAT
    config = builder.create_builder_config()
    assert config.get_flag(t.BuilderFlag.TF32)  # TensorRT's default
    config.clear_flag(t.BuilderFlag.TF32)
    config.set_memory_pool_limit(t.MemoryPoolType.WORKSPACE, 1 << 30)
    config.builder_optimization_level = 5
    cache = config.create_timing_cache(b"")
    assert config.set_timing_cache(cache, False)
    p = builder.create_optimization_profile()
    p.set_shape("x", (1, 4), (2, 4), (2, 4))
    p.set_shape("s", (1, 1), (2, 1), (2, 1))
    assert [tuple(d) for d in p.get_shape("x")] == [(1, 4), (2, 4), (2, 4)]
    assert config.add_optimization_profile(p) == 0
    data = builder.build_serialized_network(network, config)
    meta, onnx_bytes = engine_file.unpack(bytes(data))
    assert meta["tf32"] is False and meta["strongly_typed"] is True and meta["builder_optimization_level"] == 5
    assert meta["workspace"] == 1 << 30 and meta["tensorrt_version"] == "10.3.0.30" and meta["sm"] == "8.7"
    assert onnx.load_model_from_string(onnx_bytes).graph.name == "affine"
    serialized = bytes(config.get_timing_cache().serialize())
    assert len(config.create_timing_cache(serialized).entries) == 1
    dev.assert_clean()


def test_parse_from_file_reads_external_data(dev: Any, tmp_path: Path) -> None:
    model = affine_model()
    path = tmp_path / "affine.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="affine.data", size_threshold=0)
    t = trt()
    net = t.Builder(t.Logger()).create_network(0)
    assert t.OnnxParser(net, t.Logger()).parse_from_file(str(path))
    dev.assert_clean()
    net2 = t.Builder(t.Logger()).create_network(0)
    assert not t.OnnxParser(net2, t.Logger()).parse(path.read_bytes())  # external weights, no path
    only(dev, "parser-error")


def test_opset_newer_than_tensorrt_10_3_is_refused(dev: Any) -> None:
    t = trt()
    net = t.Builder(t.Logger(t.Logger.INTERNAL_ERROR)).create_network(0)
    parser = t.OnnxParser(net, t.Logger(t.Logger.INTERNAL_ERROR))
    assert not parser.parse(affine_model(opset=21).SerializeToString())
    assert parser.num_errors == 1 and "opset 21" in parser.get_error(0).desc()
    only(dev, "parser-opset")


def test_unreadable_onnx_is_a_parser_error(dev: Any) -> None:
    t = trt()
    net = t.Builder(t.Logger(t.Logger.INTERNAL_ERROR)).create_network(0)
    assert not t.OnnxParser(net, t.Logger(t.Logger.INTERNAL_ERROR)).parse(b"not an onnx model")
    only(dev, "parser-error")


def test_invalid_profile_shapes_are_refused(dev: Any) -> None:
    t = trt()
    builder = t.Builder(t.Logger(t.Logger.INTERNAL_ERROR))
    p = builder.create_optimization_profile()
    p.set_shape("x", (4, 4), (2, 4), (1, 4))  # min > opt > max
    assert p.get_shape("x") == []
    p.set_shape("s", (1, 1), (2, 1), (2,))  # ranks differ
    assert dev.rules() == ["profile-invalid", "profile-invalid"]
    assert builder.create_builder_config().add_optimization_profile(p) == -1  # nothing valid in it
    assert dev.rules()[-1] == "profile-invalid"


def test_profile_missing_a_dynamic_input_is_refused(dev: Any) -> None:
    assert build(shapes={"x": (4,)}) is None
    only(dev, "build-profile")
    assert logged_error(dev, "no shapes for dynamic input")


def test_profile_contradicting_a_static_dim_is_refused(dev: Any) -> None:
    assert build(shapes={"x": (5,), "s": (1,)}) is None
    only(dev, "build-profile")


def test_no_profile_for_a_dynamic_network_is_refused(dev: Any) -> None:
    assert build(profiles=()) is None
    only(dev, "build-profile")


def test_precision_flags_on_a_strongly_typed_network_are_refused(dev: Any) -> None:
    assert build(flags=("FP16",)) is None
    only(dev, "build-precision-flag")
    dev.reset()
    data = build(strongly_typed=False, flags=("FP16",))  # a weakly typed network may take them
    assert data is not None and engine_file.unpack(bytes(data))[0]["strongly_typed"] is False
    dev.assert_clean()


# --- engines: release and GPU -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "rule"),
    [(EmulatorConfig(tensorrt_version="10.4.0.26"), "engine-version"), (EmulatorConfig(sm=(8, 6)), "engine-sm")],
)
def test_engine_for_another_tensorrt_or_sm_is_refused(plan: bytes, config: EmulatorConfig, rule: str) -> None:
    with emulation.installed(config) as device:
        t = trt()
        assert t.Runtime(t.Logger(t.Logger.INTERNAL_ERROR)).deserialize_cuda_engine(plan) is None
        only(device, rule)
        assert logged_error(device, "rebuild")


def test_engine_inspector_refuses_a_foreign_context_and_a_bad_layer_index(dev: Any, plan: bytes) -> None:
    t = trt()
    runtime = t.Runtime(t.Logger(t.Logger.INTERNAL_ERROR))
    engine, other = runtime.deserialize_cuda_engine(plan), runtime.deserialize_cuda_engine(plan)
    inspector = engine.create_engine_inspector()
    inspector.execution_context = other.create_execution_context()
    only(dev, "inspector-context")
    assert inspector.execution_context is None and logged_error(dev, "IEngineInspector::setExecutionContext")
    dev.reset()
    inspector.execution_context = engine.create_execution_context()  # its own: accepted
    layers = json.loads(inspector.get_engine_information(t.LayerInformationFormat.JSON))["Layers"]
    assert len(layers) == 2 and all(isinstance(x, str) for x in layers)  # default verbosity: names only
    assert inspector.get_layer_information(5, t.LayerInformationFormat.ONELINE) == ""
    only(dev, "inspector-index")
    with pytest.raises(TypeError):  # the pybind11 enum refuses plain ints
        inspector.get_engine_information(1)


def test_engine_of_the_same_release_with_another_build_number_loads(plan: bytes) -> None:
    with emulation.installed(EmulatorConfig(tensorrt_version="10.3.0.26")) as device:
        assert trt().Runtime(trt().Logger()).deserialize_cuda_engine(plan) is not None
        device.assert_clean()


def test_bytes_that_are_no_engine_are_refused(dev: Any) -> None:
    t = trt()
    assert t.Runtime(t.Logger(t.Logger.INTERNAL_ERROR)).deserialize_cuda_engine(b"\x00" * 64) is None
    only(dev, "engine-format")


# --- running: the positive path ---------------------------------------------------------------------


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


# --- running: TensorRT's rules ---------------------------------------------------------------------


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


# --- memory ---------------------------------------------------------------------------------------


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


# --- streams, events, capture -----------------------------------------------------------------------


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


# --- the launcher ------------------------------------------------------------------------------------

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
