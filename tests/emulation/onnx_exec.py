"""Executes an emulated engine: its ONNX graph on ONNX Runtime's CPU provider.

Why ONNX Runtime: the engines are built from these very graphs, so running them gives the numbers a
TensorRT FP32 engine would give (to float tolerance), and the backend's whole data path (copies,
addresses, profiles, graph replay) is exercised for real. Output shapes a context announces
(`get_tensor_shape` of an output) come from one run on zeros per input-shape combination, cached:
exact for every graph whose output shapes depend on input shapes only, and a data-dependent shape
shows up as an "output-shape" fault at execution.

Runs are memoized on the exact input bytes (names, dtypes, shapes and contents; a bounded LRU of
MEMO_BYTES): ONNX Runtime on the CPU is deterministic, so a repeated run (the eager pass after the
graph pass over the same job, say) costs a hash instead of a forward pass, while anything that
changes what the engine reads (a wrong address, a stale buffer) changes the key and is computed
afresh. Programs are shared, per ONNX content, by every engine deserialized in the process
(`program_for`), so restarting the backend recreates no session. onnxruntime is imported on first
use, so installing the emulation stays cheap.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Mapping

import numpy as np

Shape = tuple[int, ...]
MEMO_BYTES = 1 << 30  # outputs kept for repeated runs, per process


class _Memo:
    """An LRU of run results bounded by the bytes of the outputs it holds."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._items: collections.OrderedDict[bytes, dict[str, np.ndarray]] = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(program: bytes, feeds: Mapping[str, np.ndarray]) -> bytes:
        h = hashlib.blake2b(program, digest_size=20)
        for name in sorted(feeds):
            a = np.ascontiguousarray(feeds[name])
            h.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.reshape(-1).view(np.uint8).data)
        return h.digest()

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: bytes, outputs: dict[str, np.ndarray]) -> None:
        nbytes = sum(a.nbytes for a in outputs.values())
        if nbytes > self.limit:
            return
        with self._lock:
            if key in self._items:
                return
            for a in outputs.values():
                a.setflags(write=False)  # shared between hits: nobody may change it
            self._items[key] = outputs
            self.size += nbytes
            while self.size > self.limit:
                _, old = self._items.popitem(last=False)
                self.size -= sum(a.nbytes for a in old.values())


_memo = _Memo(MEMO_BYTES)


class OnnxProgram:
    """One engine's ONNX graph: a lazily created CPU session plus an output-shape cache."""

    def __init__(self, onnx_bytes: bytes, threads: int = 2) -> None:
        self._bytes = onnx_bytes
        self._digest = hashlib.sha256(onnx_bytes).digest()
        self._threads = threads
        self._session = None
        self._lock = threading.Lock()
        self._shapes: dict[tuple[tuple[str, Shape], ...], dict[str, Shape]] = {}

    def _get_session(self):  # type: ignore[no-untyped-def]
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self._threads
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                self._session = ort.InferenceSession(self._bytes, opts, providers=["CPUExecutionProvider"])
            return self._session

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Output name -> array (read-only: results may be shared by memoized runs)."""
        key = _memo.key(self._digest, feeds)
        hit = _memo.get(key)
        if hit is not None:
            return dict(hit)
        sess = self._get_session()
        names = [o.name for o in sess.get_outputs()]
        outputs = dict(zip(names, sess.run(names, dict(feeds)), strict=True))
        _memo.put(key, outputs)
        return dict(outputs)

    def output_shapes(self, inputs: Mapping[str, tuple[Shape, np.dtype]]) -> dict[str, Shape]:
        """Output shapes for these input (shape, dtype)s, from one cached run on zeros."""
        key = tuple(sorted((n, tuple(s)) for n, (s, _) in inputs.items()))
        cached = self._shapes.get(key)
        if cached is None:
            outs = self.run({n: np.zeros(s, dt) for n, (s, dt) in inputs.items()})
            cached = {n: tuple(int(d) for d in a.shape) for n, a in outs.items()}
            self._shapes[key] = cached
        return dict(cached)


_CACHE_SIZE = 16
_programs: collections.OrderedDict[str, OnnxProgram] = collections.OrderedDict()
_programs_lock = threading.Lock()


def program_for(onnx_bytes: bytes) -> OnnxProgram:
    """The shared program for this ONNX content (the least recently used of too many is dropped)."""
    key = hashlib.sha256(onnx_bytes).hexdigest()
    with _programs_lock:
        program = _programs.pop(key, None) or OnnxProgram(onnx_bytes)
        _programs[key] = program
        while len(_programs) > _CACHE_SIZE:
            _programs.popitem(last=False)
        return program
