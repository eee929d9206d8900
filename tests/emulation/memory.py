"""Emulated device memory and pinned host memory, with a bounds and poison check on every access.

Why it looks like this:

* Device pointers are integers in a range no host allocation can have (above the x86-64 user
  address space), so host code that dereferences one crashes instead of silently working, just as it
  would on a discrete GPU. Each allocation is backed by a numpy uint8 array plus a `written` mask:
  device memory is uninitialised on real hardware, so reading a byte nobody wrote is a fault
  ("poisoned-read"), not a zero.
* Allocations are separated by an unmapped guard gap and addresses are never reused, so an overrun
  lands in no allocation (instead of in a neighbour, where a real GPU would not notice) and a freed
  pointer stays recognisable ("use-after-free").
* Pinned host memory is a real host buffer (the runtime wraps it with ctypes and numpy), filled with
  0xFF at allocation (uninitialised memory reads as NaN / -1, not as a tidy zero). A freed pinned
  buffer is kept alive and re-poisoned, so a stale numpy view reads garbage instead of corrupting the
  Python heap, and its address is not handed out again while it sits in the quarantine (the most
  recently freed QUARANTINE_BYTES of pinned memory; older buffers are released to bound the memory a
  long test session holds).
"""

from __future__ import annotations

import bisect
import collections
import enum
from dataclasses import dataclass, field

import numpy as np

from .contract import Fault

ALIGN = 256  # cudaMalloc's guaranteed alignment, and what TensorRT requires of bound addresses
DEVICE_BASE = 0xD000_0000_0000  # non-canonical for x86-64 user space: never a host address
GUARD = 1 << 20  # unmapped gap after every device allocation
HOST_ALIGN = 4096  # cudaMallocHost returns page-aligned memory
POISON = 0xFF
QUARANTINE_BYTES = 512 << 20

# Freed pinned buffers, oldest first, kept alive across devices (views may outlive a reset).
_quarantine: collections.deque[np.ndarray] = collections.deque()
_quarantined_bytes = 0


def _quarantine_buffer(raw: np.ndarray | None) -> None:
    global _quarantined_bytes
    if raw is None:
        return
    _quarantine.append(raw)
    _quarantined_bytes += raw.nbytes
    while _quarantined_bytes > QUARANTINE_BYTES and len(_quarantine) > 1:
        _quarantined_bytes -= _quarantine.popleft().nbytes


class Kind(enum.Enum):
    DEVICE = "device"
    PINNED = "pinned host"


@dataclass(eq=False)
class Allocation:
    """One cudaMalloc / cudaMallocHost result; `data` is dropped when freed device memory is released."""

    base: int
    size: int
    kind: Kind
    data: np.ndarray | None
    written: np.ndarray | None  # device only: which bytes hold a defined value
    freed: bool = False
    _keepalive: np.ndarray | None = field(default=None, repr=False)

    @property
    def end(self) -> int:
        return self.base + self.size

    def contains(self, ptr: int) -> bool:
        return self.base <= ptr < self.end

    def describe(self) -> str:
        return f"{self.size}-byte {self.kind.value} allocation at {self.base:#x}"


