"""The rules the emulator enforces, and the two ways a broken rule is reported.

Why one table: every refusal names a rule by a short stable id, so a test (or the launcher's report)
can say exactly which contract the code under test broke, and every id here has a test in
tests/trt_emulator/ that breaks it. `Violation` is the record; `ContractViolation` is what a
fault found while *executing* queued stream work raises from the synchronizing call (a real GPU
would report an asynchronous, sticky error there); `Fault` is the internal signal a check raises
before the API layer turns it into a status code, a False return, or a ContractViolation.
"""

from __future__ import annotations

from dataclasses import dataclass

RULES: dict[str, str] = {
    # TensorRT execution contract
    "alignment": "a tensor or scratch address bound to TensorRT is not 256-byte aligned",
    "unset-address": "an I/O tensor has no address at execute_async_v3",
    "shape-unset": "a dynamic input's shape was not set before execute_async_v3",
    "shape-outside-profile": "an input shape has the wrong rank or lies outside the active profile's [min, max]",
    "unknown-tensor": "a tensor name that is not an I/O tensor (or not an input) of the engine",
    "profile-index": "an optimization profile index the engine does not have",
    "device-memory-unset": "a USER_MANAGED context executed without set_device_memory",
    "device-memory-invalid": "scratch memory too small, not device memory, or given to a non-USER_MANAGED context",
    "io-overlap": "an output tensor overlaps another I/O tensor of the same enqueue",
    "scratch-overlap": "an I/O tensor overlaps the context's scratch memory",
    "output-shape": "the engine produced an output shape other than the one the context announced",
    "stale-error": "a CUDA error was pending when TensorRT checked cudaGetLastError after its launches",
    "capture-before-enqueue": "a context was enqueued inside a stream capture before any eager enqueue since its "
    "profile or shapes changed (TensorRT's lazy set-up cannot be captured)",
    # memory
    "out-of-bounds": "an address range that lies in no live allocation",
    "copy-size": "a copy or memset larger than the allocation it starts in",
    "pageable-host": "a host address that is not pinned memory from cudaMallocHost",
    "wrong-memory-kind": "device memory where host memory is expected, or the reverse",
    "use-after-free": "memory used (or freed again) after it was freed",
    "invalid-free": "freeing a pointer that no allocation call returned",
    "poisoned-read": "reading device memory that was never written",
    "out-of-memory": "an allocation beyond the emulated GPU's total memory",
    # streams, events, capture
    "capture-prohibited": "an operation that is not allowed while a stream capture is active",
    "capture-state": "begin/end capture on a stream in the wrong capture state",
    "capture-wrong-thread": "ending a capture from another thread than the one that began it",
    "event-not-ready": "elapsed time asked of an event that has not completed",
    "invalid-handle": "a stream, event, graph or graph exec that does not exist (or was destroyed)",
    "invalid-value": "an argument outside the API's domain (negative size, unknown flag or kind)",
    "invalid-device": "a device index the emulated machine does not have",
    # engines and building
    "engine-format": "bytes that are not an emulated engine file",
    "engine-version": "an engine built by another TensorRT release (major.minor.patch)",
    "engine-sm": "an engine built for another GPU architecture (SM)",
    "parser-opset": "an ONNX opset newer than TensorRT 10.3's parser accepts (20)",
    "parser-error": "ONNX the parser cannot read (malformed, no I/O shapes, unsupported dtype, missing data)",
    "profile-invalid": "an optimization profile shape with min > opt > max, mixed ranks or negative dims",
    "build-profile": "profiles that leave a dynamic input out, contradict a static dim, or name a non-input",
    "build-precision-flag": "FP16/BF16/INT8/FP8 builder flags on a strongly typed network",
    "inspector-context": "an engine inspector given something other than an execution context of its own engine",
    "inspector-index": "layer information asked for a layer index the engine does not have",
}


@dataclass(frozen=True)
class Violation:
    """One refused call: which rule (an id of RULES) and what exactly was wrong."""

    rule: str
    detail: str

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown emulator rule id {self.rule!r}")

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


class ContractViolation(RuntimeError):
    """Raised from a synchronizing call when queued work broke a rule while it executed."""

    def __init__(self, violation: Violation) -> None:
        self.violation = violation
        super().__init__(f"emulated GPU fault ({violation})")


class Fault(Exception):
    """A check failed (internal): the API layer records it and reports it the way the real API would."""

    def __init__(self, rule: str, detail: str) -> None:
        self.rule = rule
        self.detail = detail
        super().__init__(f"{rule}: {detail}")
