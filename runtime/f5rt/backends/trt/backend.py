"""TensorRT backend: engines loaded once, one context per bucket, the NFE loop replayed as one CUDA graph.

Start-up does all the slow work, never the first request:

* the manifest is checked before anything is deserialized: the deployment's engines must have been
  built by this TensorRT release for this GPU's SM, with one optimization profile per bucket of the
  manifest's table (ManifestError says what to rebuild);
* each engine is deserialized once; each bucket gets one text-encoder and one step execution context
  (its profile selected once, shapes fixed, one eager enqueue so TensorRT finishes its lazy set-up
  before any capture), the vocoder one context per profile; all contexts share one scratch allocation
  (USER_MANAGED), which is safe because everything runs in order on one stream;
* each bucket gets a `BucketRunner` (device arena + pinned mirror, every bound address 256-byte aligned);
* for every NFE in `nfe_warmup` and every bucket, the NFE step enqueues are captured into one CUDA
  graph and instantiated. Another NFE is captured the first time a request uses it (a few ms, once).

A request then costs: fill the pinned mirror, one async copy in, one graph launch, one copy out; the
text embeddings never leave the device between `encode_text` and `sample`. CUDA events time every
stage (`last_timings_ms`).

The planning this relies on (contract, profiles, engine checks, arena) is pure and lives beside this
module; tensorrt and cuda-python are imported when the backend starts, never at import time.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from f5rt.backends.base import SampleJob, TextEmbeddings
from f5rt.backends.trt import cuda
from f5rt.backends.trt.arena import (
    TEXT_INPUTS,
    plan_step_arena,
    plan_vocoder_arena,
    text_encoder_bindings,
    vocoder_bindings,
)
from f5rt.backends.trt.engines import (
    REBUILD,
    EngineChoice,
    check_engine_io,
    check_engine_shapes,
    check_tensorrt_module,
    dims_tuple,
    engine_io,
    engine_profile_shapes,
    select_engines,
)
from f5rt.backends.trt.profiles import choose_vocoder_profile, profile_shapes
from f5rt.backends.trt.runner import BucketRunner
from f5rt.buckets import Bucket
from f5rt.errors import BackendUnavailable, ManifestError, NoBucketError
from f5rt.limits import NFE_MAX
from f5rt.manifest import Manifest, load_manifest

if TYPE_CHECKING:  # checked against tensorrt-stubs where installed, Any otherwise
    import tensorrt as trt_types  # type: ignore[import-not-found, unused-ignore]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def import_tensorrt() -> ModuleType:
    """The tensorrt module, or BackendUnavailable saying why not (absent, stubs only, libraries broken)."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as e:  # ImportError, or OSError from a wheel whose libnvinfer is missing
        raise BackendUnavailable(
            f"TensorRT not found: `import tensorrt` failed ({e}); the tensorrt backend needs TensorRT's Python "
            "bindings (JetPack: `apt install python3-libnvinfer`); use the onnxruntime backend here"
        ) from e
    check_tensorrt_module(trt)
    return trt


def unavailable_reason(device: int = 0) -> str | None:
    """None when TensorRT's bindings and a usable CUDA GPU are both here, else why not (for `f5rt info`)."""
    try:
        import_tensorrt()
        cuda.require_gpu(device)
    except BackendUnavailable as e:
        return str(e)
    return None


def available() -> bool:
    """TensorRT and a CUDA GPU are both usable here (engines are checked when the backend starts)."""
    return unavailable_reason() is None


def _ok(flag: object, call: str) -> None:
    """TensorRT's Python calls report failure as False/None (details go to its logger)."""
    if flag is False or flag is None:
        raise RuntimeError(f"TensorRT {call} failed (see the TensorRT log above)")


def _scratch_bytes(engine: trt_types.ICudaEngine) -> int:
    """Scratch one context needs at its largest profile (device_memory_size_v2 since TensorRT 10.1)."""
    size = getattr(engine, "device_memory_size_v2", None)
    return int(size if size is not None else engine.device_memory_size)


def create_context(
    trt: ModuleType, engine: trt_types.ICudaEngine, profile: int, stream: cuda.Stream, scratch: cuda.DeviceBuffer
) -> trt_types.IExecutionContext:
    """A context on shared user-managed scratch memory with optimization profile `profile` selected."""
    strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
    if hasattr(engine, "create_runtime_config"):  # TensorRT >= 10.11; the strategy overload may go later
        config = engine.create_runtime_config()
        config.set_execution_context_allocation_strategy(strategy)
        ctx = engine.create_execution_context(config)
    else:
        ctx = engine.create_execution_context(strategy)
    _ok(ctx, "create_execution_context")
    if hasattr(ctx, "set_device_memory"):  # TensorRT >= 10.1
        ctx.set_device_memory(scratch.ptr, scratch.nbytes)
    else:
        setattr(ctx, "device_memory", scratch.ptr)  # noqa: B010  (TensorRT 10.0; absent from newer stubs)
    _ok(ctx.set_optimization_profile_async(profile, stream.ptr), f"set_optimization_profile_async({profile})")
    return ctx


