"""A strict CPU emulation of the TensorRT 10.3 Python API and cuda.bindings.runtime (cuda-python 12.6).

Test fixture only (never shipped in f5rt): it lets the real TensorRT backend and CUDA-graph code run
on a machine with neither TensorRT nor a GPU, while enforcing the contracts those APIs document, so
that code which would fail (or silently compute garbage) on a Jetson fails here, loudly.

    from emulation import installed
    with installed() as device:            # fake `tensorrt` and `cuda.bindings.runtime` in sys.modules
        ...                                # run the real backend
        device.assert_clean()              # no contract violation recorded

    python -m emulation.launch -- f5rt synth --backend tensorrt ...   (PYTHONPATH=tests)

Modules: contract (rule ids, Violation, ContractViolation), device (EmulatorConfig, EmulatedDevice),
memory (device/pinned allocations with bounds and poison checks), streams (queues, events,
captures, graphs), cuda_runtime (the fake `cuda.bindings.runtime`), tensorrt_api (the fake
`tensorrt`, assembled from tensorrt_types, tensorrt_build and tensorrt_run), engine_file (the
emulated plan format), onnx_exec (ONNX Runtime execution), install (sys.modules substitution),
launch (the command-line launcher).
"""

from __future__ import annotations

from .contract import RULES, ContractViolation, Violation
from .device import EmulatedDevice, EmulatorConfig, LogRecord
from .install import active_device, current_device, install, installed, uninstall

__all__ = [
    "RULES",
    "ContractViolation",
    "EmulatedDevice",
    "EmulatorConfig",
    "LogRecord",
    "Violation",
    "active_device",
    "current_device",
    "install",
    "installed",
    "uninstall",
]
