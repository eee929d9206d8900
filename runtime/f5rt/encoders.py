"""Audio encoders for the API's response formats, incremental where the container allows it.

    format  encoder                         streamed as produced?
    pcm     numpy (s16le, no header)        yes
    wav     numpy (header of unknown size)  yes: the 0xFFFFFFFF size is what streaming WAV readers expect
    mp3     libsndfile (LAME)               yes: frames as LAME emits them
    opus    libsndfile (Ogg/Opus)           yes: Ogg pages as they fill
    aac     PyAV (FFmpeg's aac), ADTS       yes: one ADTS frame per AAC packet
    flac    libsndfile                      no: STREAMINFO holds the total length and MD5, written at the end

mp3 and opus come with soundfile's bundled libsndfile (>= 1.1: no new dependency); aac needs PyAV,
the `aac` extra. A format whose library is missing raises EncoderUnavailable naming what to install,
before any synthesis runs (`require(fmt)`).

Why 16-bit quantisation only for the lossless formats: pcm/wav/flac carry the exact samples the
synthesizer made, as `f5rt.audio.encode_audio` writes them (the contract tests compare bit for bit);
the lossy encoders take float32 directly, so quantisation noise is not added twice.

libsndfile writes through a seekable file object; `_Sink` hands out the bytes past what was already
sent. MP3 is the one format that seeks back at close (LAME rewrites its first, tag frame with the
final frame count); in a stream that rewrite is dropped, leaving the placeholder frame as written,
which players decode as one silent frame. One-shot `encode()` writes a normal, complete file.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import numpy as np

from f5rt.audio import encode_audio
from f5rt.errors import AudioError, EncoderUnavailable

# libsndfile's Opus encoder takes only these rates.
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# ADTS sampling_frequency_index (ISO/IEC 14496-3, table 1.18).
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


@dataclass(frozen=True)
class AudioFormat:
    name: str
    media_type: str
    streamed: bool  # bytes leave as pieces are synthesized (False: one piece at the end)
    install: str | None = None  # what provides the encoder, when it is optional


FORMATS = MappingProxyType(
    {
        "wav": AudioFormat("wav", "audio/wav", True),
        "pcm": AudioFormat("pcm", "audio/pcm", True),
        "flac": AudioFormat("flac", "audio/flac", False),
        "mp3": AudioFormat("mp3", "audio/mpeg", True, "soundfile>=0.12 with libsndfile>=1.1"),
        "opus": AudioFormat("opus", "audio/ogg", True, "soundfile>=0.12 with libsndfile>=1.1"),
        "aac": AudioFormat("aac", "audio/aac", True, "pip install 'f5rt[aac]'"),
    }
)
_SNDFILE = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """A 44-byte PCM16 mono WAV header; data_bytes None = unknown length (streaming: 0xFFFFFFFF)."""
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", size)


def audio_format(fmt: str) -> AudioFormat:
    """The format named `fmt`, or AudioError listing the known ones."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise AudioError(f"unsupported audio format {fmt!r}; use one of: {', '.join(FORMATS)}")
    return spec


def require(fmt: str, sample_rate: int) -> AudioFormat:
    """The format, once its encoder is known to work here (EncoderUnavailable says what to install)."""
    spec = audio_format(fmt)
    if fmt in _SNDFILE:
        import soundfile as sf

        container, subtype = _SNDFILE[fmt]
        if container not in sf.available_formats() or subtype not in sf.available_subtypes(container):
            raise EncoderUnavailable(
                f"response_format {fmt!r} needs libsndfile >= 1.1 with {container}/{subtype} "
                f"(this one is {sf.__libsndfile_version__}): pip install -U soundfile"
            )
        if fmt == "opus" and sample_rate not in OPUS_RATES:
            raise EncoderUnavailable(f"opus needs a sample rate in {OPUS_RATES}, the model makes {sample_rate} Hz")
    elif fmt == "aac":
        _import_av()
        if sample_rate not in _ADTS_RATES:
            raise EncoderUnavailable(f"aac (ADTS) has no sample rate {sample_rate} Hz")
    return spec


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise EncoderUnavailable(
            "response_format 'aac' needs PyAV on the server: pip install 'f5rt[aac]' (or choose mp3, opus, wav)"
        ) from None
    return av