def fix_shapes(ctx: trt_types.IExecutionContext, shapes: Mapping[str, tuple[int, ...]]) -> None:
    for name, shape in shapes.items():
        _ok(ctx.set_input_shape(name, shape), f"set_input_shape({name}, {shape})")
    missing = ctx.infer_shapes()
    if missing:
        raise RuntimeError(f"TensorRT context still lacks input shapes for {missing}")


def set_addresses(ctx: trt_types.IExecutionContext, bindings: Mapping[str, int]) -> None:
    for name, addr in bindings.items():
        _ok(ctx.set_tensor_address(name, addr), f"set_tensor_address({name})")


class TensorRTBackend:
    """The Backend protocol on TensorRT engines (see the module docstring for the start-up work).

    Not re-entrant: calls are serialised by a lock, since contexts share scratch memory and buffers.
    """

    name = "tensorrt"
    fixed_shapes = True  # engines hold one optimization profile per shape bucket

    def __init__(
        self,
        artifacts: str | os.PathLike[str] | Manifest,
        precision: str = "int8",
        *,
        nfe_warmup: Sequence[int] = (32,),
        nfe_max: int = NFE_MAX,
        cuda_graphs: bool = True,
        device: int = 0,
    ) -> None:
        self.precision = precision
        self.last_timings_ms: dict[str, float] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._device = device
        self._stream: cuda.Stream | None = None
        self._timer: cuda.StageTimer | None = None
        self._scratch: cuda.DeviceBuffer | None = None
        self._voc_device: cuda.DeviceBuffer | None = None
        self._voc_host: cuda.PinnedBuffer | None = None
        self._runners: dict[Bucket, BucketRunner] = {}
        self._text_ctx: dict[Bucket, trt_types.IExecutionContext] = {}
        self._step_ctx: dict[Bucket, trt_types.IExecutionContext] = {}
        self._voc_ctx: dict[int, trt_types.IExecutionContext] = {}
        self._engines: dict[str, trt_types.ICudaEngine] = {}
        self._runtime: trt_types.Runtime | None = None
        if not precision or not isinstance(precision, str):
            raise ValueError(f"precision must name a deployment (e.g. int8, fp16, fp32), got {precision!r}")
        bad = [n for n in nfe_warmup if not 0 < n <= nfe_max]
        if bad:
            raise ValueError(f"nfe_warmup {bad} outside 1..nfe_max ({nfe_max})")
        self._trt = import_tensorrt()
        cuda.require_gpu(device)
        try:
            self._start(artifacts, list(nfe_warmup), nfe_max, cuda_graphs)
        except BaseException:
            self.close()
            raise

    # -- start-up ---------------------------------------------------------------------------------

    def _start(
        self, artifacts: str | os.PathLike[str] | Manifest, nfe_warmup: list[int], nfe_max: int, graphs: bool
    ) -> None:
        trt = self._trt
        cuda.init_device(self._device)
        info = cuda.device_info(self._device)
        self.device_info = info
        manifest = artifacts if isinstance(artifacts, Manifest) else load_manifest(artifacts)
        self.manifest = manifest
        self.buckets = manifest.buckets
        choices = select_engines(manifest, self.precision, tensorrt_version=trt.__version__, sm=info.sm)
        self.engine_choices = choices
        model, audio = manifest.model, manifest.audio
        self.mel_dim = int(model.get("mel_dim", audio["n_mels"]))
        self.text_dim = int(model["text_dim"])
        self.vocoder = manifest.vocoder

        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime: trt_types.Runtime = trt.Runtime(self._logger)
        self._runtime = runtime
        for graph, choice in choices.items():
            path = manifest.root / choice.rel
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise ManifestError(
                    f"{path}: TensorRT {trt.__version__} could not deserialize it (another TensorRT build "
                    f"or a damaged file); {REBUILD}"
                )
            self._engines[graph] = engine
            check_engine_io(choice.rel, graph, engine_io(engine, trt))
            check_engine_shapes(choice, engine_profile_shapes(engine, trt), self.mel_dim, self.text_dim)

        self._stream = stream = cuda.Stream()
        self._timer = cuda.StageTimer()
        self._scratch = cuda.DeviceBuffer(max(_scratch_bytes(e) for e in self._engines.values()))

        for bucket in self.buckets:
            self._start_bucket(bucket, choices, nfe_max, graphs)
        self._start_vocoder(choices["vocoder"])
        stream.synchronize()
        for bucket, runner in self._runners.items():  # warm start: graphs exist before the first request
            for nfe in nfe_warmup:
                runner.prepare(nfe)
            if runner.graph_error:
                log.warning("bucket %s runs without CUDA graphs: %s", bucket.name, runner.graph_error)
        stream.synchronize()

    def _start_bucket(self, bucket: Bucket, choices: Mapping[str, EngineChoice], nfe_max: int, graphs: bool) -> None:
        trt, stream, scratch = self._trt, self._require(self._stream), self._require(self._scratch)
        plan = plan_step_arena(bucket, self.mel_dim, self.text_dim, nfe_max)
        shapes = {
            g: profile_shapes(g, choices[g].profile_for(bucket), self.mel_dim, self.text_dim)
            for g in ("text_encoder", "step")
        }
        text_ctx = create_context(
            trt, self._engines["text_encoder"], choices["text_encoder"].profile_for(bucket).index, stream, scratch
        )
        self._text_ctx[bucket] = text_ctx
        step_ctx = create_context(
            trt, self._engines["step"], choices["step"].profile_for(bucket).index, stream, scratch
        )
        self._step_ctx[bucket] = step_ctx
        fix_shapes(text_ctx, {k: v[0] for k, v in shapes["text_encoder"].items()})
        fix_shapes(step_ctx, {k: v[0] for k, v in shapes["step"].items()})

        def enqueue(bindings: dict[str, int], s: cuda.Stream) -> None:
            set_addresses(step_ctx, bindings)
            _ok(step_ctx.execute_async_v3(s.ptr), f"execute_async_v3(step {bucket.name})")

        runner = BucketRunner(bucket, plan, stream, enqueue, timer=self._timer, cuda_graphs=graphs)
        self._runners[bucket] = runner
        set_addresses(text_ctx, text_encoder_bindings(plan, runner.device.ptr))
        # One real enqueue per context before any capture: TensorRT finishes lazy set-up on the first one.
        _ok(text_ctx.execute_async_v3(stream.ptr), f"execute_async_v3(text_encoder {bucket.name})")
        runner.enqueue_steps(1)

    def _start_vocoder(self, choice: EngineChoice) -> None:
        trt, stream, scratch = self._trt, self._require(self._stream), self._require(self._scratch)
        top = self.buckets.max_frames
        plan = plan_vocoder_arena(self.buckets.max_batch, self.mel_dim, top, self.vocoder.samples(top))
        self._voc_plan = plan
        self._voc_device = cuda.DeviceBuffer(plan.nbytes)
        self._voc_host = cuda.PinnedBuffer(plan.nbytes)
        self._voc_device.memset(stream)
        self._voc_profiles = choice.profiles
        bindings = vocoder_bindings(plan, self._voc_device.ptr)
        for p in choice.profiles:
            ctx = create_context(trt, self._engines["vocoder"], p.index, stream, scratch)
            self._voc_ctx[p.index] = ctx
            set_addresses(ctx, bindings)
            fix_shapes(ctx, {"mel": (p.batch, self.mel_dim, p.frames)})
            _ok(ctx.execute_async_v3(stream.ptr), f"execute_async_v3(vocoder profile {p.index})")

    # -- requests ---------------------------------------------------------------------------------

    @staticmethod
    def _require(obj: _T | None) -> _T:
        if obj is None:
            raise RuntimeError("TensorRTBackend is not started")
        return obj

    @contextlib.contextmanager
    def _request(self) -> Iterator[tuple[cuda.Stream, cuda.StageTimer]]:
        with self._lock:
            if self._closed:
                raise RuntimeError("TensorRTBackend used after close()")
            cuda.set_device(self._device)
            stream, timer = self._require(self._stream), self._require(self._timer)
            timer.reset()
            yield stream, timer
            self.last_timings_ms = timer.results()

    def encode_text(self, text_ids: np.ndarray, mask: np.ndarray) -> TextEmbeddings:
        """Run the text encoder into the bucket's arena; the embeddings stay there for `sample`."""
        ids, m = np.asarray(text_ids), np.asarray(mask, dtype=bool)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"text_ids must be integers, got {ids.dtype}")
        if ids.ndim != 2 or m.shape != ids.shape:
            raise ValueError(f"text_ids and mask must both be (B, N), got {ids.shape} and {m.shape}")
        b, n = ids.shape
        bucket = self.buckets.choose(n, b)
        with self._request() as (stream, timer):
            runner, ctx = self._runners[bucket], self._text_ctx[bucket]
            v_ids, v_mask = runner.view("text_ids"), runner.view("mask")
            v_ids.fill(-1)
            v_ids[:b, :n] = ids
            v_mask.fill(False)
            v_mask[:b, :n] = m
            with timer.stage("h2d", stream):
                runner.upload(TEXT_INPUTS)
            with timer.stage("text_encoder", stream):
                _ok(ctx.execute_async_v3(stream.ptr), f"execute_async_v3(text_encoder {bucket.name})")
            # No download; the wait only keeps the pinned text_ids/mask stable until their copy has run.
            stream.synchronize()
            return runner.text_written(bucket.batch, bucket.frames)

    def sample(self, job: SampleJob) -> np.ndarray:
        if job.solver != "euler":
            # The CUDA graph replays the step engine's Euler updates in place; the midpoint's
            # composition (x + step(x_mid) - x_mid) would need a device kernel of its own.
            raise ValueError(
                f"the TensorRT backend runs the euler solver only, not {job.solver!r}; "
                "use the onnxruntime backend for the midpoint solver"
            )
        runner = self._runners.get(job.bucket)
        if runner is None:
            raise NoBucketError(
                f"bucket {job.bucket.name} is not one the engines were built for "
                f"(frames {list(self.buckets.frames)}, batch {list(self.buckets.batch)})"
            )
        with self._request():
            return runner.sample(job)

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        m = np.asarray(mel, dtype=np.float32)
        if m.ndim != 3 or m.shape[1] != self.mel_dim:
            raise ValueError(f"mel must be (B, {self.mel_dim}, F), got {m.shape}")
        b_req, c, f = m.shape
        profile = choose_vocoder_profile(self._voc_profiles, f, b_req)
        b, samples = profile.batch, self.vocoder.samples(f)
        plan = self._voc_plan
        with self._request() as (stream, timer):
            dev, host = self._require(self._voc_device), self._require(self._voc_host)
            ctx = self._voc_ctx[profile.index]
            staged = host.view(np.float32, (b, c, f), plan["mel"].offset)
            staged[:b_req] = m
            staged[b_req:] = 0.0
            _ok(ctx.set_input_shape("mel", (b, c, f)), f"set_input_shape(mel, {(b, c, f)})")
            out_shape = dims_tuple(ctx.get_tensor_shape("audio"))
            if out_shape != (b, samples):
                raise RuntimeError(
                    f"vocoder engine gives audio {out_shape} for mel {(b, c, f)}, the manifest's vocoder "
                    f"({self.vocoder.padding} padding) says {(b, samples)}; re-export and {REBUILD}"
                )
            with timer.stage("h2d", stream):
                dev.upload(host, stream, plan["mel"].offset, b * c * f * 4)
            with timer.stage("vocoder", stream):
                _ok(ctx.execute_async_v3(stream.ptr), f"execute_async_v3(vocoder profile {profile.index})")
            with timer.stage("d2h", stream):
                dev.download(host, stream, plan["audio"].offset, b * samples * 4)
            stream.synchronize()
            audio: np.ndarray = host.view(np.float32, (b, samples), plan["audio"].offset)[:b_req].copy()
            return audio

    def captured_graphs(self) -> dict[str, list[int]]:
        """NFE values with a captured graph, per bucket name (for logs and health checks)."""
        return {b.name: r.captured for b, r in self._runners.items()}

    # -- teardown ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Release in dependency order: graphs, contexts, engines, runtime, memory, events, stream."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            errors: list[BaseException] = []

            def attempt(fn: Callable[[], None]) -> None:
                try:
                    fn()
                except Exception as e:  # keep tearing down; report the first failure
                    errors.append(e)

            if self._stream is not None:
                attempt(self._stream.synchronize)
            for runner in self._runners.values():
                attempt(runner.detach)
            self._text_ctx.clear()
            self._step_ctx.clear()
            self._voc_ctx.clear()
            self._engines.clear()
            self._runtime = None
            for runner in self._runners.values():
                attempt(runner.close)
            self._runners.clear()
            for res in (self._voc_host, self._voc_device, self._scratch, self._timer, self._stream):
                if res is not None:
                    attempt(res.close)
            self._voc_host = self._voc_device = self._scratch = None
            self._timer, self._stream = None, None
            if errors:
                raise errors[0]

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
