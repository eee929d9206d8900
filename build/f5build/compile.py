"""Compile TensorRT engines with Polygraphy: one per graph and precision, one profile per bucket.

What gets built: the text encoder, the step graph at every precision the manifest holds (fp32 /
fp16 / int8 ONNX) and the vocoder, each as one engine with one optimization profile per bucket of
the manifest's table (min = opt = max; the vocoder's frame axis is a range per bucket, see
`f5rt.backends.tensorrt.ProfileSpec`). Networks are strongly typed (precision comes from the Q/DQ and
casts in the ONNX, as TensorRT 10/11 want), the tactic timing cache lives in engines/timing.cache and
is reused by every build, builder optimization level and workspace are options.

Every run first writes the build plan (engines/build_plan.json) and the same build as `polygraphy
convert` command lines (engines/build_engines.sh), so a Jetson can build with nothing but TensorRT and
Polygraphy and register the result with `python3 -m f5build.compile --trt-register`. Without
TensorRT (or without a GPU) the stage stops there, prints "TensorRT not found" and exits 0; the
manifest records the compile stage as "planned". With TensorRT the engines are built, checked by
deserializing them, and recorded in the manifest with TensorRT/CUDA versions, GPU name and SM.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import shlex
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from f5build.cli import add_common, artifacts_dir
from f5rt._fs import atomic_write_bytes, atomic_write_json, sha256_file, sha256_json
from f5rt.backends import cudagraph as cg
from f5rt.backends.tensorrt import (
    GRAPH_INPUTS,
    GRAPH_OUTPUTS,
    EngineChoice,
    ProfileSpec,
    check_engine_io,
    check_engine_shapes,
    engine_io,
    engine_profile_shapes,
    import_tensorrt,
    plan_profiles,
    profile_shapes,
    same_release,
)
from f5rt.buckets import BucketTable
from f5rt.errors import BackendUnavailable, ManifestError
from f5rt.manifest import GRAPHS, Manifest, file_entry, load_manifest, update_manifest

ENGINES_DIR = "engines"
PLAN_NAME = f"{ENGINES_DIR}/build_plan.json"
SCRIPT_NAME = f"{ENGINES_DIR}/build_engines.sh"
TIMING_CACHE = f"{ENGINES_DIR}/timing.cache"
PLAN_FORMAT = 1
PRECISIONS = ("fp32", "fp16", "int8")

# ONNX TensorProto element types of the graph contract's dtypes.
_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compile (TensorRT engines)")
    g.add_argument("--trt-opt-level", type=int, default=3, help="builder optimization level 0-5 (default 3)")
    g.add_argument(
        "--trt-workspace-gib", type=float, default=4.0, help="workspace pool limit in GiB (0: TensorRT's default)"
    )
    g.add_argument(
        "--trt-precisions",
        default="",
        help="comma list of step precisions to build (default: every one the manifest holds)",
    )
    g.add_argument("--trt-tf32", action="store_true", help="allow TF32 in FP32 layers (faster, ~1e-3 error)")
    g.add_argument("--trt-force", action="store_true", help="rebuild engines even when up to date")
    g.add_argument("--trt-plan-only", action="store_true", help="write the build plan and script, build nothing")
    g.add_argument(
        "--trt-register",
        action="store_true",
        help="record engines built by engines/build_engines.sh in the manifest (run on the device that built them)",
    )


@dataclass(frozen=True)
class BuildOptions:
    """Everything besides the ONNX file and the profiles that changes an engine."""

    opt_level: int = 3
    workspace_gib: float = 4.0
    tf32: bool = False
    strongly_typed: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.opt_level <= 5:
            raise ValueError(f"--trt-opt-level must be 0..5, got {self.opt_level}")
        if self.workspace_gib < 0:
            raise ValueError(f"--trt-workspace-gib must be >= 0, got {self.workspace_gib}")

    @property
    def workspace_bytes(self) -> int:
        return int(round(self.workspace_gib * (1 << 30)))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BuildOptions:
        return cls(int(args.trt_opt_level), float(args.trt_workspace_gib), bool(args.trt_tf32))


# --- planning (pure: no TensorRT) -----------------------------------------------------------------

Dim = int | str | None


@dataclass(frozen=True)
class GraphIO:
    """An ONNX graph's inputs {name: (dims, dtype)} and outputs {name: dtype}; dims are ints or symbols."""

    inputs: dict[str, tuple[tuple[Dim, ...], str]]
    outputs: dict[str, str]


