"""Frame-budget batches with a length curriculum, resumable from a step number.

f5-tts' trainer packs batches up to a frame budget (`batch_size_type: frame`); so does this sampler.
On top of it, a curriculum caps the utterance length at step s: `cap(s)` grows linearly from
`start_frames` to `max_frames` over `ramp_steps`. Early batches are single words and short phrases,
where text and audio span each other and a DiT finds the text-to-audio alignment within its
convolutions' reach; longer sentences then extend an alignment the attention has started to learn.

A batch is a pure function of (seed, step): resuming at step s gives the batches an uninterrupted run
would have given, with no sampler state to save.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from f5build.train.corpus import Utterance


@dataclass(frozen=True)
class Curriculum:
    start_frames: int = 160
    max_frames: int = 700
    ramp_steps: int = 4000
    batch_frames: int = 1200

    def cap(self, step: int) -> int:
        if step >= self.ramp_steps:
            return self.max_frames
        return int(self.start_frames + (self.max_frames - self.start_frames) * step / self.ramp_steps)


class FrameBatches:
    """Batches of training utterances whose padded size (count x longest) stays within the budget."""

    def __init__(self, utts: list[Utterance], curriculum: Curriculum, seed: int) -> None:
        self.utts = sorted(utts, key=lambda u: u.frames)
        if not self.utts:
            raise ValueError("no training utterances")
        if self.utts[0].frames > curriculum.start_frames:
            raise ValueError(
                f"the shortest utterance has {self.utts[0].frames} frames, above the curriculum's start cap "
                f"{curriculum.start_frames}: raise start_frames or add short phrases to the corpus"
            )
        self.curriculum = curriculum
        self.seed = seed
        self._frames = [u.frames for u in self.utts]

    def batch(self, step: int) -> list[Utterance]:
        rng = random.Random(self.seed * 1_000_003 + step)
        cap = self.curriculum.cap(step)
        pool = self.utts[: bisect.bisect_right(self._frames, cap)]  # the utterances within the cap, in order
        # Pick a length neighbourhood first (little padding), then fill the budget from it.
        anchor = rng.randrange(len(pool))
        lo = max(0, anchor - 200)
        window = pool[lo : anchor + 200]
        rng.shuffle(window)
        out: list[Utterance] = []
        longest = 0
        for u in window:
            longest_if = max(longest, u.frames)
            if out and longest_if * (len(out) + 1) > self.curriculum.batch_frames:
                break
            out.append(u)
            longest = longest_if
        return out
