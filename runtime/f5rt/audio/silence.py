"""Silence handling with pydub semantics (times in integer milliseconds, as pydub slices).

f5-tts clips the reference voice (clip_reference) and trims long pauses from its output
(trim_silence) with pydub; these are the same cuts computed on numpy samples.
"""

from __future__ import annotations

import numpy as np

from f5rt.audio.checks import _check_rate, _mono
from f5rt.errors import AudioError


def _ms_to_frames(ms: float | np.ndarray, sr: int) -> np.ndarray:
    """pydub's frame_count(ms): ms * (rate / 1000), truncated."""
    return (np.asarray(ms, dtype=np.float64) * (sr / 1000.0)).astype(np.int64)


def _len_ms(n: int, sr: int) -> int:
    """pydub's len(segment): round(1000 * frames / rate)."""
    return round(1000 * (n / sr))


def _cumsq(a: np.ndarray) -> np.ndarray:
    cs = np.empty(a.shape[0] + 1, dtype=np.float64)
    cs[0] = 0.0
    np.cumsum(np.square(a, dtype=np.float64), out=cs[1:])
    return cs


def _window_rms(cs: np.ndarray, n: int, sr: int, start_ms: np.ndarray, end_ms: np.ndarray, len_ms: int) -> np.ndarray:
    """RMS of pydub slices [start_ms, end_ms) (end clamped to the length; short tails count as zeros)."""
    a = np.minimum(_ms_to_frames(start_ms, sr), n)
    b_expected = _ms_to_frames(np.minimum(end_ms, len_ms), sr)
    b = np.minimum(b_expected, n)
    count = np.maximum(b_expected - a, 0)
    energy = np.maximum(cs[b] - cs[a], 0.0)
    mean_square = np.divide(energy, count, out=np.zeros_like(energy), where=count > 0)
    return np.asarray(np.sqrt(mean_square), dtype=np.float64)


def _detect_silence(cs: np.ndarray, n: int, sr: int, min_len: int, thresh_db: float, step: int) -> list[list[int]]:
    """pydub.silence.detect_silence: [start_ms, end_ms] ranges whose sliding RMS is <= threshold."""
    seg_len = _len_ms(n, sr)
    if seg_len < min_len:
        return []
    threshold = 10.0 ** (thresh_db / 20.0)
    last = seg_len - min_len
    starts = list(range(0, last + 1, step))
    if last % step:
        starts.append(last)
    s = np.asarray(starts, dtype=np.int64)
    quiet = s[_window_rms(cs, n, sr, s, s + min_len, seg_len) <= threshold].tolist()
    if not quiet:
        return []
    ranges: list[list[int]] = []
    current = prev = quiet[0]
    for i in quiet[1:]:
        # Windows that are neither consecutive nor overlapping start a new silent range.
        if i != prev + step and i > prev + min_len:
            ranges.append([current, prev + min_len])
            current = i
        prev = i
    ranges.append([current, prev + min_len])
    return ranges


def _split_on_silence(
    a: np.ndarray, sr: int, min_len: int, thresh_db: float, keep: int, step: int = 10
) -> list[tuple[int, int]]:
    """pydub.silence.split_on_silence as sample ranges of `a` (keep_silence in ms, shared when short)."""
    n = a.shape[0]
    cs = _cumsq(a)
    seg_len = _len_ms(n, sr)
    silent = _detect_silence(cs, n, sr, min_len, thresh_db, step)
    if not silent:
        loud = [[0, seg_len]]
    elif silent[0][0] == 0 and silent[0][1] == seg_len:
        loud = []
    else:
        loud, prev_end = [], 0
        for start, end in silent:
            loud.append([prev_end, start])
            prev_end = end
        if silent[-1][1] != seg_len:
            loud.append([prev_end, seg_len])
        if loud[0] == [0, 0]:
            loud.pop(0)
    ranges = [[start - keep, end + keep] for start, end in loud]
    for left, right in zip(ranges, ranges[1:], strict=False):
        if right[0] < left[1]:  # kept margins overlap: meet in the middle
            left[1] = (left[1] + right[0]) // 2
            right[0] = left[1]
    out = []
    for start, end in ranges:
        lo = int(min(_ms_to_frames(min(max(start, 0), seg_len), sr), n))
        hi = int(min(_ms_to_frames(min(end, seg_len), sr), n))
        out.append((lo, hi))
    return out


