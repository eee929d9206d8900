"""f5rt.encoders: every response format decodes back to the audio it was given, and streams where it can.

Lossless formats must give the exact 16-bit samples `f5rt.audio.encode_audio` writes; lossy ones are
decoded (libsndfile for mp3/opus, PyAV for aac) and compared by length and by waveform (a 440 Hz tone
survives every codec at these bit rates nearly unchanged, so a wrong rate, channel count, gain or
ADTS framing shows up as a large error). Streaming formats must hand out bytes before `finish()`.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from f5rt import encoders as E
from f5rt.audio import encode_audio
from f5rt.errors import AudioError, EncoderUnavailable

SR = 24000
TONE = (0.4 * np.sin(2 * np.pi * 440 * np.arange(int(SR * 1.5)) / SR)).astype(np.float32)


def stream(fmt: str, x: np.ndarray, pieces: int = 6) -> tuple[bytes, list[bytes]]:
    with E.open_encoder(fmt, SR) as enc:
        parts = [enc.push(p) for p in np.array_split(x, pieces)]
        tail = enc.finish()
    return b"".join(parts) + tail, parts


def decode(fmt: str, data: bytes) -> np.ndarray:
    if fmt == "aac":
        av = pytest.importorskip("av")
        with av.open(io.BytesIO(data)) as c:
            assert c.streams.audio[0].codec_context.sample_rate == SR
            return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)[0]
    if fmt == "mp3":
        av = pytest.importorskip("av")  # libsndfile's reader trusts the (streamed, unpatched) tag frame
        with av.open(io.BytesIO(data)) as c:
            return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)[0]
    audio, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == SR
    return audio


def best_lag_error(got: np.ndarray, want: np.ndarray, max_lag: int = 4096) -> float:
    """Smallest RMS error of `want` against `got` shifted by the codec's delay (0..max_lag samples)."""
    n = len(want) - max_lag
    errs = [np.sqrt(np.mean((got[lag : lag + n] - want[:n]) ** 2)) for lag in range(0, min(max_lag, len(got) - n))]
    return float(min(errs)) / float(np.sqrt(np.mean(want[:n] ** 2)))


@pytest.mark.parametrize("fmt", ["pcm", "wav", "flac"])
def test_lossless_formats_are_the_exact_16_bit_samples(fmt: str) -> None:
    data, _ = stream(fmt, TONE)
    want = np.frombuffer(encode_audio(TONE, SR, "pcm"), "<i2")
    got = np.frombuffer(data, "<i2") if fmt == "pcm" else sf.read(io.BytesIO(data), dtype="int16")[0]
    assert np.array_equal(got, want)
    assert E.encode(TONE, SR, fmt) == (data if fmt != "wav" else encode_audio(TONE, SR, "wav"))


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac"])
def test_lossy_formats_stream_and_decode_to_the_input(fmt: str) -> None:
    if fmt == "aac":
        pytest.importorskip("av")
    data, parts = stream(fmt, TONE)
    assert sum(1 for p in parts[:-1] if p) >= 2, f"{fmt} held everything back until finish()"
    got = decode(fmt, data)
    assert len(TONE) <= len(got) <= len(TONE) + 4096, f"{len(got)} samples for {len(TONE)}"
    assert best_lag_error(got, TONE) < 0.25
    whole = decode(fmt, E.encode(TONE, SR, fmt))  # one-shot: a complete file
    assert len(TONE) <= len(whole) <= len(TONE) + 4096
    assert best_lag_error(whole, TONE) < 0.25


def test_aac_is_adts_framed_as_ffmpeg_would() -> None:
    """Our ADTS headers around the encoder's packets equal FFmpeg's own adts muxer, byte for byte."""
    av = pytest.importorskip("av")
    ours = E.encode(TONE, SR, "aac")
    out = io.BytesIO()
    with av.open(out, "w", format="adts") as c:
        st = c.add_stream("aac", rate=SR, layout="mono")
        st.bit_rate = 64000
        for i in range(0, len(TONE), 1024):
            block = TONE[i : i + 1024]
            frame = av.AudioFrame.from_ndarray(block[None, :].copy(), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SR, i
            for p in st.encode(frame):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    assert ours == out.getvalue()
    assert ours[:2] == b"\xff\xf1"  # syncword, MPEG-4, no CRC


def test_missing_or_unknown_encoders_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AudioError, match="use one of"):
        E.open_encoder("wma", SR)

    def no_av() -> None:
        raise EncoderUnavailable("response_format 'aac' needs PyAV on the server: pip install 'f5rt[aac]'")

    monkeypatch.setattr(E, "_import_av", no_av)
    with pytest.raises(EncoderUnavailable, match=r"f5rt\[aac\]") as info:
        E.require("aac", SR)
    assert info.value.http_status == 400 and info.value.code == "format_unavailable"
    with pytest.raises(EncoderUnavailable, match="sample rate"):
        E.require("opus", 22050)  # libsndfile's Opus takes 8/12/16/24/48 kHz only


def test_empty_streams_are_valid_files() -> None:
    assert stream("pcm", np.zeros(0, np.float32))[0] == b""
    wav, _ = stream("wav", np.zeros(0, np.float32))
    assert sf.info(io.BytesIO(encode_audio(np.zeros(0, np.float32), SR, "wav"))).frames == 0
    assert wav[:4] == b"RIFF" and len(wav) == 44
