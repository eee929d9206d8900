"""Putting the fake `tensorrt` and `cuda.bindings.runtime` into sys.modules, and taking them out again.

Why sys.modules and nothing else: the code under test imports both modules with
`importlib.import_module` at each call, so substituting the entries is enough and no code path is
patched. While installed, every `tensorrt*` and `cuda*` entry that was there (the real cuda-python,
say) is set aside, and the fake `cuda.bindings` is not a package, so an import of any other
submodule (`cuda.bindings.driver`, `cuda.bindings.nvrtc`) fails instead of reaching the real one.
`uninstall` puts back exactly the entries that were there before.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

from .cuda_runtime import build_module as build_cuda_runtime
from .device import EmulatedDevice, EmulatorConfig
from .tensorrt_api import build_module as build_tensorrt

_PREFIXES = ("tensorrt", "cuda")
_saved: dict[str, types.ModuleType | None] | None = None
_device: EmulatedDevice | None = None


def _ours(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _PREFIXES)


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())


def _modules(device: EmulatedDevice) -> dict[str, types.ModuleType]:
    cfg = device.config
    runtime, api = build_cuda_runtime(device)
    cuda = types.ModuleType("cuda", "emulated cuda-python namespace")
    mods = {"cuda": cuda, "tensorrt": build_tensorrt(device, api)}
    if _version_tuple(cfg.cuda_python_version) >= (12, 6, 1):  # cuda.bindings appeared in cuda-python 12.6.1
        bindings = types.ModuleType("cuda.bindings", "emulated cuda.bindings")
        bindings.__version__ = cfg.cuda_python_version  # type: ignore[attr-defined]
        bindings.runtime = runtime  # type: ignore[attr-defined]
        cuda.bindings = bindings  # type: ignore[attr-defined]
        mods.update({"cuda.bindings": bindings, "cuda.bindings.runtime": runtime})
    return mods


def install(config: EmulatorConfig | None = None) -> EmulatedDevice:
    """Substitute the emulated modules and return the device behind them (one installation at a time)."""
    global _saved, _device
    if _device is not None:
        raise RuntimeError("the TensorRT/CUDA emulation is already installed; uninstall() it first")
    device = EmulatedDevice(config or EmulatorConfig())
    saved = {n: m for n, m in sys.modules.items() if _ours(n)}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(_modules(device))
    _saved, _device = saved, device
    return device


def uninstall() -> None:
    """Remove the emulated modules and restore what sys.modules held before install (no-op if absent)."""
    global _saved, _device
    if _saved is None:
        return
    for name in [n for n in sys.modules if _ours(n)]:
        del sys.modules[name]
    sys.modules.update(_saved)
    _saved, _device = None, None


def active_device() -> EmulatedDevice | None:
    """The installed device, or None."""
    return _device


def current_device() -> EmulatedDevice:
    """The installed device (RuntimeError when the emulation is not installed)."""
    if _device is None:
        raise RuntimeError("the TensorRT/CUDA emulation is not installed (emulation.install())")
    return _device


@contextmanager
def installed(config: EmulatorConfig | None = None) -> Iterator[EmulatedDevice]:
    """`with installed() as device:` - the emulation for the duration of the block."""
    device = install(config)
    try:
        yield device
    finally:
        uninstall()
