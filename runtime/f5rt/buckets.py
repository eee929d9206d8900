"""Shape buckets: the fixed (frames, batch) shapes engines are built for, and how a request picks one.

A request runs in the smallest frame count that holds it and the smallest batch size that holds its
batch. The tail is masked in every graph, so the choice of bucket does not change the output.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from f5rt.errors import NoBucketError


@dataclass(frozen=True, order=True)
class Bucket:
    """One engine shape: `batch` requests of up to `frames` mel frames each."""

    frames: int
    batch: int

    @property
    def name(self) -> str:
        return f"n{self.frames}_b{self.batch}"


@dataclass(frozen=True)
class BucketTable:
    frames: tuple[int, ...]
    batch: tuple[int, ...]

    def __post_init__(self) -> None:
        for label, values in (("frames", self.frames), ("batch", self.batch)):
            if not values:
                raise ValueError(f"bucket table: '{label}' is empty")
            if any((not isinstance(v, int)) or isinstance(v, bool) or v <= 0 for v in values):
                raise ValueError(f"bucket table: '{label}' must hold positive integers, got {list(values)}")
            if list(values) != sorted(set(values)):
                raise ValueError(f"bucket table: '{label}' must be strictly increasing, got {list(values)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BucketTable:
        unknown = set(data) - {"frames", "batch"}
        if unknown:
            raise ValueError(f"bucket table: unknown keys {sorted(unknown)} (expected 'frames' and 'batch')")
        try:
            return cls(frames=tuple(data["frames"]), batch=tuple(data["batch"]))
        except KeyError as e:
            raise ValueError(f"bucket table: missing key {e.args[0]!r}") from None

    def to_dict(self) -> dict[str, list[int]]:
        return {"frames": list(self.frames), "batch": list(self.batch)}

    @property
    def max_frames(self) -> int:
        return self.frames[-1]

    @property
    def max_batch(self) -> int:
        return self.batch[-1]

    def __iter__(self) -> Iterator[Bucket]:
        for n in self.frames:
            for b in self.batch:
                yield Bucket(n, b)

    def __len__(self) -> int:
        return len(self.frames) * len(self.batch)

    def choose(self, frames: int, batch: int = 1) -> Bucket:
        """Smallest bucket holding `batch` requests of `frames` frames; NoBucketError if none does."""
        if frames <= 0 or batch <= 0:
            raise ValueError(f"frames and batch must be positive, got frames={frames} batch={batch}")
        n = next((f for f in self.frames if f >= frames), None)
        if n is None:
            raise NoBucketError(
                f"{frames} frames ({frames * 256 / 24000:.1f} s) exceed the largest bucket "
                f"({self.max_frames} frames); chunk the text or rebuild with larger buckets"
            )
        b = next((x for x in self.batch if x >= batch), None)
        if b is None:
            raise NoBucketError(f"batch {batch} exceeds the largest batch bucket ({self.max_batch})")
        return Bucket(n, b)

    def split_batch(self, count: int) -> Sequence[int]:
        """Sizes of the batches that `count` requests are run in: largest batch bucket first."""
        sizes: list[int] = []
        while count > 0:
            take = min(count, self.max_batch)
            sizes.append(take)
            count -= take
        return sizes
