"""Helpers shared by the Triton tests and the Triton load test (no pytest, no server start here).

Kept out of conftest.py: the main suite's tests/conftest.py is also a module named `conftest`.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = Path(os.environ.get("F5RT_TRITON_REPOSITORY", ROOT / "artifacts" / "tiny" / "triton"))
SR = 24000
# voice id -> (seconds, seed, transcript): short references keep every request in small buckets.
VOICES = {
    "alice": (1.0, 3, "Hello there, this is a test."),
    "bob": (1.2, 4, "A second short voice."),
}


def missing_reason() -> str | None:
    """Why the Triton tests cannot run here, or None."""
    for module, pip in (("tritonclient", "tritonclient[http,grpc]"), ("pytriton", "nvidia-pytriton")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install '{pip}'; `nox -s triton` does it)"
    from f5rt.errors import BackendUnavailable
    from f5rt.triton.local import TritonInstall

    try:
        TritonInstall.from_pytriton()
    except BackendUnavailable as e:
        return str(e)
    if not (REPOSITORY / "f5tts" / "config.pbtxt").is_file():
        return f"no model repository at {REPOSITORY}: run `python -m f5build triton` (or `nox -s triton`)"
    return None


def config_parameter(model: str, key: str) -> str:
    """A string parameter of a model's config.pbtxt (the writer's one-line form)."""
    text = (REPOSITORY / model / "config.pbtxt").read_text(encoding="utf-8")
    m = re.search(r'key: "' + re.escape(key) + r'" value: \{ string_value: "((?:[^"\\]|\\.)*)" \}', text)
    if m is None:
        raise AssertionError(f"{model}/config.pbtxt has no parameter {key!r}")
    return m.group(1)


def voices_folder() -> Path:
    p = Path(config_parameter("f5tts", "voices"))
    return p if p.is_absolute() else (REPOSITORY / p).resolve()


def speechlike(seconds: float, sr: int, seed: int, rms: float = 0.08):
    """The main suite's voiced test signal (tests/conftest.py), repeated here: that conftest needs f5build."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t) + 20 * seed
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = (np.sin(2 * np.pi * 1.3 * t) > -0.3).astype(float)
    x = x * env + 0.01 * rng.standard_normal(len(t))
    return (x / np.sqrt(np.mean(x**2)) * rms).astype(np.float32)


def ensure_voices(folder: Path) -> Path:
    import soundfile as sf

    from f5rt.files import atomic_write_bytes

    for vid, (seconds, seed, text) in VOICES.items():
        buf = io.BytesIO()
        sf.write(buf, speechlike(seconds, SR, seed), SR, format="WAV", subtype="PCM_16")
        for name, data in (("ref.wav", buf.getvalue()), ("ref.txt", text.encode("utf-8"))):
            path = folder / vid / name
            if not path.is_file() or path.read_bytes() != data:
                atomic_write_bytes(path, data)
    return folder


# ---------------------------------------------------------------------------------------------
# requests through tritonclient
# ---------------------------------------------------------------------------------------------


def request_arrays(
    text: str | None = "Hello world, a test.",
    voice_id: str | None = "alice",
    seed: int | None = 1,
    nfe: int | None = 8,
    speed: float | None = None,
) -> dict[str, np.ndarray]:
    """The model's inputs as [1, 1] arrays (one batch row); None leaves an input out."""
    out: dict[str, np.ndarray] = {}
    if text is not None:
        out["text"] = np.array([[text.encode("utf-8")]], dtype=object)
    if voice_id is not None:
        out["voice_id"] = np.array([[voice_id.encode("utf-8")]], dtype=object)
    if seed is not None:
        out["seed"] = np.array([[seed]], dtype=np.int64)
    if nfe is not None:
        out["nfe_step"] = np.array([[nfe]], dtype=np.int32)
    if speed is not None:
        out["speed"] = np.array([[speed]], dtype=np.float32)
    return out


_DTYPES = {
    np.dtype(object): "BYTES",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.float32): "FP32",
}


def infer_inputs(module: Any, arrays: dict[str, np.ndarray]) -> list[Any]:
    """tritonclient.http or tritonclient.grpc InferInput objects for `arrays`."""
    inputs = []
    for name, a in arrays.items():
        inp = module.InferInput(name, list(a.shape), _DTYPES[a.dtype])
        inp.set_data_from_numpy(a)
        inputs.append(inp)
    return inputs


def pcm16(audio: np.ndarray) -> np.ndarray:
    """float audio -> int16 exactly as f5rt writes WAV files (f5rt.audio.encode_audio "pcm")."""
    from f5rt.audio import encode_audio

    return np.frombuffer(encode_audio(np.asarray(audio, dtype=np.float32).reshape(-1), SR, "pcm"), dtype="<i2")


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when the series is absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        series, _, rest = head.partition("{")
        if series != name:
            continue
        got = ",".join(sorted(p for p in rest.rstrip("}").split(",") if p))
        if got == want:
            return float(value)
    return 0.0
