"""`cuda.bindings.runtime` (cuda-python 12.6) as far as the runtime and the build use it.

Calling conventions are cuda-python's: every function returns a tuple whose first item is a
`cudaError_t` (a call that yields nothing returns a 1-tuple, so `cudaGetLastError()` is `(err,)`),
values are None when the call failed, handles are small objects that `int()` turns into the raw
value, and every failing call (other than a not-ready answer) becomes the calling thread's "last
error" until `cudaGetLastError` reads it. What is not here is absent on purpose: code that calls it
gets an AttributeError rather than a silent stub.

Every refused call records a Violation on the device (rule ids in contract.RULES); faults found while
executing queued work raise ContractViolation from the synchronizing call.
"""

from __future__ import annotations

import enum
import functools
import threading
import types
from collections.abc import Callable
from typing import Any, TypeVar

from .contract import Fault
from .device import EmulatedDevice
from .memory import Kind
from .streams import Capture, Event, Graph, GraphExec, Op, Stream

_F = TypeVar("_F", bound=Callable[..., Any])


# Names are cuda-python's own: f5rt recognises a runtime status by its class name, `cudaError_t`.
class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidMemcpyDirection = 21
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorNotReady = 600
    cudaErrorIllegalAddress = 700
    cudaErrorMisalignedAddress = 716
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorStreamCaptureWrongThread = 908


_MESSAGES = {
    cudaError_t.cudaSuccess: "no error",
    cudaError_t.cudaErrorInvalidValue: "invalid argument",
    cudaError_t.cudaErrorMemoryAllocation: "out of memory",
    cudaError_t.cudaErrorInvalidMemcpyDirection: "invalid copy direction for memcpy",
    cudaError_t.cudaErrorInsufficientDriver: "CUDA driver version is insufficient for CUDA runtime version",
    cudaError_t.cudaErrorNoDevice: "no CUDA-capable device is detected",
    cudaError_t.cudaErrorInvalidDevice: "invalid device ordinal",
    cudaError_t.cudaErrorInvalidResourceHandle: "invalid resource handle",
    cudaError_t.cudaErrorIllegalState: "the operation cannot be performed in the present state",
    cudaError_t.cudaErrorNotReady: "device not ready",
    cudaError_t.cudaErrorIllegalAddress: "an illegal memory access was encountered",
    cudaError_t.cudaErrorMisalignedAddress: "misaligned address",
    cudaError_t.cudaErrorStreamCaptureUnsupported: "operation not permitted when stream is capturing",
    cudaError_t.cudaErrorStreamCaptureInvalidated: "operation failed due to a previous error during capture",
    cudaError_t.cudaErrorStreamCaptureWrongThread: "capture sequence ended from another thread",
}

# The status a refused call returns, by the rule it broke.
_STATUS = {
    "capture-prohibited": cudaError_t.cudaErrorStreamCaptureUnsupported,
    "capture-state": cudaError_t.cudaErrorIllegalState,
    "capture-wrong-thread": cudaError_t.cudaErrorStreamCaptureWrongThread,
    "invalid-handle": cudaError_t.cudaErrorInvalidResourceHandle,
    "invalid-device": cudaError_t.cudaErrorInvalidDevice,
    "out-of-memory": cudaError_t.cudaErrorMemoryAllocation,
    "event-not-ready": cudaError_t.cudaErrorNotReady,
}


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class cudaStreamCaptureStatus(enum.IntEnum):
    cudaStreamCaptureStatusNone = 0
    cudaStreamCaptureStatusActive = 1
    cudaStreamCaptureStatusInvalidated = 2


cudaStreamDefault = 0
cudaStreamNonBlocking = 1