def read_graph_io(onnx_path: str | os.PathLike[str]) -> GraphIO:
    """Graph I/O of an ONNX file without loading external weight files."""
    import onnx

    model = onnx.load(os.fspath(onnx_path), load_external_data=False)

    def dims(vi: Any) -> tuple[Dim, ...]:
        out: list[Dim] = []
        for d in vi.type.tensor_type.shape.dim:
            out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        return tuple(out)

    def dtype(vi: Any) -> str:
        code = int(vi.type.tensor_type.elem_type)
        return _ONNX_DTYPES.get(code, f"onnx-type-{code}")

    initializers = {i.name for i in model.graph.initializer}
    inputs = {vi.name: (dims(vi), dtype(vi)) for vi in model.graph.input if vi.name not in initializers}
    return GraphIO(inputs, {vi.name: dtype(vi) for vi in model.graph.output})


def check_graph_io(graph: str, io: GraphIO, buckets: BucketTable, mel_dim: int, text_dim: int, rel: str) -> None:
    """The ONNX graph must match the I/O contract, with dynamic batch/frame axes and the model's C and D."""
    want_in = {s.name: s for s in GRAPH_INPUTS[graph]}
    want_out = {s.name: s for s in GRAPH_OUTPUTS[graph]}
    for label, have, want in (("inputs", set(io.inputs), set(want_in)), ("outputs", set(io.outputs), set(want_out))):
        if have != want:
            raise ValueError(
                f"{rel}: {graph} graph {label} are {sorted(have)}, expected {sorted(want)}; re-export the graph"
            )
    for name, spec in want_out.items():
        if io.outputs[name] != spec.dtype:
            raise ValueError(f"{rel}: output {name} is {io.outputs[name]}, the contract says {spec.dtype}")
    fixed = {"C": mel_dim, "D": text_dim}
    varying = {"B": set(buckets.batch), "N": set(buckets.frames), "F": set(range(1, buckets.max_frames + 1))}
    for name, spec in want_in.items():
        dims, dtype = io.inputs[name]
        if dtype != spec.dtype:
            raise ValueError(f"{rel}: input {name} is {dtype}, the contract says {spec.dtype}; re-export the graph")
        if len(dims) != len(spec.axes):
            raise ValueError(
                f"{rel}: input {name} has rank {len(dims)}, expected {len(spec.axes)} ({''.join(spec.axes)})"
            )
        for axis, (d, role) in enumerate(zip(dims, spec.axes, strict=True)):
            if not isinstance(d, int) or d <= 0:
                continue  # symbolic or unknown: dynamic
            if role in fixed and d != fixed[role]:
                raise ValueError(f"{rel}: input {name} axis {axis} is {d}, the manifest's model says {fixed[role]}")
            if role in varying and varying[role] != {d}:
                raise ValueError(
                    f"{rel}: input {name} axis {axis} ({role}) is static ({d}); export it as a dynamic axis so "
                    f"one engine serves every bucket"
                )


def profile_table(
    graph: str, io: GraphIO, buckets: BucketTable, mel_dim: int, text_dim: int, rel: str = ""
) -> list[dict[str, Any]]:
    """One profile per bucket with its (min, opt, max) input shapes, after checking the graph's I/O."""
    check_graph_io(graph, io, buckets, mel_dim, text_dim, rel or graph)
    table = []
    for p in plan_profiles(graph, buckets):
        shapes = profile_shapes(graph, p, mel_dim, text_dim)
        table.append(
            {
                **p.to_dict(),
                "shapes": {n: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for n, s in shapes.items()},
            }
        )
    return table


def engine_rel(graph: str, precision: str) -> str:
    return f"{ENGINES_DIR}/{graph}.{precision}.engine"


