"""Service limits for `f5rt serve`: every bound a request is checked against, in one place.

The server is reachable from the network, so every input has a ceiling: a limit that is missing here
is a way to exhaust the device. Defaults suit a chat reader on a Jetson; a JSON file overrides any of
them (`f5rt serve --limits limits.json`), unknown keys are an error so a typo cannot silently keep a
default.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# (min, max) pairs: inclusive bounds checked by the server before anything reaches the synthesizer.
_RANGES = ("speed_range", "nfe_range", "cfg_range", "sway_range", "target_rms_range", "cross_fade_range")


@dataclass(frozen=True)
class Limits:
    """Bounds on requests, uploads, queueing and batching.

    batch_window_ms: how long the batcher waits after a request arrives for others to join it;
    0 turns batching off (every request runs alone, the unbatched baseline of the load test).
    queue_size: requests admitted at once (queued or running, streams included); beyond it 503.
    """

    max_text_chars: int = 4096
    max_body_bytes: int = 256 * 1024
    max_upload_bytes: int = 10 * 1024 * 1024
    max_ref_text_chars: int = 1000
    speed_range: tuple[float, float] = (0.25, 4.0)
    nfe_range: tuple[int, int] = (4, 64)
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
                if not (isinstance(value, tuple) and len(value) == 2):
                    raise ValueError(f"limits: {f.name} must be a [min, max] pair, got {value!r}")
                lo, hi = value
                if not all(_is_number(v) and math.isfinite(v) for v in value) or lo > hi:
                    raise ValueError(f"limits: {f.name} must be finite numbers with min <= max, got {list(value)}")
                if f.name == "nfe_range" and not all(isinstance(v, int) for v in value):
                    raise ValueError(f"limits: nfe_range must hold integers, got {list(value)}")
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

    @property
    def batching(self) -> bool:
        return self.batch_window_ms > 0 and self.max_batch > 1

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
