"""The TensorRT backend's GPU-free parts: buffer and address planning, deployments and manifest
checks, the CUDA version checks, the skip paths and the module layering.

The NFE loop's address plan is exercised end to end on a numpy "device": a byte array standing in for
the arena, with the CFG + Euler update applied through the very addresses a captured graph would
bake in, compared with the plain loop.
"""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (`nox -s runtime`): tomli, which pytest needs there, is the same parser
    import tomli as tomllib

from f5rt.backends.trt import arena, engines, profiles
from f5rt.backends.trt import backend as trtb
from f5rt.backends.trt import cuda as cg
from f5rt.buckets import Bucket, BucketTable
from f5rt.errors import BackendUnavailable, ManifestError, NoBucketError
from f5rt.manifest import file_entry, load_manifest, update_manifest
from gpucheck.kernel import cfg_euler_reference

ROOT = Path(__file__).resolve().parents[1]
MEL, TEXT = 100, 16
BUCKETS = BucketTable(frames=(256, 512), batch=(1, 2))
# backends/base.py's documented graph I/O, written out independently of the code under test.
STEP_IO = {"x", "cond", "text_cond", "text_uncond", "mask", "t", "dt", "cfg", "x_next"}
TEXT_IO = {"text_ids", "mask", "text_cond", "text_uncond"}


# --- buffer and address planning ------------------------------------------------------------------


def test_step_arena_regions_are_aligned_disjoint_and_sized() -> None:
    bucket = Bucket(512, 2)
    plan = arena.plan_step_arena(bucket, MEL, TEXT, nfe_max=32)
    sizes = {
        "x_a": 2 * 512 * MEL * 4,
        "x_b": 2 * 512 * MEL * 4,
        "cond": 2 * 512 * MEL * 4,
        "text_cond": 2 * 512 * TEXT * 4,
        "text_uncond": 2 * 512 * TEXT * 4,
        "mask": 2 * 512,
        "text_ids": 2 * 512 * 4,
        "cfg": 2 * 4,
        "t": 32 * 256,  # one 256-byte slot per step (B = 2 uses 8 bytes of it)
        "dt": 32 * 256,
    }
    assert {r.name: r.nbytes for r in plan.regions} == sizes
    spans = sorted((r.offset, r.offset + r.nbytes) for r in plan.regions)
    assert all(off % 256 == 0 for off, _ in spans)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))
    assert spans[-1][1] <= plan.nbytes < spans[-1][1] + 256
    assert plan["t"].shape == (32, 64)  # one (B,) slot per step, padded to 256 bytes


def test_copy_spans_cover_the_inputs_and_nothing_written_by_the_loop() -> None:
    plan = arena.plan_step_arena(Bucket(256, 1), MEL, TEXT, nfe_max=16)
    [(start, n)] = plan.spans(arena.SAMPLE_INPUTS)  # one contiguous copy per request
    covered = range(start, start + n)
    for name in arena.SAMPLE_INPUTS:
        r = plan[name]
        assert r.offset in covered and r.offset + r.nbytes - 1 in covered
    for name in ("x_b", "text_ids", *arena.TEXT_EMBEDDINGS):  # embeddings come from the text encoder
        assert plan[name].offset not in covered
    [(start2, n2)] = plan.spans(arena.SAMPLE_INPUTS + arena.TEXT_EMBEDDINGS)  # host embeddings: still one copy
    assert start2 == start and n2 > n
    assert len(plan.spans(arena.TEXT_INPUTS)) == 2  # text_ids sits apart from mask
    assert plan.spans(["cfg"]) == [(plan["cfg"].offset, 4)]


@pytest.mark.parametrize("nfe", [7, 16, 32])
def test_step_addresses_ping_pong_and_per_step_slots(nfe: int) -> None:
    bucket = Bucket(256, 2)
    plan = arena.plan_step_arena(bucket, MEL, TEXT, nfe_max=32)
    base = 1 << 20
    steps = arena.step_addresses(plan, base, nfe)
    xa, xb = base + plan["x_a"].offset, base + plan["x_b"].offset
    assert steps[0].x_in == xa
    for i, s in enumerate(steps):
        b = arena.step_bindings(plan, base, s)
        assert set(b) == STEP_IO
        assert b["t"] == base + plan["t"].offset + i * 256
        assert b["dt"] == base + plan["dt"].offset + i * 256
        assert {b["x"], b["x_next"]} == {xa, xb}
        if i:
            assert b["x"] == steps[i - 1].x_out  # each step reads what the previous one wrote
    last = base + plan[arena.result_region(nfe)].offset
    assert steps[-1].x_out == last == (xa if nfe % 2 == 0 else xb)
    assert set(arena.text_encoder_bindings(plan, base)) == TEXT_IO
    with pytest.raises(ValueError, match="exceeds nfe_max"):
        arena.step_addresses(plan, base, 33)


