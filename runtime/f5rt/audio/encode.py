"""Output audio as bytes and files: 16-bit samples exactly as f5-tts' soundfile.write makes them.

WAV, FLAC and raw PCM (s16le) here; the lossy formats of the server build on these samples in
f5rt.encoders.
"""

from __future__ import annotations

import io
import os

import numpy as np
import soundfile as sf

from f5rt.audio.checks import _check_rate, _mono
from f5rt.audio.load import _sf_message
from f5rt.errors import AudioError
from f5rt.files import atomic_write_bytes


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
