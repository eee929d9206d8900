"""TensorRT backend: engines loaded once, one context per bucket, the NFE loop replayed as one CUDA graph.

Start-up does all the slow work, never the first request:

* the manifest is checked before anything is deserialized: every engine must have been built by this
  TensorRT release for this GPU's SM, with one optimization profile per bucket of the manifest's table
  (ManifestError says what to rebuild);
* each engine is deserialized once; each bucket gets one text-encoder and one step execution context
  (its profile selected once, shapes fixed), the vocoder one context per profile; all contexts share one
  scratch allocation (USER_MANAGED), which is safe because everything runs in order on one stream;
* each bucket gets one device arena (x ping-pong, cond, both text embeddings, mask, cfg, per-step t/dt
  slots of shape (nfe_max, B), text ids) and a pinned host mirror of it;
* for every NFE in `nfe_warmup` and every bucket, the NFE step enqueues are captured into one CUDA
  graph and instantiated. Another NFE is captured the first time a request uses it (a few ms, once).

A request then costs: fill the pinned mirror, one or two async copies in, one graph launch, one copy
out. CUDA events time every stage (`last_timings_ms`).

Everything that can be decided without a GPU (graph I/O contract, profile table, arena layout, per-step
addresses, manifest checks) is a pure function here, shared with the build (`f5build.compile`) and
tested on CPU. tensorrt and cuda-python are imported lazily: importing this module needs neither.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from f5rt.backends import cudagraph as cg
from f5rt.backends.base import SampleJob
from f5rt.buckets import Bucket, BucketTable
from f5rt.errors import BackendUnavailable, ManifestError, NoBucketError
from f5rt.manifest import GRAPHS, Manifest, load_manifest

if TYPE_CHECKING:  # checked against tensorrt-stubs where installed, Any otherwise
    import tensorrt as trt_types  # type: ignore[import-not-found, unused-ignore]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

REBUILD = "rebuild the engines on this device: `nox -s compile` (or run engines/build_engines.sh)"
ALIGN = 256  # cudaMalloc alignment; TensorRT wants I/O addresses aligned at least this well


# --- graph I/O contract (see backends/base.py) ----------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One graph tensor: its name, axis roles and dtype.

    Axis roles: B batch, N bucket frames, F vocoder frames, C mel channels, D text dim, S samples (F*hop).
    """

    name: str
    axes: tuple[str, ...]
    dtype: str


def _spec(name: str, axes: str, dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, tuple(axes), dtype)


GRAPH_INPUTS: dict[str, tuple[TensorSpec, ...]] = {
    "text_encoder": (_spec("text_ids", "BN", "int32"), _spec("mask", "BN", "bool")),
    "step": (
        _spec("x", "BNC"),
        _spec("cond", "BNC"),
        _spec("text_cond", "BND"),
        _spec("text_uncond", "BND"),
        _spec("mask", "BN", "bool"),
        _spec("t", "B"),
        _spec("dt", "B"),
        _spec("cfg", "B"),
    ),
    "vocoder": (_spec("mel", "BCF"),),
}
GRAPH_OUTPUTS: dict[str, tuple[TensorSpec, ...]] = {
    "text_encoder": (_spec("text_cond", "BND"), _spec("text_uncond", "BND")),
    "step": (_spec("x_next", "BNC"),),
    "vocoder": (_spec("audio", "BS"),),
}