class StreamEncoder:
    """push(samples) -> the bytes ready so far; finish() -> the rest. Mono float32 in, one container out."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate

    def push(self, samples: np.ndarray) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release the encoder without finishing (a cancelled stream); idempotent."""

    def __enter__(self) -> StreamEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Pcm(StreamEncoder):
    def push(self, samples: np.ndarray) -> bytes:
        return encode_audio(samples, self.sample_rate, "pcm")

    def finish(self) -> bytes:
        return b""


class _Wav(_Pcm):
    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._header: bytes | None = wav_header(sample_rate, None)

    def push(self, samples: np.ndarray) -> bytes:
        head, self._header = self._header or b"", None
        return head + super().push(samples)

    def finish(self) -> bytes:
        head, self._header = self._header or b"", None
        return head  # an empty stream is still a valid (empty) WAV


class _Whole(StreamEncoder):
    """Collects everything and encodes once at the end (FLAC)."""

    def __init__(self, sample_rate: int, fmt: str) -> None:
        super().__init__(sample_rate)
        self._fmt, self._pieces = fmt, [np.zeros(0, np.float32)]

    def push(self, samples: np.ndarray) -> bytes:
        self._pieces.append(np.asarray(samples, np.float32).reshape(-1))
        return b""

    def finish(self) -> bytes:
        audio, self._pieces = np.concatenate(self._pieces), []
        return encode_audio(audio, self.sample_rate, self._fmt)


class _Sink:
    """A seekable in-memory file for libsndfile that knows how much of it was already sent."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.pos = 0
        self.sent = 0

    def write(self, b: Any) -> int:
        chunk = bytes(b)
        end = self.pos + len(chunk)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[self.pos : end] = chunk  # below `sent` it changes only the copy, never the stream
        self.pos = end
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: len(self.data)}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else min(len(self.data), self.pos + n)
        out = bytes(self.data[self.pos : end])
        self.pos += len(out)
        return out

    def take(self) -> bytes:
        out = bytes(self.data[self.sent :])
        self.sent = len(self.data)
        return out


class _Sndfile(StreamEncoder):
    def __init__(self, sample_rate: int, fmt: str) -> None:
        import soundfile as sf

        super().__init__(sample_rate)
        container, subtype = _SNDFILE[fmt]
        self._sink = _Sink()
        self._file: Any = sf.SoundFile(
            self._sink, "w", samplerate=sample_rate, channels=1, format=container, subtype=subtype
        )

    def push(self, samples: np.ndarray) -> bytes:
        x = np.clip(np.asarray(samples, np.float32).reshape(-1), -1.0, 1.0)
        if len(x):
            self._file.write(x)
        return self._sink.take()

    def finish(self) -> bytes:
        self.close()
        return self._sink.take()

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()


class _Aac(StreamEncoder):
    """FFmpeg's native AAC-LC encoder through PyAV; each packet framed as ADTS (a raw streamable format)."""

    def __init__(self, sample_rate: int, bit_rate: int = 64000) -> None:
        av = _import_av()
        super().__init__(sample_rate)
        self._av = av
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate = sample_rate
        ctx.layout = "mono"
        ctx.format = "fltp"
        ctx.bit_rate = bit_rate
        ctx.time_base = Fraction(1, sample_rate)
        ctx.open()
        self._ctx: Any = ctx
        self._frame = int(ctx.frame_size)  # 1024: the encoder takes whole frames, only the last may be short
        self._held = np.zeros(0, np.float32)
        self._pts = 0
        self._header = _adts_fixed(bytes(ctx.extradata))

    def _encode(self, block: np.ndarray | None) -> bytes:
        if self._ctx is None:
            raise AudioError("the aac encoder is closed")
        frame = None
        if block is not None:
            frame = self._av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = self.sample_rate, self._pts
            self._pts += len(block)
        return b"".join(self._adts(bytes(p)) for p in self._ctx.encode(frame))

    def _adts(self, payload: bytes) -> bytes:
        n = len(payload) + 7  # frame_length counts the 7-byte header (no CRC)
        h = bytearray(self._header)
        h[3] |= (n >> 11) & 0x03
        h[4] = (n >> 3) & 0xFF
        h[5] = ((n & 0x07) << 5) | 0x1F  # buffer fullness 0x7FF: variable bit rate
        h[6] = 0xFC  # fullness, and one raw data block per frame
        return bytes(h) + payload

    def push(self, samples: np.ndarray) -> bytes:
        x = np.concatenate([self._held, np.clip(np.asarray(samples, np.float32).reshape(-1), -1.0, 1.0)])
        whole = len(x) - len(x) % self._frame
        self._held = x[whole:]
        return b"".join(self._encode(x[i : i + self._frame]) for i in range(0, whole, self._frame))

    def finish(self) -> bytes:
        out = self._encode(self._held) if len(self._held) else b""
        self._held = np.zeros(0, np.float32)
        out += self._encode(None)  # drain the encoder's look-ahead
        self.close()
        return out

    def close(self) -> None:
        self._ctx = None  # PyAV frees FFmpeg's codec context with its last reference


