"""`ChunkEngine`: the planning/running seam between a scheduler and the synthesizer.

Synthesis is two steps so a scheduler can interleave requests: `plan_request` (request -> chunk
works, each with its bucket) and `run_chunks` (works -> waves, one engine call per group of
compatible works); `finish` (a whole request) and `joiner` (a stream) join the waves. The batcher
(f5rt.service.batcher) and its jobs are typed against this protocol only; `Synthesizer.engine` is the
implementation, and tests put recording wrappers in its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from f5rt.audio import CrossFader
from f5rt.manifest import Manifest
from f5rt.options import SynthesisOptions
from f5rt.service.work import ChunkWork, RequestPlan, SynthesisResult, Wave
from f5rt.voices import Voice


class ChunkEngine(Protocol):
    """What a scheduler needs of a synthesizer (see the module docstring)."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def backend_name(self) -> str:
        """The backend that runs the graphs (`onnxruntime`, `tensorrt`), for logs and responses."""
        ...

    @property
    def manifest(self) -> Manifest: ...

    @property
    def max_rows(self) -> int:
        """The most rows one engine call takes (the largest batch bucket)."""
        ...

    def padded_rows(self, rows: int) -> int:
        """Rows an engine call of `rows` rows costs (its batch bucket on fixed-shape engines)."""
        ...

    def plan_request(
        self,
        text: str,
        voice: Voice,
        options: SynthesisOptions | None = None,
        first_chunk_chars: int | None = None,
        item: int = 0,
    ) -> RequestPlan:
        """Validate and plan one request into chunk works; draws the seed when the options have none."""
        ...

    def run_chunks(self, works: Sequence[ChunkWork], timings: dict[str, float] | None = None) -> list[Wave]:
        """One waveform per work, in order; compatible works share engine calls."""
        ...

    def finish(self, plan: RequestPlan, waves: Sequence[Wave], timings: dict[str, float]) -> SynthesisResult:
        """Join a whole request's chunk waves (in chunk order) into its result."""
        ...

    def joiner(self, options: SynthesisOptions) -> CrossFader:
        """The incremental cross-fade a stream pushes its chunk waves through (equals `finish`'s join)."""
        ...

    def warmup(self) -> None:
        """One short synthesis: loads sessions and kernels before traffic."""
        ...


__all__ = ["ChunkEngine"]
