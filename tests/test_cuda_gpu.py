"""The CUDA wrapper and CUDA graph capture/replay on a real GPU, through the TensorRT backend's own runner.

`BucketRunner` is what the TensorRT backend uses for every bucket: arena + pinned mirror, per-step
t/dt slots, x ping-pong, one captured graph per NFE. Here its step enqueue is an NVRTC-compiled kernel
doing the step graph's CFG + Euler update, so the capture, replay, copies and addresses are checked
against numpy without TensorRT. Skipped (with the reason) where there is no GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from f5rt.backends.base import HostText, SampleJob
from f5rt.backends.trt import cuda as cg
from f5rt.backends.trt.arena import ALIGN, plan_step_arena
from f5rt.backends.trt.runner import BucketRunner
from f5rt.buckets import Bucket
from gpucheck.kernel import CfgEulerKernel, cfg_euler_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cg.gpu_available(), reason="no CUDA GPU visible to cuda-python (cudaGetDeviceCount)"),
]

MEL, TEXT = 100, 8
BUCKET = Bucket(256, 2)


@pytest.fixture(scope="module")
def kernel():
    cg.init_device(0)
    try:
        k = CfgEulerKernel()
    except Exception as e:  # no NVRTC library on this machine
        pytest.skip(f"cannot build the NVRTC test kernel: {e}")
    yield k
    k.close()


@pytest.fixture
def stream():
    with cg.Stream() as s:
        yield s


def make_job(nfe: int, seed: int) -> SampleJob:
    rng = np.random.default_rng(seed)
    b, n = BUCKET.batch, BUCKET.frames
    mask = np.ones((b, n), bool)
    mask[1, 180:] = False  # row 1 is a shorter request padded to the bucket
    ts = np.sort(rng.uniform(0, 1, nfe + 1)).astype(np.float32)
    return SampleJob(
        bucket=BUCKET,
        x0=rng.standard_normal((b, n, MEL)).astype(np.float32),
        cond=rng.standard_normal((b, n, MEL)).astype(np.float32),
        text=HostText(np.zeros((b, n, TEXT), np.float32), np.zeros((b, n, TEXT), np.float32)),
        mask=mask,
        t=ts[:-1],
        dt=np.diff(ts),
        cfg=np.array([2.0, 1.5], np.float32),
    )


def runner(kernel: CfgEulerKernel, stream: cg.Stream, graphs: bool, timer=None) -> BucketRunner:
    def enqueue(b: dict[str, int], s: cg.Stream) -> None:
        kernel.launch(
            s, x=b["x"], x_next=b["x_next"], cond=b["cond"], mask=b["mask"], t=b["t"], dt=b["dt"], cfg=b["cfg"],
            batch=BUCKET.batch, frames=BUCKET.frames, channels=MEL,
        )  # fmt: skip

    return BucketRunner(
        BUCKET, plan_step_arena(BUCKET, MEL, TEXT, nfe_max=32), stream, enqueue, timer=timer, cuda_graphs=graphs
    )


def reference(job: SampleJob) -> np.ndarray:
    return cfg_euler_reference(job.x0, job.cond, job.mask, job.t, job.dt, job.cfg)


@pytest.mark.parametrize("nfe", [7, 16, 32])
def test_graph_replay_matches_numpy_and_eager(kernel, stream, nfe: int) -> None:
    with runner(kernel, stream, graphs=True) as graphed, runner(kernel, stream, graphs=False) as eager:
        graphed.prepare(nfe)
        assert graphed.captured == [nfe] and graphed.graph_error is None
        for seed in (0, 1):  # a replay must read the new inputs, not what was there at capture
            job = make_job(nfe, seed + 10 * nfe)
            want = reference(job)
            got = graphed.sample(job)
            err = float(np.max(np.abs(got - want)))
            assert err <= 1e-5 * max(1.0, float(np.max(np.abs(want)))), f"nfe {nfe}: max abs error {err}"
            np.testing.assert_array_equal(got, eager.sample(job))  # same kernels, same order: bitwise equal
            np.testing.assert_array_equal(got[1, 180:], job.x0[1, 180:])
        assert graphed.captured == [nfe]  # replayed, not recaptured


def test_new_nfe_is_captured_on_first_use_and_stages_are_timed(kernel, stream) -> None:
    with cg.StageTimer() as timer, runner(kernel, stream, graphs=True, timer=timer) as r:
        for nfe in (5, 12):
            timer.reset()
            job = make_job(nfe, nfe)
            np.testing.assert_allclose(r.sample(job), reference(job), rtol=1e-5, atol=1e-5)
            times = timer.results()
            assert set(times) == {"h2d", "steps", "d2h"} and all(v >= 0 for v in times.values())
        assert r.captured == [5, 12]


def test_every_step_slot_is_256_byte_aligned_on_the_device(kernel, stream) -> None:
    """The per-step t/dt addresses a captured graph bakes in, on real cudaMalloc memory."""
    with runner(kernel, stream, graphs=True) as r:
        for bindings in r.step_bindings(32):
            assert all(addr % ALIGN == 0 for addr in bindings.values()), bindings


def test_failed_capture_leaves_no_stale_error(kernel, stream) -> None:
    """A capture that fails (a synchronize inside it) is cleared, so the eager fallback runs."""

    def bad(b: dict[str, int], s: cg.Stream) -> None:
        s.synchronize()  # prohibited while capturing

    plan = plan_step_arena(BUCKET, MEL, TEXT, nfe_max=8)
    with BucketRunner(BUCKET, plan, stream, bad, cuda_graphs=True) as r:
        r.prepare(4)
        assert not r.cuda_graphs and r.graph_error and "cudaStreamSynchronize" in r.graph_error
    assert cg.clear_last_error() == 0
    with runner(kernel, stream, graphs=False) as eager:
        job = make_job(4, 3)
        np.testing.assert_allclose(eager.sample(job), reference(job), rtol=1e-5, atol=1e-5)


def test_gpucheck_bench_reports_both_modes() -> None:
    from gpucheck.__main__ import bench

    rows = bench(Bucket(256, 1), nfes=(7,), repeat=2)
    assert {(r["mode"], r["nfe"]) for r in rows} == {("eager", 7), ("graph", 7)}
    assert all(r["loop_ms"] > 0 and r["addresses_aligned"] and r["max_abs_vs_numpy"] <= 1e-5 for r in rows)