def _adts_fixed(asc: bytes) -> bytes:
    """The first 4 bytes of every ADTS header from the encoder's AudioSpecificConfig, plus 3 to fill in."""
    if len(asc) < 2:
        raise AudioError("the AAC encoder gave no AudioSpecificConfig")
    object_type = asc[0] >> 3
    freq_index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7)
    channels = (asc[1] >> 3) & 0x0F
    if not 1 <= object_type <= 4 or freq_index > 12:
        raise AudioError(f"AAC object type {object_type} / rate index {freq_index} cannot be framed as ADTS")
    b0, b1 = 0xFF, 0xF1  # syncword, MPEG-4, layer 0, no CRC
    b2 = ((object_type - 1) << 6) | (freq_index << 2) | (channels >> 2)
    b3 = (channels & 0x03) << 6
    return bytes((b0, b1, b2, b3, 0, 0, 0))


def open_encoder(fmt: str, sample_rate: int) -> StreamEncoder:
    """A fresh incremental encoder for `fmt` (see the module table)."""
    require(fmt, sample_rate)
    if fmt == "pcm":
        return _Pcm(sample_rate)
    if fmt == "wav":
        return _Wav(sample_rate)
    if fmt in _SNDFILE:
        return _Sndfile(sample_rate, fmt)
    if fmt == "aac":
        return _Aac(sample_rate)
    return _Whole(sample_rate, fmt)


def encode(x: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """A whole waveform in `fmt`: complete files (MP3 with its final tag frame, WAV with its real size)."""
    spec = require(fmt, sample_rate)
    if fmt in ("wav", "pcm", "flac"):
        return encode_audio(x, sample_rate, spec.name)
    if fmt in _SNDFILE:
        import soundfile as sf

        container, subtype = _SNDFILE[fmt]
        buf = io.BytesIO()
        sf.write(
            buf, np.clip(np.asarray(x, np.float32).reshape(-1), -1, 1), sample_rate, format=container, subtype=subtype
        )
        return buf.getvalue()
    with open_encoder(fmt, sample_rate) as enc:
        return enc.push(x) + enc.finish()


__all__ = ["FORMATS", "OPUS_RATES", "AudioFormat", "StreamEncoder", "encode", "open_encoder", "require", "wav_header"]
