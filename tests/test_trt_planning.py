"""The TensorRT backend's GPU-free parts: buffer and address planning, manifest checks, the skip path.

The NFE loop's address plan is exercised end to end on a numpy "device": a byte array standing in for
the arena, with the CFG + Euler update applied through the very addresses a captured graph would
bake in, compared with the plain loop.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from f5rt.backends import cudagraph as cg
from f5rt.backends import tensorrt as trtb
from f5rt.buckets import Bucket, BucketTable
from f5rt.errors import BackendUnavailable, ManifestError, NoBucketError
from f5rt.manifest import file_entry, load_manifest, update_manifest

ROOT = Path(__file__).resolve().parents[1]
MEL, TEXT = 100, 16
BUCKETS = BucketTable(frames=(256, 512), batch=(1, 2))
# backends/base.py's documented graph I/O, written out independently of the code under test.
STEP_IO = {"x", "cond", "text_cond", "text_uncond", "mask", "t", "dt", "cfg", "x_next"}
TEXT_IO = {"text_ids", "mask", "text_cond", "text_uncond"}


# --- buffer and address planning ------------------------------------------------------------------


def test_step_arena_regions_are_aligned_disjoint_and_sized() -> None:
    bucket = Bucket(512, 2)
    plan = trtb.plan_step_arena(bucket, MEL, TEXT, nfe_max=32)
    sizes = {
        "x_a": 2 * 512 * MEL * 4,
        "x_b": 2 * 512 * MEL * 4,
        "cond": 2 * 512 * MEL * 4,
        "text_cond": 2 * 512 * TEXT * 4,
        "text_uncond": 2 * 512 * TEXT * 4,
        "mask": 2 * 512,
        "text_ids": 2 * 512 * 4,
        "cfg": 2 * 4,
        "t": 32 * 2 * 4,
        "dt": 32 * 2 * 4,
    }
    assert {r.name: r.nbytes for r in plan.regions} == sizes
    spans = sorted((r.offset, r.offset + r.nbytes) for r in plan.regions)
    assert all(off % 256 == 0 for off, _ in spans)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))
    assert spans[-1][1] <= plan.nbytes < spans[-1][1] + 256
    assert plan["t"].shape == (32, 2)  # one (B,) slot per step


def test_copy_spans_cover_the_inputs_and_nothing_written_by_the_loop() -> None:
    plan = trtb.plan_step_arena(Bucket(256, 1), MEL, TEXT, nfe_max=16)
    [(start, n)] = plan.spans(trtb.SAMPLE_INPUTS)  # one contiguous copy per request
    covered = range(start, start + n)
    for name in trtb.SAMPLE_INPUTS:
        r = plan[name]
        assert r.offset in covered and r.offset + r.nbytes - 1 in covered
    for name in ("x_b", "text_ids"):
        assert plan[name].offset not in covered
    assert len(plan.spans(trtb.TEXT_INPUTS)) == 2  # text_ids sits apart from mask
    assert plan.spans(["cfg"]) == [(plan["cfg"].offset, 4)]


@pytest.mark.parametrize("nfe", [7, 16, 32])
def test_step_addresses_ping_pong_and_per_step_slots(nfe: int) -> None:
    bucket = Bucket(256, 2)
    plan = trtb.plan_step_arena(bucket, MEL, TEXT, nfe_max=32)
    base = 1 << 20
    steps = trtb.step_addresses(plan, base, nfe)
    xa, xb = base + plan["x_a"].offset, base + plan["x_b"].offset
    assert steps[0].x_in == xa
    for i, s in enumerate(steps):
        b = trtb.step_bindings(plan, base, s)
        assert set(b) == STEP_IO
        assert b["t"] == base + plan["t"].offset + i * 2 * 4
        assert b["dt"] == base + plan["dt"].offset + i * 2 * 4
        assert {b["x"], b["x_next"]} == {xa, xb}
        if i:
            assert b["x"] == steps[i - 1].x_out  # each step reads what the previous one wrote
    assert steps[-1].x_out == cg.result_address(nfe, xa, xb) == (xa if nfe % 2 == 0 else xb)
    assert set(trtb.text_encoder_bindings(plan, base)) == TEXT_IO
    with pytest.raises(ValueError, match="exceeds nfe_max"):
        trtb.step_addresses(plan, base, 33)


def test_address_plan_runs_the_euler_loop_on_a_host_arena() -> None:
    """Run the loop through the planned addresses on a numpy arena and compare with the plain loop."""
    bucket, nfe = Bucket(256, 2), 7
    plan = trtb.plan_step_arena(bucket, MEL, TEXT, nfe_max=16)
    arena = np.zeros(plan.nbytes, dtype=np.uint8)
    rng = np.random.default_rng(0)

    def at(addr: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return arena[addr : addr + n].view(dtype).reshape(shape)

    x0 = rng.standard_normal((2, 256, MEL)).astype(np.float32)
    cond = rng.standard_normal((2, 256, MEL)).astype(np.float32)
    mask = np.ones((2, 256), bool)
    mask[1, 200:] = False
    ts = np.linspace(0, 1, nfe + 1, dtype=np.float32)
    t, dt, cfg = ts[:-1], np.diff(ts), np.array([2.0, 1.5], np.float32)
    for name, value in (("x_a", x0), ("cond", cond), ("mask", mask), ("cfg", cfg)):
        at(plan[name].offset, plan[name].dtype, plan[name].shape)[...] = value
    at(plan["t"].offset, "float32", plan["t"].shape)[:nfe] = t[:, None]
    at(plan["dt"].offset, "float32", plan["dt"].shape)[:nfe] = dt[:, None]

    for step in trtb.step_addresses(plan, 0, nfe):  # base 0: addresses are arena offsets
        b = trtb.step_bindings(plan, 0, step)
        x = at(b["x"], "float32", (2, 256, MEL))
        out = cg.cfg_euler_reference(
            x, at(b["cond"], "float32", x.shape), at(b["mask"], "bool", (2, 256)),
            at(b["t"], "float32", (2,))[:1], at(b["dt"], "float32", (2,))[:1], at(b["cfg"], "float32", (2,)),
        )  # fmt: skip
        at(b["x_next"], "float32", x.shape)[...] = out
    result = "x_a" if nfe % 2 == 0 else "x_b"
    got = at(plan[result].offset, "float32", (2, 256, MEL))
    want = cg.cfg_euler_reference(x0, cond, mask, t, dt, cfg)
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
    np.testing.assert_allclose(cg.cfg_euler_reference(x0, cond, mask, t, dt, cfg), want, rtol=1e-6)


def test_vocoder_arena_and_profile_choice() -> None:
    plan = trtb.plan_vocoder_arena(max_batch=2, mel_dim=MEL, max_frames=512, hop=256)
    assert plan["mel"].nbytes == 2 * MEL * 512 * 4 and plan["audio"].nbytes == 2 * 512 * 256 * 4
    profiles = trtb.plan_profiles("vocoder", BUCKETS)
    assert [(p.batch, p.min_frames, p.frames) for p in profiles] == [
        (1, 1, 256),
        (2, 1, 256),
        (1, 257, 512),
        (2, 257, 512),
    ]
    assert trtb.choose_vocoder_profile(profiles, 256, 1).index == 0
    assert trtb.choose_vocoder_profile(profiles, 257, 1).index == 2
    assert trtb.choose_vocoder_profile(profiles, 10, 2).index == 1
    with pytest.raises(NoBucketError, match="513 mel frames exceed"):
        trtb.choose_vocoder_profile(profiles, 513, 1)
    with pytest.raises(NoBucketError, match="batch 3"):
        trtb.choose_vocoder_profile(profiles, 100, 3)


# --- manifest checks ------------------------------------------------------------------------------


def fake_engines(root: Path, *, tensorrt: str = "10.3.0.30", sm: str = "8.7", step=("fp16", "int8"), buckets=BUCKETS):
    """artifacts with engine entries as the compile stage records them (the engine bytes are dummies)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for graph, precision in [("text_encoder", "fp32"), *(("step", p) for p in step), ("vocoder", "fp32")]:
        rel = f"engines/{graph}.{precision}.engine"
        (root / "engines").mkdir(exist_ok=True)
        (root / rel).write_bytes(f"{graph}{precision}".encode())
        profiles = [p.to_dict() for p in trtb.plan_profiles(graph, buckets)]
        files[rel] = file_entry(
            root, rel, graph=graph, precision=precision, kind="engine", stage="compile",
            tensorrt=tensorrt, cuda="12.6", gpu="Orin", sm=sm, profiles=profiles,
        )  # fmt: skip

    def mutate(d: dict) -> None:
        d.update(
            name=root.name,
            model={"text_dim": TEXT, "mel_dim": MEL},
            audio={"sample_rate": 24000, "hop_length": 256, "n_mels": MEL},
            buckets=BUCKETS.to_dict(),
            files=files,
        )

    update_manifest(root, mutate)
    return load_manifest(root)