def model_dims(manifest: Manifest) -> tuple[int, int]:
    """(mel channels, text embedding dim) from the manifest."""
    model, audio = manifest.model, manifest.audio
    try:
        return int(model.get("mel_dim", audio["n_mels"])), int(model["text_dim"])
    except KeyError as e:
        raise ManifestError(f"{manifest.root}: manifest model lacks {e.args[0]!r}; re-run export") from None


def onnx_sources(manifest: Manifest, step_precisions: Sequence[str] = ()) -> list[tuple[str, str, str, str]]:
    """(graph, precision, onnx rel path, onnx sha256) of every ONNX file to compile.

    Text encoder and vocoder: every precision present; step: `step_precisions` (default all present).
    """
    out = []
    for graph in GRAPHS:
        have = manifest.precisions(graph, "onnx")
        if not have:
            raise ManifestError(f"{manifest.root}: no ONNX file for '{graph}' in the manifest; run `nox -s export`")
        wanted = have
        if graph == "step" and step_precisions:
            missing = [p for p in step_precisions if p not in have]
            if missing:
                raise ManifestError(
                    f"{manifest.root}: no step ONNX at {', '.join(missing)} (have {', '.join(have)}); run `nox -s quantize`"
                )
            wanted = [p for p in have if p in step_precisions]
        for precision in wanted:
            rel, meta = next(
                (r, m)
                for r, m in manifest.files.items()
                if m.get("graph") == graph and m.get("kind") == "onnx" and m.get("precision") == precision
            )
            out.append((graph, precision, rel, str(meta["sha256"])))
    return out


def shape_arg(name: str, shape: Sequence[int]) -> str:
    """Polygraphy's shape syntax: name:[d0,d1,...]."""
    return f"{name}:[{','.join(str(int(d)) for d in shape)}]"


def polygraphy_command(engine: Mapping[str, Any], options: BuildOptions) -> list[str]:
    """`polygraphy convert` argv building `engine` (paths relative to the artifacts folder)."""
    argv = ["polygraphy", "convert", engine["onnx"], "--convert-to", "trt", "-o", engine["engine"]]
    if options.strongly_typed:
        argv.append("--strongly-typed")
    argv += ["--builder-optimization-level", str(options.opt_level)]
    if options.workspace_bytes > 0:
        argv += ["--pool-limit", f"workspace:{options.workspace_bytes}"]
    if options.tf32:
        argv.append("--tf32")
    argv += ["--load-timing-cache", TIMING_CACHE, "--save-timing-cache", TIMING_CACHE]
    for prof in engine["profiles"]:
        for key, flag in (("min", "--trt-min-shapes"), ("opt", "--trt-opt-shapes"), ("max", "--trt-max-shapes")):
            argv.append(flag)
            argv += [shape_arg(n, s[key]) for n, s in prof["shapes"].items()]
    return argv