@pytest.mark.parametrize("batch", [1, 2, 4, 63, 64, 65])
def test_every_bound_address_of_every_step_is_256_byte_aligned(batch: int) -> None:
    """TensorRT's setTensorAddress rule, for every step of the loop, not just the first (defect 1:
    a (nfe_max, B) float32 table put step 1 at +4*B bytes). cudaMalloc bases are 256-aligned."""
    plan = arena.plan_step_arena(Bucket(256, batch), MEL, TEXT, nfe_max=32)
    base = 7 * 256
    for step in arena.step_addresses(plan, base, 32):
        b = arena.step_bindings(plan, base, step)
        assert arena.misaligned(b) == {}, (step.step, b)
    for region in plan.regions:
        assert region.offset % 256 == 0
    assert arena.misaligned(arena.text_encoder_bindings(plan, base)) == {}


def test_the_old_4_byte_stride_is_what_the_alignment_check_refuses() -> None:
    """The check would have caught defect 1: a t table of (nfe_max, B) float32 misaligns step 1."""
    old = arena.plan_arena([("x_a", (2, 8), "float32"), ("t", (4, 2), "float32"), ("x_b", (2, 8), "float32")])
    step1_t = old["t"].offset + 1 * 2 * 4
    assert arena.misaligned({"t": step1_t}) == {"t": step1_t}


def test_address_plan_runs_the_euler_loop_on_a_host_arena() -> None:
    """Run the loop through the planned addresses on a numpy arena and compare with the plain loop."""
    bucket, nfe = Bucket(256, 2), 7
    plan = arena.plan_step_arena(bucket, MEL, TEXT, nfe_max=16)
    mem = np.zeros(plan.nbytes, dtype=np.uint8)
    rng = np.random.default_rng(0)

    def at(addr: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return mem[addr : addr + n].view(dtype).reshape(shape)

    x0 = rng.standard_normal((2, 256, MEL)).astype(np.float32)
    cond = rng.standard_normal((2, 256, MEL)).astype(np.float32)
    mask = np.ones((2, 256), bool)
    mask[1, 200:] = False
    ts = np.linspace(0, 1, nfe + 1, dtype=np.float32)
    t, dt, cfg = ts[:-1], np.diff(ts), np.array([2.0, 1.5], np.float32)
    for name, value in (("x_a", x0), ("cond", cond), ("mask", mask), ("cfg", cfg)):
        at(plan[name].offset, plan[name].dtype, plan[name].shape)[...] = value
    at(plan["t"].offset, "float32", plan["t"].shape)[:nfe, :2] = t[:, None]
    at(plan["dt"].offset, "float32", plan["dt"].shape)[:nfe, :2] = dt[:, None]

    for step in arena.step_addresses(plan, 0, nfe):  # base 0: addresses are arena offsets
        b = arena.step_bindings(plan, 0, step)
        x = at(b["x"], "float32", (2, 256, MEL))
        out = cfg_euler_reference(
            x, at(b["cond"], "float32", x.shape), at(b["mask"], "bool", (2, 256)),
            at(b["t"], "float32", (2,))[:1], at(b["dt"], "float32", (2,))[:1], at(b["cfg"], "float32", (2,)),
        )  # fmt: skip
        at(b["x_next"], "float32", x.shape)[...] = out
    result = "x_a" if nfe % 2 == 0 else "x_b"
    got = at(plan[result].offset, "float32", (2, 256, MEL))
    want = cfg_euler_reference(x0, cond, mask, t, dt, cfg)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[1, 200:], x0[1, 200:])  # masked frames untouched
    assert not np.array_equal(got[0], x0[0])


def test_cfg_euler_reference_matches_the_formula() -> None:
    rng = np.random.default_rng(1)
    x0, cond = rng.standard_normal((1, 4, 3)), rng.standard_normal((1, 4, 3))
    mask = np.ones((1, 4), bool)
    t, dt, cfg = np.array([0.25]), np.array([0.5]), np.array([2.0])
    vc = cond - x0 * 0.25
    vu = 0.5 * x0 * 0.75
    want = x0 + 0.5 * (vc + (vc - vu) * 2.0)
    np.testing.assert_allclose(cfg_euler_reference(x0, cond, mask, t, dt, cfg), want, rtol=1e-6)


