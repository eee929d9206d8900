"""The build side's TensorRT layer: build one engine from an ONNX file and check it, nothing else.

It drives TensorRT's own Python API (Builder, OnnxParser, IBuilderConfig), so a Jetson needs only
JetPack's TensorRT bindings, cuda-python and this project to build engines: no Polygraphy, ONNX or
torch there. TF32 stays as the caller says (TensorRT enables it by default; Polygraphy's CreateConfig
silently cleared it, which left the FP32 engines on plain FP32 math).

Imports TensorRT and cuda-python lazily and no runtime module that does (only the pure planning in
`f5rt.backends.trt.{engines,profiles}`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from f5rt.backends.trt.engines import (
    EngineChoice,
    check_engine_io,
    check_engine_shapes,
    check_tensorrt_module,
    engine_io,
    engine_profile_shapes,
)
from f5rt.backends.trt.profiles import ProfileSpec
from f5rt.errors import BackendUnavailable, ManifestError
from f5rt.files import atomic_write_bytes


class EngineBuildError(RuntimeError):
    """TensorRT refused to parse or build a graph (its log lines are in the message)."""


@dataclass(frozen=True)
class Target:
    """The machine an engine is built on: engines run only on the same TensorRT release and SM."""

    tensorrt: str
    cuda: str
    gpu: str
    sm: str


def load_tensorrt() -> ModuleType:
    """tensorrt (real bindings, >= 10) or BackendUnavailable saying why not."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as e:  # ImportError, or OSError from a wheel whose libnvinfer is missing
        raise BackendUnavailable(
            f"TensorRT not found: `import tensorrt` failed ({e}); JetPack: `sudo apt install python3-libnvinfer`"
        ) from e
    check_tensorrt_module(trt)
    return trt


def current_target(trt: ModuleType, device: int = 0) -> Target:
    """TensorRT release, CUDA runtime, GPU name and SM of `device` (BackendUnavailable without a GPU)."""
    try:
        rt = importlib.import_module("cuda.bindings.runtime")
    except ImportError as e:
        raise BackendUnavailable(
            f"cuda-python is not importable ({e}); JetPack 6: pip install 'cuda-python>=12.6.1,<13'"
        ) from e
    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0 or int(count) <= device:
        rt.cudaGetLastError()
        raise BackendUnavailable(f"TensorRT {trt.__version__} found but no usable GPU (cudaGetDeviceCount: {err})")
    err, prop = rt.cudaGetDeviceProperties(device)
    err2, version = rt.cudaRuntimeGetVersion()
    if int(err) != 0 or int(err2) != 0:
        raise BackendUnavailable(f"cannot query CUDA device {device}: {err} / {err2}")
    raw = prop.name
    name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    v = int(version)
    return Target(str(trt.__version__), f"{v // 1000}.{(v % 1000) // 10}", name.strip(), f"{prop.major}.{prop.minor}")


def strongly_typed_flag(trt: ModuleType) -> Any:
    """The STRONGLY_TYPED creation flag, looked up by name (its value differs between 10.x and 11.x)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise BackendUnavailable(f"TensorRT {trt.__version__} has no strongly typed networks (TensorRT >= 10 needed)")
    return flag


def build_engine(
    trt: ModuleType,
    onnx_path: Path,
    engine_path: Path,
    profiles: Sequence[Mapping[str, Any]],
    *,
    opt_level: int,
    workspace_bytes: int,
    tf32: bool,
    strongly_typed: bool,
    timing_cache: Path,
) -> None:
    """Parse `onnx_path`, build one engine with `profiles` (plan records), write it atomically.

    The tactic timing cache is read from and written back to `timing_cache`, so later builds (other
    precisions, a re-run) skip the tactics already timed.
    """
    logger = trt.Logger(trt.Logger.WARNING)  # prints TensorRT's own reasons to stderr
    builder = trt.Builder(logger)
    flags = 1 << int(strongly_typed_flag(trt)) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"{onnx_path.name}: TensorRT's ONNX parser failed: {'; '.join(errors) or 'see the TensorRT log above'}"
        )
    config = builder.create_builder_config()
    if workspace_bytes > 0:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    config.builder_optimization_level = int(opt_level)
    # Layer information with tensors, tactics and ONNX node names, so f5build.trt_inspect can read which
    # attention blocks TensorRT fused (the default, LAYER_NAMES_ONLY, gives names only; no runtime cost).
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    for prof in profiles:
        p = builder.create_optimization_profile()
        for name, s in prof["shapes"].items():
            p.set_shape(name, tuple(s["min"]), tuple(s["opt"]), tuple(s["max"]))
        if config.add_optimization_profile(p) < 0:
            raise EngineBuildError(f"{onnx_path.name}: profile {prof['index']} rejected (see the TensorRT log above)")
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    data = builder.build_serialized_network(network, config)
    if data is None:
        raise EngineBuildError(f"{onnx_path.name}: TensorRT could not build the engine (see the TensorRT log above)")
    atomic_write_bytes(engine_path, bytes(data))
    atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))


def verify_engine(
    trt: ModuleType,
    path: Path,
    rel: str,
    graph: str,
    profiles: Sequence[Mapping[str, Any]],
    mel_dim: int,
    text_dim: int,
) -> Any:
    """Deserialize a built engine and check its I/O and profiles exactly as the runtime will; returns it."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ManifestError(f"{rel}: TensorRT could not deserialize the engine it just built")
    choice = EngineChoice(graph, "", rel, {}, tuple(ProfileSpec.from_dict(p) for p in profiles))
    check_engine_io(rel, graph, engine_io(engine, trt))
    check_engine_shapes(choice, engine_profile_shapes(engine, trt), mel_dim, text_dim)
    return engine
