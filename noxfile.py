"""f5-aot build pipeline and checks. Every stage is a session; `nox -s pipeline` runs them in order.

    nox -s pipeline                      # export -> ... -> validate -> quality -> cost -> triton (f5tts-small-en)
    nox -s export -- --model f5tts-v1-base
    nox -s tests                         # the test suite (CPU only)
    nox -s runtime                       # the runtime alone on Python 3.10, no torch

All build stages and the tests share one virtualenv (.nox/f5-env: torch pinned to the CPU wheel,
f5-tts without its CUDA extras), made once and reused while its requirement lists (dependency groups
and extras in build/ and runtime/pyproject.toml) are unchanged, so a second run starts in seconds.
Options after `--` go to the stage (`python -m f5build <stage> --help`).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
ENV_DIR = ROOT / ".nox" / "f5-env"

BUILD_TOML = nox.project.load_toml(ROOT / "build" / "pyproject.toml")
RUNTIME_TOML = nox.project.load_toml(ROOT / "runtime" / "pyproject.toml")


def _extras(pyproject: dict[str, Any], *names: str) -> list[str]:
    """The requirements of `[project.optional-dependencies]` extras, so an extra is declared once."""
    extras = pyproject["project"]["optional-dependencies"]
    missing = [n for n in names if n not in extras]
    if missing:
        raise KeyError(f"{missing} not in [project.optional-dependencies] of {pyproject['project']['name']}")
    return [req for n in names for req in extras[n]]


# Every list lives in build/pyproject.toml or runtime/pyproject.toml, next to the comments that say
# why (the torch pin, f5-tts installed bare, ...). The shared env holds the build (group `build`),
# the runtime with the extras its tests reach, and both test groups.
SHARED_DEPS = [
    *nox.project.dependency_groups(BUILD_TOML, "build", "test", "quality"),
    *RUNTIME_TOML["project"]["dependencies"],
    *_extras(RUNTIME_TOML, "serve", "aac"),
    *nox.project.dependency_groups(RUNTIME_TOML, "test"),
]
# Installed with --no-deps (see the group's comment in build/pyproject.toml).
NO_DEPS = list(nox.project.dependency_groups(BUILD_TOML, "no-deps"))
LOCAL = ["-e", "./runtime", "-e", "./build"]


def _env(session: nox.Session, *extra: str) -> Path:
    """Create or refresh the shared build venv; return its python. Skips pip when nothing changed."""
    reqs = [*SHARED_DEPS, "|", *NO_DEPS, "|", *sorted(extra)]
    stamp = hashlib.sha256("\n".join(reqs).encode()).hexdigest()
    py = ENV_DIR / "bin" / "python"
    stamp_file = ENV_DIR / ".requirements.sha256"
    if py.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return py
    if not py.exists():
        session.run(sys.executable, "-m", "venv", str(ENV_DIR), external=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    session.run(*pip, *SHARED_DEPS, *extra, external=True)
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


def _stage_module(session: nox.Session, module: str, *args: str) -> None:
    session.run(str(_env(session)), "-m", module, *args, external=True)


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
    """FP16 and INT8 Q/DQ variants for TensorRT (NVIDIA ModelOpt) and the ONNX Runtime CPU variants
    (cpu-fp32: fused attention and GELU; cpu-int8: dynamic INT8); placement checked."""
    _stage(session, "quantize")


@nox.session(venv_backend="none")
def compile(session: nox.Session) -> None:
    """TensorRT engines (one profile per bucket); without TensorRT, the build plan and build_engines.sh for the device."""
    _stage(session, "compile")


@nox.session(venv_backend="none")
def validate(session: nox.Session) -> None:
    """Polygraphy comparisons of every precision vs FP32, end-to-end audio metrics, gates -> reports/accuracy.*"""
    _stage(session, "validate")


@nox.session(venv_backend="none")
def avx2(session: nox.Session) -> None:
    """cpu-int8 in the INT8 arithmetic of an x86 CPU with AVX2 and no VNNI, on any machine: how many of
    ONNX Runtime's 16-bit pair sums would saturate on the held-out recorded inputs, and validate's cpu-int8
    gates (step and end to end) with the graph computing that arithmetic -> reports/int8_arithmetic.*,
    reports/avx2/accuracy.*. `-- --artifacts artifacts/<name>` (default f5tts-small-en; run the pipeline first)."""
    args = list(session.posargs) or ["--artifacts", str(ROOT / "artifacts" / "f5tts-small-en")]
    _stage_module(session, "f5build.int8_arithmetic", *args, "--validate")


@nox.session(venv_backend="none")
def cost(session: nox.Session) -> None:
    """FLOPs by precision from the ONNX graphs and a projected Jetson AGX Orin RTF -> reports/cost.*"""
    _stage(session, "cost")


@nox.session(venv_backend="none")
def train(session: nox.Session) -> None:
    """Train the embedded F5-TTS + Vocos on espeak-ng speech (apt-get install -y espeak-ng) ->
    models/f5tts-small-en. Resumable: state in ~/.cache/f5-aot/train; a rerun continues where it stopped.
    `-- --train-steps N` trains on to step N; `--train-threads 2` uses both cores of a 2-core box;
    the DiT is the release's (6.3 M parameters, f5-tts' average upsampling); `--train-size small` is 1.6 M.
    `--train-sentences 35000 --train-voices-per-sentence 4 --train-corpus artifacts/train-corpus-114h` makes
    and trains on a 114-hour corpus (27.5 GB; resumable, made in chunks)."""
    _stage(session, "train")


@nox.session(venv_backend="none")
def quality(session: nox.Session) -> None:
    """The full listening sweep on the trained embedded model: every precision x NFE 4,6,7,8,16,32 x
    sway/EPSS/midpoint, ASR WER + speaker similarity + DNSMOS vs ground truth and copy-synthesis, gated
    against FP32 -> reports/f5tts-small-en/quality.{md,json,png}. Builds the model's artifacts first."""
    py = _env(session)
    args = list(session.posargs) or [
        "--model", "f5tts-small-en", "--quality-nfe", "4,6,7,8,16,32", "--quality-schedules", "sway,epss,midpoint",
        "--quality-utts", "24",
    ]  # fmt: skip
    model = args[args.index("--model") + 1] if "--model" in args else "f5tts-small-en"
    for stage in ("export", "calibrate", "quantize"):
        session.run(str(py), "-m", "f5build", stage, "--model", model, external=True)
    session.run(str(py), "-m", "f5build", "quality", *args, external=True)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """f5-tts PyTorch vs every f5rt CPU precision on f5tts-v1-base, NFE 16, the usable CPUs' threads, 3
    interleaved rounds -> reports/bench.{md,json,png}. Makes the model's FP32 graphs and CPU variants first
    (each a no-op when up to date), in their own processes. `-- --model tiny` for a quick look; other
    options go to the bench: `--bench-busy 0,1` (also with N cores kept busy by competing processes),
    `--bench-threads 1,2`, `--bench-spinning on,off`, `--bench-step 600` (one step: the thread table,
    reports/bench_step.{md,json}), `--baseline reports/bench.json`, `--bench-repeat N`."""
    py = _env(session)
    args = list(session.posargs)
    model = args[args.index("--model") + 1] if "--model" in args else "f5tts-v1-base"
    if "--model" not in args:
        args = ["--model", model, *args]
    run = ("-m", "f5build")
    session.run(str(py), *run, "export", "--model", model, external=True)
    session.run(str(py), *run, "quantize", "--model", model, "--quant-variants", "cpu-fp32,cpu-int8", external=True)
    session.run(str(py), *run, "bench", *args, external=True)


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
    tests = ["tests/trt_emulator", "tests/test_trt_emulation_e2e.py"]
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
    """Every stage in order on one model (default: the trained embedded model, f5tts-small-en; `-- --model
    tiny` for the seeded test model): export, calibrate (which also makes the corpus voices in
    calibration/voices), quantize, compile, validate, quality, cost, triton."""
    py = _env(session)
    args = list(session.posargs)
    if "--model" not in args:
        args = ["--model", "f5tts-small-en", *args]
    session.run(str(py), "-m", "f5build", "pipeline", *args, external=True)


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite: CPU only, tiny model, compares against f5-tts / torch / torchaudio; runs the
    README's quickstart blocks (tests/test_readme_quickstart.py)."""
    py = _env(session)
    args = session.posargs or ["tests", "-q", "-ra"]
    session.run(str(py), "-m", "pytest", *args, external=True, env={"PYTHONHASHSEED": "0"})


