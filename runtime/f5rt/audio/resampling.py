"""Resampling and level, as f5-tts prepares a reference voice: torchaudio's Resample, and the RMS.

`resample` equals torchaudio.functional.resample (sinc_interp_hann) computed in numpy; `rms` is the
level by which f5-tts raises the volume of a quiet reference.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from f5rt.audio.checks import _check_rate, _mono
from f5rt.errors import AudioError


def resample(
    x: np.ndarray, orig_sr: int, new_sr: int, *, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> np.ndarray:
    """Band-limited resampling equal to torchaudio.transforms.Resample(orig_sr, new_sr) defaults.

    torchaudio builds, for the gcd-reduced rates (orig, new), one windowed-sinc filter per output
    phase and runs them as a strided conv1d. Here each phase is applied separately and only on its
    non-zero taps (the filter is clamped to +-lowpass_filter_width zero crossings, so at most
    2*width+1 taps matter), which gives the same sums without the (new, 2*width+orig) kernel that
    coprime rates would otherwise need. Accumulation is float64; the result is float32.
    """
    a = _mono(x, allow_empty=True)
    orig_sr = _check_rate(orig_sr, "source sample rate")
    new_sr = _check_rate(new_sr, "target sample rate")
    if orig_sr == new_sr:
        return a.astype(np.float32, copy=True)
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    length = a.shape[0]
    target = -(-new * length // orig)  # ceil(new * length / orig), as torchaudio trims
    if target == 0:
        return np.zeros(0, dtype=np.float32)

    weights, starts, width = _resample_phases(orig, new, lowpass_filter_width, rolloff)
    taps = weights.shape[1]
    pad_left = width
    xp = np.zeros(pad_left + length + width + orig + taps, dtype=np.float64)
    xp[pad_left : pad_left + length] = a
    windows = np.lib.stride_tricks.sliding_window_view(xp, taps)
    out = np.empty(target, dtype=np.float64)
    for k in range(min(new, target)):
        n_k = (target - k + new - 1) // new  # outputs k, k+new, ... below target
        first = pad_left + int(starts[k])
        rows = windows[first : first + (n_k - 1) * orig + 1 : orig]
        out[k::new] = rows @ weights[k]
    return out.astype(np.float32)


@functools.lru_cache(maxsize=32)
def _resample_phases(
    orig: int, new: int, lowpass_filter_width: int, rolloff: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-phase filter taps of torchaudio's _get_sinc_resample_kernel, trimmed to their support.

    Returns (weights (new, 2*width+1) float64 holding torchaudio's float32 values, first tap index
    per phase relative to the input sample j*orig, width). Tap i of phase k sits at time
    t = i/orig - k/new; it is non-zero only for |t| * base_freq < lowpass_filter_width, i.e. for
    i within +-width of ceil(orig*k/new). Taps outside torchaudio's kernel span are zeroed.
    """
    if lowpass_filter_width <= 0:
        raise AudioError("lowpass_filter_width must be positive")
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    taps = 2 * width + 1
    k = np.arange(new)
    starts = -((-orig * k) // new) - width  # ceil(orig*k/new) - width
    i = starts[:, None] + np.arange(taps)[None, :]  # absolute tap index, torchaudio's idx*orig
    # Same operation order and dtypes as torchaudio: the phase offset is float32, idx float64.
    phase = (np.arange(0, -new, -1, dtype=np.float32) / np.float32(new)).astype(np.float64)
    t = phase[:, None] + i.astype(np.float64) / orig
    t *= base_freq
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    scale = base_freq / orig
    with np.errstate(invalid="ignore", divide="ignore"):
        kern = np.where(t == 0, 1.0, np.sin(t) / t)
    kern *= window * scale
    kern = kern.astype(np.float32).astype(np.float64)
    kern[(i < -width) | (i >= width + orig)] = 0.0
    kern.setflags(write=False)
    starts.setflags(write=False)
    return kern, starts, width


def rms(x: np.ndarray) -> float:
    """Root mean square, as f5-tts' torch.sqrt(torch.mean(torch.square(audio))) (in float64)."""
    a = _mono(x)
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))