class _Handle:
    """An opaque CUDA handle: `int(h)` is its raw value (what TensorRT is given for a stream)."""

    _label = "handle"

    def __init__(self, init_value: int = 0) -> None:
        self._value = int(init_value)

    def __int__(self) -> int:
        return self._value

    def getPtr(self) -> int:
        return self._value

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and int(other) == self._value  # type: ignore[call-overload]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))

    def __repr__(self) -> str:
        return f"<{self._label} {self._value:#x}>"


class cudaStream_t(_Handle):
    _label = "CUstream"


class cudaEvent_t(_Handle):
    _label = "CUevent"


class cudaGraph_t(_Handle):
    _label = "CUgraph"


class cudaGraphExec_t(_Handle):
    _label = "CUgraphExec"


class cudaDeviceProp:
    """The fields of cudaDeviceProp the runtime reads (name is NUL-padded bytes, as in cuda-python)."""

    def __init__(self, name: str = "", major: int = 0, minor: int = 0, total: int = 0) -> None:
        self.name = name.encode()[:255].ljust(256, b"\0")
        self.major = major
        self.minor = minor
        self.totalGlobalMem = total


class _Status(Exception):
    """Return this status without recording a violation (its cause was recorded, or it is no misuse)."""

    def __init__(self, status: cudaError_t) -> None:
        self.status = status


