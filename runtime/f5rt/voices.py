"""Voices: a reference recording and its transcript, prepared once and cached by content hash.

A voices folder holds `<id>/ref.wav` (or .flac) and `<id>/ref.txt`. Preparing a voice reads the audio
(any rate and channel count), clips it to <= 12 s at a quiet point as f5-tts does, measures its RMS
and resamples it to 24 kHz; the result is cached on disk under `<cache>/<sha256>.npz`, keyed by the
audio bytes and transcript, so a restart or a second process never redoes the work. The mel depends
on the request's target RMS (quiet references are scaled up first), so it is computed per target RMS
and memoised in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from f5rt import audio as A
from f5rt.errors import AudioError, F5RTError, TextError
from f5rt.files import atomic_write_bytes
from f5rt.text import normalize_ref_text

VOICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
AUDIO_NAMES = ("ref.wav", "ref.flac")
CACHE_VERSION = "1"


class VoiceNotFound(F5RTError):
    """No voice with that id in the voices folder."""


def check_voice_id(voice_id: str) -> str:
    """Voice ids are plain names: they can never reach outside the voices folder."""
    if not isinstance(voice_id, str) or not VOICE_ID.fullmatch(voice_id):
        raise F5RTError(f"invalid voice id {voice_id!r}: use 1-64 letters, digits, '_' or '-'")
    return voice_id


@dataclass
class Voice:
    """A prepared reference: 24 kHz mono audio (clipped), its normalised transcript and RMS."""

    id: str
    ref_text: str
    audio: np.ndarray
    rms: float
    sha256: str
    _mels: dict[float, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def samples(self) -> int:
        return int(self.audio.shape[0])

    @property
    def seconds(self) -> float:
        return self.samples / A.SAMPLE_RATE

    def scale(self, target_rms: float) -> float:
        """f5-tts scales a reference quieter than target_rms up to it (and the output back down)."""
        return float(target_rms / self.rms) if self.rms < target_rms else 1.0

    def mel(self, target_rms: float = 0.1) -> np.ndarray:
        """Log-mel (100, samples // hop + 1) of the reference as the model sees it."""
        key = round(float(self.scale(target_rms)), 12)
        with self._lock:
            if key not in self._mels:
                self._mels[key] = A.log_mel((self.audio * np.float32(key)).astype(np.float32))
            return self._mels[key]


def prepare_voice(voice_id: str, audio: np.ndarray, sample_rate: int, ref_text: str, sha256: str = "") -> Voice:
    """Raw reference samples (any rate) + transcript -> Voice (clip at a quiet point, RMS, resample)."""
    if not isinstance(ref_text, str) or not ref_text.strip():
        raise TextError("the reference transcript is empty (automatic transcription is not part of the runtime)")
    clipped = A.clip_reference(np.asarray(audio, dtype=np.float32), sample_rate)
    rms = A.rms(clipped)
    if not rms > 0:
        raise AudioError("the reference audio is silent")
    audio24 = A.resample(clipped, sample_rate, A.SAMPLE_RATE) if sample_rate != A.SAMPLE_RATE else clipped
    return Voice(voice_id, normalize_ref_text(ref_text), audio24.astype(np.float32), float(rms), sha256)


def voice_from_bytes(voice_id: str, data: bytes, ref_text: str, cache_dir: Path | None = None) -> Voice:
    """Prepare a voice from encoded audio bytes, using the on-disk cache when it has this content."""
    digest = hashlib.sha256(
        CACHE_VERSION.encode() + b"\0" + data + b"\0" + ref_text.encode("utf-8", "surrogatepass")
    ).hexdigest()
    cached = cache_dir / f"{digest}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                return Voice(voice_id, str(z["ref_text"]), z["audio"].astype(np.float32), float(z["rms"]), digest)
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache entry is rebuilt below
    samples, sr = A.load_audio(data)
    voice = prepare_voice(voice_id, samples, sr, ref_text, digest)
    if cached is not None:
        buf = io.BytesIO()
        np.savez(buf, audio=voice.audio, rms=np.float64(voice.rms), ref_text=np.str_(voice.ref_text))
        atomic_write_bytes(cached, buf.getvalue())
    return voice


class VoiceStore:
    """A folder of voices (`<id>/ref.wav` + `<id>/ref.txt`) with an on-disk preparation cache."""

    def __init__(self, root: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".cache"
        self._memo: dict[str, tuple[tuple[int, ...], Voice]] = {}
        self._lock = threading.RLock()

    def _dir(self, voice_id: str) -> Path:
        path = (self.root / check_voice_id(voice_id)).resolve()
        if path.parent != self.root.resolve():
            raise F5RTError(f"invalid voice id {voice_id!r}")
        return path

    def list(self) -> list[str]:
        """Ids of the complete voices (both audio and transcript present), sorted."""
        out = []
        for d in sorted(self.root.iterdir()):
            complete = (d / "ref.txt").is_file() and any((d / n).is_file() for n in AUDIO_NAMES)
            if d.is_dir() and VOICE_ID.fullmatch(d.name) and complete:
                out.append(d.name)
        return out

    def _files(self, voice_id: str) -> tuple[Path, Path]:
        d = self._dir(voice_id)
        audio = next((d / n for n in AUDIO_NAMES if (d / n).is_file()), None)
        text = d / "ref.txt"
        if audio is None or not text.is_file():
            raise VoiceNotFound(f"no voice {voice_id!r} in {self.root}")
        return audio, text

    def get(self, voice_id: str) -> Voice:
        """The prepared voice; re-prepared only when its files changed."""
        audio_path, text_path = self._files(voice_id)
        stamp = tuple(int(x) for p in (audio_path, text_path) for x in (p.stat().st_mtime_ns, p.stat().st_size))
        with self._lock:
            hit = self._memo.get(voice_id)
            if hit and hit[0] == stamp:
                return hit[1]
        voice = voice_from_bytes(
            voice_id, audio_path.read_bytes(), text_path.read_text(encoding="utf-8"), self.cache_dir
        )
        with self._lock:
            self._memo[voice_id] = (stamp, voice)
        return voice

    def add(self, voice_id: str, audio: bytes, text: str) -> Voice:
        """Validate and store (or replace) a voice atomically: nothing is written if the audio is bad.

        WAV and FLAC uploads are stored byte for byte; other formats soundfile reads are stored as
        16-bit WAV. The voice returned is prepared from exactly the bytes stored.
        """
        d = self._dir(voice_id)
        samples, sr = A.load_audio(audio)  # raises AudioError on anything unreadable
        if audio[:4] == b"fLaC":
            name, stored = "ref.flac", audio
        elif audio[:4] == b"RIFF":
            name, stored = "ref.wav", audio
        else:
            name, stored = "ref.wav", A.encode_audio(samples, sr, "wav")
        voice = voice_from_bytes(voice_id, stored, text, self.cache_dir)  # raises on bad audio or text
        with self._lock:
            d.mkdir(exist_ok=True)
            atomic_write_bytes(d / "ref.txt", text.encode("utf-8"))
            atomic_write_bytes(d / name, stored)
            for other in AUDIO_NAMES:
                if other != name:
                    (d / other).unlink(missing_ok=True)
            self._memo.pop(voice_id, None)
        return voice

    def remove(self, voice_id: str) -> None:
        d = self._dir(voice_id)
        if not d.is_dir():
            raise VoiceNotFound(f"no voice {voice_id!r} in {self.root}")
        with self._lock:
            shutil.rmtree(d)
            self._memo.pop(voice_id, None)
