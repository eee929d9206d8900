"""A small typed layer over cuda-python's runtime API: streams, buffers, events and CUDA graphs.

Why a layer at all: every cuda.bindings call returns a status tuple that is easy to ignore, and its
handles must be released in the right order. Each class here owns exactly one CUDA object, frees it
in `close()` (or at the end of a `with` block), and every call goes through `check`, which raises
`CudaError` naming the call that failed. The TensorRT backend and the GPU test drive the very same
`GraphCapture` path: the NFE step enqueues of one request are recorded once into a CUDA graph and
replayed, so the host issues one launch per request instead of NFE.

cuda-python is imported lazily: importing this module never needs it, a GPU, or a driver.

    python -m f5rt.backends.cudagraph --bench     # replay vs eager launch for NFE 7/16/32 (needs a GPU)
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from f5rt.errors import BackendUnavailable

CUDA_HINT = "install cuda-python (`pip install 'f5rt[cuda]'`; JetPack 6: cuda-python 12.6)"


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


def require_gpu(device: int = 0) -> None:
    """Raise BackendUnavailable saying why `device` cannot be used (no cuda-python, driver or GPU)."""
    rt = _runtime()
    try:
        count = int(check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))
    except CudaError as e:
        raise BackendUnavailable(f"no usable CUDA GPU: {e}") from e
    if device >= count:
        raise BackendUnavailable(f"CUDA device {device} requested but only {count} GPU(s) are visible")


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


class _Owned:
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


class Stream(_Owned):
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


class _Memory(_Owned):
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


class Event(_Owned):
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


class StageTimer(_Owned):
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


class GraphCapture(_Owned):
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
            raise
        graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        try:
            graph_exec = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except CudaError:
            rt.cudaGraphDestroy(graph)
            raise
        captured = cls(graph, graph_exec, description)
        try:
            check(rt.cudaGraphUpload(graph_exec, stream.handle), "cudaGraphUpload")
        except CudaError:
            captured.close()
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


# --- the per-step address plan shared by every NFE loop ------------------------------------------


@dataclass(frozen=True)
class StepAddresses:
    """Device addresses one Euler step reads and writes: x ping-pongs, t/dt move to the step's slot."""

    step: int
    x_in: int
    x_out: int
    t: int
    dt: int


def plan_step_addresses(
    nfe: int, x_a: int, x_b: int, t_base: int, dt_base: int, slot_bytes: int
) -> list[StepAddresses]:
    """Step i reads x_a (even i) or x_b (odd i) and writes the other; its t/dt are slot i of (nfe_max, B).

    Pure arithmetic, so the address plan of a captured graph is checked without a GPU.
    """
    if nfe <= 0:
        raise ValueError(f"nfe must be positive, got {nfe}")
    if x_a == x_b:
        raise ValueError("x ping-pong buffers must differ")
    steps = []
    for i in range(nfe):
        src, dst = (x_a, x_b) if i % 2 == 0 else (x_b, x_a)
        steps.append(StepAddresses(i, src, dst, t_base + i * slot_bytes, dt_base + i * slot_bytes))
    return steps


def result_address(nfe: int, x_a: int, x_b: int) -> int:
    """Where x lands after `nfe` steps starting from x_a."""
    return x_a if nfe % 2 == 0 else x_b


# --- an NVRTC test kernel: the step graph's CFG + Euler update without the DiT ---------------------

CFG_EULER_SOURCE = r"""
extern "C" __global__ void cfg_euler(const float* __restrict__ x, float* __restrict__ x_next,
                                     const float* __restrict__ cond, const bool* __restrict__ mask,
                                     const float* __restrict__ t, const float* __restrict__ dt,
                                     const float* __restrict__ cfg, int frames, int channels, int total)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int row = i / channels;          // (b, n)
    int b = row / frames;
    float tv = t[b];
    float xv = x[i];
    float vc = cond[i] - xv * tv;                 // stand-in conditional velocity
    float vu = 0.5f * xv * (1.0f - tv);           // stand-in unconditional velocity
    float v = vc + (vc - vu) * cfg[b];            // classifier-free guidance, as the step graph does
    x_next[i] = mask[row] ? xv + dt[b] * v : xv;  // Euler; padded frames stay put
}
"""


