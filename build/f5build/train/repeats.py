"""Several samples of each held-out line: the listening figures without one draw's luck.

The checkpoint figures say each held-out line once, from one noise draw (seed = line index), so a line
whose output is verified on the margin flips with the draw, and the 48-line verification rate moves by
about two lines between neighbouring snapshots that are no different. Saying each line S times (seeds
line index + SEED_STRIDE * k) gives each line its own verification share; their mean is the checkpoint's
rate on these lines with the sampling noise averaged out. The ground truth is one recording per line, so
the comparison the stage-1 criterion makes (within 10 points of ground truth) is taken line by line:
the mean over lines of (share verified - ground truth verified), with its standard error over lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from f5build.quality.scoring import SAID_WER, UtteranceScore

SEED_STRIDE = 1000
"""Sample k of line i is drawn with seed i + SEED_STRIDE * k; sample 0 is the single-sample figures'
draw (seed = line index), so its scores are the ones already stored. Above any held-out set's size, so no
two samples share a seed."""

Z95 = 1.959964  # the normal quantile of a two-sided 95 % interval


@dataclass(frozen=True)
class RepeatedSamples:
    """One checkpoint's figures over `samples` draws of each of `lines` held-out lines."""

    samples: int
    """Draws per line."""
    lines: int
    """Held-out lines, each with its own reference."""
    verify_rate: float
    """Mean over lines of the share of the line's draws nearer its own reference than any other speaker's."""
    verify_se: float
    """Standard error of `verify_rate` over lines (lines differ; draws of one line are not independent lines)."""
    verify_gap: float
    """Mean over lines of (share verified - 1 if the line's ground-truth audio is verified else 0): the
    stage-1 criterion asks this to be at least -0.10."""
    verify_gap_se: float
    """Standard error of `verify_gap` over lines."""
    sim: float
    """Mean similarity of each draw to its own reference."""
    sim_margin: float
    """Mean over draws of (similarity to its own reference - highest to another speaker's)."""
    wer_median: float
    """Median WER over all draws."""
    samples_said: int
    """Draws with WER at most SAID_WER."""
    ovrl: float
    """Mean DNSMOS OVRL over all draws."""

    @property
    def gap_interval(self) -> tuple[float, float]:
        """`verify_gap`'s 95 % interval (normal approximation over lines), within the gap's range [-1, 1]."""
        half = Z95 * self.verify_gap_se
        return max(-1.0, self.verify_gap - half), min(1.0, self.verify_gap + half)

    @property
    def gap_label(self) -> str:
        """The gap in points with its interval, as the report prints it: "-9 (-20 to +2)"."""
        lo, hi = self.gap_interval
        return f"{self.verify_gap * 100:+.0f} ({lo * 100:+.0f} to {hi * 100:+.0f})"

    @classmethod
    def of(cls, draws: Sequence[Sequence[UtteranceScore]], truth: Sequence[UtteranceScore]) -> RepeatedSamples:
        """`draws[k][i]` is draw k of line i; `truth[i]` is line i's ground-truth audio, scored the same way."""
        if len(draws) < 2:
            raise ValueError(f"{len(draws)} draw(s) per line: several samples need at least two")
        lines = len(truth)
        if lines < 2 or any(len(d) != lines for d in draws):
            raise ValueError(
                f"every draw must score the same {lines} lines as the ground truth (at least two), "
                f"got {[len(d) for d in draws]}"
            )
        for k, draw in enumerate(draws):
            ids = [s.id for s in draw]
            if ids != [t.id for t in truth]:
                raise ValueError(f"draw {k} scores lines {ids}, the ground truth {[t.id for t in truth]}")
        verified = np.array([[s.verified for s in draw] for draw in draws], dtype=float)  # (draws, lines)
        share = verified.mean(axis=0)
        gap = share - np.array([t.verified for t in truth], dtype=float)
        flat = [s for draw in draws for s in draw]
        return cls(
            samples=len(draws),
            lines=lines,
            verify_rate=float(share.mean()),
            verify_se=float(share.std(ddof=1) / math.sqrt(lines)),
            verify_gap=float(gap.mean()),
            verify_gap_se=float(gap.std(ddof=1) / math.sqrt(lines)),
            sim=float(np.mean([s.sim_own for s in flat])),
            sim_margin=float(np.mean([s.sim_own - s.sim_other for s in flat])),
            wer_median=float(np.median([s.wer for s in flat])),
            samples_said=sum(s.wer <= SAID_WER for s in flat),
            ovrl=float(np.mean([s.ovrl for s in flat])),
        )
