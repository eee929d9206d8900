"""f5rt.audio against what f5-tts actually runs: torchaudio's Resample, f5-tts' MelSpec, f5-tts'
pydub-based reference clipping and silence removal, its cross-fade loop, and soundfile's WAV writer.
"""

from __future__ import annotations

import copy
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import speechlike
from f5rt import audio as A
from f5rt.errors import AudioError

try:  # the reference side: absent in `nox -s runtime` (Python 3.10), where only f5rt's own checks run
    import torch
    import torchaudio.transforms as T
except ImportError:
    torch = T = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch / torchaudio not installed (the reference side)")

SR = A.SAMPLE_RATE
RNG_SEED = 1234


def _noise(n: int, amp: float, seed: int) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _wav_bytes(x: np.ndarray, sr: int, **kw: object) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, **{"format": "WAV", **kw})
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ resample


@needs_torch
@pytest.mark.parametrize("orig", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("seconds", [0.0, 0.0003, 0.05, 1.5])
def test_resample_matches_torchaudio(orig: int, seconds: float) -> None:
    n = max(1, int(seconds * orig) + 7)
    t = np.arange(n) / orig
    x = (0.4 * np.sin(2 * np.pi * 3000 * t) + _noise(n, 0.2, orig)).astype(np.float32)
    ref = T.Resample(orig, SR)(torch.from_numpy(x)[None])[0].numpy()
    y = A.resample(x, orig, SR)
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.abs(y - ref).max() <= 1e-5


@needs_torch
@pytest.mark.parametrize(("orig", "new"), [(24000, 16000), (24000, 44100), (11025, 24000)])
def test_resample_other_directions(orig: int, new: int) -> None:
    x = speechlike(0.9, orig, 3)
    ref = T.Resample(orig, new)(torch.from_numpy(x)[None])[0].numpy()
    y = A.resample(x, orig, new)
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= 1e-5


def test_resample_identity_and_bad_input() -> None:
    x = _noise(100, 0.1, 0)
    y = A.resample(x, SR, SR)
    assert np.array_equal(y, x) and y is not x
    with pytest.raises(AudioError, match="sample rate"):
        A.resample(x, 0, SR)
    with pytest.raises(AudioError, match="sample rate"):
        A.resample(x, 10_000_000, SR)
    with pytest.raises(AudioError, match="1-D"):
        A.resample(np.zeros((2, 100), np.float32), 16000, SR)
    with pytest.raises(AudioError, match="NaN"):
        A.resample(np.array([0.0, np.nan], np.float32), 16000, SR)


@needs_torch
def test_rms_matches_f5_formula() -> None:
    x = speechlike(1.0, SR, 0)
    ref = torch.sqrt(torch.mean(torch.square(torch.from_numpy(x)))).item()
    assert A.rms(x) == pytest.approx(ref, rel=1e-6)
    with pytest.raises(AudioError, match="empty"):
        A.rms(np.zeros(0, np.float32))


# ------------------------------------------------------------------------------------------ log-mel


@pytest.fixture(scope="module")
def f5_modules():
    """Imported on first use (seconds: it pulls in f5-tts' trainer), so subsets run without it."""
    return pytest.importorskip("f5_tts.model.modules")


@pytest.fixture(scope="module")
def f5_infer():
    return pytest.importorskip("f5_tts.infer.utils_infer")


@pytest.fixture(scope="module")
def mel_spec(f5_modules):
    return f5_modules.MelSpec(mel_spec_type="vocos")


def _signals(n: int) -> dict[str, np.ndarray]:
    pause = np.zeros(n, np.float32)
    pause[: n // 3] = speechlike(n / SR + 1, SR, 2)[: n // 3]
    return {
        "noise": _noise(n, 0.3, n),
        "speech": speechlike(n / SR + 1, SR, 1)[:n],
        "quiet": _noise(n, 1e-4, n + 1),
        "speech_then_zeros": pause,  # digital silence: every band at the 1e-5 clamp
    }


@pytest.mark.parametrize("n", [513, 777, 1024, 1025, SR + 17, 7 * SR + 5])
def test_log_mel_matches_f5_melspec(mel_spec, n: int) -> None:
    """<= 1e-4 in every band within 60 dB of its frame's loudest band, <= 1e-3 elsewhere, except
    frames that straddle a switch to exact digital zeros.

    torch computes in float32: a bin's rounding error is ~eps32 * the frame's energy, so a band 60 dB
    or more below the frame's peak carries ~1e-4 relative noise from torch alone (seen: 1.5e-4 at
    -64 dB in band 0 with this torch build's FFT; 3.4e-5 at most above -60 dB). Where a frame
    straddles digital zeros, its only energy sits under the Hann window's near-zero end taps, and
    torch builds that window with a float32 cos that is 1 ulp off for some phases (its vectorised
    cos is not correctly rounded): up to ~1e-4 relative on those tiny taps, so up to ~3e-4 in log-mel.
    """
    # 7 s spans two of log_mel's frame blocks; 513 is the shortest input torch accepts.
    for name, x in _signals(n).items():
        ref = mel_spec(torch.from_numpy(x)[None])[0].numpy()
        y = A.log_mel(x)
        assert y.dtype == np.float32 and y.shape == ref.shape == (100, 1 + n // 256), name
        full = np.abs(y - ref)
        assert full.max(initial=0) <= 1e-3, name
        loud = ref >= ref.max(axis=0, keepdims=True) - np.log(1e3)  # within 60 dB of the frame's peak band
        err = np.where(loud, full, 0.0).max(axis=0)
        if name == "speech_then_zeros":
            centres = np.arange(err.size) * 256
            straddles = np.abs(centres - n // 3) < 512
            err = err[~straddles]
        assert err.max(initial=0) <= 1e-4, name


def test_log_mel_pure_tone_limit_is_torch_float32_noise(mel_spec, f5_modules) -> None:
    """Next to a pure tone most bands hold ~1e-5: there torch's float32 FFT rounding is the signal.

    torch's float32 result differs from torch's own float64 run of the same transform by ~0.7 in
    those bands; we sit near the float64 run, and agree with float32 to 1e-4 wherever a band is
    above float32 noise (> 0.03 in magnitude).
    """
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    ref32 = mel_spec(torch.from_numpy(x)[None])[0].numpy()
    transform = copy.deepcopy(next(iter(f5_modules.vocos_mel_stft_cache.values()))).double()
    ref64 = transform(torch.from_numpy(x.astype(np.float64))[None]).clamp(min=1e-5).log()[0].numpy()
    y = A.log_mel(x)
    above = ref64 > np.log(0.03)
    assert above.mean() > 0.1
    assert np.abs(y - ref32)[above].max() <= 1e-4
    torch_own = np.abs(ref32 - ref64).max()
    assert np.abs(y - ref64).max() < 0.1 < torch_own


@pytest.mark.parametrize("n", [1, 100, 512])
def test_log_mel_too_short_is_refused_like_torch(mel_spec, n: int) -> None:
    x = _noise(n, 0.1, n)
    with pytest.raises(RuntimeError, match="[Pp]adding"):
        mel_spec(torch.from_numpy(x)[None])
    with pytest.raises(AudioError, match="too short"):
        A.log_mel(x)


def test_log_mel_rejects_bad_input() -> None:
    with pytest.raises(AudioError, match="NaN"):
        A.log_mel(np.full(2048, np.inf, np.float32))
    with pytest.raises(AudioError, match="1-D"):
        A.log_mel(np.zeros((1, 2048), np.float32))


# ------------------------------------------------------------------------------------------ loading


@needs_torch
@pytest.mark.parametrize("sr", [16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16")])
def test_load_audio_formats(tmp_path: Path, sr: int, channels: int, fmt: str, subtype: str) -> None:
    rng = np.random.default_rng(sr + channels)
    if subtype == "PCM_16":
        data = rng.integers(-30000, 30000, size=(sr // 10, channels), dtype=np.int16)
        as_float = data.astype(np.float32) / 32768.0
    else:
        data = rng.uniform(-0.9, 0.9, size=(sr // 10, channels)).astype(np.float32)
        as_float = data
    # f5-tts: torchaudio.load (ints scaled by 1/32768) then torch.mean over channels.
    expected = torch.mean(torch.from_numpy(as_float.T.copy()), dim=0).numpy()
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, data, sr, format=fmt, subtype=subtype)
    raw = path.read_bytes()
    for source in (path, str(path), raw, io.BytesIO(raw)):
        y, got_sr = A.load_audio(source)
        assert got_sr == sr and y.dtype == np.float32 and y.ndim == 1
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-7)


def test_load_audio_accepts_streamed_wav_size_placeholder() -> None:
    # Writers that stream to a pipe cannot seek back: they leave 0xFFFFFFFF as the sizes.
    x = (np.arange(480) % 100).astype(np.int16)
    raw = bytearray(_wav_bytes(x, SR, subtype="PCM_16"))
    data_at = raw.index(b"data") + 4
    raw[4:8] = struct.pack("<I", 0xFFFFFFFF)
    raw[data_at : data_at + 4] = struct.pack("<I", 0xFFFFFFFF)
    y, _ = A.load_audio(bytes(raw))
    np.testing.assert_array_equal(y, x / np.float32(32768))


def _bad_sources() -> dict[str, bytes]:
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (SR, 2)).astype(np.float32)
    wav = _wav_bytes(x, SR, subtype="PCM_16")
    return {
        "empty bytes": b"",
        "not audio": b"this is not audio" * 20,
        "zero frames": _wav_bytes(np.zeros((0, 1), np.float32), SR),
        "truncated wav": wav[: len(wav) // 2],
        "header only": wav[:44],
        "truncated flac": _wav_bytes(x, SR, format="FLAC")[:20000],
        "nan samples": _wav_bytes(np.array([0.1, np.nan, 0.2], np.float32), SR, subtype="FLOAT"),
        "inf samples": _wav_bytes(np.array([0.1, np.inf], np.float32), SR, subtype="FLOAT"),
        "rate 100 Hz": _wav_bytes(x, 100),
        "rate 1 MHz": _wav_bytes(x, 1_000_000),
    }


@pytest.mark.parametrize("case", list(_bad_sources()))
def test_load_audio_errors(case: str) -> None:
    with pytest.raises(AudioError) as err:
        A.load_audio(_bad_sources()[case])
    assert "\n" not in str(err.value) and str(err.value)


def test_load_audio_missing_file_wrong_type_and_length_cap(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not found"):
        A.load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="cannot read audio"):
        A.load_audio(42)  # type: ignore[arg-type]
    with pytest.raises(AudioError, match="at most 0.5 s"):
        A.load_audio(_wav_bytes(np.zeros(SR, np.float32), SR), max_seconds=0.5)


# ------------------------------------------------------------------------------------------ silence


def _burst(seconds: float, seed: int) -> np.ndarray:
    return speechlike(seconds, SR, seed, rms=0.15) + _noise(int(seconds * SR), 0.02, seed)


def _pause(seconds: float, seed: int) -> np.ndarray:
    return _noise(int(seconds * SR), 1e-4, seed + 100)  # about -80 dBFS: silence, but not zeros


CLIP_CASES = {
    # f5-tts cuts at a >= 1 s pause once the clip is past 6 s and the next piece would pass 12 s.
    "long_pauses": [_pause(0.4, 0), _burst(3.1, 1), _pause(1.6, 2), _burst(2.7, 3), _pause(2.5, 4)]
    + [_burst(4.2, 5), _pause(1.3, 6), _burst(3.3, 7), _pause(0.7, 8)],
    # no long pause: falls back to 250 ms pauses (>= 100 ms below -40 dBFS)
    "short_pauses": [_pause(0.3, 0)] + [p for i in range(8) for p in (_noise(int(1.7 * SR), 0.2, i), _pause(0.25, i))],
    "no_pauses": [_burst(15.3, 9)],  # no pause at all: hard cut at 12 s
    "short_with_edges": [_pause(0.55, 1), _burst(4.0, 2), _pause(0.8, 3)],  # only the edges go
}


@pytest.mark.parametrize("case", list(CLIP_CASES))
def test_clip_reference_matches_f5_preprocess(f5_infer, tmp_path: Path, case: str) -> None:
    x = np.concatenate(CLIP_CASES[case])
    path = tmp_path / "ref.wav"
    sf.write(path, x, SR, subtype="PCM_16")
    out_path, _ = f5_infer.preprocess_ref_audio_text(str(path), "Some text.", show_info=lambda *a: None)
    try:
        ref, ref_sr = sf.read(out_path, dtype="float32")
    finally:
        os.remove(out_path)
    assert ref_sr == SR
    y = A.clip_reference(A.load_audio(path)[0], SR)
    assert abs(len(y) - len(ref)) <= SR // 100  # within 10 ms
    assert len(y) <= 12.06 * SR
    # Same samples, not just the same length (the 50 ms tail is pydub-resampled silence in f5-tts).
    body = min(len(y), len(ref)) - int(0.05 * SR)
    np.testing.assert_array_equal(y[:body], ref[:body])
    assert np.all(y[-int(0.05 * SR) :] == 0)


def test_clip_reference_paths_differ() -> None:
    """The four cases really exercise different branches (lengths f5-tts gives, in seconds)."""
    lengths = {case: len(A.clip_reference(np.concatenate(p), SR)) / SR for case, p in CLIP_CASES.items()}
    assert 6.0 < lengths["long_pauses"] < 11.0  # stops at a long pause, well short of 12 s
    assert 6.0 < lengths["short_pauses"] < 12.0
    assert lengths["no_pauses"] == pytest.approx(12.05, abs=0.002)
    assert lengths["short_with_edges"] == pytest.approx(4.05, abs=0.02)


def test_clip_reference_silent_and_bad_input() -> None:
    with pytest.raises(AudioError, match="silent"):
        A.clip_reference(_pause(3.0, 0), SR)
    with pytest.raises(AudioError, match="silent"):
        A.clip_reference(np.zeros(SR, np.float32), SR)
    with pytest.raises(AudioError, match="empty"):
        A.clip_reference(np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="sample rate"):
        A.clip_reference(_burst(1.0, 0), 12)


def test_trim_silence_matches_f5(f5_infer, tmp_path: Path) -> None:
    x = np.concatenate(
        [_pause(1.2, 0), _burst(2.0, 1), _pause(2.6, 2), _burst(1.5, 3), _pause(0.4, 4), _burst(1.0, 5), _pause(1.7, 6)]
    )
    path = tmp_path / "gen.wav"
    sf.write(path, x, SR, subtype="PCM_16")
    f5_infer.remove_silence_for_generated_wav(str(path))
    ref, _ = sf.read(path, dtype="float32")
    xq = sf.read(io.BytesIO(_wav_bytes(x, SR, subtype="PCM_16")), dtype="float32")[0]
    y = A.trim_silence(xq, SR)
    assert len(ref) < len(x) - 2 * SR  # it did remove something
    assert abs(len(y) - len(ref)) <= SR // 100
    n = min(len(y), len(ref))
    np.testing.assert_array_equal(y[:n], ref[:n])
    assert A.trim_silence(np.zeros(2 * SR, np.float32), SR).size == 0  # all silent: empty, as f5-tts


# ------------------------------------------------------------------------------------------ cross-fade


def _f5_cross_fade(waves: list[np.ndarray], seconds: float, sr: int) -> np.ndarray:
    """Transcription of infer_batch_process's joining loop (f5-tts 1.1.22)."""
    if seconds <= 0:
        return np.concatenate(waves)
    final = waves[0]
    for nxt in waves[1:]:
        prev = final
        n = min(int(seconds * sr), len(prev), len(nxt))
        if n <= 0:
            final = np.concatenate([prev, nxt])
            continue
        mixed = prev[-n:] * np.linspace(1, 0, n) + nxt[:n] * np.linspace(0, 1, n)
        final = np.concatenate([prev[:-n], mixed, nxt[n:]])
    return final


@pytest.mark.parametrize("seconds", [0.15, 0.01, 0.0, -1.0])
@pytest.mark.parametrize("lengths", [[9000, 7000, 8000], [9000, 100, 5000, 0, 4000, 3], [50], [0, 4000, 10]])
def test_cross_fade_matches_f5_loop(seconds: float, lengths: list[int]) -> None:
    rng = np.random.default_rng(len(lengths))
    waves = [rng.uniform(-1, 1, n).astype(np.float32) for n in lengths]
    ref = _f5_cross_fade(waves, seconds, SR)
    y = A.cross_fade(waves, seconds, SR)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, ref.astype(np.float32))


def test_cross_fade_shapes() -> None:
    n = int(0.15 * SR)
    y = A.cross_fade([np.ones(10000, np.float32), np.zeros(8000, np.float32)], 0.15, SR)
    assert len(y) == 10000 + 8000 - n
    np.testing.assert_array_equal(y[: 10000 - n], 1.0)
    np.testing.assert_array_equal(y[10000 - n : 10000], np.linspace(1, 0, n).astype(np.float32))  # fade out
    y = A.cross_fade([np.zeros(10000, np.float32), np.ones(8000, np.float32)], 0.15, SR)
    np.testing.assert_array_equal(y[10000 - n : 10000], np.linspace(0, 1, n).astype(np.float32))  # fade in
    y = A.cross_fade([np.full(5000, 0.5, np.float32)] * 3, 0.15, SR)  # constant stays constant
    np.testing.assert_allclose(y, 0.5, atol=1e-7)
    assert A.cross_fade([], 0.15, SR).size == 0


# ------------------------------------------------------------------------------------------ encoding


def test_encode_wav_is_byte_identical_to_soundfile() -> None:
    # f5-tts writes its output with sf.write(path, wave, 24000): float -> 16-bit PCM by libsndfile.
    x = np.concatenate([speechlike(0.5, SR, 4), np.linspace(-1.2, 1.2, 4001), np.arange(-50, 50) / 65536.0])
    for arr in (x, x.astype(np.float32)):
        assert A.encode_audio(arr, SR, "wav") == _wav_bytes(arr, SR)


def test_encode_round_trips_and_saturates(tmp_path: Path) -> None:
    x = np.concatenate([speechlike(0.3, SR, 5), [1.5, -1.5, 1.0, -1.0, 0.5, 0.0]]).astype(np.float32)
    wav = A.encode_audio(x, SR, "wav")
    decoded, sr = A.load_audio(wav)
    assert sr == SR and decoded.shape == x.shape
    inside = np.abs(x) <= 1
    assert np.all(np.abs(decoded - x)[inside] <= 1 / 32768 + 1e-9)
    ints = sf.read(io.BytesIO(wav), dtype="int16")[0]
    np.testing.assert_array_equal(ints[-6:], [32767, -32768, 32767, -32768, 16384, 0])  # no wrap-around
    assert A.encode_audio(x, SR, "pcm") == ints.astype("<i2").tobytes()
    flac = A.encode_audio(x, SR, "FLAC")
    np.testing.assert_array_equal(sf.read(io.BytesIO(flac), dtype="int16")[0], ints)
    assert sf.info(io.BytesIO(flac)).format == "FLAC"

    target = tmp_path / "out" / "speech.wav"
    A.write_wav(target, x, SR)
    assert target.read_bytes() == wav
    assert [p.name for p in target.parent.iterdir()] == ["speech.wav"]  # no temp file left behind


def test_encode_errors(tmp_path: Path) -> None:
    x = np.zeros(100, np.float32)
    with pytest.raises(AudioError, match="unsupported audio format"):
        A.encode_audio(x, SR, "mp3")
    with pytest.raises(AudioError, match="NaN"):
        A.encode_audio(np.array([0.0, np.nan], np.float32), SR, "wav")
    with pytest.raises(AudioError, match="sample rate"):
        A.encode_audio(x, -5, "wav")
    with pytest.raises(AudioError, match="sample rate"):
        A.write_wav(tmp_path / "x.wav", x, 0)
    assert not (tmp_path / "x.wav").exists()
    assert A.encode_audio(np.zeros(0, np.float32), SR, "pcm") == b""
