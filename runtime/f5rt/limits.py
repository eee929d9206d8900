"""Service limits for `f5rt serve`, and the one table of what the engine itself can run.

Two layers, one source:

* `ENGINE_BOUNDS`: what the synthesizer and every backend accept (`SynthesisOptions.validate`, the
  TensorRT backend's `nfe_max` = `NFE_MAX`). A value outside it cannot run anywhere.
* `Limits`: what a public service accepts, a sub-range of the engine's: its `*_range` fields default
  to sensible service bounds and are refused when a limits file widens them past `ENGINE_BOUNDS`, so
  a value the API accepts is always one the engine can run (before this table, the API took nfe up
  to 64 while `SynthesisOptions` took 1000 and the TensorRT arena 64: three numbers to keep in step).

The server is reachable from the network, so every input has a ceiling: a limit that is missing here
is a way to exhaust the device. Defaults suit a chat reader on a Jetson; a JSON file overrides any of
them (`f5rt serve --limits limits.json`), unknown keys are an error so a typo cannot silently keep a
default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Bound:
    """An interval [lo, hi] (or (lo, hi] when lo_open) of finite numbers, integers only when integer."""

    lo: float
    hi: float
    integer: bool = False
    lo_open: bool = False

    def contains(self, value: object) -> bool:
        if isinstance(value, bool) or not _is_real(value):
            return False
        if self.integer:  # compared exactly: float() would round 2**63 - 1 up past the bound
            if not _is_integer(value):
                return False
            v: float = int(value)  # type: ignore[call-overload]
        else:
            v = float(value)  # type: ignore[arg-type]
            if not math.isfinite(v):
                return False
        return (self.lo < v if self.lo_open else self.lo <= v) and v <= self.hi

    def covers(self, lo: float, hi: float) -> bool:
        """Whether the closed range [lo, hi] lies inside this bound."""
        return self.contains(lo) and self.contains(hi)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {'(' if self.lo_open else '['}{_fmt(self.lo)}, {_fmt(self.hi)}]"

    def check(self, name: str, value: object) -> None:
        if not self.contains(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")


NFE_MAX = 64
"""Most Euler steps any backend runs: the TensorRT arena holds an (NFE_MAX, slot) schedule table."""

ENGINE_BOUNDS: Mapping[str, Bound] = MappingProxyType(
    {
        "nfe": Bound(1, NFE_MAX, integer=True),
        "cfg": Bound(0.0, 20.0),
        "sway": Bound(-10.0, 10.0),
        "speed": Bound(0.05, 10.0),
        "target_rms": Bound(0.0, 1.0, lo_open=True),
        "cross_fade": Bound(0.0, 2.0),
        "fix_duration": Bound(0.0, 600.0, lo_open=True),
        "seed": Bound(0, 2**63 - 1, integer=True),
    }
)
"""SynthesisOptions field -> what the engine accepts (see the module docstring)."""

# Limits' (min, max) fields and the SynthesisOptions field each one bounds.
_RANGES: Mapping[str, str] = MappingProxyType(
    {
        "speed_range": "speed",
        "nfe_range": "nfe",
        "cfg_range": "cfg",
        "sway_range": "sway",
        "target_rms_range": "target_rms",
        "cross_fade_range": "cross_fade",
    }
)


@dataclass(frozen=True)
class Limits:
    """Bounds on requests, uploads, queueing and batching.

    *_range: inclusive (min, max) the API accepts for that option; each must lie inside ENGINE_BOUNDS.
    max_fix_duration_s: the largest fix_duration accepted (at most ENGINE_BOUNDS' fix_duration).
    batch_window_ms: how long the batcher waits after a request arrives for others to join it;
    0 turns batching off (every request runs alone, the unbatched baseline of the load test).
    queue_size: requests admitted at once (queued or running, streams included); beyond it 503.
    """

    max_text_chars: int = 4096
    max_body_bytes: int = 256 * 1024
    max_upload_bytes: int = 10 * 1024 * 1024
    max_ref_text_chars: int = 1000
    speed_range: tuple[float, float] = (0.25, 4.0)
    nfe_range: tuple[int, int] = (4, NFE_MAX)
    cfg_range: tuple[float, float] = (0.0, 10.0)
    sway_range: tuple[float, float] = (-1.0, 1.0)
    target_rms_range: tuple[float, float] = (0.01, 1.0)
    cross_fade_range: tuple[float, float] = (0.0, 1.0)
    max_fix_duration_s: float = 30.0
    queue_size: int = 64
    batch_window_ms: float = 50.0
    max_batch: int = 4
    request_timeout_s: float = 120.0
    first_chunk_chars: int = 40

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _RANGES:
                self._check_range(f.name, value)
            elif not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"limits: {f.name} must be a finite non-negative number, got {value!r}")
        for name in ("max_text_chars", "max_body_bytes", "max_upload_bytes", "max_ref_text_chars", "queue_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"limits: {name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"limits: max_batch must be a positive integer, got {self.max_batch!r}")
        if not isinstance(self.first_chunk_chars, int):
            raise ValueError(f"limits: first_chunk_chars must be an integer (0 = off), got {self.first_chunk_chars!r}")
        if self.request_timeout_s <= 0:
            raise ValueError("limits: request_timeout_s must be > 0")
        fix = ENGINE_BOUNDS["fix_duration"]
        if not fix.contains(self.max_fix_duration_s):
            raise ValueError(
                f"limits: max_fix_duration_s must be {fix.describe()} (what the engine runs), "
                f"got {self.max_fix_duration_s!r}"
            )

    @staticmethod
    def _check_range(name: str, value: Any) -> None:
        if not (isinstance(value, tuple) and len(value) == 2):
            raise ValueError(f"limits: {name} must be a [min, max] pair, got {value!r}")
        lo, hi = value
        if not all(_is_number(v) and math.isfinite(v) for v in value) or lo > hi:
            raise ValueError(f"limits: {name} must be finite numbers with min <= max, got {list(value)}")
        engine = ENGINE_BOUNDS[_RANGES[name]]
        if engine.integer and not all(isinstance(v, int) for v in value):
            raise ValueError(f"limits: {name} must hold integers, got {list(value)}")
        if not engine.covers(lo, hi):
            raise ValueError(
                f"limits: {name} {list(value)} goes beyond what the engine runs: "
                f"{_RANGES[name]} must be {engine.describe()}; narrow the range"
            )

    @property
    def batching(self) -> bool:
        return self.batch_window_ms > 0 and self.max_batch > 1

    def bounds(self) -> dict[str, Bound]:
        """The API's bound per SynthesisOptions field: Limits' ranges where set, the engine's elsewhere."""
        out = dict(ENGINE_BOUNDS)
        for name, option in _RANGES.items():
            engine = ENGINE_BOUNDS[option]
            lo, hi = getattr(self, name)
            out[option] = Bound(lo, hi, integer=engine.integer, lo_open=engine.lo_open and lo == engine.lo)
        out["fix_duration"] = Bound(0.0, self.max_fix_duration_s, lo_open=True)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        if not isinstance(data, dict):
            raise ValueError(f"limits: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"limits: unknown keys {unknown}; known keys: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            kwargs[key] = tuple(value) if key in _RANGES and isinstance(value, list) else value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> Limits:
        """Defaults overridden by the keys of a JSON object file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"limits: cannot read {path}: {e}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> Limits:
        return Limits.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """int, float, or a numpy scalar of either (SynthesisOptions may be built from numpy values)."""
    if isinstance(value, int | float):
        return True
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iuf"  # type: ignore[attr-defined]


def _is_integer(value: object) -> bool:
    if isinstance(value, int):
        return True
    return type(value).__module__ == "numpy" and value.dtype.kind in "iu"  # type: ignore[attr-defined]


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**63 else repr(float(v))
