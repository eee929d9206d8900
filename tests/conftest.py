"""Shared fixtures: the tiny model's artifacts (exported once per test session) and a voices folder.

Everything runs on the CPU in seconds: the tiny model is an F5 DiT of 0.8 M parameters and a Vocos
of 0.16 M, with weights made from a fixed seed, so f5-tts' own code gives the reference numbers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 24000


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU and cuda-python (skipped without one)")
    config.addinivalue_line("markers", "slow: full-size model checks, run with `nox -s tests -- -m slow`")


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """artifacts/tiny made by the real export stage (FP32 ONNX + manifest) into a temp folder.

    `nox -s runtime` has no f5build: it exports in the shared env first and names the result in
    F5RT_TEST_ARTIFACTS, which is copied here so no test can alter the shared folder."""
    root = tmp_path_factory.mktemp("artifacts")
    made = os.environ.get("F5RT_TEST_ARTIFACTS")
    if made:
        return Path(shutil.copytree(made, root / "tiny"))
    from f5build.cli import main

    assert main(["export", "--model", "tiny", "--artifacts-root", str(root)]) == 0
    return root / "tiny"


@pytest.fixture(scope="session")
def tiny_bundle():
    """The torch model behind tiny_artifacts (same seed, same weights): the reference side."""
    from f5build.load import load_model

    return load_model("tiny")


def speechlike(seconds: float, sr: int, seed: int, rms: float = 0.08) -> np.ndarray:
    """A voiced-looking test signal: harmonic bursts with pauses, so silence detection has work."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t) + 20 * seed
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = (np.sin(2 * np.pi * 1.3 * t) > -0.3).astype(float)
    x = x * env + 0.01 * rng.standard_normal(len(t))
    return (x / np.sqrt(np.mean(x**2)) * rms).astype(np.float32)


@pytest.fixture(scope="session")
def voices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two voices: 'alice' (24 kHz mono, English) and 'bob' (16 kHz stereo, Mandarin)."""
    root = tmp_path_factory.mktemp("voices")
    (root / "alice").mkdir()
    sf.write(root / "alice" / "ref.wav", speechlike(3.0, SR, 0), SR, subtype="PCM_16")
    (root / "alice" / "ref.txt").write_text("Hello there, this is a test.", encoding="utf-8")
    (root / "bob").mkdir()
    mono = speechlike(2.5, 16000, 1, rms=0.05)
    sf.write(root / "bob" / "ref.wav", np.stack([mono, 0.5 * mono], axis=1), 16000, subtype="PCM_16")
    (root / "bob" / "ref.txt").write_text("你好，欢迎来到直播间。", encoding="utf-8")
    return root