def edit(m, rel: str, **changes):
    def mutate(d: dict) -> None:
        d["files"][rel].update(changes)

    update_manifest(m.root, mutate)
    return load_manifest(m.root)


def test_matching_engines_are_selected(tmp_path: Path) -> None:
    m = fake_engines(tmp_path / "a")
    chosen = trtb.select_engines(m, "int8", tensorrt_version="10.3.0.30", sm="8.7")
    assert {g: (c.precision, c.rel) for g, c in chosen.items()} == {
        "text_encoder": ("fp32", "engines/text_encoder.fp32.engine"),
        "step": ("int8", "engines/step.int8.engine"),
        "vocoder": ("fp32", "engines/vocoder.fp32.engine"),
    }
    assert [chosen["step"].profile_for(b).index for b in BUCKETS] == [0, 1, 2, 3]
    # another build of the same release (10.3.0.x) is the same engine format
    trtb.select_engines(m, "fp16", tensorrt_version="10.3.0.26", sm="8.7")


def test_engine_for_another_tensorrt_or_gpu_is_refused(tmp_path: Path) -> None:
    m = fake_engines(tmp_path / "a")
    with pytest.raises(
        ManifestError, match=r"built with TensorRT 10\.3\.0\.30, this runtime has TensorRT 10\.4\.0\.1.*nox -s compile"
    ):
        trtb.select_engines(m, "fp16", tensorrt_version="10.4.0.1", sm="8.7")
    with pytest.raises(ManifestError, match=r"built for SM 8\.7 \(Orin\), this GPU is SM 9\.0.*rebuild"):
        trtb.select_engines(m, "fp16", tensorrt_version="10.3.0.30", sm="9.0")
    m2 = edit(m, "engines/vocoder.fp32.engine", tensorrt=None)
    with pytest.raises(ManifestError, match="does not say which TensorRT/GPU built it"):
        trtb.select_engines(m2, "fp16", tensorrt_version="10.3.0.30", sm="8.7")


