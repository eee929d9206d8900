"""Streams that queue work, events that mark a point in a queue, captures that record it into graphs.

Why queued and not immediate: on a GPU, `cudaMemcpyAsync` and `execute_async_v3` return before the
work happens. Running it at enqueue would hide the bug class that matters most for a CUDA-graph
runtime: host code reading a pinned buffer before synchronizing. So work runs only when the host
waits for it (stream or event synchronize, device synchronize, stream destroy), in stream order.

Each piece of work is an `Op` whose closure holds the arguments baked at enqueue (addresses, sizes,
shapes). A capture appends ops to a graph instead of the queue; launching the instantiated graph
enqueues exactly those ops again, so a replay uses the captured addresses and reads whatever the
buffers hold when it runs - the same semantics as a real CUDA graph.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .contract import ContractViolation, Fault


@dataclass(eq=False)
class Op:
    """One unit of queued work; `run` raises Fault when it breaks a rule while executing."""

    description: str
    run: Callable[[], None]


@dataclass(eq=False)
class Capture:
    """An active stream capture: the ops recorded so far, and why it is broken (if it is)."""

    mode: int  # cudaStreamCaptureMode value
    thread: int
    ops: list[Op] = field(default_factory=list)
    invalidated: str | None = None


FaultHandler = Callable[[Fault, str], ContractViolation]


@dataclass(eq=False)
class Stream:
    """A CUDA stream: a FIFO of ops, or a capture that swallows them."""

    handle: int
    flags: int
    legacy: bool = False  # the NULL stream (handle 0)
    queue: collections.deque[Op] = field(default_factory=collections.deque)
    capture: Capture | None = None
    destroyed: bool = False

    def submit(self, op: Op) -> None:
        if self.capture is not None:
            self.capture.ops.append(op)
        else:
            self.queue.append(op)

    def drain(self, on_fault: FaultHandler, until: Op | None = None) -> None:
        """Run queued ops in order (all of them, or up to and including `until`).

        A fault kills the stream's remaining work (a real context is dead after an illegal access)
        and is raised as ContractViolation from the synchronizing call.
        """
        if until is not None and until not in self.queue:
            return
        while self.queue:
            op = self.queue.popleft()
            try:
                op.run()
            except Fault as f:
                self.queue.clear()
                raise on_fault(f, op.description) from None
            if op is until:
                return


@dataclass(eq=False)
class Event:
    """A CUDA event: the marker op of its latest record, and when that marker executed."""

    handle: int
    stream: Stream | None = None
    marker: Op | None = None
    completed_at: float | None = None
    captured: bool = False  # recorded inside a capture: it marks graph work, not a point in a queue
    destroyed: bool = False

    def record_on(self, stream: Stream) -> Op:
        def mark() -> None:
            if self.marker is op:
                self.completed_at = time.perf_counter()

        op = Op(f"cudaEventRecord({self.handle:#x})", mark)
        self.stream, self.marker, self.completed_at = stream, op, None
        self.captured = stream.capture is not None
        stream.submit(op)
        return op

    @property
    def pending(self) -> bool:
        return self.marker is not None and self.completed_at is None


@dataclass(eq=False)
class Graph:
    """What a capture recorded (cudaGraph_t)."""

    handle: int
    ops: tuple[Op, ...]
    destroyed: bool = False


@dataclass(eq=False)
class GraphExec:
    """An instantiated graph (cudaGraphExec_t): launching it enqueues the recorded ops again."""

    handle: int
    ops: tuple[Op, ...]
    destroyed: bool = False
