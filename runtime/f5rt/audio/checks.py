"""The input checks every audio function starts with, so bad input is one AudioError line.

Samples must be a 1-D finite float array (ints are not audio here) and sample rates integers in a
range a voice can have; anything else is refused before numpy turns it into a traceback or a huge
filter.
"""

from __future__ import annotations

import numpy as np

from f5rt.errors import AudioError

# Sample rates outside this range are treated as a corrupt header, not as audio: below 4 kHz
# nothing of a voice survives, and absurd rates would make the resampling filter huge.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 768000


def _check_rate(sr: object, what: str = "sample rate") -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)):
        raise AudioError(f"{what} must be an integer number of Hz, got {sr!r}")
    if not MIN_SAMPLE_RATE <= int(sr) <= MAX_SAMPLE_RATE:
        raise AudioError(f"{what} {int(sr)} Hz is outside the supported {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return int(sr)


def _mono(x: object, *, allow_empty: bool = False) -> np.ndarray:
    """A 1-D finite float array (any float dtype kept; ints are not audio here)."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise AudioError(f"expected mono audio as a 1-D array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise AudioError(f"expected float audio samples, got dtype {a.dtype}")
    if a.size == 0 and not allow_empty:
        raise AudioError("audio is empty (zero samples)")
    if not np.isfinite(a).all():
        raise AudioError("audio contains NaN or infinite samples")
    return a
