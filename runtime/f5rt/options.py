"""What a caller may ask of one synthesis, and the schedule key that decides which requests share an engine call.

`SynthesisOptions` is the options object every entry point builds at its boundary (the CLI from its
flags, the HTTP and Triton adapters through f5rt.service.requests) and every layer below reads by
the same field names: `nfe` here is `nfe` in the sampler, the batcher and the engine runner.

`ScheduleKey` is the one rule for batching: rows share an engine call only when their (t, dt)
schedule is the same, because a SampleJob holds one schedule for the whole batch (cfg is per row, so
it does not split batches). `SynthesisOptions.schedule_key` is the only place that builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from f5rt.limits import ENGINE_BOUNDS

SOLVERS = ("euler", "midpoint")
"""ODE solvers over the one step graph. `euler` is f5-tts' (one step-graph call per step); `midpoint`
spends two calls per step (the half step, then the full step from the midpoint's velocity), composed
by the backend from the same graph, so NFE counts graph calls either way and must be even for it."""


class ScheduleKey(NamedTuple):
    """Everything that shapes the sampling schedule: f5rt.schedules.solver_steps takes exactly these."""

    nfe: int
    sway: float | None
    use_epss: bool
    solver: str = "euler"


@dataclass(frozen=True)
class SynthesisOptions:
    """f5-tts' inference defaults (nfe 32, cfg 2, sway -1, euler, speed 1, target_rms 0.1, cross-fade 0.15 s)."""

    nfe: int = 32
    cfg: float = 2.0
    sway: float | None = -1.0
    speed: float = 1.0
    target_rms: float = 0.1
    cross_fade: float = 0.15
    fix_duration: float | None = None
    remove_silence: bool = False
    seed: int | None = None
    use_epss: bool = True
    solver: str = "euler"

    @property
    def schedule_key(self) -> ScheduleKey:
        """Requests share one engine call only when this is equal (see the module docstring)."""
        return ScheduleKey(self.nfe, self.sway, self.use_epss, self.solver)

    def validate(self) -> None:
        """Refuse values no backend can run, by the one table in f5rt.limits (the API's limits sit inside it)."""
        for name, bound in ENGINE_BOUNDS.items():
            value = getattr(self, name)
            if value is None and name in ("sway", "fix_duration", "seed"):  # None: plain schedule / auto / random
                continue
            bound.check(name, value)
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.solver == "midpoint" and self.nfe % 2:
            raise ValueError(
                f"the midpoint solver makes two step-graph calls per step: nfe must be even, got {self.nfe}"
            )


__all__ = ["SOLVERS", "ScheduleKey", "SynthesisOptions"]
