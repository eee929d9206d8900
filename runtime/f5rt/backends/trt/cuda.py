"""A thin checked layer over cuda-python's runtime API: streams, buffers, events and CUDA graphs.

Why a layer at all: every cuda.bindings call returns a status tuple that is easy to ignore, and its
handles must be released in the right order. Each class here owns exactly one CUDA object, frees it
in `close()` (or at the end of a `with` block), and every call goes through `check`, which raises
`CudaError` naming the call that failed.

cuda-python is imported lazily: importing this module never needs it, a GPU, or a driver. It needs
`cuda.bindings` (cuda-python >= 12.6.1) whose major version the driver supports: cuda-python 13 needs
a CUDA 13 driver, which JetPack 6 (CUDA 12.6) lacks, so the Jetson extra pins 12.6.x.
"""

from __future__ import annotations

import ctypes
import importlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from f5rt.errors import BackendUnavailable

CUDA_HINT = (
    "install cuda-python for this driver (JetPack 6: `pip install 'cuda-python>=12.6.1,<13'`, i.e. 'f5rt[jetson]')"
)


class CudaError(RuntimeError):
    """A CUDA runtime, driver or NVRTC call returned an error status."""

    def __init__(self, call: str, status: Any, detail: str = "") -> None:
        self.call = call
        self.status = status
        self.code = int(status)
        name = getattr(status, "name", str(status))
        super().__init__(f"{call} failed: {name} ({self.code}){': ' + detail if detail else ''}")


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise BackendUnavailable(f"{name} is not importable ({e}); {CUDA_HINT}") from e


def _runtime() -> ModuleType:
    return _module("cuda.bindings.runtime")


def _describe(status: Any) -> str:
    """The runtime's one-line description of an error (runtime errors only; others have just a name)."""
    if type(status).__name__ != "cudaError_t":
        return ""
    try:
        err, text = _runtime().cudaGetErrorString(status)
    except Exception:  # describing an error must never hide it
        return ""
    return text.decode(errors="replace") if int(err) == 0 and isinstance(text, bytes) else ""


def check(result: Any, call: str) -> Any:
    """Unwrap a cuda.bindings result `(status, *values)` (or a bare status); raise CudaError on failure.

    Returns None, the single value, or a tuple of values. cudaSuccess, CUDA_SUCCESS and NVRTC_SUCCESS
    are all 0, so one rule serves the runtime, the driver and NVRTC.
    """
    status, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if int(status) != 0:
        raise CudaError(call, status, _describe(status))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def gpu_available() -> bool:
    """True when cuda-python imports and the runtime sees at least one GPU (never raises)."""
    try:
        err, count = _runtime().cudaGetDeviceCount()
    except Exception:
        return False
    return int(err) == 0 and int(count) > 0


def bindings_version() -> str:
    """cuda-python's version, from `cuda.bindings` (absent before 12.6.1: the old `cuda.cudart` layout)."""
    try:
        bindings = importlib.import_module("cuda.bindings")
    except ImportError as e:
        raise BackendUnavailable(
            f"cuda.bindings is not importable ({e}): cuda-python >= 12.6.1 needed; {CUDA_HINT}"
        ) from e
    version = getattr(bindings, "__version__", None)
    if version is None:
        from importlib import metadata

        try:
            version = metadata.version("cuda-bindings")
        except metadata.PackageNotFoundError:
            version = metadata.version("cuda-python")
    return str(version)


def check_driver_supports_bindings(bindings: str, driver: int) -> None:
    """Refuse cuda-python whose major CUDA version is newer than the driver's (13.x on a 12.6 driver).

    `driver` is cudaDriverGetVersion's value (12060 = 12.6; 0 = no driver). Pure, so it is tested on the CPU.
    """
    try:
        major = int(bindings.split(".")[0])
    except ValueError:
        return
    if driver and major > driver // 1000:
        raise BackendUnavailable(
            f"cuda-python {bindings} needs a CUDA {major} driver, this driver supports CUDA {_cuda_version(driver)}; "
            f"{CUDA_HINT}"
        )


def require_gpu(device: int = 0) -> None:
    """Raise BackendUnavailable saying why `device` cannot be used (no cuda-python, a driver too old for
    the installed bindings, no driver or no GPU)."""
    rt = _runtime()
    err, driver = rt.cudaDriverGetVersion()  # 0 (or an error) without a driver: the count says why below
    check_driver_supports_bindings(bindings_version(), int(driver) if int(err) == 0 else 0)
    try:
        count = int(check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))
    except CudaError as e:
        clear_last_error()
        raise BackendUnavailable(f"no usable CUDA GPU: {e}") from e
    if device >= count:
        raise BackendUnavailable(f"CUDA device {device} requested but only {count} GPU(s) are visible")


def clear_last_error() -> int:
    """Reset the runtime's last error (and return it): a failed call leaves it set, and TensorRT checks
    it after its own launches, so a stale error would fail the next enqueue (trtexec clears it too)."""
    result = _runtime().cudaGetLastError()  # cuda-python returns (last_error,): the status is the answer
    return int(result[0] if isinstance(result, tuple) else result)