def test_missing_profile_or_precision_is_refused(tmp_path: Path) -> None:
    m = fake_engines(tmp_path / "a")
    profiles = m.files["engines/step.fp16.engine"]["profiles"]
    m2 = edit(m, "engines/step.fp16.engine", profiles=[p for p in profiles if p["bucket"] != "n512_b2"])
    with pytest.raises(
        ManifestError, match=r"step\.fp16\.engine: no optimization profile for bucket\(s\) n512_b2.*rebuild"
    ):
        trtb.select_engines(m2, "fp16", tensorrt_version="10.3.0.30", sm="8.7")
    with pytest.raises(ManifestError, match="no step engine at precision fp32"):
        trtb.select_engines(m, "fp32", tensorrt_version="10.3.0.30", sm="8.7")
    with pytest.raises(ValueError, match="precision must be one of"):
        trtb.select_engines(m, "int4", tensorrt_version="10.3.0.30", sm="8.7")


def test_profile_outside_every_bucket_is_refused(tmp_path: Path) -> None:
    other = BucketTable(frames=(256, 384), batch=(1, 2))
    m = fake_engines(tmp_path / "a", buckets=other)  # engines built for another bucket table
    with pytest.raises(
        ManifestError, match=r"profile 2 \(n384_b1\) fits no bucket of the manifest's table.*another bucket table"
    ):
        trtb.select_engines(m, "fp16", tensorrt_version="10.3.0.30", sm="8.7")


def test_vocoder_frame_gaps_are_refused(tmp_path: Path) -> None:
    m = fake_engines(tmp_path / "a")
    profiles = [dict(p) for p in m.files["engines/vocoder.fp32.engine"]["profiles"]]
    profiles[2]["min_frames"] = 300  # lengths 257..299 would have no profile
    m2 = edit(m, "engines/vocoder.fp32.engine", profiles=profiles)
    with pytest.raises(ManifestError, match="leave frame gaps"):
        trtb.select_engines(m2, "fp16", tensorrt_version="10.3.0.30", sm="8.7")


