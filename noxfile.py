"""f5-aot build pipeline and checks. Every stage is a session; `nox -s pipeline` runs them in order.

    nox -s pipeline                      # export -> calibrate -> quantize -> compile -> validate -> cost (tiny)
    nox -s export -- --model f5tts-v1-base
    nox -s tests                         # the test suite (CPU only)

All build stages and the tests share one virtualenv (.nox/f5-env: torch pinned to the CPU wheel,
f5-tts without its CUDA extras), made once and reused while its requirement list is unchanged, so a
second run starts in seconds. Options after `--` go to the stage (`python -m f5build <stage> --help`).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
ENV_DIR = ROOT / ".nox" / "f5-env"

# torch==2.13.0 resolves to the local CPU wheel; any unpinned torch pulls a multi-GB CUDA build.
BUILD_DEPS = [
    "torch==2.13.0",
    "torchaudio==2.11.0",
    "numpy",
    "scipy",
    "einops",
    "pyyaml",
    "huggingface-hub",
    "x-transformers",
    "torchdiffeq",
    "librosa",
    "rjieba",
    "pypinyin",
    "tqdm",
    "safetensors",
    "onnx~=1.21.0",
    "onnxruntime==1.32.0",
    "onnxscript",
    "onnx-graphsurgeon",
    "polygraphy",
    "soundfile",
    "matplotlib",
    # INT8 Q/DQ and FP16 with NVIDIA ModelOpt, without its [onnx] extra: that extra pulls
    # onnxruntime-gpu (which replaces the CPU onnxruntime) and cupy. This set is what it needs here.
    "nvidia-modelopt==0.47.0",
    "lief",
    "onnxconverter-common~=1.16.0",
    "onnxslim",
    "ml_dtypes",
    # end-to-end speech metrics of the validate stage
    "pesq",
    "pystoi",
]
# f5-tts' own requirements pull a CUDA torch and gradio: install it bare, its real needs are above.
NO_DEPS = ["f5-tts==1.1.22", "vocos==0.1.0", "encodec==0.1.1"]
# Only the tests need these: f5-tts' trainer and inference modules import them at module level, and
# the tests compare against f5-tts' own code paths.
TEST_DEPS = [
    "pytest",
    "pytest-timeout",
    "pydub",
    "transformers",
    "wandb",
    "accelerate",
    "ema_pytorch",
    "datasets",
    "unidecode",
    "httpx",
    "cuda-python",
]
SERVE_DEPS = ["fastapi", "uvicorn", "python-multipart"]
LOCAL = ["-e", "./runtime", "-e", "./build"]


def _env(session: nox.Session, *extra: str) -> Path:
    """Create or refresh the shared build venv; return its python. Skips pip when nothing changed."""
    reqs = [*BUILD_DEPS, *SERVE_DEPS, *TEST_DEPS, "|", *NO_DEPS, "|", *sorted(extra)]
    stamp = hashlib.sha256("\n".join(reqs).encode()).hexdigest()
    py = ENV_DIR / "bin" / "python"
    stamp_file = ENV_DIR / ".requirements.sha256"
    if py.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return py
    if not py.exists():
        session.run(sys.executable, "-m", "venv", str(ENV_DIR), external=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    session.run(*pip, *BUILD_DEPS, *SERVE_DEPS, *TEST_DEPS, *extra, external=True)
    session.run(*pip, "--no-deps", *NO_DEPS, external=True)
    session.run(*pip, "--no-deps", *LOCAL, external=True)
    # torchaudio 2.11's compiled extension does not load with torch 2.13; without it torchaudio
    # falls back to its pure-Python transforms (MelSpectrogram, Resample), which is all we use.
    for lib in (ENV_DIR / "lib").glob("python3*/site-packages/torchaudio/lib/*.so"):
        lib.unlink()
    stamp_file.write_text(stamp)
    return py


def _stage(session: nox.Session, stage: str, *extra: str) -> None:
    py = _env(session)
    session.run(str(py), "-m", "f5build", stage, *extra, *session.posargs, external=True)


@nox.session(venv_backend="none")
def export(session: nox.Session) -> None:
    """Export text encoder, step and vocoder to ONNX with dynamic batch/frame axes (FP32 parity checked)."""
    _stage(session, "export")


@nox.session(venv_backend="none")
def calibrate(session: nox.Session) -> None:
    """Record graph inputs over every NFE step of real sampling runs on the calibration corpus."""
    _stage(session, "calibrate")


@nox.session(venv_backend="none")
def quantize(session: nox.Session) -> None:
    """FP16 and INT8 Q/DQ variants with NVIDIA ModelOpt; placement checked."""
    _stage(session, "quantize")


@nox.session(venv_backend="none")
def compile(session: nox.Session) -> None:
    """TensorRT engines (one profile per bucket); without TensorRT, the build plan and polygraphy commands."""
    _stage(session, "compile")


@nox.session(venv_backend="none")
def validate(session: nox.Session) -> None:
    """Polygraphy comparisons of every precision vs FP32, end-to-end audio metrics, gates -> reports/."""
    _stage(session, "validate")


@nox.session(venv_backend="none")
def cost(session: nox.Session) -> None:
    """FLOPs by precision from the ONNX graphs and a projected Jetson AGX Orin RTF -> reports/cost.*"""
    _stage(session, "cost")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """f5-tts PyTorch vs f5rt on the full-size architecture (default), NFE 16, 2 threads -> reports/bench.*"""
    py = _env(session)
    args = session.posargs or ["--model", "f5tts-v1-base"]
    session.run(str(py), "-m", "f5build", "bench", *args, external=True)


@nox.session(venv_backend="none")
def loadtest(session: nox.Session) -> None:
    """Loopback load test of `f5rt serve` on the tiny model, batched vs unbatched -> reports/load.{md,json}."""
    py = _env(session)
    if not (ROOT / "artifacts" / "tiny" / "manifest.json").exists():
        session.run(str(py), "-m", "f5build", "export", external=True)
    session.run(str(py), "-m", "f5build.loadtest", "--artifacts", "artifacts/tiny", *session.posargs, external=True)


@nox.session(venv_backend="none")
def emulate(session: nox.Session) -> None:
    """The TensorRT backend on the strict TensorRT + CUDA emulation: its tests, then every bucket of
    config/buckets.yaml x NFE 7/16/32 x graph/eager vs ONNX Runtime -> reports/trt_emulation.{md,json}."""
    py = _env(session)
    tests = ["tests/test_trt_emulator.py", "tests/test_trt_emulation_e2e.py"]
    session.run(str(py), "-m", "pytest", "-q", *tests, external=True, env={"PYTHONHASHSEED": "0"})
    out = ROOT / "reports" / "trt_emulation"
    session.run(
        str(py),
        "-m",
        "emulation_report",
        "--out",
        str(out),
        *session.posargs,
        external=True,
        env={"PYTHONPATH": "tests"},
    )


@nox.session(venv_backend="none")
def pipeline(session: nox.Session) -> None:
    """Every stage in order on one model (default: the embedded tiny model)."""
    py = _env(session)
    session.run(str(py), "-m", "f5build", "pipeline", *session.posargs, external=True)


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite: CPU only, tiny model, compares against f5-tts / torch / torchaudio."""
    py = _env(session)
    args = session.posargs or ["tests", "-q", "-ra"]
    session.run(str(py), "-m", "pytest", *args, external=True, env={"PYTHONHASHSEED": "0"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over everything; the runtime is checked as Python 3.10 code (JetPack 6)."""
    session.install("ruff")
    session.run("ruff", "check", "build", "tests", "noxfile.py")
    session.run("ruff", "check", "--target-version", "py310", "runtime")
    session.run("ruff", "format", "--check", "--diff", "runtime", "build", "tests", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the TensorRT / CUDA layer, checked as Python 3.10 code (JetPack 6).

    No tensorrt-stubs here: the published ones do not parse, and installing them into a runtime
    environment makes `import tensorrt` succeed as an empty namespace. TensorRT types are Any.
    """
    session.install("mypy", "numpy", "onnx~=1.21.0", "types-PyYAML")
    session.run(
        "mypy",
        "--python-version",
        "3.10",
        "--strict",
        "--follow-imports=silent",
        "runtime/f5rt/backends/trt",
        "runtime/f5rt/jetson.py",
        "build/f5build/compile.py",
        "build/f5build/trt_build.py",
        env={"MYPYPATH": "runtime:build"},
    )
