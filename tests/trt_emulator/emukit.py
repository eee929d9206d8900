"""Helpers of the emulator's tests: the emulated modules, cuda.bindings results, tiny ONNX models,
a build through the emulated Builder, and Rig (one engine, context, stream and buffers)."""

from __future__ import annotations

import ctypes
import importlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TESTS = Path(__file__).resolve().parents[1]
PROFILES = (((1, 2), 2), ((3, 4), 4))  # (batch min..max, opt) per profile of the affine engine


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