def test_changed_engine_file_and_no_engines(tmp_path: Path) -> None:
    m = fake_engines(tmp_path / "a")
    (m.root / "engines/step.int8.engine").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="does not match the manifest"):
        trtb.select_engines(m, "int8", tensorrt_version="10.3.0.30", sm="8.7")
    empty = tmp_path / "b"
    update_manifest(empty, lambda d: d.update(model={}, audio={}, buckets=BUCKETS.to_dict(), files={}))
    with pytest.raises(BackendUnavailable, match="holds no TensorRT engines"):
        trtb.select_engines(load_manifest(empty), "fp16", tensorrt_version="10.3.0.30", sm="8.7")


def test_engine_io_and_profile_shapes_checks() -> None:
    io = {n: ("input", "float32") for n in ("x", "cond", "text_cond", "text_uncond", "t", "dt", "cfg")}
    io.update(mask=("input", "bool"), x_next=("output", "float32"))
    trtb.check_engine_io("step.engine", "step", io)
    with pytest.raises(ManifestError, match="x_next: engine absent vs expected"):
        trtb.check_engine_io("step.engine", "step", {k: v for k, v in io.items() if k != "x_next"})
    with pytest.raises(ManifestError, match=r"mask: engine \('input', 'int64'\)"):
        trtb.check_engine_io("step.engine", "step", {**io, "mask": ("input", "int64")})

    profiles = tuple(trtb.plan_profiles("step", BUCKETS))
    choice = trtb.EngineChoice("step", "fp16", "engines/step.fp16.engine", {}, profiles)
    observed = [trtb.profile_shapes("step", p, MEL, TEXT) for p in profiles]
    trtb.check_engine_shapes(choice, observed, MEL, TEXT)
    bad = [dict(o) for o in observed]
    bad[1]["x"] = ((2, 384, MEL),) * 3
    with pytest.raises(ManifestError, match=r"profile 1 does not have bucket n256_b2's shapes \(input x"):
        trtb.check_engine_shapes(choice, bad, MEL, TEXT)
    with pytest.raises(ManifestError, match="the engine has 3 optimization profiles"):
        trtb.check_engine_shapes(choice, observed[:3], MEL, TEXT)


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


@pytest.mark.skipif(cg.gpu_available(), reason="this machine has a GPU: the no-GPU path cannot be shown")
def test_tensorrt_without_gpu_raises_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed")
    fake = types.ModuleType("tensorrt")
    fake.Builder = object  # what real bindings have and stubs lack
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    with pytest.raises(BackendUnavailable, match=r"no usable CUDA GPU: cudaGetDeviceCount failed: cudaError"):
        trtb.TensorRTBackend("/nonexistent/artifacts")
    with pytest.raises(ValueError, match="precision must be one of"):
        trtb.TensorRTBackend("/nonexistent/artifacts", precision="bf16")
    with pytest.raises(ValueError, match=r"nfe_warmup \[80\] outside 1..nfe_max \(64\)"):
        trtb.TensorRTBackend("/nonexistent/artifacts", nfe_warmup=(80,))


def test_importing_the_backend_needs_neither_tensorrt_nor_cuda() -> None:
    code = (
        "import sys; import f5rt.backends.tensorrt, f5rt.backends.cudagraph; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda')))"
    )
    env_path = f"{ROOT / 'runtime'}"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": env_path}
    )
    assert out.stdout.strip() == "[]"


# --- cudagraph.check ------------------------------------------------------------------------------


def test_check_unwraps_values_and_names_the_failed_call() -> None:
    rt = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed")
    ok = rt.cudaError_t.cudaSuccess
    assert cg.check((ok,), "cudaFoo") is None
    assert cg.check((ok, 7), "cudaFoo") == 7
    assert cg.check((ok, 1, 2), "cudaFoo") == (1, 2)
    with pytest.raises(
        cg.CudaError, match=r"cudaMalloc\(64\) failed: cudaErrorMemoryAllocation \(2\): out of memory"
    ) as e:
        cg.check((rt.cudaError_t.cudaErrorMemoryAllocation, None), "cudaMalloc(64)")
    assert e.value.call == "cudaMalloc(64)" and e.value.code == 2
    with pytest.raises(ValueError, match="must differ"):
        cg.plan_step_addresses(4, 256, 256, 0, 0, 8)
