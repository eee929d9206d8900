"""The emulated GPU: its configuration and the state both fake modules share.

Why one object: TensorRT and the CUDA runtime meet in device memory, streams and the per-thread
"last error" (TensorRT enqueues onto CUDA streams and reads CUDA's last error), so the two fake
modules are thin facades over one `EmulatedDevice`. It also keeps the record tests read:
`violations` (every refused call) and `logs` (every message TensorRT emitted).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from .contract import ContractViolation, Fault, Violation
from .memory import MemorySpace
from .streams import Event, Graph, GraphExec, Stream


@dataclass(frozen=True)
class EmulatorConfig:
    """What the emulated machine reports; defaults are a Jetson AGX Orin on JetPack 6."""

    tensorrt_version: str = "10.3.0.30"
    sm: tuple[int, int] = (8, 7)
    gpu_name: str = "Orin (emulated)"
    total_memory: int = 64 * 2**30
    cuda_runtime_version: int = 12060
    cuda_driver_version: int = 12060
    cuda_python_version: str = "12.6.2"
    device_count: int = 1

    @property
    def sm_string(self) -> str:
        return f"{self.sm[0]}.{self.sm[1]}"


@dataclass(frozen=True)
class LogRecord:
    """One message TensorRT sent to a logger (severity name as in trt.Logger.Severity)."""

    severity: str
    message: str


class EmulatedDevice:
    """State of one emulated GPU; `violations`, `logs`, `assert_clean()` and `reset()` are for tests."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.violations: list[Violation] = []
        self.logs: list[LogRecord] = []
        self.memory = MemorySpace(config.total_memory)  # kept across reset(): addresses are never reused
        self._init_state()

    def _init_state(self) -> None:
        self.current_device: dict[int, int] = {}  # thread -> device index
        self.last_error: dict[int, Any] = {}  # thread -> cudaError_t (absent: success)
        self._next_handle = 0x1000
        legacy = Stream(0, 0, legacy=True)
        self.streams: dict[int, Stream] = {0: legacy}
        self.events: dict[int, Event] = {}
        self.graphs: dict[int, Graph] = {}
        self.graph_execs: dict[int, GraphExec] = {}

    # -- records ----------------------------------------------------------------------------------

    def record(self, rule: str, detail: str) -> Violation:
        v = Violation(rule, detail)
        with self.lock:
            self.violations.append(v)
        return v

    def fault(self, f: Fault, during: str) -> ContractViolation:
        """Record a fault found while executing `during` and build the exception the sync call raises."""
        return ContractViolation(self.record(f.rule, f"while executing {during}: {f.detail}"))

    def rules(self) -> list[str]:
        """The rule ids recorded so far, in order (handy in assertions)."""
        return [v.rule for v in self.violations]

    def assert_clean(self) -> None:
        """Raise AssertionError listing every recorded violation, if any."""
        if self.violations:
            lines = "\n".join(f"  - {v}" for v in self.violations)
            raise AssertionError(f"{len(self.violations)} emulator contract violation(s):\n{lines}")

    def reset(self) -> None:
        """Forget violations and logs and release every stream, event, graph and allocation.

        Old pointers stay recognisable: using one after reset is a use-after-free.
        """
        with self.lock:
            self.violations.clear()
            self.logs.clear()
            self.memory.release_all()
            self._init_state()

    # -- handles ----------------------------------------------------------------------------------

    def new_handle(self) -> int:
        """A fresh non-zero handle value, never reused, so a destroyed handle stays recognisable."""
        with self.lock:
            self._next_handle += 0x10
            return self._next_handle

    def live_captures(self) -> list[tuple[Stream, Any]]:
        return [(s, s.capture) for s in self.streams.values() if s.capture is not None and not s.destroyed]