def cfg_euler_reference(
    x0: np.ndarray, cond: np.ndarray, mask: np.ndarray, t: np.ndarray, dt: np.ndarray, cfg: np.ndarray
) -> np.ndarray:
    """The kernel's loop in float32 numpy, operation by operation (the kernel is built with --fmad=false)."""
    x = x0.astype(np.float32, copy=True)
    c = cond.astype(np.float32)
    g = cfg.astype(np.float32)[:, None, None]
    m = mask[:, :, None]
    for i in range(len(t)):
        tv, dv = np.float32(t[i]), np.float32(dt[i])
        vc = c - x * tv
        vu = np.float32(0.5) * x * (np.float32(1.0) - tv)
        v = vc + (vc - vu) * g
        x = np.where(m, x + dv * v, x).astype(np.float32)
    return x


class CfgEulerKernel(_Owned):
    """The `cfg_euler` kernel compiled with NVRTC for the current GPU and loaded as a module."""

    BLOCK = 256

    def __init__(self, device: int = 0) -> None:
        nvrtc = _module("cuda.bindings.nvrtc")
        drv = _module("cuda.bindings.driver")
        info = device_info(device)
        image = self._compile(nvrtc, info.sm.replace(".", ""))
        init_device(device)  # the runtime's primary context is what the driver calls below use
        self._drv = drv
        self._module = check(drv.cuModuleLoadData(image), "cuModuleLoadData")
        try:
            self._func = check(drv.cuModuleGetFunction(self._module, b"cfg_euler"), "cuModuleGetFunction")
        except CudaError:
            drv.cuModuleUnload(self._module)
            raise

    @staticmethod
    def _compile(nvrtc: ModuleType, arch: str) -> bytes:
        """CUBIN for sm_XY; PTX for compute_XY when this NVRTC does not know the real architecture."""
        log = ""
        for target, kind in ((f"sm_{arch}", "CUBIN"), (f"compute_{arch}", "PTX")):
            prog = check(
                nvrtc.nvrtcCreateProgram(CFG_EULER_SOURCE.encode(), b"cfg_euler.cu", 0, [], []), "nvrtcCreateProgram"
            )
            try:
                opts = [f"--gpu-architecture={target}".encode(), b"--fmad=false"]
                if int(nvrtc.nvrtcCompileProgram(prog, len(opts), opts)[0]) == 0:
                    size = int(check(getattr(nvrtc, f"nvrtcGet{kind}Size")(prog), f"nvrtcGet{kind}Size"))
                    image = b" " * size
                    check(getattr(nvrtc, f"nvrtcGet{kind}")(prog, image), f"nvrtcGet{kind}")
                    return image
                size = int(check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize"))
                buf = b" " * size
                check(nvrtc.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
                log = buf.decode(errors="replace").strip(" \0\n")
            finally:
                nvrtc.nvrtcDestroyProgram(prog)
        raise RuntimeError(f"NVRTC could not compile cfg_euler for sm_{arch}: {log}")

    def launch(
        self,
        stream: Stream,
        *,
        x: int,
        x_next: int,
        cond: int,
        mask: int,
        t: int,
        dt: int,
        cfg: int,
        batch: int,
        frames: int,
        channels: int,
    ) -> None:
        self._alive()
        total = batch * frames * channels
        values = [np.array([a], dtype=np.uint64) for a in (x, x_next, cond, mask, t, dt, cfg)]
        values += [np.array([v], dtype=np.int32) for v in (frames, channels, total)]
        # kernelParams: an array of pointers to each argument's value (copied at launch/capture).
        params = np.array([v.ctypes.data for v in values], dtype=np.uint64)
        grid = (total + self.BLOCK - 1) // self.BLOCK
        check(
            self._drv.cuLaunchKernel(self._func, grid, 1, 1, self.BLOCK, 1, 1, 0, stream.handle, params.ctypes.data, 0),
            "cuLaunchKernel(cfg_euler)",
        )

    def _release(self) -> None:
        check(self._drv.cuModuleUnload(self._module), "cuModuleUnload")


# --- bench ----------------------------------------------------------------------------------------


def bench(
    frames: int = 1024, batch: int = 2, nfes: Sequence[int] = (7, 16, 32), repeat: int = 50
) -> list[dict[str, Any]]:
    """Per request: eager per-step launches vs one graph replay, through the TensorRT backend's runner."""
    from f5rt.backends.base import SampleJob
    from f5rt.backends.tensorrt import BucketRunner, plan_step_arena
    from f5rt.buckets import Bucket

    require_gpu(0)
    init_device(0)
    bucket = Bucket(frames, batch)
    channels, text_dim = 100, 8
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    with Stream() as stream, CfgEulerKernel() as kernel, StageTimer() as timer:

        def enqueue(b: dict[str, int], s: Stream) -> None:
            kernel.launch(
                s,
                x=b["x"],
                x_next=b["x_next"],
                cond=b["cond"],
                mask=b["mask"],
                t=b["t"],
                dt=b["dt"],
                cfg=b["cfg"],
                batch=batch,
                frames=frames,
                channels=channels,
            )

        plan = plan_step_arena(bucket, channels, text_dim, max(nfes))
        for use_graph in (False, True):
            with BucketRunner(bucket, plan, stream, enqueue, timer=timer, cuda_graphs=use_graph) as runner:
                for nfe in nfes:
                    t = np.linspace(0.0, 1.0, nfe + 1, dtype=np.float32)
                    job = SampleJob(
                        bucket=bucket,
                        x0=rng.standard_normal((batch, frames, channels), dtype=np.float32),
                        cond=rng.standard_normal((batch, frames, channels), dtype=np.float32),
                        text_cond=np.zeros((batch, frames, text_dim), np.float32),
                        text_uncond=np.zeros((batch, frames, text_dim), np.float32),
                        mask=np.ones((batch, frames), dtype=bool),
                        t=t[:-1],
                        dt=np.diff(t),
                        cfg=np.full((batch,), 2.0, np.float32),
                    )
                    runner.prepare(nfe)
                    runner.sample(job)  # warm-up
                    loop_ms, wall_ms = [], []
                    for _ in range(repeat):
                        t0 = time.perf_counter()
                        runner.sample(job)
                        wall_ms.append((time.perf_counter() - t0) * 1e3)
                        loop_ms.append(timer.results()["steps"])
                    rows.append(
                        {
                            "mode": "graph" if use_graph else "eager",
                            "nfe": nfe,
                            "frames": frames,
                            "batch": batch,
                            "loop_ms": float(np.median(loop_ms)),
                            "request_ms": float(np.median(wall_ms)),
                            "per_step_us": float(np.median(loop_ms)) * 1e3 / nfe,
                        }
                    )
    return rows


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m f5rt.backends.cudagraph", description=__doc__.splitlines()[0])
    p.add_argument("--bench", action="store_true", help="replay vs eager launch for NFE 7/16/32")
    p.add_argument("--frames", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--nfe", type=int, nargs="+", default=[7, 16, 32])
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = p.parse_args(argv)
    if not args.bench:
        info = device_info() if gpu_available() else None
        print(f"GPU: {info}" if info else "no usable CUDA GPU")
        return 0
    try:
        rows = bench(args.frames, args.batch, args.nfe, args.repeat)
    except BackendUnavailable as e:
        print(f"cudagraph bench: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    info = device_info()
    print(
        f"{info.name} (SM {info.sm}, CUDA {info.cuda_runtime}); cfg_euler kernel, bucket n{args.frames}_b{args.batch}"
    )
    print(f"{'mode':6} {'nfe':>4} {'loop ms':>9} {'per step us':>12} {'request ms':>11}")
    for r in rows:
        print(f"{r['mode']:6} {r['nfe']:>4} {r['loop_ms']:>9.3f} {r['per_step_us']:>12.1f} {r['request_ms']:>11.3f}")
    return 0


if __name__ == "__main__":
    from f5rt.backends.cudagraph import _main as _entry  # one module instance, not __main__ + package

    sys.exit(_entry())
