"""How much the DiT uses its text: its velocity error with the line's own text against another line's.

The sampled signals (f5build.train.signals) judge one generated sample per line, and the listening
figures judge whole words: both stay level while the model is still learning which sounds its text
asks for, because a sample is either said or babbled. This figure asks the model directly, without
sampling. On held-out lines it predicts the flow-matching velocity x1 - x0 on the target's frames
from x_t = (1 - t) x0 + t x1, with the reference's mel as the condition (as at inference), once with
the line's own text and once with another held-out line's text over the same reference. A model that
ignores its text scores both alike; the more it has learned what the text says, the larger the
error with the wrong text is against the right one (`gain`).

Flow time: at t = 0 the frames hold only noise, the error is dominated by where and how loud the
speech is, and the figure swings between neighbouring snapshots; from t = 0.3 on the speech in x_t
says most of what the text would, and the gain is near 0. Times 0.1 and 0.2 are where the text's
content matters and the figure is steady (docs/training.md, "The text-use figure").

The noise is drawn from its own fixed-seed generator and the model's training mode is put back, so
reading it midway through a run leaves the run's random streams and weights alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from f5build.train.corpus import Corpus
from f5build.train.signals import held_out_lines

TEXT_USE_TIMES = (0.1, 0.2)


@dataclass(frozen=True)
class TextUse:
    """Mean squared velocity error on held-out target frames at one flow time."""

    time: float
    """Flow time t of x_t (0 = noise, 1 = data)."""
    own: float
    """With the line's own text after the reference's."""
    other: float
    """With another held-out line's text after the same reference's."""
    lines: int
    """Held-out lines averaged."""

    @property
    def gain(self) -> float:
        """How much worse the wrong text makes the prediction: 0 for a model that ignores its text."""
        return self.other - self.own


@torch.no_grad()
def text_use(
    cfm: torch.nn.Module, corpus: Corpus, count: int = 16, times: tuple[float, ...] = TEXT_USE_TIMES, seed: int = 0
) -> list[TextUse]:
    """The text-use figure at each flow time over the first `count` held-out (reference, line) pairs;
    line i is paired with line i + 1's text (the last with the first's)."""
    if any(not 0.0 <= t < 1.0 for t in times):
        raise ValueError(f"flow times must lie in [0, 1), got {times}")
    lines = held_out_lines(corpus, count, next(cfm.parameters()).device)
    if len(lines) < 2:
        raise ValueError("the text-use figure needs at least two held-out lines (each borrows another's text)")
    char_map = cfm.vocab_char_map
    texts = [
        (line.text_ids(char_map, line.target.text), line.text_ids(char_map, lines[(i + 1) % len(lines)].target.text))
        for i, line in enumerate(lines)
    ]
    was_training = cfm.training
    cfm.eval()
    try:
        out = []
        for time in times:
            gen = torch.Generator().manual_seed(seed)
            own, other = [], []
            for line, (text, wrong) in zip(lines, texts, strict=True):
                device, start = line.cond.device, line.start
                x0 = torch.randn(line.x1.shape, generator=gen)
                x = ((1 - time) * x0 + time * line.x1).to(device)
                flow = (line.x1 - x0)[:, start:].to(device)
                t = torch.tensor([time], device=device)
                for errors, txt in ((own, text), (other, wrong)):
                    pred = cfm.transformer(x=x, cond=line.cond, text=txt, time=t)
                    errors.append(float(((pred[:, start:] - flow) ** 2).mean()))
            out.append(TextUse(time, float(np.mean(own)), float(np.mean(other)), len(lines)))
        return out
    finally:
        cfm.train(was_training)


def text_use_signals(figures: list[TextUse]) -> dict[str, float]:
    """The figures as training-log signals: `text_gain_t<t>` and `text_err_t<t>` (the own-text error)."""
    out: dict[str, float] = {}
    for f in figures:
        out[f"text_gain_t{f.time:g}"] = round(f.gain, 4)
        out[f"text_err_t{f.time:g}"] = round(f.own, 4)
    return out
