"""Joining generated chunks into one waveform with f5-tts' linear cross-fade, all at once or as a stream."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from f5rt.audio.checks import _mono
from f5rt.errors import AudioError


class CrossFader:
    """f5-tts' chunk join, incremental: push() each chunk as it is made, then flush().

    Each next chunk overlaps the audio so far by n = min(int(seconds*sr), len(so far), len(chunk))
    samples with linear fades (np.linspace(1, 0, n) out, np.linspace(0, 1, n) in), as f5-tts'
    infer_batch_process does; seconds <= 0 concatenates. The overlap may reach back past a short
    previous chunk, so the last int(seconds*sr) samples of the joined audio are held back (float64,
    like f5-tts) until the next chunk decides them. push() returns what no later chunk can change,
    so streaming the returns gives exactly the batch join.
    """

    def __init__(self, seconds: float, sr: int) -> None:
        if not math.isfinite(seconds):
            raise AudioError(f"cross-fade duration must be finite, got {seconds!r}")
        self.fade = max(int(seconds * sr), 0)
        self.held = np.zeros(0, dtype=np.float64)
        self.started = False

    def push(self, wave: np.ndarray) -> np.ndarray:
        w = _mono(wave, allow_empty=True).astype(np.float64)
        joined = w
        if self.started:
            n = min(self.fade, self.held.shape[0], w.shape[0])
            if n > 0:
                mixed = self.held[-n:] * np.linspace(1, 0, n) + w[:n] * np.linspace(0, 1, n)
                joined = np.concatenate([self.held[:-n], mixed, w[n:]])
            else:
                joined = np.concatenate([self.held, w])
        self.started = True
        keep = min(self.fade, joined.shape[0])
        self.held = joined[joined.shape[0] - keep :]
        return joined[: joined.shape[0] - keep].astype(np.float32)

    def flush(self) -> np.ndarray:
        out, self.held = self.held.astype(np.float32), np.zeros(0, dtype=np.float64)
        return out


def cross_fade(waves: Sequence[np.ndarray], seconds: float, sr: int) -> np.ndarray:
    """Join generated chunks exactly as f5-tts' infer_batch_process does (see CrossFader)."""
    joiner = CrossFader(seconds, sr)
    pieces = [joiner.push(w) for w in waves]
    return np.concatenate([*pieces, joiner.flush()]).astype(np.float32)