def test_vocoder_arena_and_profile_choice() -> None:
    plan = arena.plan_vocoder_arena(max_batch=2, mel_dim=MEL, max_frames=512, max_samples=511 * 256)
    assert plan["mel"].nbytes == 2 * MEL * 512 * 4 and plan["audio"].nbytes == 2 * 511 * 256 * 4
    profs = profiles.plan_profiles("vocoder", BUCKETS)
    assert [(p.batch, p.min_frames, p.frames) for p in profs] == [
        (1, 1, 256),
        (2, 1, 256),
        (1, 257, 512),
        (2, 257, 512),
    ]
    assert profiles.choose_vocoder_profile(profs, 256, 1).index == 0
    assert profiles.choose_vocoder_profile(profs, 257, 1).index == 2
    assert profiles.choose_vocoder_profile(profs, 10, 2).index == 1
    with pytest.raises(NoBucketError, match="513 mel frames exceed"):
        profiles.choose_vocoder_profile(profs, 513, 1)
    with pytest.raises(NoBucketError, match="batch 3"):
        profiles.choose_vocoder_profile(profs, 100, 3)


# --- manifest checks ------------------------------------------------------------------------------


def fake_engines(root: Path, *, tensorrt: str = "10.3.0.30", sm: str = "8.7", step=("fp16", "int8"), buckets=BUCKETS):
    """artifacts with engine entries as the compile stage records them (the engine bytes are dummies)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for graph, precision in [("text_encoder", "fp32"), *(("step", p) for p in step), ("vocoder", "fp32")]:
        rel = f"engines/{graph}.{precision}.engine"
        (root / "engines").mkdir(exist_ok=True)
        (root / rel).write_bytes(f"{graph}{precision}".encode())
        profs = [p.to_dict() for p in profiles.plan_profiles(graph, buckets)]
        files[rel] = file_entry(
            root, rel, graph=graph, precision=precision, kind="engine", stage="compile",
            tensorrt=tensorrt, cuda="12.6", gpu="Orin", sm=sm, profiles=profs,
        )  # fmt: skip

    def mutate(d: dict) -> None:
        d.update(
            name=root.name,
            model={"text_dim": TEXT, "mel_dim": MEL},
            audio={"sample_rate": 24000, "hop_length": 256, "n_mels": MEL},
            buckets=BUCKETS.to_dict(),
            files=files,
            deployments={p: {"text_encoder": "fp32", "step": p, "vocoder": "fp32"} for p in step},
            vocoder={"padding": "center", "hop_length": 256, "n_fft": 1024, "samples": "(F-1)*hop"},
        )

    update_manifest(root, mutate)
    return load_manifest(root)


def edit(m, rel: str, **changes):
    def mutate(d: dict) -> None:
        d["files"][rel].update(changes)

    update_manifest(m.root, mutate)
    return load_manifest(m.root)


def edit_deployment(m, name: str, graphs: dict):
    def mutate(d: dict) -> None:
        d["deployments"][name] = graphs

    update_manifest(m.root, mutate)
    return load_manifest(m.root)


def test_deployments_are_one_precision_per_graph() -> None:
    d = engines.parse_deployments({"int8": {"text_encoder": "fp32", "step": "int8", "vocoder": "fp16"}}, "x")["int8"]
    assert d.describe() == "text_encoder fp32 + step int8 + vocoder fp16"
    with pytest.raises(ValueError, match=r"x: deployment 'a' must give a precision for exactly"):
        engines.parse_deployments({"a": {"step": "int8"}}, "x")
    with pytest.raises(ValueError, match=r"unknown precision \{'vocoder': 'int4'\}"):
        engines.parse_deployments({"a": {"text_encoder": "fp32", "step": "int8", "vocoder": "int4"}}, "x")


def test_matching_engines_are_selected(tmp_path: Path) -> None:
    m = fake_engines(tmp_path / "a")
    chosen = engines.select_engines(m, "int8", tensorrt_version="10.3.0.30", sm="8.7")
    assert {g: (c.precision, c.rel) for g, c in chosen.items()} == {
        "text_encoder": ("fp32", "engines/text_encoder.fp32.engine"),
        "step": ("int8", "engines/step.int8.engine"),
        "vocoder": ("fp32", "engines/vocoder.fp32.engine"),
    }
    assert [chosen["step"].profile_for(b).index for b in BUCKETS] == [0, 1, 2, 3]
    # another build of the same release (10.3.0.x) is the same engine format
    engines.select_engines(m, "fp16", tensorrt_version="10.3.0.26", sm="8.7")


def test_engine_for_another_tensorrt_or_gpu_is_refused(tmp_path: Path) -> None:
    m = fake_engines(tmp_path / "a")
    with pytest.raises(
        ManifestError, match=r"built with TensorRT 10\.3\.0\.30, this runtime has TensorRT 10\.4\.0\.1.*nox -s compile"
    ):
        engines.select_engines(m, "fp16", tensorrt_version="10.4.0.1", sm="8.7")
    with pytest.raises(ManifestError, match=r"built for SM 8\.7 \(Orin\), this GPU is SM 9\.0.*rebuild"):
        engines.select_engines(m, "fp16", tensorrt_version="10.3.0.30", sm="9.0")
    m2 = edit(m, "engines/vocoder.fp32.engine", tensorrt=None)
    with pytest.raises(ManifestError, match="does not say which TensorRT/GPU built it"):
        engines.select_engines(m2, "fp16", tensorrt_version="10.3.0.30", sm="8.7")


def test_missing_profile_or_precision_is_refused(tmp_path: Path) -> None:
    m = fake_engines(tmp_path / "a")
    profiles = m.files["engines/step.fp16.engine"]["profiles"]
    m2 = edit(m, "engines/step.fp16.engine", profiles=[p for p in profiles if p["bucket"] != "n512_b2"])
    with pytest.raises(
        ManifestError, match=r"step\.fp16\.engine: no optimization profile for bucket\(s\) n512_b2.*rebuild"
    ):
        engines.select_engines(m2, "fp16", tensorrt_version="10.3.0.30", sm="8.7")
    with pytest.raises(ManifestError, match=r"no TensorRT deployment 'fp32' in the manifest \(built: fp16, int8\)"):
        engines.select_engines(m, "fp32", tensorrt_version="10.3.0.30", sm="8.7")
    m3 = edit_deployment(m, "int8", {"text_encoder": "fp32", "step": "int8", "vocoder": "fp16"})
    with pytest.raises(ManifestError, match="deployment 'int8' needs a fp16 vocoder engine"):
        engines.select_engines(m3, "int8", tensorrt_version="10.3.0.30", sm="8.7")
    with pytest.raises(ValueError, match="precision must be one of"):
        engines.select_engines(m, "int4", tensorrt_version="10.3.0.30", sm="8.7")


def test_profile_outside_every_bucket_is_refused(tmp_path: Path) -> None:
    other = BucketTable(frames=(256, 384), batch=(1, 2))
    m = fake_engines(tmp_path / "a", buckets=other)  # engines built for another bucket table
    with pytest.raises(
        ManifestError, match=r"profile 2 \(n384_b1\) fits no bucket of the manifest's table.*another bucket table"
    ):
        engines.select_engines(m, "fp16", tensorrt_version="10.3.0.30", sm="8.7")


def test_vocoder_frame_gaps_are_refused(tmp_path: Path) -> None:
    m = fake_engines(tmp_path / "a")
    profiles = [dict(p) for p in m.files["engines/vocoder.fp32.engine"]["profiles"]]
    profiles[2]["min_frames"] = 300  # lengths 257..299 would have no profile
    m2 = edit(m, "engines/vocoder.fp32.engine", profiles=profiles)
    with pytest.raises(ManifestError, match="leave frame gaps"):
        engines.select_engines(m2, "fp16", tensorrt_version="10.3.0.30", sm="8.7")


def test_changed_engine_file_and_no_engines(tmp_path: Path) -> None:
    m = fake_engines(tmp_path / "a")
    (m.root / "engines/step.int8.engine").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="does not match the manifest"):
        engines.select_engines(m, "int8", tensorrt_version="10.3.0.30", sm="8.7")
    empty = tmp_path / "b"
    update_manifest(empty, lambda d: d.update(model={}, audio={}, buckets=BUCKETS.to_dict(), files={}))
    with pytest.raises(BackendUnavailable, match="holds no TensorRT engines"):
        engines.select_engines(load_manifest(empty), "fp16", tensorrt_version="10.3.0.30", sm="8.7")


def test_engine_io_and_profile_shapes_checks() -> None:
    io = {n: ("input", "float32") for n in ("x", "cond", "text_cond", "text_uncond", "t", "dt", "cfg")}
    io.update(mask=("input", "bool"), x_next=("output", "float32"))
    engines.check_engine_io("step.engine", "step", io)
    with pytest.raises(ManifestError, match="x_next: engine absent vs expected"):
        engines.check_engine_io("step.engine", "step", {k: v for k, v in io.items() if k != "x_next"})
    with pytest.raises(ManifestError, match=r"mask: engine \('input', 'int64'\)"):
        engines.check_engine_io("step.engine", "step", {**io, "mask": ("input", "int64")})

    profs = tuple(profiles.plan_profiles("step", BUCKETS))
    choice = engines.EngineChoice("step", "fp16", "engines/step.fp16.engine", {}, profs)
    observed = [profiles.profile_shapes("step", p, MEL, TEXT) for p in profs]
    engines.check_engine_shapes(choice, observed, MEL, TEXT)
    bad = [dict(o) for o in observed]
    bad[1]["x"] = ((2, 384, MEL),) * 3
    with pytest.raises(ManifestError, match=r"profile 1 does not have bucket n256_b2's shapes \(input x"):
        engines.check_engine_shapes(choice, bad, MEL, TEXT)
    with pytest.raises(ManifestError, match="the engine has 3 optimization profiles"):
        engines.check_engine_shapes(choice, observed[:3], MEL, TEXT)


# --- skip path ------------------------------------------------------------------------------------


def test_without_tensorrt_construction_raises_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable, match=r"TensorRT not found: `import tensorrt` failed.*onnxruntime backend"):
        trtb.TensorRTBackend("/nonexistent/artifacts")  # never gets as far as the manifest
    assert not trtb.available()


def test_tensorrt_stubs_alone_raise_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(BackendUnavailable, match="empty namespace"):
        trtb.TensorRTBackend("/nonexistent/artifacts")


def test_tensorrt_older_than_10_is_refused_naming_jetpack(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("tensorrt")
    fake.Builder = object
    fake.__version__ = "8.6.2.3"  # JetPack 6.0
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    with pytest.raises(
        BackendUnavailable, match=r"TensorRT 8\.6\.2\.3 is too old.*JetPack 6\.1 or later brings TensorRT 10\.3"
    ):
        trtb.TensorRTBackend("/nonexistent/artifacts")


@pytest.mark.skipif(cg.gpu_available(), reason="this machine has a GPU: the no-GPU path cannot be shown")
def test_tensorrt_without_gpu_raises_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed")
    fake = types.ModuleType("tensorrt")
    fake.Builder = object  # what real bindings have and stubs lack
    fake.__version__ = "10.3.0.30"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    with pytest.raises(BackendUnavailable, match=r"no usable CUDA GPU: cudaGetDeviceCount failed: cudaError"):
        trtb.TensorRTBackend("/nonexistent/artifacts")
    with pytest.raises(ValueError, match="precision must name a deployment"):
        trtb.TensorRTBackend("/nonexistent/artifacts", precision="")
    with pytest.raises(ValueError, match=r"nfe_warmup \[80\] outside 1..nfe_max \(64\)"):
        trtb.TensorRTBackend("/nonexistent/artifacts", nfe_warmup=(80,))


def test_cuda_python_newer_than_the_driver_is_refused() -> None:
    """cuda-python 13 on JetPack 6's CUDA 12.6 driver: a clear refusal, not a silent CPU fallback."""
    with pytest.raises(
        BackendUnavailable,
        match=r"cuda-python 13\.0\.1 needs a CUDA 13 driver, this driver supports CUDA 12\.6.*12\.6\.1,<13",
    ):
        cg.check_driver_supports_bindings("13.0.1", 12060)
    cg.check_driver_supports_bindings("12.6.2", 12060)
    cg.check_driver_supports_bindings("13.0.1", 13000)
    cg.check_driver_supports_bindings("13.0.1", 0)  # no driver at all: the device count says so instead