def make_plan(
    manifest: Manifest,
    options: BuildOptions,
    graph_io: Mapping[str, GraphIO],
    step_precisions: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole build as data: engines, their ONNX sources and hashes, profiles and commands.

    `graph_io` maps ONNX rel path -> its I/O (from `read_graph_io`), so this stays pure.
    """
    buckets = manifest.buckets
    mel_dim, text_dim = model_dims(manifest)
    engines = []
    for graph, precision, rel, sha in onnx_sources(manifest, step_precisions):
        engine = {
            "graph": graph,
            "precision": precision,
            "onnx": rel,
            "onnx_sha256": sha,
            "engine": engine_rel(graph, precision),
            "profiles": profile_table(graph, graph_io[rel], buckets, mel_dim, text_dim, rel),
        }
        engine["command"] = polygraphy_command(engine, options)
        engines.append(engine)
    return {
        "format": PLAN_FORMAT,
        "name": manifest.name,
        "buckets": buckets.to_dict(),
        "model": {"mel_dim": mel_dim, "text_dim": text_dim},
        "options": asdict(options),
        "timing_cache": TIMING_CACHE,
        "engines": engines,
    }


def build_script(plan: Mapping[str, Any]) -> str:
    """A bash script running the plan's polygraphy commands from the artifacts folder, then registering."""
    lines = [
        "#!/usr/bin/env bash",
        f"# TensorRT engines for artifacts '{plan['name']}', generated by `f5build compile` from {PLAN_NAME}.",
        "# Run it on the target device (TensorRT + Polygraphy + GPU); engines are only valid for that",
        "# TensorRT release and GPU. The last command records them in manifest.json.",
        "set -euo pipefail",
        'cd "$(dirname "$0")/.."',
        f"mkdir -p {ENGINES_DIR}",
        "",
    ]
    for e in plan["engines"]:
        lines.append(f"echo '== {e['graph']} ({e['precision']}): {len(e['profiles'])} profiles -> {e['engine']}'")
        argv = e["command"]
        head = shlex.join(argv[:7])
        chunk: list[str] = []
        body: list[str] = []
        rest = argv[7:]
        for arg in rest:
            if arg.startswith("--") and chunk:
                body.append(shlex.join(chunk))
                chunk = []
            chunk.append(arg)
        if chunk:
            body.append(shlex.join(chunk))
        lines.append(" \\\n    ".join([head, *body]))
        lines.append("")
    lines.append(
        'python3 -m f5build.compile --artifacts-root "$(cd .. && pwd)" --name "$(basename "$(pwd)")" --trt-register'
    )
    return "\n".join(lines) + "\n"


def inputs_fingerprint(plan: Mapping[str, Any]) -> str:
    return sha256_json(
        {
            "onnx": sorted((e["onnx"], e["onnx_sha256"]) for e in plan["engines"]),
            "buckets": plan["buckets"],
            "options": plan["options"],
        }
    )


def write_plan(root: Path, plan: Mapping[str, Any]) -> tuple[Path, Path]:
    plan_path, script_path = root / PLAN_NAME, root / SCRIPT_NAME
    atomic_write_json(plan_path, plan)
    atomic_write_bytes(script_path, build_script(plan).encode())
    script_path.chmod(script_path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return plan_path, script_path


# --- manifest records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The machine an engine is built on: engines run only on the same TensorRT release and SM."""

    tensorrt: str
    cuda: str
    gpu: str
    sm: str

    @classmethod
    def current(cls, trt: Any, device: int = 0) -> Target:
        info = cg.device_info(device)
        return cls(str(trt.__version__), info.cuda_runtime, info.name, info.sm)


def engine_meta(engine: Mapping[str, Any], options: BuildOptions, target: Target) -> dict[str, Any]:
    """Manifest fields of one engine besides hash and size."""
    return {
        "graph": engine["graph"],
        "precision": engine["precision"],
        "kind": "engine",
        "stage": "compile",
        "onnx": engine["onnx"],
        "onnx_sha256": engine["onnx_sha256"],
        "tensorrt": target.tensorrt,
        "cuda": target.cuda,
        "gpu": target.gpu,
        "sm": target.sm,
        "options": asdict(options),
        "profiles": [{k: v for k, v in p.items() if k != "shapes"} for p in engine["profiles"]],
    }


def record_engine(root: Path, engine: Mapping[str, Any], options: BuildOptions, target: Target) -> None:
    entry = file_entry(root, engine["engine"], **engine_meta(engine, options, target))
    update_manifest(root, lambda d: d.setdefault("files", {}).__setitem__(engine["engine"], entry))


def record_stage(root: Path, plan: Mapping[str, Any], status: str, seconds: float, target: Target | None) -> None:
    try:
        polygraphy = importlib.metadata.version("polygraphy")
    except importlib.metadata.PackageNotFoundError:
        polygraphy = None
    stage = {
        "status": status,
        "inputs_sha256": inputs_fingerprint(plan),
        "plan": PLAN_NAME,
        "plan_sha256": sha256_file(root / PLAN_NAME),
        "script": SCRIPT_NAME,
        "engines": [e["engine"] for e in plan["engines"]],
        "timing_cache": TIMING_CACHE if (root / TIMING_CACHE).is_file() else None,
        "tools": {"polygraphy": polygraphy, **(asdict(target) if target else {"tensorrt": None})},
        "seconds": round(seconds, 3),
    }
    update_manifest(root, lambda d: d.setdefault("stages", {}).__setitem__("compile", stage))


def up_to_date(manifest: Manifest, engine: Mapping[str, Any], options: BuildOptions, target: Target) -> bool:
    """True when the manifest already holds this exact engine (same ONNX, options, profiles, target)."""
    meta = manifest.files.get(engine["engine"])
    if not meta or not (manifest.root / engine["engine"]).is_file():
        return False
    want = engine_meta(engine, options, target)
    same = all(meta.get(k) == want[k] for k in ("onnx_sha256", "options", "profiles", "sm", "gpu"))
    if not same or not same_release(str(meta.get("tensorrt", "")), target.tensorrt):
        return False
    try:
        manifest.verify(engine["engine"])
    except ManifestError:
        return False
    return True


# --- the TensorRT part ----------------------------------------------------------------------------


def strongly_typed_flag(trt: Any) -> Any:
    """The STRONGLY_TYPED creation flag, looked up by name (its value differs between 10.x and 11.x)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise BackendUnavailable(f"TensorRT {trt.__version__} has no strongly typed networks (TensorRT >= 9.1 needed)")
    return flag


def build_engine(trt: Any, root: Path, engine: Mapping[str, Any], options: BuildOptions) -> None:
    """Build one engine with Polygraphy's loaders and write it atomically."""
    poly = importlib.import_module("polygraphy.backend.trt")
    strongly_typed_flag(trt)
    network = poly.NetworkFromOnnxPath(str(root / engine["onnx"]), strongly_typed=options.strongly_typed)
    profiles = []
    for prof in engine["profiles"]:
        p = poly.Profile()
        for name, s in prof["shapes"].items():
            p.add(name, s["min"], s["opt"], s["max"])
        profiles.append(p)
    cache = root / TIMING_CACHE
    config = poly.CreateConfig(
        profiles=profiles,
        builder_optimization_level=options.opt_level,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: options.workspace_bytes} if options.workspace_bytes else None,
        tf32=options.tf32,
        load_timing_cache=str(cache) if cache.is_file() else None,
    )
    data = poly.EngineBytesFromNetwork(network, config=config, save_timing_cache=str(cache))()
    atomic_write_bytes(root / engine["engine"], bytes(data))


def verify_engine(trt: Any, root: Path, engine: Mapping[str, Any], mel_dim: int, text_dim: int) -> None:
    """Deserialize a built engine and check its I/O and profiles exactly as the runtime will."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    cuda_engine = runtime.deserialize_cuda_engine((root / engine["engine"]).read_bytes())
    if cuda_engine is None:
        raise ManifestError(f"{engine['engine']}: TensorRT could not deserialize the engine it just built")
    choice = EngineChoice(
        engine["graph"],
        engine["precision"],
        engine["engine"],
        {},
        tuple(ProfileSpec.from_dict(p) for p in engine["profiles"]),
    )
    check_engine_io(engine["engine"], engine["graph"], engine_io(cuda_engine, trt))
    check_engine_shapes(choice, engine_profile_shapes(cuda_engine, trt), mel_dim, text_dim)


def _target_or_reason() -> tuple[Any, Target | None, str]:
    """(tensorrt module, build target, "") or (None, None, why the build cannot run here)."""
    try:
        trt = import_tensorrt()
    except BackendUnavailable as e:
        return None, None, str(e)
    try:
        cg.require_gpu(0)
        return trt, Target.current(trt), ""
    except (BackendUnavailable, cg.CudaError) as e:
        return None, None, f"TensorRT {trt.__version__} found but no usable GPU ({e})"


def register(root: Path, manifest: Manifest) -> int:
    """Record engines that build_engines.sh made, after checking them against the plan and the ONNX."""
    plan_path = root / PLAN_NAME
    if not plan_path.is_file():
        raise ManifestError(f"{plan_path}: no build plan; run `f5build compile` first")
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    trt, target, reason = _target_or_reason()
    if target is None:
        print(f"f5build compile --trt-register: {reason}; run it on the device that built the engines", file=sys.stderr)
        return 2
    missing = [e["engine"] for e in plan["engines"] if not (root / e["engine"]).is_file()]
    if missing:
        raise ManifestError(f"engines not built yet: {', '.join(missing)}; run {SCRIPT_NAME} first")
    current = {(g, p): sha for g, p, _, sha in onnx_sources(manifest)}
    for e in plan["engines"]:
        if current.get((e["graph"], e["precision"])) != e["onnx_sha256"]:
            raise ManifestError(f"{PLAN_NAME}: {e['onnx']} changed since the plan was made; re-run `f5build compile`")
    options = BuildOptions(**plan["options"])
    mel_dim, text_dim = int(plan["model"]["mel_dim"]), int(plan["model"]["text_dim"])
    t0 = time.perf_counter()
    for e in plan["engines"]:
        verify_engine(trt, root, e, mel_dim, text_dim)
        record_engine(root, e, options, target)
        print(f"registered {e['engine']} (TensorRT {target.tensorrt}, {target.gpu}, SM {target.sm})")
    record_stage(root, plan, "built", time.perf_counter() - t0, target)
    return 0


def _note_bucket_file(args: argparse.Namespace, table: BucketTable) -> None:
    """Engines follow the manifest's bucket table (the ONNX graphs were exported and checked for it)."""
    path = getattr(args, "buckets", None)
    if not path or not Path(path).is_file():
        return
    yaml = importlib.import_module("yaml")
    try:
        other = BucketTable.from_dict(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    except (ValueError, TypeError, AttributeError, yaml.YAMLError):
        return
    if other != table:
        print(
            f"note: {path} differs from the manifest's bucket table {table.to_dict()}; engines follow the "
            "manifest (re-run export with --buckets to change it)"
        )


def run(args: argparse.Namespace) -> int:
    root = artifacts_dir(args)
    manifest = load_manifest(root)
    if getattr(args, "trt_register", False):
        return register(root, manifest)
    options = BuildOptions.from_args(args)
    precisions = [p.strip() for p in str(args.trt_precisions or "").split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"--trt-precisions: unknown {bad} (choose from {', '.join(PRECISIONS)})")

    t0 = time.perf_counter()
    _note_bucket_file(args, manifest.buckets)
    sources = onnx_sources(manifest, precisions)
    graph_io = {rel: read_graph_io(manifest.verify(rel)) for _, _, rel, _ in sources}
    plan = make_plan(manifest, options, graph_io, precisions)
    plan_path, script_path = write_plan(root, plan)
    n_profiles = sum(len(e["profiles"]) for e in plan["engines"])
    print(f"plan: {len(plan['engines'])} engines, {n_profiles} profiles -> {plan_path} and {script_path}")

    trt, target, reason = _target_or_reason()
    if target is None or args.trt_plan_only:
        if target is None:
            print(reason)
            print(f"engines not built; on the target device run {script_path}")
        record_stage(root, plan, "planned", time.perf_counter() - t0, target)
        return 0

    mel_dim, text_dim = model_dims(manifest)
    print(f"building with TensorRT {target.tensorrt} on {target.gpu} (SM {target.sm}, CUDA {target.cuda})")
    for e in plan["engines"]:
        if not args.trt_force and up_to_date(load_manifest(root), e, options, target):
            print(f"  {e['engine']}: up to date")
            continue
        t1 = time.perf_counter()
        build_engine(trt, root, e, options)
        verify_engine(trt, root, e, mel_dim, text_dim)
        record_engine(root, e, options, target)
        size = (root / e["engine"]).stat().st_size
        print(
            f"  {e['engine']}: {len(e['profiles'])} profiles, {size / 2**20:.1f} MiB, {time.perf_counter() - t1:.1f} s"
        )
    record_stage(root, plan, "built", time.perf_counter() - t0, target)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m f5build.compile`: this stage alone (the script on the device uses it to register)."""
    parser = argparse.ArgumentParser(prog="python -m f5build.compile", description=__doc__)
    add_common(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ManifestError, BackendUnavailable, FileNotFoundError, ValueError) as e:
        print(f"f5build compile: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