def set_device(device: int) -> None:
    """Make `device` current for the calling thread (cheap: no synchronisation)."""
    check(_runtime().cudaSetDevice(device), "cudaSetDevice")


def init_device(device: int) -> None:
    """set_device, and create the primary context now rather than inside the first timed call."""
    set_device(device)
    check(_runtime().cudaFree(0), "cudaFree(0)")


@dataclass(frozen=True)
class DeviceInfo:
    """What the manifest records about the GPU an engine was built on (engines are SM-specific)."""

    index: int
    name: str
    sm: str  # compute capability, "8.7" for Orin
    cuda_runtime: str  # "12.6"
    cuda_driver: str
    total_memory: int


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def device_info(device: int = 0) -> DeviceInfo:
    rt = _runtime()
    prop = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    raw = prop.name
    name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return DeviceInfo(
        index=device,
        name=name.strip(),
        sm=f"{prop.major}.{prop.minor}",
        cuda_runtime=_cuda_version(int(check(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))),
        cuda_driver=_cuda_version(int(check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion"))),
        total_memory=int(prop.totalGlobalMem),
    )


class Owned:
    """One CUDA object with an explicit lifetime: `close()` is idempotent, `with` closes it."""

    _closed = False

    def _release(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    @property
    def closed(self) -> bool:
        return self._closed

    def _alive(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} used after close()")

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Stream(Owned):
    """A non-blocking stream: it never synchronises with the legacy default stream."""

    def __init__(self) -> None:
        rt = _runtime()
        self._handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    @property
    def handle(self) -> Any:
        """The cudaStream_t, for cuda.bindings calls."""
        self._alive()
        return self._handle

    @property
    def ptr(self) -> int:
        """The stream as an integer, for TensorRT's execute_async_v3 and set_optimization_profile_async."""
        return int(self.handle)

    def synchronize(self) -> None:
        check(_runtime().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def _release(self) -> None:
        check(_runtime().cudaStreamDestroy(self._handle), "cudaStreamDestroy")


class _Memory(Owned):
    """An allocation of `nbytes` with a checked pointer and bounds (device or pinned host)."""

    _alloc_call = ""

    def __init__(self, nbytes: int) -> None:
        if nbytes < 0:
            raise ValueError(f"{type(self).__name__} size must be >= 0, got {nbytes}")
        self.nbytes = int(nbytes)
        alloc = getattr(_runtime(), self._alloc_call)
        self._ptr = int(check(alloc(max(self.nbytes, 1)), f"{self._alloc_call}({self.nbytes})"))

    @property
    def ptr(self) -> int:
        self._alive()
        return self._ptr

    def _range(self, offset: int, nbytes: int) -> None:
        if offset < 0 or nbytes < 0 or offset + nbytes > self.nbytes:
            raise ValueError(f"range [{offset}, {offset + nbytes}) outside a {self.nbytes}-byte buffer")


class DeviceBuffer(_Memory):
    """`nbytes` of device memory (cudaMalloc: 256-byte aligned, as TensorRT wants)."""

    _alloc_call = "cudaMalloc"

    def upload(self, host: PinnedBuffer, stream: Stream, offset: int = 0, nbytes: int | None = None) -> None:
        """Copy host[offset:offset+nbytes] to the same offsets here (mirror layout), asynchronously."""
        n = self.nbytes - offset if nbytes is None else nbytes
        self._range(offset, n)
        host._range(offset, n)
        memcpy_async(self.ptr + offset, host.ptr + offset, n, "htod", stream)

    def download(self, host: PinnedBuffer, stream: Stream, offset: int = 0, nbytes: int | None = None) -> None:
        """Copy self[offset:offset+nbytes] to the same offsets of `host`, asynchronously."""
        n = self.nbytes - offset if nbytes is None else nbytes
        self._range(offset, n)
        host._range(offset, n)
        memcpy_async(host.ptr + offset, self.ptr + offset, n, "dtoh", stream)

    def memset(self, stream: Stream, value: int = 0) -> None:
        check(_runtime().cudaMemsetAsync(self.ptr, value, self.nbytes, stream.handle), "cudaMemsetAsync")

    def _release(self) -> None:
        check(_runtime().cudaFree(self._ptr), "cudaFree")


class PinnedBuffer(_Memory):
    """Page-locked host memory (cudaMallocHost): async copies from it really are asynchronous.

    `view()` returns numpy arrays over this memory; they are invalid once the buffer is closed.
    """

    _alloc_call = "cudaMallocHost"

    def view(self, dtype: Any, shape: Sequence[int], offset: int = 0) -> np.ndarray:
        dt = np.dtype(dtype)
        count = math.prod(shape)
        self._range(offset, count * dt.itemsize)
        raw = (ctypes.c_ubyte * (count * dt.itemsize)).from_address(self.ptr + offset)
        return np.frombuffer(raw, dtype=dt, count=count).reshape(tuple(shape))

    def _release(self) -> None:
        check(_runtime().cudaFreeHost(self._ptr), "cudaFreeHost")


def memcpy_async(dst: int, src: int, nbytes: int, kind: str, stream: Stream) -> None:
    """cudaMemcpyAsync between raw addresses; kind is 'htod', 'dtoh' or 'dtod'."""
    rt = _runtime()
    kinds = {
        "htod": rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
        "dtoh": rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        "dtod": rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
    }
    if nbytes:
        check(rt.cudaMemcpyAsync(dst, src, nbytes, kinds[kind], stream.handle), f"cudaMemcpyAsync({kind})")


class Event(Owned):
    """A timing event: record it on a stream, read the milliseconds between two once both completed."""

    def __init__(self) -> None:
        self._handle = check(_runtime().cudaEventCreate(), "cudaEventCreate")

    @property
    def handle(self) -> Any:
        self._alive()
        return self._handle

    def record(self, stream: Stream) -> None:
        check(_runtime().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def synchronize(self) -> None:
        check(_runtime().cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def elapsed_ms(self, end: Event) -> float:
        """Milliseconds from this event to `end` (both recorded and complete)."""
        return float(check(_runtime().cudaEventElapsedTime(self.handle, end.handle), "cudaEventElapsedTime"))

    def _release(self) -> None:
        check(_runtime().cudaEventDestroy(self._handle), "cudaEventDestroy")


class StageTimer(Owned):
    """Named start/end event pairs, created once and reused, so timing a request allocates nothing."""

    def __init__(self) -> None:
        self._pairs: dict[str, tuple[Event, Event]] = {}
        self._recorded: list[str] = []

    @contextmanager
    def stage(self, name: str, stream: Stream) -> Iterator[None]:
        self._alive()
        if name not in self._pairs:
            self._pairs[name] = (Event(), Event())
        start, end = self._pairs[name]
        start.record(stream)
        yield
        end.record(stream)
        if name not in self._recorded:
            self._recorded.append(name)

    def reset(self) -> None:
        self._recorded = []

    def results(self) -> dict[str, float]:
        """Milliseconds per stage recorded since reset(); waits for the stages' end events."""
        out: dict[str, float] = {}
        for name in self._recorded:
            start, end = self._pairs[name]
            end.synchronize()
            out[name] = start.elapsed_ms(end)
        return out

    def _release(self) -> None:
        first: BaseException | None = None
        for pair in self._pairs.values():
            for ev in pair:
                try:
                    ev.close()
                except CudaError as e:
                    first = first or e
        self._pairs.clear()
        if first is not None:
            raise first


class GraphCapture(Owned):
    """One CUDA graph recorded from a stream and instantiated once; `launch` replays it.

    Build it with `GraphCapture.record(stream, enqueue)`: everything `enqueue()` puts on `stream` is
    captured (nothing runs), then instantiated and uploaded. The graph freezes kernel arguments and
    addresses, so replays read whatever the captured buffers hold at launch time: refill them, launch.
    """

    def __init__(self, graph: Any, graph_exec: Any, description: str = "") -> None:
        self._graph = graph
        self._exec = graph_exec
        self.description = description

    @classmethod
    def record(cls, stream: Stream, enqueue: Callable[[], None], description: str = "") -> GraphCapture:
        """Capture `enqueue()`; on any failure the stream leaves capture mode and the last error is cleared."""
        rt = _runtime()
        # Thread-local mode: other threads' unsafe calls (cudaMalloc...) do not invalidate our capture.
        check(
            rt.cudaStreamBeginCapture(stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
            "cudaStreamBeginCapture",
        )
        try:
            enqueue()
        except BaseException:
            # Leave capture mode whatever happened, so the stream stays usable; keep the first error.
            err, graph = rt.cudaStreamEndCapture(stream.handle)
            if int(err) == 0 and graph is not None:
                rt.cudaGraphDestroy(graph)
            clear_last_error()
            raise
        try:
            graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        except CudaError:
            clear_last_error()
            raise
        try:
            graph_exec = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except CudaError:
            rt.cudaGraphDestroy(graph)
            clear_last_error()
            raise
        captured = cls(graph, graph_exec, description)
        try:
            check(rt.cudaGraphUpload(graph_exec, stream.handle), "cudaGraphUpload")
        except CudaError:
            captured.close()
            clear_last_error()
            raise
        return captured

    def launch(self, stream: Stream) -> None:
        self._alive()
        check(_runtime().cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")

    def _release(self) -> None:
        rt = _runtime()
        check(rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
        check(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy")


def close_all(resources: Sequence[Any]) -> None:
    """Close each resource in order even if some fail; re-raise the first failure at the end."""
    first: BaseException | None = None
    for res in resources:
        if res is None:
            continue
        try:
            res.close()
        except Exception as e:  # keep releasing the rest
            first = first or e
    if first is not None:
        raise first