def align_up(value: int, align: int) -> int:
    return -(-value // align) * align


class MemorySpace:
    """Every allocation of one emulated GPU (device memory and pinned host memory)."""

    def __init__(self, total_memory: int) -> None:
        self.total_memory = int(total_memory)
        self.in_use = 0
        self._allocs: list[Allocation] = []  # sorted by base, freed ones included
        self._bases: list[int] = []
        self._next_device = DEVICE_BASE

    # -- allocation -------------------------------------------------------------------------------

    def _insert(self, alloc: Allocation) -> Allocation:
        # A released pinned buffer's address range can come back from the host allocator: forget the
        # freed records it overlaps, so lookups find the new allocation.
        stale = [a for a in self._allocs if a.freed and a.base < alloc.end and alloc.base < a.end]
        for a in stale:
            j = self._allocs.index(a)
            del self._allocs[j], self._bases[j]
        i = bisect.bisect_left(self._bases, alloc.base)
        self._bases.insert(i, alloc.base)
        self._allocs.insert(i, alloc)
        return alloc

    def malloc(self, nbytes: int) -> Allocation:
        if self.in_use + nbytes > self.total_memory:
            raise Fault(
                "out-of-memory",
                f"cudaMalloc({nbytes}) with {self.in_use} of {self.total_memory} bytes already in use",
            )
        base = self._next_device
        self._next_device = align_up(base + nbytes + GUARD, ALIGN)
        self.in_use += nbytes
        return self._insert(
            Allocation(base, nbytes, Kind.DEVICE, np.zeros(nbytes, np.uint8), np.zeros(nbytes, np.bool_))
        )

    def malloc_host(self, nbytes: int) -> Allocation:
        raw = np.full(nbytes + HOST_ALIGN, POISON, np.uint8)
        addr = int(raw.ctypes.data)
        skip = align_up(addr, HOST_ALIGN) - addr
        return self._insert(
            Allocation(addr + skip, nbytes, Kind.PINNED, raw[skip : skip + nbytes], None, _keepalive=raw)
        )

    def free(self, ptr: int, kind: Kind, call: str) -> None:
        alloc = self.find(ptr)
        if alloc is None or alloc.base != ptr:
            inside = f" (inside the {alloc.describe()})" if alloc is not None else ""
            raise Fault("invalid-free", f"{call}({ptr:#x}): no allocation starts at this address{inside}")
        if alloc.kind is not kind:
            raise Fault("wrong-memory-kind", f"{call}({ptr:#x}) given the {alloc.describe()}")
        if alloc.freed:
            raise Fault("use-after-free", f"{call}({ptr:#x}): the {alloc.describe()} was already freed (double free)")
        alloc.freed = True
        if kind is Kind.DEVICE:
            self.in_use -= alloc.size
            alloc.data = alloc.written = None
        else:
            self._retire_pinned(alloc)

    @staticmethod
    def _retire_pinned(alloc: Allocation) -> None:
        if alloc.data is not None:
            alloc.data[:] = POISON
        _quarantine_buffer(alloc._keepalive)
        alloc.data = alloc._keepalive = None

    def release_all(self) -> None:
        """Free everything (reset); pinned buffers go to the quarantine, as views of them may remain."""
        for alloc in self._allocs:
            if not alloc.freed:
                alloc.freed = True
                if alloc.kind is Kind.DEVICE:
                    alloc.data = alloc.written = None
                else:
                    self._retire_pinned(alloc)
        self.in_use = 0

    # -- lookup -----------------------------------------------------------------------------------

    def find(self, ptr: int) -> Allocation | None:
        """The allocation (live or freed) whose range holds `ptr`, if any."""
        i = bisect.bisect_right(self._bases, ptr) - 1
        if i >= 0 and self._allocs[i].contains(ptr):
            return self._allocs[i]
        return None

    def live(self, kind: Kind | None = None) -> list[Allocation]:
        return [a for a in self._allocs if not a.freed and (kind is None or a.kind is kind)]

    def resolve(self, ptr: int, nbytes: int, kind: Kind, what: str, overflow_rule: str = "copy-size") -> Allocation:
        """The live allocation of `kind` holding all of [ptr, ptr + nbytes), or a Fault naming the rule."""
        if nbytes < 0:
            raise Fault("invalid-value", f"{what}: negative size {nbytes}")
        alloc = self.find(ptr)
        if alloc is None:
            if kind is Kind.PINNED:
                raise Fault(
                    "pageable-host",
                    f"{what}: host address {ptr:#x} is not pinned memory from cudaMallocHost "
                    "(pageable memory makes the copy synchronous and is refused here)",
                )
            raise Fault("out-of-bounds", f"{what}: address {ptr:#x} lies in no device allocation")
        if alloc.kind is not kind:
            raise Fault("wrong-memory-kind", f"{what}: {ptr:#x} is in the {alloc.describe()}, {kind.value} expected")
        if alloc.freed:
            raise Fault("use-after-free", f"{what}: {ptr:#x} is in the freed {alloc.describe()}")
        off = ptr - alloc.base
        if ptr + nbytes > alloc.end:
            raise Fault(
                overflow_rule,
                f"{what}: bytes [{off}, {off + nbytes}) run past the end of the {alloc.describe()} "
                f"({ptr + nbytes - alloc.end} bytes outside)",
            )
        return alloc

    # -- access (what executing stream work does) ---------------------------------------------------

    def read(self, ptr: int, nbytes: int, kind: Kind, what: str) -> np.ndarray:
        """A copy of [ptr, ptr + nbytes); device bytes must all have been written."""
        alloc = self.resolve(ptr, nbytes, kind, what, "out-of-bounds")
        assert alloc.data is not None
        off = ptr - alloc.base
        if alloc.written is not None:
            mask = alloc.written[off : off + nbytes]
            if not mask.all():
                first = int(np.argmin(mask))
                raise Fault(
                    "poisoned-read",
                    f"{what}: byte {off + first} of the {alloc.describe()} was never written "
                    f"({int(nbytes - mask.sum())} of the {nbytes} bytes read are undefined)",
                )
        return alloc.data[off : off + nbytes].copy()

    def write(self, ptr: int, payload: np.ndarray, kind: Kind, what: str) -> None:
        raw = np.ascontiguousarray(payload).reshape(-1).view(np.uint8)
        alloc = self.resolve(ptr, raw.size, kind, what, "out-of-bounds")
        assert alloc.data is not None
        off = ptr - alloc.base
        alloc.data[off : off + raw.size] = raw
        if alloc.written is not None:
            alloc.written[off : off + raw.size] = True

    def fill(self, ptr: int, value: int, nbytes: int, what: str) -> None:
        alloc = self.resolve(ptr, nbytes, Kind.DEVICE, what, "out-of-bounds")
        assert alloc.data is not None and alloc.written is not None
        off = ptr - alloc.base
        alloc.data[off : off + nbytes] = value & 0xFF
        alloc.written[off : off + nbytes] = True
