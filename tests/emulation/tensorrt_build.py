"""TensorRT's build side: OnnxParser, optimization profiles, builder config, Builder.

Why it checks what it checks: an engine is only as good as the decisions made here, so the emulated
builder refuses what TensorRT 10.3 refuses (ONNX opset > 20, profiles that leave out a dynamic input
or contradict a static dimension, precision flags on a strongly typed network) and records every
decision it makes (release, SM, TF32, optimization level, workspace, profiles, I/O) in the emulated
engine file, so tests and the runtime's manifest checks can read them back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import engine_file
from .memory import ALIGN
from .tensorrt_types import (
    BuilderFlag,
    DataType,
    Dims,
    IHostMemory,
    ILogger,
    MemoryPoolType,
    NetworkDefinitionCreationFlag,
    ProfilingVerbosity,
    _Bound,
    _shape,
    _volume,
    nptype,
)

MAX_ONNX_OPSET = 20  # TensorRT 10.3's ONNX parser
_PRECISION_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4")
_FROM_ONNX = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 9: DataType.BOOL}
_FROM_ONNX.update({2: DataType.UINT8, 7: DataType.INT64, 16: DataType.BF16})


# --- building --------------------------------------------------------------------------------------


class ITensor:
    """A network input or output as the parser found it (-1 for dynamic dims)."""

    def __init__(self, name: str, shape: Sequence[int], dtype: DataType, is_input: bool) -> None:
        self.name = name
        self.shape = Dims(shape)
        self.dtype = dtype
        self.is_network_input = is_input
        self.is_network_output = not is_input


class INetworkDefinition:
    """A network: only what an OnnxParser put in it (the emulator executes the ONNX, not layers)."""

    def __init__(self, builder: Builder, flags: int) -> None:
        self._builder = builder
        self._flags = int(flags)
        self.name = "Unnamed Network 0"
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._onnx: bytes | None = None
        self._opset = 0

    def get_flag(self, flag: NetworkDefinitionCreationFlag) -> bool:
        return bool(self._flags & (1 << int(flag)))

    @property
    def strongly_typed(self) -> bool:
        return self.get_flag(NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]


class ParserError:
    """One OnnxParser error."""

    def __init__(self, desc: str, node: int = -1) -> None:
        self._desc = desc
        self._node = node

    def desc(self) -> str:
        return self._desc

    def code(self) -> int:
        return 1

    def node(self) -> int:
        return self._node

    def __str__(self) -> str:
        return self._desc


class OnnxParser:
    """Reads an ONNX model into a network: its I/O, and its bytes for execution."""

    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self._network = network
        self._logger = logger
        self._env = network._builder._env
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def _fail(self, rule: str, detail: str) -> bool:
        self._errors.append(ParserError(detail))
        self._env.refuse(self._logger, rule, "ModelImporter", detail)
        return False

    def parse_from_file(self, model: str) -> bool:
        import onnx

        try:
            proto = onnx.load(os.fspath(model))  # also loads external data next to the file
        except Exception as e:
            return self._fail("parser-error", f"cannot read ONNX file {model}: {e}")
        return self._load(proto)

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx
        from onnx import external_data_helper

        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception as e:
            return self._fail("parser-error", f"cannot decode ONNX bytes: {e}")
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            if path is None:
                return self._fail("parser-error", "the model keeps weights in external data and no path was given")
            try:
                external_data_helper.load_external_data_for_model(proto, os.path.dirname(os.fspath(path)))
            except Exception as e:
                return self._fail("parser-error", f"cannot load external data next to {path}: {e}")
        return self._load(proto)

    def _load(self, proto: Any) -> bool:
        opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset > MAX_ONNX_OPSET:
            return self._fail(
                "parser-opset", f"ONNX opset {opset} is newer than this parser supports (max {MAX_ONNX_OPSET})"
            )
        graph = proto.graph
        initializers = {t.name for t in graph.initializer}
        tensors: list[list[ITensor]] = [[], []]
        for slot, values, is_input in ((0, graph.input, True), (1, graph.output, False)):
            for vi in values:
                if is_input and vi.name in initializers:
                    continue
                if not vi.type.HasField("tensor_type"):
                    return self._fail("parser-error", f"I/O '{vi.name}' is not a tensor")
                tt = vi.type.tensor_type
                dtype = _FROM_ONNX.get(tt.elem_type)
                if dtype is None:
                    return self._fail(
                        "parser-error", f"I/O '{vi.name}' has ONNX element type {tt.elem_type}, unsupported"
                    )
                if not tt.HasField("shape"):
                    return self._fail("parser-error", f"I/O '{vi.name}' has no shape (rank unknown)")
                dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tt.shape.dim]
                tensors[slot].append(ITensor(vi.name, dims, dtype, is_input))
        if not tensors[1]:
            return self._fail("parser-error", "the graph has no outputs")
        net = self._network
        net._inputs, net._outputs = tensors
        net._onnx = proto.SerializeToString()
        net._opset = opset
        return True


class IOptimizationProfile:
    """min/opt/max shapes per input; a failed set_shape is logged and leaves that input unset."""

    def __init__(self, builder: Builder) -> None:
        self._builder = builder
        self._shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        lo, mid, hi = _shape(min), _shape(opt), _shape(max)
        problem = ""
        if not len(lo) == len(mid) == len(hi):
            problem = f"min {lo}, opt {mid} and max {hi} have different ranks"
        elif any(d < 0 for d in lo + mid + hi):
            problem = f"negative dimension in min {lo} / opt {mid} / max {hi}"
        elif not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
            problem = f"not min <= opt <= max: min {lo}, opt {mid}, max {hi}"
        if problem:
            b = self._builder
            b._env.refuse(
                b.logger, "profile-invalid", "IOptimizationProfile::setDimensions", f"input '{input}': {problem}"
            )
            return
        self._shapes[input] = (lo, mid, hi)

    def get_shape(self, input: str) -> list[Dims]:
        """[min, opt, max] of `input`, or [] when it was never set."""
        s = self._shapes.get(input)
        return [Dims(d) for d in s] if s else []


class ITimingCache:
    """A timing cache: the emulator stores one entry per engine built with it."""

    MAGIC = b"F5EMUTC1"

    def __init__(self, entries: dict[str, str] | None = None) -> None:
        self.entries: dict[str, str] = dict(entries or {})

    def serialize(self) -> IHostMemory:
        return IHostMemory(self.MAGIC + json.dumps(self.entries, sort_keys=True).encode())

    def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self.entries.update(input_cache.entries)
        return True


class IBuilderConfig:
    """Build options. TF32 is on by default, as in TensorRT; the workspace pool defaults to the GPU size."""

    def __init__(self, builder: Builder) -> None:
        self._builder = builder
        self._flags: set[BuilderFlag] = {BuilderFlag.TF32}
        self._pools: dict[MemoryPoolType, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._timing_cache: ITimingCache | None = None
        self.builder_optimization_level = 3
        self._verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY

    @property
    def profiling_verbosity(self) -> ProfilingVerbosity:
        return self._verbosity

    @profiling_verbosity.setter
    def profiling_verbosity(self, value: ProfilingVerbosity) -> None:
        if not isinstance(value, ProfilingVerbosity):  # the pybind11 enum refuses ints
            raise TypeError(f"profiling_verbosity: expected a tensorrt.ProfilingVerbosity, got {type(value).__name__}")
        self._verbosity = value

    def set_flag(self, flag: BuilderFlag) -> None:
        self._flags.add(BuilderFlag(flag))

    def clear_flag(self, flag: BuilderFlag) -> None:
        self._flags.discard(BuilderFlag(flag))

    def get_flag(self, flag: BuilderFlag) -> bool:
        return BuilderFlag(flag) in self._flags

    @property
    def flags(self) -> int:
        return sum(1 << int(f) for f in self._flags)

    @flags.setter
    def flags(self, mask: int) -> None:
        self._flags = {f for f in BuilderFlag if mask & (1 << int(f))}

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self._pools[MemoryPoolType(pool)] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        default = self._builder._env.dev.config.total_memory if pool == MemoryPoolType.WORKSPACE else 0
        return self._pools.get(MemoryPoolType(pool), default)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not profile._shapes:
            b = self._builder
            b._env.refuse(
                b.logger, "profile-invalid", "IBuilderConfig::addOptimizationProfile", "the profile sets no shape"
            )
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        raw = bytes(serialized_timing_cache)
        if raw.startswith(ITimingCache.MAGIC):
            return ITimingCache(json.loads(raw[len(ITimingCache.MAGIC) :]))
        if raw:
            b = self._builder
            b._env.emit(
                b.logger, ILogger.Severity.WARNING, "timing cache bytes not recognised; starting an empty cache"
            )
        return ITimingCache()

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._timing_cache


class Builder(_Bound):
    """Builds emulated engine files from parsed networks."""

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(self, flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile(self)

    def _refuse(self, rule: str, detail: str) -> None:
        self._env.refuse(self.logger, rule, "IBuilder::buildSerializedNetwork", detail)

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        if network._onnx is None:
            self._refuse("parser-error", "the network is empty (no OnnxParser parsed a model into it)")
            return None
        if network.strongly_typed:
            bad = [n for n in _PRECISION_FLAGS if config.get_flag(BuilderFlag[n])]
            if bad:
                self._refuse(
                    "build-precision-flag",
                    f"builder flag(s) {', '.join(bad)} set on a strongly typed network (precision comes from the graph)",
                )
                return None
        profiles = self._profiles(network, config)
        if profiles is None:
            return None
        cfg = self._env.dev.config
        io = [
            {"name": t.name, "mode": mode, "dtype": t.dtype.name, "shape": list(t.shape)}
            for mode, tensors in (("INPUT", network._inputs), ("OUTPUT", network._outputs))
            for t in tensors
        ]
        scratch = max(
            sum(_volume(p[t.name][2]) * np.dtype(nptype(t.dtype)).itemsize for t in network._inputs) for p in profiles
        )
        meta = {
            "emulated_engine": True,
            "tensorrt_version": cfg.tensorrt_version,
            "sm": cfg.sm_string,
            "gpu": cfg.gpu_name,
            "strongly_typed": network.strongly_typed,
            "tf32": config.get_flag(BuilderFlag.TF32),
            "flags": sorted(f.name for f in config._flags),
            "builder_optimization_level": int(config.builder_optimization_level),
            "profiling_verbosity": config.profiling_verbosity.name,
            "workspace": config._pools.get(MemoryPoolType.WORKSPACE),
            "memory_pools": {p.name: n for p, n in config._pools.items()},
            "opset": network._opset,
            "onnx_sha256": hashlib.sha256(network._onnx).hexdigest(),
            "io": io,
            "profiles": [{k: [list(s) for s in v] for k, v in p.items()} for p in profiles],
            "device_memory_size": max(ALIGN, -(-4 * scratch // ALIGN) * ALIGN),
        }
        if config._timing_cache is not None:
            key = hashlib.sha256(json.dumps(meta["profiles"]).encode() + network._onnx).hexdigest()
            config._timing_cache.entries[key] = f"{cfg.tensorrt_version} sm{cfg.sm_string}"
        self._env.emit(self.logger, ILogger.Severity.INFO, f"emulated engine built: {len(profiles)} profile(s)")
        return IHostMemory(engine_file.pack(meta, network._onnx))

    def _profiles(
        self, network: INetworkDefinition, config: IBuilderConfig
    ) -> list[dict[str, tuple[tuple[int, ...], ...]]] | None:
        """Each profile completed with the static inputs, or None (logged) when one is unusable."""
        inputs = {t.name: tuple(t.shape) for t in network._inputs}
        dynamic = [n for n, s in inputs.items() if -1 in s]
        if not config._profiles:
            if dynamic:
                self._refuse("build-profile", f"dynamic input(s) {dynamic} but no optimization profile was added")
                return None
            return [{n: (s, s, s) for n, s in inputs.items()}]
        out = []
        for i, prof in enumerate(config._profiles):
            unknown = sorted(set(prof._shapes) - set(inputs))
            if unknown:
                self._refuse("build-profile", f"profile {i} names {unknown}, which are not network inputs")
                return None
            missing = [n for n in dynamic if n not in prof._shapes]
            if missing:
                self._refuse("build-profile", f"profile {i} has no shapes for dynamic input(s) {missing}")
                return None
            full: dict[str, tuple[tuple[int, ...], ...]] = {}
            for name, net_shape in inputs.items():
                ranges = prof._shapes.get(name, (net_shape, net_shape, net_shape))
                for s in ranges:
                    if len(s) != len(net_shape) or any(d != n for d, n in zip(s, net_shape, strict=True) if n != -1):
                        self._refuse(
                            "build-profile",
                            f"profile {i} gives input '{name}' shape {s}, which contradicts its network shape {net_shape}",
                        )
                        return None
                full[name] = ranges
            out.append(full)
        return out
