"""`tensorrt` (the TensorRT 10.3 Python API) as far as the runtime and the build use it: the module.

Conventions follow the real bindings: calls that can fail return False (or None) and explain why
through the `trt.Logger` given to the Builder or Runtime; enums are integer enums; shapes are `Dims`.
Engines are built from ONNX (OnnxParser -> Builder.build_serialized_network) into emulated engine
files (engine_file.py) and executed by ONNX Runtime (onnx_exec.py) when the stream they were
enqueued on runs. Nothing beyond the subset is provided: code calling something else gets an
AttributeError (for instance `ICudaEngine.create_runtime_config`, which only TensorRT 10.11 has).

The parts: tensorrt_types (enums, Dims, Logger), tensorrt_build (parser, profiles, config,
Builder), tensorrt_run (Runtime, engine, execution context and the enqueue-time contract checks).
This module assembles them into the `tensorrt` module object of one installation.
"""

from __future__ import annotations

import types
from typing import Any

from .cuda_runtime import CudaRuntime
from .device import EmulatedDevice
from .tensorrt_build import (
    Builder,
    IBuilderConfig,
    INetworkDefinition,
    IOptimizationProfile,
    ITensor,
    ITimingCache,
    OnnxParser,
    ParserError,
)
from .tensorrt_run import ICudaEngine, IEngineInspector, IExecutionContext, Runtime
from .tensorrt_types import (
    BuilderFlag,
    DataType,
    Dims,
    ExecutionContextAllocationStrategy,
    IHostMemory,
    ILogger,
    LayerInformationFormat,
    Logger,
    MemoryPoolType,
    NetworkDefinitionCreationFlag,
    ProfilingVerbosity,
    TensorIOMode,
    _Env,
    nptype,
)

# --- the module --------------------------------------------------------------------------------------

_EXPORTS: tuple[Any, ...] = (
    DataType,
    TensorIOMode,
    MemoryPoolType,
    BuilderFlag,
    NetworkDefinitionCreationFlag,
    ExecutionContextAllocationStrategy,
    ProfilingVerbosity,
    LayerInformationFormat,
    Dims,
    ILogger,
    Logger,
    IHostMemory,
    ITensor,
    INetworkDefinition,
    OnnxParser,
    ParserError,
    IOptimizationProfile,
    ITimingCache,
    IBuilderConfig,
    ICudaEngine,
    IExecutionContext,
    IEngineInspector,
)


def build_module(dev: EmulatedDevice, cuda: CudaRuntime) -> types.ModuleType:
    """The `tensorrt` module object for `dev` (Builder and Runtime bound to it)."""
    env = _Env(dev, cuda)
    mod = types.ModuleType("tensorrt", __doc__)
    mod.__version__ = dev.config.tensorrt_version  # type: ignore[attr-defined]
    for obj in _EXPORTS:
        setattr(mod, obj.__name__, obj)
    mod.nptype = nptype  # type: ignore[attr-defined]
    for cls in (Builder, Runtime):
        setattr(mod, cls.__name__, type(cls.__name__, (cls,), {"_env": env, "__module__": "tensorrt"}))
    return mod