def tensor_shape(spec: TensorSpec, dims: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(int(dims[a]) for a in spec.axes)


# --- optimization profiles: one per bucket --------------------------------------------------------

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # (min, opt, max)


@dataclass(frozen=True)
class ProfileSpec:
    """Optimization profile `index` of an engine: bucket (frames, batch), min = opt = max.

    The vocoder is the exception on its frame axis: it vocodes exactly the generated frames, so its
    profile for bucket N_k spans (N_{k-1}, N_k] (opt = max = N_k). Together the ranges cover every
    length 1..max frames without padding the mel, so TensorRT output never depends on a pad value.
    """

    index: int
    frames: int
    batch: int
    min_frames: int

    @property
    def bucket(self) -> Bucket:
        return Bucket(self.frames, self.batch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "bucket": self.bucket.name,
            "frames": self.frames,
            "batch": self.batch,
            "min_frames": self.min_frames,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProfileSpec:
        try:
            frames = int(d["frames"])
            return cls(int(d["index"]), frames, int(d["batch"]), int(d.get("min_frames", frames)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed profile record {dict(d)!r}: {e}") from None


def plan_profiles(graph: str, buckets: BucketTable) -> list[ProfileSpec]:
    """Profiles in bucket-table order (frames major, batch minor); index = position."""
    if graph not in GRAPH_INPUTS:
        raise ValueError(f"unknown graph {graph!r} (expected one of {', '.join(GRAPH_INPUTS)})")
    lower = {
        n: (prev + 1 if graph == "vocoder" else n)
        for prev, n in zip((0, *buckets.frames), buckets.frames, strict=False)
    }
    return [ProfileSpec(i, b.frames, b.batch, lower[b.frames]) for i, b in enumerate(buckets)]


def profile_shapes(graph: str, profile: ProfileSpec, mel_dim: int, text_dim: int) -> dict[str, ShapeRange]:
    """(min, opt, max) shape of every input of `graph` under `profile`."""
    top = {"B": profile.batch, "N": profile.frames, "F": profile.frames, "C": mel_dim, "D": text_dim}
    low = {**top, "F": profile.min_frames}
    return {s.name: (tensor_shape(s, low), tensor_shape(s, top), tensor_shape(s, top)) for s in GRAPH_INPUTS[graph]}


def choose_vocoder_profile(profiles: Sequence[ProfileSpec], frames: int, batch: int) -> ProfileSpec:
    """The profile running `batch` rows of `frames` mel frames: smallest batch that holds them."""
    if frames <= 0 or batch <= 0:
        raise ValueError(f"vocoder input must have positive frames and batch, got frames={frames} batch={batch}")
    batches = sorted({p.batch for p in profiles})
    b = next((x for x in batches if x >= batch), None)
    if b is None:
        raise NoBucketError(
            f"vocoder batch {batch} exceeds the largest batch profile ({batches[-1] if batches else 0})"
        )
    for p in profiles:
        if p.batch == b and p.min_frames <= frames <= p.frames:
            return p
    top = max((p.frames for p in profiles if p.batch == b), default=0)
    raise NoBucketError(f"{frames} mel frames exceed the vocoder engine's largest profile ({top} frames)")


# --- manifest checks ------------------------------------------------------------------------------

PRECISIONS = ("fp32", "fp16", "int8")


def choose_precision(graph: str, available: Sequence[str], requested: str) -> str:
    """The step must exist at the requested precision; text encoder and vocoder fall back to fp32
    (as in the onnxruntime backend), since quantization targets the step graph."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    order = (requested,) if graph == "step" else (requested, "fp32")
    for p in order:
        if p in available:
            return p
    raise ManifestError(
        f"no {graph} engine at precision {' or '.join(dict.fromkeys(order))} (engines: {', '.join(available) or 'none'}); "
        f"{REBUILD}"
    )


def same_release(a: str, b: str) -> bool:
    """TensorRT engines are only portable within one major.minor.patch release."""
    return a.split(".")[:3] == b.split(".")[:3]


def check_engine_target(rel: str, meta: Mapping[str, Any], tensorrt_version: str, sm: str) -> None:
    """Refuse an engine built by another TensorRT release or for another GPU architecture."""
    built_trt, built_sm = meta.get("tensorrt"), meta.get("sm")
    if not built_trt or not built_sm:
        raise ManifestError(f"{rel}: the manifest does not say which TensorRT/GPU built it; {REBUILD}")
    if not same_release(str(built_trt), tensorrt_version):
        raise ManifestError(
            f"{rel} was built with TensorRT {built_trt}, this runtime has TensorRT {tensorrt_version}; {REBUILD}"
        )
    if str(built_sm) != sm:
        gpu = meta.get("gpu", "another GPU")
        raise ManifestError(f"{rel} was built for SM {built_sm} ({gpu}), this GPU is SM {sm}; {REBUILD}")


def engine_profiles(rel: str, graph: str, meta: Mapping[str, Any], buckets: BucketTable) -> tuple[ProfileSpec, ...]:
    """The engine's recorded profiles, checked against the manifest's bucket table."""
    try:
        profiles = tuple(ProfileSpec.from_dict(p) for p in meta.get("profiles", []))
    except ValueError as e:
        raise ManifestError(f"{rel}: {e}; {REBUILD}") from None
    known = set(buckets)
    if sorted(p.index for p in profiles) != list(range(len(profiles))):
        raise ManifestError(f"{rel}: profile indices are not 0..{len(profiles) - 1}; {REBUILD}")
    for p in profiles:
        if p.bucket not in known:
            raise ManifestError(
                f"{rel}: profile {p.index} ({p.bucket.name}) fits no bucket of the manifest's table "
                f"(frames {list(buckets.frames)}, batch {list(buckets.batch)}); the engines were built for "
                f"another bucket table: {REBUILD}"
            )
        if not 1 <= p.min_frames <= p.frames or (graph != "vocoder" and p.min_frames != p.frames):
            raise ManifestError(f"{rel}: profile {p.index} has an invalid frame range; {REBUILD}")
    have = {p.bucket for p in profiles}
    missing = [b.name for b in buckets if b not in have]
    if missing:
        raise ManifestError(f"{rel}: no optimization profile for bucket(s) {', '.join(missing)}; {REBUILD}")
    if graph == "vocoder":
        for b in buckets.batch:
            ranges = sorted((p.min_frames, p.frames) for p in profiles if p.batch == b)
            edges = [1] + [hi + 1 for _, hi in ranges[:-1]]
            if [lo for lo, _ in ranges] != edges:
                raise ManifestError(f"{rel}: vocoder profiles for batch {b} leave frame gaps {ranges}; {REBUILD}")
    return profiles


@dataclass(frozen=True)
class EngineChoice:
    """The engine file serving one graph, with its profiles keyed by bucket."""

    graph: str
    precision: str
    rel: str
    meta: Mapping[str, Any]
    profiles: tuple[ProfileSpec, ...]

    def profile_for(self, bucket: Bucket) -> ProfileSpec:
        for p in self.profiles:
            if p.bucket == bucket:
                return p
        raise ManifestError(f"{self.rel}: no optimization profile for bucket {bucket.name}; {REBUILD}")


def select_engines(
    manifest: Manifest, precision: str, *, tensorrt_version: str, sm: str, verify: bool = True
) -> dict[str, EngineChoice]:
    """One engine per graph for `precision`, checked for TensorRT release, SM, profiles and hash."""
    buckets = manifest.buckets
    if not any(manifest.precisions(g, "engine") for g in GRAPHS):
        # Nothing built for TensorRT at all (e.g. a CPU build box): not a broken manifest, just no engines,
        # so `auto` can fall back to ONNX Runtime.
        raise BackendUnavailable(f"{manifest.root}: the manifest holds no TensorRT engines; {REBUILD}")
    out: dict[str, EngineChoice] = {}
    for graph in GRAPHS:
        available = manifest.precisions(graph, "engine")
        if not available:
            raise ManifestError(
                f"{manifest.root}: no TensorRT engine for '{graph}' in the manifest; {REBUILD} "
                f"(see engines/build_plan.json)"
            )
        chosen = choose_precision(graph, available, precision)
        rel, meta = next(
            (r, m)
            for r, m in manifest.files.items()
            if m.get("graph") == graph and m.get("kind") == "engine" and m.get("precision") == chosen
        )
        check_engine_target(rel, meta, tensorrt_version, sm)
        profiles = engine_profiles(rel, graph, meta, buckets)
        if verify:
            manifest.verify(rel)
        out[graph] = EngineChoice(graph, chosen, rel, meta, profiles)
    return out


def check_engine_io(rel: str, graph: str, io: Mapping[str, tuple[str, str]]) -> None:
    """Engine tensors {name: ("input"|"output", dtype)} must be exactly the graph contract."""
    want = {s.name: ("input", s.dtype) for s in GRAPH_INPUTS[graph]}
    want.update({s.name: ("output", s.dtype) for s in GRAPH_OUTPUTS[graph]})
    if dict(io) != want:
        diff = sorted(
            f"{n}: engine {io.get(n, 'absent')} vs expected {want.get(n, 'absent')}"
            for n in set(io) | set(want)
            if io.get(n) != want.get(n)
        )
        raise ManifestError(
            f"{rel}: I/O does not match the {graph} graph contract ({'; '.join(diff)}); re-export and {REBUILD}"
        )


def check_engine_shapes(
    choice: EngineChoice, observed: Sequence[Mapping[str, ShapeRange]], mel_dim: int, text_dim: int
) -> None:
    """Each recorded profile must exist in the engine with exactly the bucket's shapes."""
    for p in choice.profiles:
        if p.index >= len(observed):
            raise ManifestError(
                f"{choice.rel}: the engine has {len(observed)} optimization profiles, the manifest records "
                f"profile {p.index} ({p.bucket.name}); {REBUILD}"
            )
        want = profile_shapes(choice.graph, p, mel_dim, text_dim)
        got = {k: tuple(tuple(d) for d in v) for k, v in observed[p.index].items()}
        if got != want:
            bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
            raise ManifestError(
                f"{choice.rel}: profile {p.index} does not have bucket {p.bucket.name}'s shapes "
                f"(input {bad[0]}: engine {got.get(bad[0])}, expected {want.get(bad[0])}); {REBUILD}"
            )


# --- device memory planning -----------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    name: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class ArenaPlan:
    """Named, aligned, non-overlapping regions of one allocation (device arena and its pinned mirror)."""

    regions: tuple[Region, ...]
    nbytes: int

    def __getitem__(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def spans(self, names: Sequence[str], align: int = ALIGN) -> list[tuple[int, int]]:
        """(offset, nbytes) copies covering `names`; neighbours separated only by padding are merged."""
        spans: list[tuple[int, int]] = []
        for r in sorted((self[n] for n in names), key=lambda r: r.offset):
            if spans and r.offset - (spans[-1][0] + spans[-1][1]) < align:
                start = spans[-1][0]
                spans[-1] = (start, r.offset + r.nbytes - start)
            else:
                spans.append((r.offset, r.nbytes))
        return spans


def plan_arena(layout: Sequence[tuple[str, tuple[int, ...], str]], align: int = ALIGN) -> ArenaPlan:
    regions, offset = [], 0
    for name, shape, dtype in layout:
        r = Region(name, offset, tuple(int(d) for d in shape), dtype)
        regions.append(r)
        offset += -(-r.nbytes // align) * align
    return ArenaPlan(tuple(regions), max(offset, align))


# Copied in for every request, in this order so they form one contiguous copy.
SAMPLE_INPUTS = ("x_a", "cond", "text_cond", "text_uncond", "mask", "cfg", "t", "dt")
TEXT_INPUTS = ("text_ids", "mask")
TEXT_OUTPUTS = ("text_cond", "text_uncond")


def plan_step_arena(bucket: Bucket, mel_dim: int, text_dim: int, nfe_max: int, align: int = ALIGN) -> ArenaPlan:
    """One bucket's device state, shared by its text-encoder and step contexts.

    x_a holds x0 and every even step's input; x_b every odd one's. t and dt are (nfe_max, B): step i
    reads row i, so the captured graph needs no host write between steps.
    """
    if nfe_max <= 0:
        raise ValueError(f"nfe_max must be positive, got {nfe_max}")
    b, n = bucket.batch, bucket.frames
    return plan_arena(
        [
            ("x_a", (b, n, mel_dim), "float32"),
            ("cond", (b, n, mel_dim), "float32"),
            ("text_cond", (b, n, text_dim), "float32"),
            ("text_uncond", (b, n, text_dim), "float32"),
            ("mask", (b, n), "bool"),
            ("cfg", (b,), "float32"),
            ("t", (nfe_max, b), "float32"),
            ("dt", (nfe_max, b), "float32"),
            ("x_b", (b, n, mel_dim), "float32"),
            ("text_ids", (b, n), "int32"),
        ],
        align,
    )


def plan_vocoder_arena(max_batch: int, mel_dim: int, max_frames: int, hop: int, align: int = ALIGN) -> ArenaPlan:
    """Vocoder I/O sized for the largest profile; a call uses the first B*C*F / B*F*hop elements."""
    return plan_arena(
        [
            ("mel", (max_batch * mel_dim * max_frames,), "float32"),
            ("audio", (max_batch * max_frames * hop,), "float32"),
        ],
        align,
    )


def step_addresses(plan: ArenaPlan, base: int, nfe: int) -> list[cg.StepAddresses]:
    slot = plan["t"].shape[1] * 4
    if nfe > plan["t"].shape[0]:
        raise ValueError(f"nfe {nfe} exceeds nfe_max {plan['t'].shape[0]} of this arena")
    p = {r.name: base + r.offset for r in plan.regions}
    return cg.plan_step_addresses(nfe, p["x_a"], p["x_b"], p["t"], p["dt"], slot)


def step_bindings(plan: ArenaPlan, base: int, step: cg.StepAddresses) -> dict[str, int]:
    """Step graph tensor name -> device address for one step."""
    p = {r.name: base + r.offset for r in plan.regions}
    return {
        "x": step.x_in,
        "cond": p["cond"],
        "text_cond": p["text_cond"],
        "text_uncond": p["text_uncond"],
        "mask": p["mask"],
        "t": step.t,
        "dt": step.dt,
        "cfg": p["cfg"],
        "x_next": step.x_out,
    }


def text_encoder_bindings(plan: ArenaPlan, base: int) -> dict[str, int]:
    return {n: base + plan[n].offset for n in ("text_ids", "mask", "text_cond", "text_uncond")}


def vocoder_bindings(plan: ArenaPlan, base: int) -> dict[str, int]:
    return {"mel": base + plan["mel"].offset, "audio": base + plan["audio"].offset}


# --- one bucket's device state and NFE loop (TensorRT-free: the GPU test drives it with a kernel) ----

StepEnqueue = Callable[[dict[str, int], cg.Stream], None]


def _detached(bindings: dict[str, int], stream: cg.Stream) -> None:
    raise RuntimeError("BucketRunner used after detach()")


class BucketRunner:
    """Arena + pinned mirror + one CUDA graph per NFE for one bucket.

    `step_enqueue(bindings, stream)` enqueues one step given tensor addresses (TensorRT: set addresses,
    execute_async_v3; the GPU test: a kernel launch). With `cuda_graphs`, the NFE calls are captured
    once per NFE and replayed; if capture fails (an engine TensorRT cannot capture), the runner logs it
    and enqueues step by step instead.
    """

    def __init__(
        self,
        bucket: Bucket,
        plan: ArenaPlan,
        stream: cg.Stream,
        step_enqueue: StepEnqueue,
        *,
        timer: cg.StageTimer | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        self.bucket = bucket
        self.plan = plan
        self.nfe_max = plan["t"].shape[0]
        self.cuda_graphs = cuda_graphs
        self.graph_error: str | None = None
        self._stream = stream
        self._enqueue = step_enqueue
        self._timer = timer
        self._graphs: dict[int, cg.GraphCapture] = {}
        self.device = cg.DeviceBuffer(plan.nbytes)
        try:
            self.host = cg.PinnedBuffer(plan.nbytes)
            self.device.memset(stream)  # no NaN garbage in padding or unused t/dt slots
        except BaseException:
            self.device.close()
            raise
        self._views: dict[str, np.ndarray] = {r.name: self.host.view(r.dtype, r.shape, r.offset) for r in plan.regions}

    def view(self, name: str) -> np.ndarray:
        return self._views[name]

    def address(self, name: str) -> int:
        return self.device.ptr + self.plan[name].offset

    def upload(self, names: Sequence[str]) -> None:
        for off, n in self.plan.spans(names):
            self.device.upload(self.host, self._stream, off, n)

    def download(self, names: Sequence[str]) -> None:
        for off, n in self.plan.spans(names):
            self.device.download(self.host, self._stream, off, n)

    def stage(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self._timer.stage(name, self._stream) if self._timer is not None else contextlib.nullcontext()

    def enqueue_steps(self, nfe: int) -> None:
        """The NFE step enqueues, in order (what a graph captures, or eager mode runs)."""
        base = self.device.ptr
        for step in step_addresses(self.plan, base, nfe):
            self._enqueue(step_bindings(self.plan, base, step), self._stream)

    def prepare(self, nfe: int) -> None:
        """Capture and instantiate the graph for `nfe` unless it exists (or graphs are off)."""
        if not self.cuda_graphs or nfe in self._graphs:
            return
        if nfe > self.nfe_max:
            raise ValueError(f"nfe {nfe} exceeds nfe_max {self.nfe_max}")
        try:
            graph = cg.GraphCapture.record(
                self._stream, lambda: self.enqueue_steps(nfe), f"{self.bucket.name} nfe={nfe}"
            )
        except (cg.CudaError, RuntimeError) as e:
            self.cuda_graphs = False
            self.graph_error = str(e)
            log.warning("bucket %s: CUDA graph capture failed (%s); running steps eagerly", self.bucket.name, e)
            return
        self._graphs[nfe] = graph

    @property
    def captured(self) -> list[int]:
        return sorted(self._graphs)

    def write_job(self, job: SampleJob) -> None:
        """Fill the pinned mirror with one job (casts to the arena's dtypes)."""
        if job.bucket != self.bucket:
            raise ValueError(f"job for bucket {job.bucket.name} given to runner {self.bucket.name}")
        if job.nfe > self.nfe_max:
            raise ValueError(f"nfe {job.nfe} exceeds nfe_max {self.nfe_max} the backend was started with")
        for name, arr in (
            ("x_a", job.x0),
            ("cond", job.cond),
            ("text_cond", job.text_cond),
            ("text_uncond", job.text_uncond),
        ):
            view = self._views[name]
            if arr.shape != view.shape:
                raise ValueError(f"SampleJob {name} has shape {arr.shape}, the engine wants {view.shape}")
            view[...] = arr
        self._views["mask"][...] = job.mask
        self._views["cfg"][...] = job.cfg
        self._views["t"][: job.nfe] = np.asarray(job.t, np.float32)[:, None]
        self._views["dt"][: job.nfe] = np.asarray(job.dt, np.float32)[:, None]

    def sample(self, job: SampleJob) -> np.ndarray:
        """x after the whole Euler loop: copies in, one graph launch (or NFE enqueues), copy out."""
        self.write_job(job)
        nfe = job.nfe
        self.prepare(nfe)
        with self.stage("h2d"):
            self.upload(SAMPLE_INPUTS)
        with self.stage("steps"):
            graph = self._graphs.get(nfe)
            if graph is not None:
                graph.launch(self._stream)
            else:
                self.enqueue_steps(nfe)
        result = "x_a" if nfe % 2 == 0 else "x_b"
        with self.stage("d2h"):
            self.download([result])
        self._stream.synchronize()
        out: np.ndarray = self._views[result].copy()
        return out

    def detach(self) -> None:
        """Destroy the graphs and drop the step callback (and what it holds, e.g. a TensorRT context)."""
        graphs, self._graphs = list(self._graphs.values()), {}
        self._enqueue = _detached
        cg.close_all(graphs)

    def close(self) -> None:
        self._views = {}
        cg.close_all([*self._graphs.values(), self.host, self.device])
        self._graphs = {}

    def __enter__(self) -> BucketRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the thin TensorRT layer ----------------------------------------------------------------------


def import_tensorrt() -> ModuleType:
    """The tensorrt module, or BackendUnavailable saying why not (absent, stubs only, libraries broken)."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as e:  # ImportError, or OSError from a wheel whose libnvinfer is missing
        raise BackendUnavailable(
            f"TensorRT not found: `import tensorrt` failed ({e}); the tensorrt backend needs TensorRT's Python "
            "bindings (JetPack: `apt install python3-libnvinfer`); use the onnxruntime backend here"
        ) from e
    if not hasattr(trt, "Builder"):
        raise BackendUnavailable(
            "TensorRT not found: `import tensorrt` gives an empty namespace (tensorrt-stubs, or a stub wheel "
            "without its libraries); install TensorRT's Python bindings or use the onnxruntime backend"
        )
    return trt


def tensorrt_available() -> bool:
    """TensorRT's Python bindings (not just stubs) import."""
    try:
        import_tensorrt()
    except BackendUnavailable:
        return False
    return True


def available() -> bool:
    """TensorRT and a CUDA GPU are both usable here (engines are checked when the backend starts)."""
    return tensorrt_available() and cg.gpu_available()


def _ok(flag: object, call: str) -> None:
    """TensorRT's Python calls report failure as False/None (details go to its logger)."""
    if flag is False or flag is None:
        raise RuntimeError(f"TensorRT {call} failed (see the TensorRT log above)")


def engine_io(engine: trt_types.ICudaEngine, trt: ModuleType) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        out[name] = (mode, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
    return out


def dims_tuple(dims: trt_types.Dims) -> tuple[int, ...]:
    """A TensorRT Dims as a tuple of ints (Dims is indexable; iteration is not part of its API)."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def engine_profile_shapes(engine: trt_types.ICudaEngine, trt: ModuleType) -> list[dict[str, ShapeRange]]:
    inputs = [
        n
        for n in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
        if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
    ]
    out: list[dict[str, ShapeRange]] = []
    for p in range(engine.num_optimization_profiles):
        shapes: dict[str, ShapeRange] = {}
        for name in inputs:
            lo, opt, hi = (dims_tuple(d) for d in engine.get_tensor_profile_shape(name, p))
            shapes[name] = (lo, opt, hi)
        out.append(shapes)
    return out


def _scratch_bytes(engine: trt_types.ICudaEngine) -> int:
    """Scratch one context needs at its largest profile (device_memory_size_v2 since TensorRT 10.1)."""
    size = getattr(engine, "device_memory_size_v2", None)
    return int(size if size is not None else engine.device_memory_size)


def create_context(
    trt: ModuleType, engine: trt_types.ICudaEngine, profile: int, stream: cg.Stream, scratch: cg.DeviceBuffer
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
        precision: str = "fp16",
        *,
        nfe_warmup: Sequence[int] = (32,),
        nfe_max: int = 64,
        cuda_graphs: bool = True,
        device: int = 0,
    ) -> None:
        self.precision = precision
        self.last_timings_ms: dict[str, float] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._device = device
        self._stream: cg.Stream | None = None
        self._timer: cg.StageTimer | None = None
        self._scratch: cg.DeviceBuffer | None = None
        self._voc_device: cg.DeviceBuffer | None = None
        self._voc_host: cg.PinnedBuffer | None = None
        self._runners: dict[Bucket, BucketRunner] = {}
        self._text_ctx: dict[Bucket, trt_types.IExecutionContext] = {}
        self._step_ctx: dict[Bucket, trt_types.IExecutionContext] = {}
        self._voc_ctx: dict[int, trt_types.IExecutionContext] = {}
        self._engines: dict[str, trt_types.ICudaEngine] = {}
        self._runtime: trt_types.Runtime | None = None
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        bad = [n for n in nfe_warmup if not 0 < n <= nfe_max]
        if bad:
            raise ValueError(f"nfe_warmup {bad} outside 1..nfe_max ({nfe_max})")
        self._trt = import_tensorrt()
        cg.require_gpu(device)
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
        cg.init_device(self._device)
        info = cg.device_info(self._device)
        self.device_info = info
        manifest = artifacts if isinstance(artifacts, Manifest) else load_manifest(artifacts)
        self.manifest = manifest
        self.buckets = manifest.buckets
        choices = select_engines(manifest, self.precision, tensorrt_version=trt.__version__, sm=info.sm)
        self.engine_choices = choices
        model, audio = manifest.model, manifest.audio
        self.mel_dim = int(model.get("mel_dim", audio["n_mels"]))
        self.text_dim = int(model["text_dim"])
        self.hop = int(audio["hop_length"])

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

        self._stream = stream = cg.Stream()
        self._timer = cg.StageTimer()
        self._scratch = cg.DeviceBuffer(max(_scratch_bytes(e) for e in self._engines.values()))

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

        def enqueue(bindings: dict[str, int], s: cg.Stream) -> None:
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
        plan = plan_vocoder_arena(self.buckets.max_batch, self.mel_dim, self.buckets.max_frames, self.hop)
        self._voc_plan = plan
        self._voc_device = cg.DeviceBuffer(plan.nbytes)
        self._voc_host = cg.PinnedBuffer(plan.nbytes)
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
    def _request(self) -> Iterator[tuple[cg.Stream, cg.StageTimer]]:
        with self._lock:
            if self._closed:
                raise RuntimeError("TensorRTBackend used after close()")
            cg.set_device(self._device)
            stream, timer = self._require(self._stream), self._require(self._timer)
            timer.reset()
            yield stream, timer
            self.last_timings_ms = timer.results()

    def encode_text(self, text_ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
            with timer.stage("d2h", stream):
                runner.download(TEXT_OUTPUTS)
            stream.synchronize()
            return runner.view("text_cond")[:b, :n].copy(), runner.view("text_uncond")[:b, :n].copy()

    def sample(self, job: SampleJob) -> np.ndarray:
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
        b = profile.batch
        plan = self._voc_plan
        with self._request() as (stream, timer):
            dev, host = self._require(self._voc_device), self._require(self._voc_host)
            ctx = self._voc_ctx[profile.index]
            staged = host.view(np.float32, (b, c, f), plan["mel"].offset)
            staged[:b_req] = m
            staged[b_req:] = 0.0
            _ok(ctx.set_input_shape("mel", (b, c, f)), f"set_input_shape(mel, {(b, c, f)})")
            out_shape = dims_tuple(ctx.get_tensor_shape("audio"))
            if out_shape != (b, f * self.hop):
                raise RuntimeError(
                    f"vocoder engine gives audio {out_shape} for mel {(b, c, f)}, expected {(b, f * self.hop)}"
                )
            with timer.stage("h2d", stream):
                dev.upload(host, stream, plan["mel"].offset, b * c * f * 4)
            with timer.stage("vocoder", stream):
                _ok(ctx.execute_async_v3(stream.ptr), f"execute_async_v3(vocoder profile {profile.index})")
            with timer.stage("d2h", stream):
                dev.download(host, stream, plan["audio"].offset, b * f * self.hop * 4)
            stream.synchronize()
            audio: np.ndarray = host.view(np.float32, (b, f * self.hop), plan["audio"].offset)[:b_req].copy()
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