def _python310() -> str:
    """JetPack 6's Python for `runtime`: pyenv's 3.10 where present (its `python3.10` shim on PATH is
    inactive while another version is global, so nox cannot find it by name), else `python3.10`."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(
        root.glob("versions/3.10.*/bin/python3.10"), key=lambda p: [int(n) for n in re.findall(r"\d+", p.parts[-3])]
    )
    return str(found[-1]) if found else "3.10"


# The runtime's tests: they need only f5rt, its [onnxruntime,serve] extras, the test tools and the
# tiny artifacts. Tests in them that compare against torch / f5-tts skip there (importorskip).
RUNTIME_TESTS = [
    "tests/test_runtime_env.py",
    "tests/test_runtime_units.py",
    "tests/test_audio.py",
    "tests/server",
    "tests/test_openai_sdk.py",
    "tests/test_encoders.py",
    "tests/test_batching.py",
    "tests/test_service.py",
    "tests/test_triton_repository.py",
    "tests/test_trt_planning.py",
    "tests/test_cuda_gpu.py",
]
# Build-side packages that must not be importable where the runtime is deployed.
NOT_IN_RUNTIME = ["torch", "torchaudio", "f5_tts", "f5build", "onnx"]


@nox.session(python=_python310())
def runtime(session: nox.Session) -> None:
    """The runtime alone on Python 3.10 (JetPack 6): only ./runtime[onnxruntime,serve] and the test
    tools, then the runtime's tests on the tiny model. Fails if torch, f5-tts or f5build can be
    imported there.

    The tests' artifacts are a plain export (as `nox -s tests` makes for itself), exported by the
    shared env into .nox/runtime-artifacts when missing: delete that folder to export afresh."""
    artifacts = ROOT / ".nox" / "runtime-artifacts" / "tiny"
    if not (artifacts / "manifest.json").exists():
        root = ["--model", "tiny", "--artifacts-root", str(artifacts.parent)]
        session.run(str(_env(session)), "-m", "f5build", "export", *root, external=True)
    session.install("./runtime[onnxruntime,serve]", *nox.project.dependency_groups(RUNTIME_TOML, "test"))
    session.run(
        "python",
        "-c",
        "import importlib.util as u, sys; bad = [m for m in sys.argv[1:] if u.find_spec(m)];"
        " sys.exit(f'the runtime env must not have {bad}: check runtime/pyproject.toml' if bad else 0)",
        *NOT_IN_RUNTIME,
    )
    args = session.posargs or ["-q", "-ra", *RUNTIME_TESTS]
    env = {"PYTHONHASHSEED": "0", "F5RT_TEST_ARTIFACTS": str(artifacts), "F5RT_RUNTIME_ONLY": "1"}
    session.run("python", "-m", "pytest", *args, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over everything; the runtime is checked as Python 3.10 code (JetPack 6)."""
    session.install(*nox.project.dependency_groups(BUILD_TOML, "lint"))
    session.run("ruff", "check", "build", "tests", "noxfile.py")
    session.run("ruff", "check", "--target-version", "py310", "runtime")
    session.run("ruff", "format", "--check", "--diff", "runtime", "build", "tests", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict, as Python 3.10 code (JetPack 6), over the TensorRT / CUDA layer, the engine
    build, and the serving path: the serving core (f5rt.service), its HTTP and Triton adapters, the
    synthesizer and what they share (options, names, precision). The runtime's own dependencies and
    its `serve` extra are installed so the web framework's types are checked too.

    No tensorrt-stubs here: the published ones do not parse, and installing them into a runtime
    environment makes `import tensorrt` succeed as an empty namespace. TensorRT types are Any.
    """
    session.install(
        *nox.project.dependency_groups(BUILD_TOML, "typecheck"),
        *RUNTIME_TOML["project"]["dependencies"],
        *_extras(RUNTIME_TOML, "serve"),
    )
    session.run(
        "mypy",
        "--python-version",
        "3.10",
        "--strict",
        "--follow-imports=silent",
        "runtime/f5rt/service",
        "runtime/f5rt/server",
        "runtime/f5rt/triton",
        "runtime/f5rt/synthesizer.py",
        "runtime/f5rt/options.py",
        "runtime/f5rt/names.py",
        "runtime/f5rt/precision.py",
        "runtime/f5rt/backends/trt",
        "runtime/f5rt/jetson.py",
        "build/f5build/compile.py",
        "build/f5build/onnx_check.py",
        "build/f5build/trt_plan.py",
        "build/f5build/trt_build.py",
        "build/f5build/trt_inspect.py",
        "build/f5build/isa_view.py",
        env={"MYPYPATH": "runtime:build"},
    )


@nox.session(venv_backend="none")
def triton(session: nox.Session) -> None:
    """Triton Inference Server: write artifacts/tiny/triton, test it on a real tritonserver (the
    nvidia-pytriton wheel's), then a bounded load test, 1 vs 2 instances -> reports/triton_load.{md,json}."""
    py = _env(session)
    if not (ROOT / "artifacts" / "tiny" / "manifest.json").exists():
        session.run(str(py), "-m", "f5build", "export", external=True)
    session.run(str(py), "-m", "f5build", "triton", external=True)
    # Its own venv: nvidia-pytriton (tritonserver, its Python backend and one stub per Python version)
    # needs numpy < 2, which the shared env's torch stack does not want. Reused while this list holds.
    reqs = ["nvidia-pytriton>=0.7", "numpy<2", "tritonclient[http,grpc]", "pytest", "pytest-timeout"]
    env_dir = ROOT / ".nox" / "triton"
    tpy = env_dir / "bin" / "python"
    runtime_reqs = [*RUNTIME_TOML["project"]["dependencies"], *_extras(RUNTIME_TOML, "onnxruntime")]
    stamp = hashlib.sha256("\n".join([*reqs, "-e ./runtime[onnxruntime]", *runtime_reqs]).encode()).hexdigest()
    stamp_file = env_dir / ".requirements.sha256"
    if not (tpy.exists() and stamp_file.exists() and stamp_file.read_text() == stamp):
        if not tpy.exists():
            session.run(sys.executable, "-m", "venv", str(env_dir), external=True)
        pip = [str(tpy), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        session.run(*pip, *reqs, "-e", "./runtime[onnxruntime]", external=True)
        stamp_file.write_text(stamp)
    env = {"PYTHONHASHSEED": "0"}
    session.run(str(tpy), "-m", "pytest", "-q", "-ra", "tests/triton_serving", *session.posargs, external=True, env=env)
    session.run(str(tpy), "tests/triton_serving/load_report.py", "--out", "reports/triton_load", external=True, env=env)