def test_runtime_pins_a_cuda_python_jetpack_6_can_load() -> None:
    data = tomllib.loads((ROOT / "runtime" / "pyproject.toml").read_text())
    extras = data["project"]["optional-dependencies"]
    assert extras["jetson"] == ["cuda-python>=12.6.1,<13"]


def test_auto_backend_logs_why_it_falls_back(
    tiny_artifacts: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    from f5rt.backends import make_backend

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with caplog.at_level(logging.WARNING, logger="f5rt.backends"):
        backend = make_backend("auto", load_manifest(tiny_artifacts))
    assert backend.name == "onnxruntime"
    assert any("TensorRT unavailable (TensorRT not found" in r.getMessage() for r in caplog.records)
    with pytest.raises(BackendUnavailable, match="TensorRT not found"):
        make_backend("tensorrt", load_manifest(tiny_artifacts))


# --- module layering ------------------------------------------------------------------------------

BACKENDS = ROOT / "runtime" / "f5rt" / "backends"
PLANNING = ("contract", "profiles", "engines", "arena")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (also inside functions), and modules named to importlib."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            out.add(str(node.args[0].value))  # importlib.import_module("tensorrt")
    return out


def backend_module_graph() -> dict[str, set[str]]:
    mods = {}
    for path in BACKENDS.rglob("*.py"):
        rel = path.relative_to(ROOT / "runtime").with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        mods[name] = path
    return {name: {m for m in imports_of(path) if m in mods and m != name} for name, path in mods.items()}


def test_no_import_circle_in_the_backends() -> None:
    graph = backend_module_graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                raise AssertionError(f"import circle: {' -> '.join([*stack, node, dep])}")
            if not state.get(dep):
                visit(dep, [*stack, node])
        state[node] = 2

    for node in graph:
        if not state.get(node):
            visit(node, [])
    assert "f5rt.backends.trt.runner" in graph["f5rt.backends.trt.backend"]


def test_planning_modules_import_neither_tensorrt_nor_cuda() -> None:
    for name in PLANNING:
        bad = {m for m in imports_of(BACKENDS / "trt" / f"{name}.py") if m.split(".")[0] in ("tensorrt", "cuda")}
        bad |= {
            m
            for m in imports_of(BACKENDS / "trt" / f"{name}.py")
            if m.startswith("f5rt.backends.trt.") and m.rsplit(".", 1)[-1] in ("cuda", "runner", "backend")
        }
        assert not bad, f"trt/{name}.py imports {bad}"


def test_compile_uses_only_the_pure_planning_of_the_runtime() -> None:
    for path in (ROOT / "build" / "f5build" / "compile.py", ROOT / "build" / "f5build" / "trt_build.py"):
        runtime_backends = {m for m in imports_of(path) if m.startswith("f5rt.backends")}
        allowed = {f"f5rt.backends.trt.{n}" for n in PLANNING}
        assert {m.rsplit(".", 1)[0] if m.rsplit(".", 1)[0] in allowed else m for m in runtime_backends} <= allowed, path
    assert not list(BACKENDS.glob("cudagraph.py")), "the NVRTC kernel and the bench live in tests/gpucheck"


def test_importing_the_backend_needs_neither_tensorrt_nor_cuda() -> None:
    code = (
        "import sys; import f5rt.backends.trt.backend, f5rt.backends.trt.runner, f5rt.backends.trt.cuda; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda')))"
    )
    env_path = f"{ROOT / 'runtime'}"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": env_path}
    )
    assert out.stdout.strip() == "[]"


