"""An NVRTC-compiled CUDA kernel doing the step graph's CFG + Euler update without the DiT.

It stands in for the TensorRT step engine on a GPU without TensorRT: the runtime's `BucketRunner`
enqueues it through the very same capture/replay, copy and address code, and `cfg_euler_reference`
(numpy, operation by operation) says what it must compute. Test code: never shipped in the runtime.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from f5rt.backends.trt.cuda import CudaError, Owned, Stream, check, device_info, init_device
from f5rt.errors import BackendUnavailable


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise BackendUnavailable(f"{name} is not importable ({e})") from e


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


class CfgEulerKernel(Owned):
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
