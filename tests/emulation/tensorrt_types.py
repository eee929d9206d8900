"""TensorRT's value types, enums and logger (the part of the 10.3 Python API with no behaviour).

Why separate: the builder (tensorrt_build) and the runtime side (tensorrt_run) both speak in these
types, and their values follow TensorRT 10.3 (for instance STRONGLY_TYPED is bit 1 of the network
creation flags, profile selection and DataType numbering are 10.x's). `_Env` is the one link from
TensorRT objects to the emulated device: messages go to the user's logger and to `device.logs`, and
every refusal is recorded as a Violation and logged at ERROR, as TensorRT reports API misuse.
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cuda_runtime import CudaRuntime
from .device import EmulatedDevice, LogRecord

# --- enums and small value types -----------------------------------------------------------------


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


_NUMPY = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}


def nptype(trt_type: DataType) -> type:
    """The numpy type of a TensorRT DataType (TypeError for types numpy lacks, as in TensorRT)."""
    try:
        return _NUMPY[DataType(trt_type)]
    except (KeyError, ValueError):
        raise TypeError(f"could not resolve TensorRT datatype {trt_type!r} to an equivalent numpy datatype") from None


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4
    TACTIC_SHARED_MEMORY = 5


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 4
    DISABLE_TIMING_CACHE = 5
    TF32 = 6
    SPARSE_WEIGHTS = 7
    SAFETY_SCOPE = 8
    OBEY_PRECISION_CONSTRAINTS = 9
    PREFER_PRECISION_CONSTRAINTS = 10
    DIRECT_IO = 11
    REJECT_EMPTY_ALGORITHMS = 12
    VERSION_COMPATIBLE = 13
    EXCLUDE_LEAN_RUNTIME = 14
    FP8 = 15
    ERROR_ON_TIMING_CACHE_MISS = 16
    BF16 = 17
    DISABLE_COMPILATION_CACHE = 18
    STRIP_PLAN = 19
    REFIT_IDENTICAL = 20
    WEIGHT_STREAMING = 21
    INT4 = 22


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0  # deprecated and ignored in TensorRT 10
    STRONGLY_TYPED = 1


class ProfilingVerbosity(enum.IntEnum):
    LAYER_NAMES_ONLY = 0  # TensorRT's default
    NONE = 1
    DETAILED = 2


class LayerInformationFormat(enum.IntEnum):
    ONELINE = 0
    JSON = 1


class ExecutionContextAllocationStrategy(enum.IntEnum):
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


class Dims:
    """A shape: indexable, sized and iterable; -1 marks a dynamic dimension. Equal to a same tuple."""

    def __init__(self, shape: Sequence[int] = ()) -> None:
        self._d = tuple(int(x) for x in shape)

    def __len__(self) -> int:
        return len(self._d)

    def __getitem__(self, i: int) -> int:
        return self._d[i]

    def __iter__(self) -> Iterator[int]:
        return iter(self._d)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Dims):
            return self._d == other._d
        if isinstance(other, (tuple, list)):
            return self._d == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._d)

    def __repr__(self) -> str:
        return repr(self._d)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in value)


def _volume(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


class ILogger:
    """The logger interface; subclass it and implement `log(severity, msg)` for a custom logger."""

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        raise NotImplementedError


class Logger(ILogger):
    """TensorRT's stock logger: prints messages at or above `min_severity` to stderr."""

    _LETTER = "FEWIV"

    def __init__(self, min_severity: ILogger.Severity = ILogger.Severity.WARNING) -> None:
        self.min_severity = ILogger.Severity(min_severity)

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        if severity <= self.min_severity:
            print(f"[TRT] [{self._LETTER[int(severity)]}] {msg}", file=sys.stderr)


class IHostMemory(bytes):
    """Serialized data (an engine, a timing cache): bytes-like, so `bytes(x)` and file writes work."""

    @property
    def nbytes(self) -> int:
        return len(self)

    @property
    def dtype(self) -> DataType:
        return DataType.UINT8


# --- the shared environment of one installation ---------------------------------------------------


@dataclass
class _Env:
    dev: EmulatedDevice
    cuda: CudaRuntime

    def emit(self, logger: ILogger, severity: ILogger.Severity, msg: str) -> None:
        """Send a message to the user's logger, and keep it on the device for tests."""
        with self.dev.lock:
            self.dev.logs.append(LogRecord(ILogger.Severity(severity).name, msg))
        logger.log(ILogger.Severity(severity), msg)

    def refuse(self, logger: ILogger, rule: str, api: str, detail: str) -> None:
        """Record a violation and log it as TensorRT logs an API usage error."""
        self.dev.record(rule, f"{api}: {detail}")
        self.emit(logger, ILogger.Severity.ERROR, f"{api}: {detail} [emulator rule {rule}]")


class _Bound:
    """Base of the user-constructed classes (Builder, Runtime): the installation binds `_env`."""

    _env: _Env

    def __init__(self, logger: ILogger) -> None:
        if not isinstance(logger, ILogger):
            raise TypeError(f"{type(self).__name__}() needs a tensorrt.ILogger, got {type(logger).__name__}")
        self.logger = logger