# --- Jetson clocks --------------------------------------------------------------------------------


def fake_jetson(root: Path, lo: int, hi: int, top: int) -> Path:
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    gpu = root / "sys/class/devfreq/17000000.gpu"
    gpu.mkdir(parents=True)
    (gpu / "min_freq").write_text(f"{lo}\n")
    (gpu / "max_freq").write_text(f"{hi}\n")
    (gpu / "available_frequencies").write_text(f"306000000 {top // 2} {top}\n")
    return root


def test_jetson_clock_state_is_read_from_sysfs(tmp_path: Path) -> None:
    from f5rt.jetson import read_jetson_clocks

    assert read_jetson_clocks(tmp_path / "not-a-jetson") is None
    unlocked = read_jetson_clocks(fake_jetson(tmp_path / "a", 306000000, 1300500000, 1300500000), power_mode="30W")
    assert unlocked is not None and not unlocked.locked
    assert "sudo nvpmodel -m 0" in unlocked.advice() and "sudo jetson_clocks" in unlocked.advice()
    locked = read_jetson_clocks(fake_jetson(tmp_path / "b", 1300500000, 1300500000, 1300500000), power_mode="MAXN")
    assert locked is not None and locked.locked and locked.advice() == "GPU clocks locked at the top frequency"
    capped = read_jetson_clocks(fake_jetson(tmp_path / "c", 650250000, 650250000, 1300500000), power_mode="MAXN")
    assert capped is not None and not capped.locked  # pinned, but below the top clock