def _api(nvalues: int = 0, *, needs_driver: bool = True) -> Callable[[_F], _F]:
    """Wrap one runtime function: lock, driver check, Fault -> (status, None...) plus last error."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def call(self: CudaRuntime, *args: Any, **kwargs: Any) -> Any:
            with self.dev.lock:
                try:
                    if needs_driver:
                        self._check_driver()
                    return fn(self, *args, **kwargs)
                except Fault as f:
                    self.dev.record(f.rule, f"{fn.__name__}: {f.detail}")
                    status = _STATUS.get(f.rule, cudaError_t.cudaErrorInvalidValue)
                except _Status as s:
                    status = s.status
                if status is not cudaError_t.cudaErrorNotReady:
                    self.dev.last_error[threading.get_ident()] = status
                return (status, *([None] * nvalues))

        return call  # type: ignore[return-value]

    return wrap


class CudaRuntime:
    """The functions of the fake module, bound to one emulated device."""

    def __init__(self, dev: EmulatedDevice) -> None:
        self.dev = dev
        cfg = dev.config
        bindings_major = int(cfg.cuda_python_version.split(".")[0])
        driver_major = cfg.cuda_driver_version // 1000
        self._driver_ok = bindings_major <= driver_major and cfg.cuda_runtime_version // 1000 <= driver_major

    # -- helpers ----------------------------------------------------------------------------------

    def _check_driver(self) -> None:
        if not self._driver_ok:
            raise _Status(cudaError_t.cudaErrorInsufficientDriver)

    def _stream(self, handle: Any, call: str) -> Stream:
        raw = 0 if handle is None else int(handle)
        stream = self.dev.streams.get(raw)
        if stream is None:
            raise Fault("invalid-handle", f"{call}: {raw:#x} is not a stream")
        if stream.destroyed:
            raise Fault("invalid-handle", f"{call}: stream {raw:#x} was destroyed")
        return stream

    def _work_stream(self, handle: Any, call: str) -> Stream:
        """A stream that can take work: a stream whose capture is broken refuses everything."""
        stream = self._stream(handle, call)
        if stream.capture is not None and stream.capture.invalidated:
            raise _Status(cudaError_t.cudaErrorStreamCaptureInvalidated)
        return stream

    @staticmethod
    def _get(table: dict[int, Any], handle: Any, what: str, call: str) -> Any:
        raw = int(handle) if handle is not None else 0
        obj = table.get(raw)
        if obj is None:
            raise Fault("invalid-handle", f"{call}: {raw:#x} is not a {what}")
        if obj.destroyed:
            raise Fault("invalid-handle", f"{call}: {what} {raw:#x} was destroyed")
        return obj

    def _unsafe(self, call: str) -> None:
        """Refuse a call that is not allowed while a capture is active (and break our own capture).

        ThreadLocal captures forbid it on the capturing thread, Global ones on every thread, Relaxed
        ones nowhere. A capture that the calling thread owns is invalidated; another thread's Global
        capture only makes this call fail.
        """
        me = threading.get_ident()
        for stream, cap in self.dev.live_captures():
            mode = cudaStreamCaptureMode(cap.mode)
            mine = cap.thread == me
            if mode is cudaStreamCaptureMode.cudaStreamCaptureModeRelaxed:
                continue
            if mode is cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal and not mine:
                continue
            if mine:
                cap.invalidated = cap.invalidated or f"{call} during the capture"
            raise Fault(
                "capture-prohibited",
                f"{call} while stream {stream.handle:#x} is capturing ({mode.name}, "
                f"begun on {'this' if mine else 'another'} thread)",
            )

    def _drain_all(self) -> None:
        for stream in list(self.dev.streams.values()):
            if not stream.destroyed:
                stream.drain(self.dev.fault)

    # -- errors -----------------------------------------------------------------------------------

    def cudaGetErrorString(self, error: Any) -> tuple[cudaError_t, bytes]:
        try:
            return cudaError_t.cudaSuccess, _MESSAGES[cudaError_t(int(error))].encode()
        except (ValueError, KeyError):
            return cudaError_t.cudaSuccess, b"unrecognized error code"

    def cudaGetErrorName(self, error: Any) -> tuple[cudaError_t, bytes]:
        try:
            return cudaError_t.cudaSuccess, cudaError_t(int(error)).name.encode()
        except ValueError:
            return cudaError_t.cudaErrorInvalidValue, b"cudaErrorUnknown"

    def cudaGetLastError(self) -> tuple[cudaError_t]:
        """The calling thread's last error, reset to success (a 1-tuple, as in cuda-python)."""
        with self.dev.lock:
            return (self.dev.last_error.pop(threading.get_ident(), cudaError_t.cudaSuccess),)

    def cudaPeekAtLastError(self) -> tuple[cudaError_t]:
        with self.dev.lock:
            return (self.dev.last_error.get(threading.get_ident(), cudaError_t.cudaSuccess),)

    # -- device -----------------------------------------------------------------------------------

    @_api(1)
    def cudaGetDeviceCount(self) -> tuple[cudaError_t, int]:
        n = self.dev.config.device_count
        if n <= 0:
            raise _Status(cudaError_t.cudaErrorNoDevice)
        return cudaError_t.cudaSuccess, n

    def _device_index(self, device: int, call: str) -> int:
        n = self.dev.config.device_count
        if n <= 0:
            raise _Status(cudaError_t.cudaErrorNoDevice)
        if not 0 <= int(device) < n:
            raise Fault("invalid-device", f"{call}({device}): the emulated machine has {n} device(s)")
        return int(device)

    @_api()
    def cudaSetDevice(self, device: int) -> tuple[cudaError_t]:
        self.dev.current_device[threading.get_ident()] = self._device_index(device, "cudaSetDevice")
        return (cudaError_t.cudaSuccess,)

    @_api(1)
    def cudaGetDevice(self) -> tuple[cudaError_t, int]:
        self._device_index(0, "cudaGetDevice")
        return cudaError_t.cudaSuccess, self.dev.current_device.get(threading.get_ident(), 0)

    @_api(1)
    def cudaGetDeviceProperties(self, device: int) -> tuple[cudaError_t, cudaDeviceProp]:
        self._device_index(device, "cudaGetDeviceProperties")
        cfg = self.dev.config
        return cudaError_t.cudaSuccess, cudaDeviceProp(cfg.gpu_name, cfg.sm[0], cfg.sm[1], cfg.total_memory)

    @_api(1, needs_driver=False)
    def cudaRuntimeGetVersion(self) -> tuple[cudaError_t, int]:
        return cudaError_t.cudaSuccess, self.dev.config.cuda_runtime_version

    @_api(1, needs_driver=False)
    def cudaDriverGetVersion(self) -> tuple[cudaError_t, int]:
        return cudaError_t.cudaSuccess, self.dev.config.cuda_driver_version

    @_api()
    def cudaDeviceSynchronize(self) -> tuple[cudaError_t]:
        self._unsafe("cudaDeviceSynchronize")
        self._drain_all()
        return (cudaError_t.cudaSuccess,)

    # -- memory -----------------------------------------------------------------------------------

    @_api(1)
    def cudaMalloc(self, size: int) -> tuple[cudaError_t, int]:
        self._unsafe("cudaMalloc")
        if int(size) < 0:
            raise Fault("invalid-value", f"cudaMalloc({size})")
        if int(size) == 0:
            return cudaError_t.cudaSuccess, 0
        return cudaError_t.cudaSuccess, self.dev.memory.malloc(int(size)).base

    @_api()
    def cudaFree(self, devPtr: int) -> tuple[cudaError_t]:
        """cudaFree(0) only initialises the context; freeing synchronizes the device first, as CUDA does."""
        self._unsafe("cudaFree")
        ptr = int(devPtr)
        if ptr == 0:
            return (cudaError_t.cudaSuccess,)
        self._drain_all()
        self.dev.memory.free(ptr, Kind.DEVICE, "cudaFree")
        return (cudaError_t.cudaSuccess,)

    @_api(1)
    def cudaMallocHost(self, size: int) -> tuple[cudaError_t, int]:
        self._unsafe("cudaMallocHost")
        if int(size) < 0:
            raise Fault("invalid-value", f"cudaMallocHost({size})")
        if int(size) == 0:
            return cudaError_t.cudaSuccess, 0
        return cudaError_t.cudaSuccess, self.dev.memory.malloc_host(int(size)).base

    @_api()
    def cudaFreeHost(self, ptr: int) -> tuple[cudaError_t]:
        self._unsafe("cudaFreeHost")
        if int(ptr) == 0:
            return (cudaError_t.cudaSuccess,)
        self._drain_all()
        self.dev.memory.free(int(ptr), Kind.PINNED, "cudaFreeHost")
        return (cudaError_t.cudaSuccess,)

    def _copy_kinds(self, dst: int, src: int, kind: Any, call: str) -> tuple[Kind, Kind]:
        try:
            k = cudaMemcpyKind(int(kind))
        except ValueError:
            self.dev.record("invalid-value", f"{call}: {kind!r} is not a cudaMemcpyKind")
            raise _Status(cudaError_t.cudaErrorInvalidMemcpyDirection) from None
        if k is cudaMemcpyKind.cudaMemcpyDefault:  # inferred from the pointers (unified addressing)
            kinds = []
            for p in (dst, src):
                a = self.dev.memory.find(p)
                kinds.append(a.kind if a is not None else Kind.PINNED)
            return kinds[0], kinds[1]
        host, device = Kind.PINNED, Kind.DEVICE
        return {
            cudaMemcpyKind.cudaMemcpyHostToHost: (host, host),
            cudaMemcpyKind.cudaMemcpyHostToDevice: (device, host),
            cudaMemcpyKind.cudaMemcpyDeviceToHost: (host, device),
            cudaMemcpyKind.cudaMemcpyDeviceToDevice: (device, device),
        }[k]

    def _copy_op(self, dst: int, src: int, count: int, kind: Any, call: str) -> Op:
        """Check both ranges now (enqueue) and return the op that re-checks and copies when it runs."""
        dst, src, count = int(dst), int(src), int(count)
        if count < 0:
            raise Fault("invalid-value", f"{call}: negative count {count}")
        dkind, skind = self._copy_kinds(dst, src, kind, call)
        mem = self.dev.memory
        desc = f"{call}({dst:#x} <- {src:#x}, {count} bytes)"
        if count:
            mem.resolve(src, count, skind, f"{desc} source")
            mem.resolve(dst, count, dkind, f"{desc} destination")

        def run() -> None:
            if count:
                mem.write(dst, mem.read(src, count, skind, f"{desc} source"), dkind, f"{desc} destination")

        return Op(desc, run)

    @_api()
    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple[cudaError_t]:
        s = self._work_stream(stream, "cudaMemcpyAsync")
        s.submit(self._copy_op(dst, src, count, kind, "cudaMemcpyAsync"))
        return (cudaError_t.cudaSuccess,)

    @_api()
    def cudaMemcpy(self, dst: int, src: int, count: int, kind: Any) -> tuple[cudaError_t]:
        """Synchronous copy: runs at once (it orders only with the legacy stream, which nothing here uses)."""
        self._unsafe("cudaMemcpy")
        op = self._copy_op(dst, src, count, kind, "cudaMemcpy")
        try:
            op.run()
        except Fault as f:
            raise self.dev.fault(f, op.description) from None
        return (cudaError_t.cudaSuccess,)

    @_api()
    def cudaMemsetAsync(self, devPtr: int, value: int, count: int, stream: Any) -> tuple[cudaError_t]:
        s = self._work_stream(stream, "cudaMemsetAsync")
        ptr, n, v = int(devPtr), int(count), int(value)
        desc = f"cudaMemsetAsync({ptr:#x}, {v}, {n} bytes)"
        if n < 0:
            raise Fault("invalid-value", f"{desc}: negative count")
        mem = self.dev.memory
        if n:
            mem.resolve(ptr, n, Kind.DEVICE, desc)

        def run() -> None:
            if n:
                mem.fill(ptr, v, n, desc)

        s.submit(Op(desc, run))
        return (cudaError_t.cudaSuccess,)

    # -- streams ----------------------------------------------------------------------------------

    @_api(1)
    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[cudaError_t, cudaStream_t]:
        if int(flags) not in (cudaStreamDefault, cudaStreamNonBlocking):
            raise Fault("invalid-value", f"cudaStreamCreateWithFlags({flags}): unknown flags")
        handle = self.dev.new_handle()
        self.dev.streams[handle] = Stream(handle, int(flags))
        return cudaError_t.cudaSuccess, cudaStream_t(handle)

    def cudaStreamCreate(self) -> tuple[cudaError_t, cudaStream_t | None]:
        return self.cudaStreamCreateWithFlags(cudaStreamDefault)

    @_api()
    def cudaStreamSynchronize(self, stream: Any) -> tuple[cudaError_t]:
        s = self._stream(stream, "cudaStreamSynchronize")
        if s.capture is not None:
            s.capture.invalidated = s.capture.invalidated or "cudaStreamSynchronize of the capturing stream"
            raise Fault("capture-prohibited", f"cudaStreamSynchronize of stream {s.handle:#x} while it is capturing")
        self._unsafe("cudaStreamSynchronize")
        s.drain(self.dev.fault)
        return (cudaError_t.cudaSuccess,)

    @_api()
    def cudaStreamDestroy(self, stream: Any) -> tuple[cudaError_t]:
        s = self._stream(stream, "cudaStreamDestroy")
        if s.legacy:
            raise Fault("invalid-handle", "cudaStreamDestroy: the legacy stream cannot be destroyed")
        if s.capture is not None:
            raise Fault("capture-state", f"cudaStreamDestroy of stream {s.handle:#x} while it is capturing")
        s.destroyed = True  # its queued work still completes
        s.drain(self.dev.fault)
        return (cudaError_t.cudaSuccess,)

    # -- events -----------------------------------------------------------------------------------

    @_api(1)
    def cudaEventCreate(self) -> tuple[cudaError_t, cudaEvent_t]:
        handle = self.dev.new_handle()
        self.dev.events[handle] = Event(handle)
        return cudaError_t.cudaSuccess, cudaEvent_t(handle)

    @_api()
    def cudaEventRecord(self, event: Any, stream: Any) -> tuple[cudaError_t]:
        ev: Event = self._get(self.dev.events, event, "event", "cudaEventRecord")
        ev.record_on(self._work_stream(stream, "cudaEventRecord"))
        return (cudaError_t.cudaSuccess,)

    @_api()
    def cudaEventSynchronize(self, event: Any) -> tuple[cudaError_t]:
        ev: Event = self._get(self.dev.events, event, "event", "cudaEventSynchronize")
        self._unsafe("cudaEventSynchronize")
        if ev.pending and ev.stream is not None and ev.marker is not None:
            ev.stream.drain(self.dev.fault, until=ev.marker)
        return (cudaError_t.cudaSuccess,)

    @_api(1)
    def cudaEventElapsedTime(self, start: Any, end: Any) -> tuple[cudaError_t, float]:
        a: Event = self._get(self.dev.events, start, "event", "cudaEventElapsedTime")
        b: Event = self._get(self.dev.events, end, "event", "cudaEventElapsedTime")
        for ev in (a, b):
            if ev.marker is None:
                raise Fault("invalid-handle", f"cudaEventElapsedTime: event {ev.handle:#x} was never recorded")
            if ev.completed_at is None:
                raise Fault(
                    "event-not-ready",
                    f"cudaEventElapsedTime: event {ev.handle:#x} has not completed (synchronize on it first)",
                )
        assert a.completed_at is not None and b.completed_at is not None
        return cudaError_t.cudaSuccess, (b.completed_at - a.completed_at) * 1e3

    @_api()
    def cudaEventDestroy(self, event: Any) -> tuple[cudaError_t]:
        ev: Event = self._get(self.dev.events, event, "event", "cudaEventDestroy")
        ev.destroyed = True
        return (cudaError_t.cudaSuccess,)

    # -- capture and graphs ---------------------------------------------------------------------

    @_api()
    def cudaStreamBeginCapture(self, stream: Any, mode: Any) -> tuple[cudaError_t]:
        s = self._stream(stream, "cudaStreamBeginCapture")
        try:
            m = cudaStreamCaptureMode(int(mode))
        except ValueError:
            raise Fault("invalid-value", f"cudaStreamBeginCapture: {mode!r} is not a cudaStreamCaptureMode") from None
        if s.legacy:
            self.dev.record("capture-state", "cudaStreamBeginCapture: the legacy stream cannot be captured")
            raise _Status(cudaError_t.cudaErrorStreamCaptureUnsupported)
        if s.capture is not None:
            raise Fault("capture-state", f"cudaStreamBeginCapture: stream {s.handle:#x} is already capturing")
        s.capture = Capture(int(m), threading.get_ident())
        return (cudaError_t.cudaSuccess,)

    @_api(1)
    def cudaStreamEndCapture(self, stream: Any) -> tuple[cudaError_t, cudaGraph_t]:
        s = self._stream(stream, "cudaStreamEndCapture")
        cap = s.capture
        if cap is None:
            raise Fault("capture-state", f"cudaStreamEndCapture: stream {s.handle:#x} is not capturing")
        relaxed = cap.mode == cudaStreamCaptureMode.cudaStreamCaptureModeRelaxed
        if not relaxed and cap.thread != threading.get_ident():
            raise Fault("capture-wrong-thread", f"cudaStreamEndCapture of stream {s.handle:#x} from another thread")
        s.capture = None
        if cap.invalidated:
            raise _Status(cudaError_t.cudaErrorStreamCaptureInvalidated)
        handle = self.dev.new_handle()
        self.dev.graphs[handle] = Graph(handle, tuple(cap.ops))
        return cudaError_t.cudaSuccess, cudaGraph_t(handle)

    @_api(1)
    def cudaStreamIsCapturing(self, stream: Any) -> tuple[cudaError_t, cudaStreamCaptureStatus]:
        s = self._stream(stream, "cudaStreamIsCapturing")
        if s.capture is None:
            return cudaError_t.cudaSuccess, cudaStreamCaptureStatus.cudaStreamCaptureStatusNone
        if s.capture.invalidated:
            return cudaError_t.cudaSuccess, cudaStreamCaptureStatus.cudaStreamCaptureStatusInvalidated
        return cudaError_t.cudaSuccess, cudaStreamCaptureStatus.cudaStreamCaptureStatusActive

    @_api(1)
    def cudaGraphInstantiate(self, graph: Any, flags: int) -> tuple[cudaError_t, cudaGraphExec_t]:
        g: Graph = self._get(self.dev.graphs, graph, "graph", "cudaGraphInstantiate")
        if int(flags) < 0:
            raise Fault("invalid-value", f"cudaGraphInstantiate: flags {flags}")
        handle = self.dev.new_handle()
        self.dev.graph_execs[handle] = GraphExec(handle, g.ops)
        return cudaError_t.cudaSuccess, cudaGraphExec_t(handle)

    @_api()
    def cudaGraphUpload(self, graphExec: Any, stream: Any) -> tuple[cudaError_t]:
        self._get(self.dev.graph_execs, graphExec, "graph exec", "cudaGraphUpload")
        self._work_stream(stream, "cudaGraphUpload")
        return (cudaError_t.cudaSuccess,)

    @_api()
    def cudaGraphLaunch(self, graphExec: Any, stream: Any) -> tuple[cudaError_t]:
        ex: GraphExec = self._get(self.dev.graph_execs, graphExec, "graph exec", "cudaGraphLaunch")
        s = self._work_stream(stream, "cudaGraphLaunch")
        for op in ex.ops:
            s.submit(op)
        return (cudaError_t.cudaSuccess,)

    @_api()
    def cudaGraphExecDestroy(self, graphExec: Any) -> tuple[cudaError_t]:
        ex: GraphExec = self._get(self.dev.graph_execs, graphExec, "graph exec", "cudaGraphExecDestroy")
        ex.destroyed = True
        return (cudaError_t.cudaSuccess,)

    @_api()
    def cudaGraphDestroy(self, graph: Any) -> tuple[cudaError_t]:
        g: Graph = self._get(self.dev.graphs, graph, "graph", "cudaGraphDestroy")
        g.destroyed = True
        return (cudaError_t.cudaSuccess,)

    # -- used by the TensorRT facade ------------------------------------------------------------

    def enqueue_target(self, stream_handle: int, call: str) -> Stream:
        """The live stream TensorRT was given as an int (Fault: invalid-handle)."""
        return self._stream(stream_handle, call)


_TYPES: tuple[type, ...] = (
    cudaError_t,
    cudaMemcpyKind,
    cudaStreamCaptureMode,
    cudaStreamCaptureStatus,
    cudaStream_t,
    cudaEvent_t,
    cudaGraph_t,
    cudaGraphExec_t,
    cudaDeviceProp,
)


def build_module(dev: EmulatedDevice) -> tuple[types.ModuleType, CudaRuntime]:
    """The `cuda.bindings.runtime` module object for `dev`, and the runtime behind it."""
    api = CudaRuntime(dev)
    mod = types.ModuleType("cuda.bindings.runtime", __doc__)
    for t in _TYPES:
        setattr(mod, t.__name__, t)
    mod.cudaStreamDefault = cudaStreamDefault  # type: ignore[attr-defined]
    mod.cudaStreamNonBlocking = cudaStreamNonBlocking  # type: ignore[attr-defined]
    for name in dir(CudaRuntime):
        if name.startswith("cuda"):
            setattr(mod, name, getattr(api, name))
    return mod, api
