"""TensorRT's run side: Runtime, ICudaEngine, IExecutionContext (execute_async_v3 on ONNX Runtime).

Why the checks sit at enqueue: `execute_async_v3` is where TensorRT validates a context before it
launches anything, and where a mistake must surface (False plus an ERROR) rather than as corrupted
memory later. Checked there, each refusal recorded with its rule id: device memory set for
USER_MANAGED contexts, every dynamic input shape set and inside the active profile, every I/O tensor
bound to a 256-byte aligned address whose whole tensor lies in one live device allocation, no output
overlapping another tensor or the scratch memory, no stale CUDA error, no capture before the
context's first eager enqueue. What passes becomes an op on the stream that reads the inputs from
emulated memory (poison and bounds checked again) when the stream runs, executes the engine's ONNX
and writes the outputs to the addresses bound at enqueue.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import engine_file, tensorrt_layers
from .contract import Fault
from .cuda_runtime import cudaError_t
from .memory import ALIGN, Kind
from .onnx_exec import program_for
from .streams import Op, Stream
from .tensorrt_types import (
    DataType,
    Dims,
    ExecutionContextAllocationStrategy,
    ILogger,
    LayerInformationFormat,
    TensorIOMode,
    _Bound,
    _Env,
    _shape,
    _volume,
    nptype,
)

# --- running ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TensorInfo:
    name: str
    mode: TensorIOMode
    dtype: DataType
    shape: tuple[int, ...]  # -1 for dynamic

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(nptype(self.dtype))

    @property
    def dynamic(self) -> bool:
        return -1 in self.shape


class Runtime(_Bound):
    """Deserializes emulated engine files built for this TensorRT release and this GPU."""

    def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
        api = "IRuntime::deserializeCudaEngine"
        try:
            meta, onnx_bytes = engine_file.unpack(bytes(serialized_engine))
        except engine_file.EngineFileError as e:
            self._env.refuse(self.logger, "engine-format", api, str(e))
            return None
        cfg = self._env.dev.config
        built = str(meta.get("tensorrt_version", "?"))
        if built.split(".")[:3] != cfg.tensorrt_version.split(".")[:3]:
            self._env.refuse(
                self.logger,
                "engine-version",
                api,
                f"the engine was serialized by TensorRT {built}, this is TensorRT {cfg.tensorrt_version}; rebuild it",
            )
            return None
        if str(meta.get("sm")) != cfg.sm_string:
            self._env.refuse(
                self.logger,
                "engine-sm",
                api,
                f"the engine was built for compute capability {meta.get('sm')}, this GPU is {cfg.sm_string}; rebuild it",
            )
            return None
        return ICudaEngine(self._env, self.logger, meta, onnx_bytes)


class ICudaEngine:
    """A deserialized engine: I/O tensors, profiles, and the ONNX program that executes it."""

    def __init__(self, env: _Env, logger: ILogger, meta: dict[str, Any], onnx_bytes: bytes) -> None:
        self._env = env
        self._logger = logger
        self._meta = meta
        self.name = "emulated engine"
        self._tensors = [
            _TensorInfo(t["name"], TensorIOMode[t["mode"]], DataType[t["dtype"]], tuple(t["shape"])) for t in meta["io"]
        ]
        self._by_name = {t.name: t for t in self._tensors}
        self._profiles = [
            {k: tuple(tuple(int(d) for d in s) for s in v) for k, v in p.items()} for p in meta["profiles"]
        ]
        self.program = program_for(onnx_bytes)
        self._onnx = onnx_bytes

    def _unknown(self, api: str, name: str) -> None:
        self._env.refuse(self._logger, "unknown-tensor", api, f"'{name}' is not an I/O tensor of this engine")

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    def get_tensor_name(self, index: int) -> str:
        return self._tensors[index].name

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        t = self._by_name.get(name)
        return t.mode if t is not None else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        t = self._by_name.get(name)
        if t is None:
            self._unknown("ICudaEngine::getTensorDataType", name)
            return DataType.FLOAT
        return t.dtype

    def get_tensor_shape(self, name: str) -> Dims:
        t = self._by_name.get(name)
        if t is None:
            self._unknown("ICudaEngine::getTensorShape", name)
            return Dims()
        return Dims(t.shape)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        api = "ICudaEngine::getProfileShape"
        t = self._by_name.get(name)
        if t is None or t.mode is not TensorIOMode.INPUT:
            self._env.refuse(self._logger, "unknown-tensor", api, f"'{name}' is not an input of this engine")
            return []
        if not 0 <= int(profile_index) < len(self._profiles):
            self._env.refuse(
                self._logger, "profile-index", api, f"profile {profile_index} of an engine with {len(self._profiles)}"
            )
            return []
        return [Dims(s) for s in self._profiles[int(profile_index)][name]]

    @property
    def device_memory_size_v2(self) -> int:
        return int(self._meta["device_memory_size"])

    @property
    def device_memory_size(self) -> int:
        return int(self._meta["device_memory_size"])

    def create_execution_context(
        self, strategy: ExecutionContextAllocationStrategy = ExecutionContextAllocationStrategy.STATIC
    ) -> IExecutionContext:
        if not isinstance(strategy, ExecutionContextAllocationStrategy):
            raise TypeError(
                "create_execution_context(): incompatible function arguments; expected an "
                f"ExecutionContextAllocationStrategy, got {type(strategy).__name__}"
            )
        return IExecutionContext(self, strategy)

    def create_engine_inspector(self) -> IEngineInspector:
        return IEngineInspector(self)


class IEngineInspector:
    """The engine's layers as TensorRT reports them (tensorrt_layers), at the verbosity it was built with.

    Dimensions are those of `execution_context` when one is set and all its dynamic input shapes are
    (as in TensorRT, where the inspector reads a context's shapes), else -1 on the dynamic axes.
    """

    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self._context: IExecutionContext | None = None
        self.error_recorder = None

    @property
    def execution_context(self) -> IExecutionContext | None:
        return self._context

    @execution_context.setter
    def execution_context(self, context: IExecutionContext | None) -> None:
        if context is not None and (not isinstance(context, IExecutionContext) or context.engine is not self.engine):
            what = (
                type(context).__name__ if not isinstance(context, IExecutionContext) else "a context of another engine"
            )
            self.engine._env.refuse(
                self.engine._logger, "inspector-context", "IEngineInspector::setExecutionContext", f"got {what}"
            )
            return
        self._context = context

    def _shapes(self) -> dict[str, tuple[int, ...]] | None:
        c = self._context
        if c is None:
            return None
        shapes = {t.name: c._shapes.get(t.name, t.shape) for t in c.engine._tensors if t.mode is TensorIOMode.INPUT}
        return None if any(-1 in s for s in shapes.values()) else shapes

    def _format(self, fmt: LayerInformationFormat) -> str:
        if not isinstance(fmt, LayerInformationFormat):
            raise TypeError(f"expected a tensorrt.LayerInformationFormat, got {type(fmt).__name__}")
        return fmt.name

    def get_engine_information(self, format: LayerInformationFormat) -> str:
        e = self.engine
        sm = self.engine._env.dev.config.sm
        return tensorrt_layers.engine_information(e._meta, e._onnx, self._shapes(), sm, self._format(format))

    def get_layer_information(self, layer_index: int, format: LayerInformationFormat) -> str:
        import json

        fmt = self._format(format)
        info = json.loads(self.get_engine_information(LayerInformationFormat.JSON))["Layers"]
        if not 0 <= int(layer_index) < len(info):
            self.engine._env.refuse(
                self.engine._logger,
                "inspector-index",
                "IEngineInspector::getLayerInformation",
                f"layer {layer_index} of an engine with {len(info)} layers",
            )
            return ""
        x = info[int(layer_index)]
        return (
            json.dumps(x)
            if fmt == "JSON"
            else (x if isinstance(x, str) else f"Name: {x['Name']}, LayerType: {x['LayerType']}")
        )


class _Quiet(Exception):
    """Refuse without recording (the cause was recorded already); the last error is set."""

    def __init__(self, status: cudaError_t, message: str) -> None:
        self.status = status
        self.message = message


class IExecutionContext:
    """Shapes, addresses, profile and scratch memory of one engine execution; enqueues ONNX Runtime runs."""

    def __init__(self, engine: ICudaEngine, strategy: ExecutionContextAllocationStrategy) -> None:
        self.engine = engine
        self.name = ""
        self._env = engine._env
        self._logger = engine._logger
        self._strategy = strategy
        self._profile = 0  # profile 0 is active by default
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._scratch: tuple[int, int] | None = None
        self._ready_for_capture = False  # an eager enqueue happened since the last profile/shape change

    # -- helpers ----------------------------------------------------------------------------------

    def _refuse(self, rule: str, api: str, detail: str) -> bool:
        self._env.refuse(self._logger, rule, api, detail)
        return False

    def _tensor(self, name: str) -> _TensorInfo | None:
        return self.engine._by_name.get(name)

    def _inputs(self) -> list[_TensorInfo]:
        return [t for t in self.engine._tensors if t.mode is TensorIOMode.INPUT]

    def _outputs(self) -> list[_TensorInfo]:
        return [t for t in self.engine._tensors if t.mode is TensorIOMode.OUTPUT]

    def _profile_problem(self, t: _TensorInfo, shape: tuple[int, ...]) -> str:
        lo, _, hi = self.engine._profiles[self._profile][t.name]
        if len(shape) != len(lo):
            return f"shape {shape} of '{t.name}' has rank {len(shape)}, the engine's is {len(lo)}"
        if not all(a <= d <= b for a, d, b in zip(lo, shape, hi, strict=True)):
            return f"shape {shape} of '{t.name}' is outside profile {self._profile}'s range [min {lo}, max {hi}]"
        return ""

    def _input_shape(self, t: _TensorInfo) -> tuple[int, ...] | None:
        return t.shape if not t.dynamic else self._shapes.get(t.name)

    def _all_input_shapes(self) -> dict[str, tuple[int, ...]] | None:
        shapes = {t.name: self._input_shape(t) for t in self._inputs()}
        if any(s is None for s in shapes.values()):
            return None
        return shapes  # type: ignore[return-value]

    def _output_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        feeds = {n: (s, self.engine._by_name[n].np_dtype) for n, s in shapes.items()}
        return self.engine.program.output_shapes(feeds)

    # -- profile, shapes, memory, addresses -------------------------------------------------------

    @property
    def active_optimization_profile(self) -> int:
        return self._profile

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        api = "IExecutionContext::setOptimizationProfileAsync"
        n = self.engine.num_optimization_profiles
        if not 0 <= int(profile_index) < n:
            return self._refuse("profile-index", api, f"profile {profile_index} of an engine with {n} profile(s)")
        try:
            self._env.cuda.enqueue_target(int(stream_handle), api)
        except Fault as f:
            return self._refuse(f.rule, api, f.detail)
        if int(profile_index) != self._profile:
            self._profile = int(profile_index)
            self._shapes.clear()  # a profile change invalidates the dynamic input shapes
            self._ready_for_capture = False
        return True

    def set_input_shape(self, name: str, shape: Any) -> bool:
        api = "IExecutionContext::setInputShape"
        t = self._tensor(name)
        if t is None or t.mode is not TensorIOMode.INPUT:
            return self._refuse("unknown-tensor", api, f"'{name}' is not an input of this engine")
        s = _shape(shape)
        problem = self._profile_problem(t, s)
        if problem:
            return self._refuse("shape-outside-profile", api, problem)
        if self._shapes.get(name) != s:
            self._shapes[name] = s
            self._ready_for_capture = False
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        t = self._tensor(name)
        if t is None:
            self._refuse("unknown-tensor", "IExecutionContext::getTensorShape", f"'{name}' is not an I/O tensor")
            return Dims()
        if t.mode is TensorIOMode.INPUT:
            s = self._input_shape(t)
            return Dims(s if s is not None else t.shape)
        shapes = self._all_input_shapes()
        if shapes is None:
            return Dims(t.shape)
        return Dims(self._output_shapes(shapes)[name])

    def infer_shapes(self) -> list[str]:
        """Names of the dynamic inputs whose shapes are still unset."""
        return [t.name for t in self._inputs() if self._input_shape(t) is None]

    def set_device_memory(self, memory: int, size: int) -> None:
        api = "IExecutionContext::setDeviceMemoryV2"
        ptr, n = int(memory), int(size)
        need = self.engine.device_memory_size_v2
        if self._strategy is not ExecutionContextAllocationStrategy.USER_MANAGED:
            self._refuse("device-memory-invalid", api, f"the context was created with {self._strategy.name} allocation")
        elif ptr % ALIGN:
            self._refuse("alignment", api, f"scratch address {ptr:#x} is not {ALIGN}-byte aligned")
        elif n < need:
            self._refuse("device-memory-invalid", api, f"{n} bytes of scratch, the engine needs {need}")
        else:
            try:
                self._env.dev.memory.resolve(ptr, n, Kind.DEVICE, "scratch memory", "device-memory-invalid")
            except Fault as f:
                self._refuse(f.rule, api, f.detail)
                return
            self._scratch = (ptr, n)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        api = "IExecutionContext::setTensorAddress"
        if self._tensor(name) is None:
            return self._refuse("unknown-tensor", api, f"'{name}' is not an I/O tensor of this engine")
        ptr = int(memory)
        if ptr % ALIGN:
            return self._refuse(
                "alignment", api, f"address {ptr:#x} of '{name}' is not {ALIGN}-byte aligned (off by {ptr % ALIGN})"
            )
        self._addresses[name] = ptr
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    # -- execution ----------------------------------------------------------------------------------

    def execute_async_v3(self, stream_handle: int) -> bool:
        api = "IExecutionContext::enqueueV3"
        env = self._env
        with env.dev.lock:
            try:
                stream = env.cuda.enqueue_target(int(stream_handle), api)
                scratch = self._check_scratch()
                shapes = self._check_shapes()
                shapes.update(self._output_shapes(shapes))
                bindings = self._check_bindings(shapes, scratch)
                self._check_capture(stream)
                self._check_last_error()
            except Fault as f:
                return self._refuse(f.rule, api, f.detail)
            except _Quiet as q:
                env.dev.last_error[threading.get_ident()] = q.status
                env.emit(self._logger, ILogger.Severity.ERROR, f"{api}: {q.message}")
                return False
            stream.submit(self._execution(bindings, shapes, scratch))
            if stream.capture is None:
                self._ready_for_capture = True
            return True

    def _check_scratch(self) -> tuple[int, int] | None:
        if self._strategy is not ExecutionContextAllocationStrategy.USER_MANAGED:
            return None
        if self._scratch is None:
            raise Fault("device-memory-unset", "a USER_MANAGED context needs set_device_memory before enqueue")
        ptr, n = self._scratch
        self._env.dev.memory.resolve(ptr, n, Kind.DEVICE, "scratch memory", "device-memory-invalid")
        return self._scratch

    def _check_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for t in self._inputs():
            s = self._input_shape(t)
            if s is None:
                raise Fault("shape-unset", f"input '{t.name}' has dynamic shape {t.shape} and no set_input_shape")
            problem = self._profile_problem(t, s)
            if problem:
                raise Fault("shape-outside-profile", problem)
            shapes[t.name] = s
        return shapes

    def _check_bindings(
        self, shapes: dict[str, tuple[int, ...]], scratch: tuple[int, int] | None
    ) -> dict[str, tuple[int, int]]:
        """name -> (address, nbytes), each in one live device allocation, outputs overlapping nothing."""
        missing = [t.name for t in self.engine._tensors if t.name not in self._addresses]
        if missing:
            raise Fault("unset-address", f"no address set for tensor(s) {missing}")
        mem = self._env.dev.memory
        spans: dict[str, tuple[int, int]] = {}
        for t in self.engine._tensors:
            addr, shape = self._addresses[t.name], shapes[t.name]
            n = _volume(shape) * t.np_dtype.itemsize
            if addr % ALIGN:
                raise Fault("alignment", f"address {addr:#x} of '{t.name}' is not {ALIGN}-byte aligned")
            if n:
                mem.resolve(addr, n, Kind.DEVICE, f"tensor '{t.name}' {shape} {t.np_dtype.name}", "out-of-bounds")
            spans[t.name] = (addr, n)
        for t in self._outputs():
            a, n = spans[t.name]
            for other, (b, m) in spans.items():
                if other != t.name and n and m and a < b + m and b < a + n:
                    raise Fault("io-overlap", f"output '{t.name}' [{a:#x}, +{n}) overlaps '{other}' [{b:#x}, +{m})")
        if scratch is not None:
            s, k = scratch
            for name, (a, n) in spans.items():
                if n and a < s + k and s < a + n:
                    raise Fault("scratch-overlap", f"tensor '{name}' [{a:#x}, +{n}) overlaps scratch [{s:#x}, +{k})")
        return spans

    def _check_capture(self, stream: Stream) -> None:
        cap = stream.capture
        if cap is None:
            return
        if cap.invalidated:
            raise _Quiet(cudaError_t.cudaErrorStreamCaptureInvalidated, "the stream's capture was invalidated")
        if not self._ready_for_capture:
            # TensorRT's deferred set-up allocates and synchronizes: it breaks the capture.
            cap.invalidated = "TensorRT set-up inside the capture"
            self._env.dev.last_error[threading.get_ident()] = cudaError_t.cudaErrorStreamCaptureUnsupported
            raise Fault(
                "capture-before-enqueue",
                "enqueued inside a stream capture before any eager enqueue since the profile/shapes were set "
                "(call execute_async_v3 once outside the capture first)",
            )

    def _check_last_error(self) -> None:
        err = self._env.dev.last_error.get(threading.get_ident(), cudaError_t.cudaSuccess)
        if err != cudaError_t.cudaSuccess:
            raise Fault(
                "stale-error",
                f"CUDA error {cudaError_t(err).name} was pending after the launches (clear it with cudaGetLastError)",
            )

    def _execution(
        self, spans: dict[str, tuple[int, int]], shapes: dict[str, tuple[int, ...]], scratch: tuple[int, int] | None
    ) -> Op:
        """The op that runs the engine with what memory holds when the stream reaches it."""
        mem = self._env.dev.memory
        engine = self.engine
        inputs, outputs = self._inputs(), self._outputs()
        profile = self._profile

        def run() -> None:
            if scratch is not None:
                mem.resolve(scratch[0], scratch[1], Kind.DEVICE, "scratch memory", "out-of-bounds")
            feeds = {}
            for t in inputs:
                addr, n = spans[t.name]
                raw = mem.read(addr, n, Kind.DEVICE, f"input '{t.name}'") if n else np.zeros(0, np.uint8)
                feeds[t.name] = raw.view(t.np_dtype).reshape(shapes[t.name])
            results = engine.program.run(feeds)
            for t in outputs:
                value = results[t.name]
                if tuple(value.shape) != shapes[t.name]:
                    raise Fault(
                        "output-shape",
                        f"output '{t.name}' came out {tuple(value.shape)}, the context announced {shapes[t.name]}",
                    )
                addr, n = spans[t.name]
                if n:
                    mem.write(addr, np.asarray(value, t.np_dtype), Kind.DEVICE, f"output '{t.name}'")

        names = ", ".join(f"{t.name}{shapes[t.name]}" for t in inputs)
        return Op(f"execute_async_v3(profile {profile}: {names})", run)
