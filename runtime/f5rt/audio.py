"""Audio I/O and signal processing for the runtime, numerically equal to what f5-tts does with torch.

f5-tts prepares a voice with torchaudio (load, channel mean, Resample, MelSpectrogram) and pydub
(silence-aware clipping of the reference), and post-processes the output with numpy (cross-fade)
and soundfile (WAV). The device runtime may not import torch, so every step is re-derived here in
numpy from the reference behaviour; tests/test_audio.py pins each function against the original.

All audio here is mono float32 in [-1, 1] (full scale 1.0, so dBFS thresholds mean what they mean
in pydub for 16-bit files). Bad input raises f5rt.errors.AudioError with one line of explanation.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
import soundfile as sf

from f5rt.errors import AudioError
from f5rt.files import atomic_write_bytes

__all__ = [
    "HOP_LENGTH",
    "N_FFT",
    "N_MELS",
    "SAMPLE_RATE",
    "WIN_LENGTH",
    "clip_reference",
    "cross_fade",
    "encode_audio",
    "load_audio",
    "log_mel",
    "resample",
    "rms",
    "trim_silence",
    "write_wav",
]

# The model's audio contract (f5-tts MelSpec(mel_spec_type="vocos") defaults).
SAMPLE_RATE = 24000
N_FFT = 1024
HOP_LENGTH = 256
WIN_LENGTH = 1024
N_MELS = 100

# Sample rates outside this range are treated as a corrupt header, not as audio: below 4 kHz
# nothing of a voice survives, and absurd rates would make the resampling filter huge.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 768000
# Decoding stops before this many seconds unless the caller asks otherwise: a 10 MB upload of
# low-bitrate Ogg can expand to hours of float32, and a voice needs at most a few seconds.
MAX_LOAD_SECONDS = 600.0

_MEL_BLOCK_FRAMES = 512  # STFT frames per block: bounds log_mel's working memory (~10 MB)
_LOG_FLOOR = 1e-5  # f5-tts: mel.clamp(min=1e-5).log()

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


# ----------------------------------------------------------------------------------------------
# validation


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


# ----------------------------------------------------------------------------------------------
# loading


_TRUNCATED = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers leave the data size as a placeholder; that is not truncation.
_SIZE_PLACEHOLDERS = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFFFFFFFFFF}


def _sf_message(e: BaseException) -> str:
    msg = getattr(e, "error_string", None) or str(e)
    return " ".join(str(msg).split())


def load_audio(source: AudioSource, *, max_seconds: float | None = MAX_LOAD_SECONDS) -> tuple[np.ndarray, int]:
    """Decode a file, bytes or binary stream to (mono float32 samples, sample rate).

    Channels are averaged, as f5-tts does with torch.mean(dim=0) after torchaudio.load; integer
    PCM is scaled by 1/2**(bits-1) like torchaudio. Anything libsndfile reads is accepted (WAV,
    FLAC, Ogg/Vorbis/Opus, MP3 with libsndfile >= 1.1). A WAV whose header promises more data
    than the file holds is refused as truncated, rather than silently giving a shorter voice.
    """
    name = "audio"
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError("audio is empty (zero bytes)")
        stream: object = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if not os.path.isfile(name):
            raise AudioError(f"audio file not found: {name}")
        stream = name
    elif hasattr(source, "read"):
        stream = source
    else:
        raise AudioError(f"cannot read audio from a {type(source).__name__}")

    try:
        with sf.SoundFile(stream) as f:
            sr, frames, channels = int(f.samplerate), int(f.frames), int(f.channels)
            _check_rate(sr)
            if channels < 1:
                raise AudioError(f"{name}: no audio channels")
            if max_seconds is not None and frames > max_seconds * sr:
                raise AudioError(f"{name} is {frames / sr:.1f} s long; at most {max_seconds:g} s is accepted")
            m = _TRUNCATED.search(f.extra_info or "")
            if m and int(m.group(1)) not in _SIZE_PLACEHOLDERS and int(m.group(1)) > int(m.group(2)):
                raise AudioError(f"{name} is truncated: header declares {m.group(1)} data bytes, file has {m.group(2)}")
            data = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError) as e:
        raise AudioError(f"cannot decode {name}: {_sf_message(e)}") from None

    if data.shape[0] == 0:
        raise AudioError(f"{name} is empty (no samples)")
    x = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise AudioError(f"{name} contains NaN or infinite samples")
    return x, sr


# ----------------------------------------------------------------------------------------------
# resampling (torchaudio.functional.resample, sinc_interp_hann)


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


# ----------------------------------------------------------------------------------------------
# log-mel spectrogram (f5-tts MelSpec, vocos flavour)


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


# ----------------------------------------------------------------------------------------------
# silence handling with pydub semantics (times in integer milliseconds, as pydub slices)


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


# ----------------------------------------------------------------------------------------------
# joining and writing


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


def _to_pcm16(a: np.ndarray) -> np.ndarray:
    """float -> int16 the way libsndfile writes float data to 16-bit WAV (what f5-tts' sf.write does).

    libsndfile rounds to 32-bit and keeps the top 16 bits (an arithmetic shift, i.e. floor); values
    beyond full scale saturate instead of wrapping.
    """
    wide = np.clip(np.rint(a.astype(np.float64) * 2.0**31), -(2.0**31), 2.0**31 - 1)
    return np.floor(wide / 65536.0).astype(np.int16)


_FORMATS = {"wav": "WAV", "flac": "FLAC"}


def encode_audio(x: np.ndarray, sr: int, fmt: str) -> bytes:
    """Mono float audio as bytes: "wav" (16-bit PCM), "pcm" (raw s16le) or "flac" (16-bit)."""
    a = _mono(x, allow_empty=True)
    sr = _check_rate(sr)
    kind = str(fmt).lower()
    pcm = _to_pcm16(a)
    if kind == "pcm":
        return pcm.astype("<i2").tobytes()
    if kind not in _FORMATS:
        raise AudioError(f"unsupported audio format {fmt!r}; use one of: wav, pcm, flac")
    buf = io.BytesIO()
    try:
        sf.write(buf, pcm, sr, format=_FORMATS[kind], subtype="PCM_16")
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as e:
        raise AudioError(f"cannot encode {kind}: {_sf_message(e)}") from None
    return buf.getvalue()


def write_wav(path: str | os.PathLike[str], x: np.ndarray, sr: int) -> None:
    """Write 16-bit PCM WAV atomically: readers never see a half-written file."""
    atomic_write_bytes(path, encode_audio(x, sr, "wav"))