def _leading_silence(a: np.ndarray, sr: int, thresh_db: float, chunk_ms: int = 10) -> int:
    """pydub.silence.detect_leading_silence: ms of leading chunks quieter than thresh_db."""
    n = a.shape[0]
    seg_len = _len_ms(n, sr)
    if seg_len == 0:
        return 0
    starts = np.arange(0, seg_len, chunk_ms, dtype=np.int64)
    levels = _window_rms(_cumsq(a), n, sr, starts, starts + chunk_ms, seg_len)
    loud = np.flatnonzero(levels >= 10.0 ** (thresh_db / 20.0))  # "not dBFS < threshold"
    trim = int(starts[loud[0]]) if loud.size else int(starts[-1]) + chunk_ms
    return min(trim, seg_len)


def _strip_edges(a: np.ndarray, sr: int, thresh_db: float) -> np.ndarray:
    """f5-tts remove_silence_edges: cut leading, then trailing (on the reversed audio) silence."""
    start = _leading_silence(a, sr, thresh_db)
    a = a[int(_ms_to_frames(start, sr)) :]
    end = _leading_silence(a[::-1], sr, thresh_db)
    if end > 0:
        a = a[: int(_ms_to_frames(_len_ms(a.shape[0], sr) - end, sr))]
    return a


def _gather_until(a: np.ndarray, sr: int, pieces: list[tuple[int, int]], max_ms: float) -> np.ndarray:
    """f5-tts' loop: append pieces until one would push a clip already over max/2 past max."""
    kept: list[np.ndarray] = []
    total = 0
    for lo, hi in pieces:
        if _len_ms(total, sr) > max_ms / 2 and _len_ms(total + hi - lo, sr) > max_ms:
            break
        kept.append(a[lo:hi])
        total += hi - lo
    return np.concatenate(kept) if kept else a[:0]


def clip_reference(x: np.ndarray, sr: int, max_seconds: float = 12.0) -> np.ndarray:
    """f5-tts' preprocess_ref_audio_text on samples: a reference of at most ~max_seconds.

    Prefer dropping long pauses (split on >= 1000 ms below -50 dBFS, keeping 1000 ms around each
    piece) and stopping at a piece boundary; if that is still too long, split on short pauses
    (100 ms below -40 dBFS); else cut hard at max_seconds. Then strip silence at both ends
    (-42 dBFS, 10 ms chunks) and append 50 ms of silence so the voice does not start the clip
    mid-breath. Audio with nothing above the thresholds is refused: it cannot be a voice.
    """
    a = _mono(x)
    sr = _check_rate(sr)
    if not max_seconds > 0:
        raise AudioError(f"max_seconds must be positive, got {max_seconds!r}")
    max_ms = max_seconds * 1000.0
    clip = _gather_until(a, sr, _split_on_silence(a, sr, 1000, -50.0, keep=1000), max_ms)
    if _len_ms(clip.shape[0], sr) > max_ms:
        clip = _gather_until(a, sr, _split_on_silence(a, sr, 100, -40.0, keep=1000), max_ms)
    if _len_ms(clip.shape[0], sr) > max_ms:
        clip = clip[: int(_ms_to_frames(max_ms, sr))]
    clip = _strip_edges(clip, sr, -42.0)
    if clip.shape[0] == 0:
        raise AudioError("reference audio is silent (nothing above -42 dBFS)")
    tail = np.zeros(int(_ms_to_frames(50, sr)), dtype=np.float32)
    return np.concatenate([clip.astype(np.float32), tail])


def trim_silence(x: np.ndarray, sr: int) -> np.ndarray:
    """f5-tts remove_silence_for_generated_wav: drop pauses >= 1 s below -50 dBFS, keeping 500 ms.

    Audio that is silent throughout comes back empty, as in f5-tts.
    """
    a = _mono(x, allow_empty=True)
    sr = _check_rate(sr)
    if a.size == 0:
        return a.astype(np.float32)
    pieces = [a[lo:hi] for lo, hi in _split_on_silence(a, sr, 1000, -50.0, keep=500)]
    return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)
