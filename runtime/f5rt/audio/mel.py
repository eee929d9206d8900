"""The log-mel spectrogram the model is conditioned on (f5-tts MelSpec, vocos flavour).

Here too the model's audio contract the spectrogram is computed with: sample rate, STFT and mel sizes.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from f5rt.audio.checks import _mono
from f5rt.errors import AudioError

# The model's audio contract (f5-tts MelSpec(mel_spec_type="vocos") defaults).
SAMPLE_RATE = 24000
N_FFT = 1024
HOP_LENGTH = 256
WIN_LENGTH = 1024
N_MELS = 100

_MEL_BLOCK_FRAMES = 512  # STFT frames per block: bounds log_mel's working memory (~10 MB)
_LOG_FLOOR = 1e-5  # f5-tts: mel.clamp(min=1e-5).log()


@functools.lru_cache(maxsize=8)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """torchaudio.functional.melscale_fbanks(htk, norm=None, f_min 0, f_max sr/2), as (n_freqs, n_mels)."""
    n_freqs = n_fft // 2 + 1
    all_freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
    m_max = 2595.0 * math.log10(1.0 + (sample_rate / 2) / 700.0)
    m_pts = np.linspace(0.0, m_max, n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=8)
def _stft_window(win_length: int, n_fft: int) -> np.ndarray:
    """torch.hann_window(win_length) (periodic), zero-padded to n_fft in the centre like torch.stft.

    torch builds the window in float32 arithmetic; its rounding (a few 1e-8) acts as a tiny fixed
    leakage that is visible in near-silent mel bands (up to 0.06 in log-mel next to a pure tone),
    so it is reproduced here: float32 phase, cos rounded to float32, 0.5 - 0.5 * cos in float32.
    """
    f32 = np.float32
    phase = np.arange(win_length + 1, dtype=f32) * f32(2.0 * math.pi / win_length)
    cos = np.cos(phase.astype(np.float64)).astype(f32)
    w = (f32(0.5) - f32(0.5) * cos)[:win_length] if win_length > 1 else np.ones(1, dtype=f32)
    left = (n_fft - win_length) // 2
    out = np.zeros(n_fft)
    out[left : left + win_length] = w
    out.setflags(write=False)
    return out


def log_mel(
    x: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    win_length: int = WIN_LENGTH,
    n_mels: int = N_MELS,
) -> np.ndarray:
    """Log-magnitude mel spectrogram (n_mels, 1 + len(x) // hop_length) float32.

    Equals f5-tts MelSpec(mel_spec_type="vocos"): torchaudio MelSpectrogram(power=1, center=True
    with reflect padding, norm=None, htk) then log(clamp(., 1e-5)). torch refuses reflect padding
    wider than the input, so audio of n_fft // 2 samples or fewer is an error here too. Frames are
    computed in blocks straight from the input (reflecting indices at the edges), so long audio
    never needs a padded float64 copy of itself.
    """
    a = _mono(x)
    if win_length > n_fft or hop_length <= 0:
        raise AudioError("log_mel needs 0 < hop_length and win_length <= n_fft")
    pad = n_fft // 2
    length = a.shape[0]
    if length <= pad:
        raise AudioError(f"audio too short for a mel frame: {length} samples, need more than {pad}")
    fb = _mel_filterbank(int(sample_rate), n_fft, n_mels)
    window = _stft_window(win_length, n_fft)
    n_frames = 1 + (length + 2 * pad - n_fft) // hop_length
    out = np.empty((n_mels, n_frames), dtype=np.float32)
    for f0 in range(0, n_frames, _MEL_BLOCK_FRAMES):
        f1 = min(n_frames, f0 + _MEL_BLOCK_FRAMES)
        idx = np.arange(f0 * hop_length, (f1 - 1) * hop_length + n_fft) - pad
        idx = np.abs(idx)  # reflect at the start (no edge repeat, as torch's "reflect")
        idx = np.where(idx >= length, 2 * (length - 1) - idx, idx)  # reflect at the end
        seg = a[idx].astype(np.float64)
        frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop_length]
        mag = np.abs(np.fft.rfft(frames * window, axis=-1))
        out[:, f0:f1] = np.log(np.maximum(mag @ fb, _LOG_FLOOR)).T
    return out
