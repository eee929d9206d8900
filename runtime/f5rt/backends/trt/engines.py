"""Which engines serve a deployment, and every check an engine must pass before it runs.

A deployment precision names one precision per graph (e.g. `int8` = step INT8 Q/DQ + vocoder FP16 +
text encoder FP32): the build's recipe (config/precision.yaml `deployments`) defines them, `compile`
records the ones it built in the manifest, and the runtime opens exactly that set of engines, so the
Jetson never builds or loads variants nobody deploys.

Everything here is pure: manifests, dicts and duck-typed TensorRT objects passed in; no import of
TensorRT or CUDA. The build (`f5build.compile`) uses the same checks on the engines it just built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from f5rt.backends.trt.contract import GRAPH_INPUTS, GRAPH_OUTPUTS
from f5rt.backends.trt.profiles import ProfileSpec, ShapeRange, profile_shapes
from f5rt.buckets import Bucket, BucketTable
from f5rt.errors import BackendUnavailable, ManifestError
from f5rt.manifest import Manifest
from f5rt.names import GRAPHS, TRT_PRECISIONS

REBUILD = "rebuild the engines on this device: `nox -s compile` (or run engines/build_engines.sh)"
PRECISIONS = TRT_PRECISIONS
MIN_TENSORRT = (10, 0)
JETPACK_HINT = "JetPack 6.1 or later brings TensorRT 10.3 (JetPack 6.0 has 8.6)"


@dataclass(frozen=True)
class Deployment:
    """A deployment precision: its name and the precision of each graph's engine."""

    name: str
    graphs: Mapping[str, str]

    def __post_init__(self) -> None:
        if set(self.graphs) != set(GRAPHS):
            raise ValueError(
                f"deployment {self.name!r} must give a precision for exactly {', '.join(GRAPHS)}, got {dict(self.graphs)}"
            )
        bad = {g: p for g, p in self.graphs.items() if p not in PRECISIONS}
        if bad:
            raise ValueError(f"deployment {self.name!r}: unknown precision {bad} (choose from {', '.join(PRECISIONS)})")

    def to_dict(self) -> dict[str, str]:
        return {g: self.graphs[g] for g in GRAPHS}

    def describe(self) -> str:
        return " + ".join(f"{g} {self.graphs[g]}" for g in GRAPHS)


def parse_deployments(data: Mapping[str, Any], where: str) -> dict[str, Deployment]:
    """{name: {graph: precision}} -> Deployments, with errors naming `where` the table came from."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{where}: deployments must be a non-empty mapping name -> {{graph: precision}}")
    out = {}
    for name, graphs in data.items():
        if not isinstance(graphs, Mapping):
            raise ValueError(f"{where}: deployment {name!r} must map each graph to a precision")
        try:
            out[str(name)] = Deployment(str(name), {str(g): str(p) for g, p in graphs.items()})
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return out


def manifest_deployment(manifest: Manifest, name: str) -> Deployment:
    """The deployment `name` as compile recorded it in the manifest."""
    recorded = manifest.data.get("deployments") or {}
    if name not in recorded:
        built = ", ".join(sorted(recorded)) or "none"
        raise ManifestError(
            f"{manifest.root}: no TensorRT deployment {name!r} in the manifest (built: {built}); build it with "
            f"`nox -s compile -- --precision {name}` on this device"
        )
    try:
        return parse_deployments({name: recorded[name]}, f"{manifest.root} manifest")[name]
    except ValueError as e:
        raise ManifestError(str(e)) from None


def check_tensorrt_module(trt: ModuleType) -> None:
    """Refuse TensorRT's stubs-only namespace and releases older than 10 (no strongly typed networks,
    no execute_async_v3 with named tensors), saying which JetPack brings a usable one."""
    if not hasattr(trt, "Builder"):
        raise BackendUnavailable(
            "TensorRT not found: `import tensorrt` gives an empty namespace (tensorrt-stubs, or a stub wheel "
            "without its libraries); install TensorRT's Python bindings or use the onnxruntime backend"
        )
    version = str(getattr(trt, "__version__", "0"))
    try:
        major_minor = tuple(int(v) for v in version.split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    if major_minor < MIN_TENSORRT:
        raise BackendUnavailable(f"TensorRT {version} is too old: f5rt needs TensorRT >= 10; {JETPACK_HINT}")


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
    manifest: Manifest, deployment: str, *, tensorrt_version: str, sm: str, verify: bool = True
) -> dict[str, EngineChoice]:
    """The engines of one deployment, checked for TensorRT release, SM, profiles and hash."""
    if deployment not in PRECISIONS and deployment not in (manifest.data.get("deployments") or {}):
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {deployment!r}")
    buckets = manifest.buckets
    if not any(manifest.precisions(g, "engine") for g in GRAPHS):
        # Nothing built for TensorRT at all (e.g. a CPU build box): not a broken manifest, just no engines,
        # so `auto` can fall back to ONNX Runtime.
        raise BackendUnavailable(f"{manifest.root}: the manifest holds no TensorRT engines; {REBUILD}")
    chosen = manifest_deployment(manifest, deployment)
    out: dict[str, EngineChoice] = {}
    for graph in GRAPHS:
        precision = chosen.graphs[graph]
        found = [
            (r, m)
            for r, m in manifest.files.items()
            if m.get("graph") == graph and m.get("kind") == "engine" and m.get("precision") == precision
        ]
        if not found:
            have = ", ".join(manifest.precisions(graph, "engine")) or "none"
            raise ManifestError(
                f"{manifest.root}: deployment {deployment!r} needs a {precision} {graph} engine (engines: {have}); "
                f"{REBUILD} (see engines/build_plan.json)"
            )
        rel, meta = found[0]
        check_engine_target(rel, meta, tensorrt_version, sm)
        profiles = engine_profiles(rel, graph, meta, buckets)
        if verify:
            manifest.verify(rel)
        out[graph] = EngineChoice(graph, precision, rel, meta, profiles)
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


def engine_io(engine: Any, trt: ModuleType) -> dict[str, tuple[str, str]]:
    """{tensor name: ("input"|"output", numpy dtype name)} of a deserialized engine."""
    out: dict[str, tuple[str, str]] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        out[name] = (mode, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
    return out


def dims_tuple(dims: Any) -> tuple[int, ...]:
    """A TensorRT Dims as a tuple of ints (Dims is indexable; iteration is not part of its API)."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def engine_profile_shapes(engine: Any, trt: ModuleType) -> list[dict[str, ShapeRange]]:
    """Per optimization profile, the (min, opt, max) shape of every input, as the engine reports them."""
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
