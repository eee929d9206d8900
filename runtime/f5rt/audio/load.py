"""Decoding a voice to mono float32 samples, as f5-tts does with torchaudio.load and a channel mean.

libsndfile (soundfile) decodes instead of torchaudio; the result is the same samples, and a file
that is too long, truncated or not audio is refused with one line of explanation.
"""

from __future__ import annotations

import io
import os
import re
from typing import BinaryIO

import numpy as np
import soundfile as sf

from f5rt.audio.checks import _check_rate
from f5rt.errors import AudioError

# Decoding stops before this many seconds unless the caller asks otherwise: a 10 MB upload of
# low-bitrate Ogg can expand to hours of float32, and a voice needs at most a few seconds.
MAX_LOAD_SECONDS = 600.0

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO

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
