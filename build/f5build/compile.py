"""Compile TensorRT engines: the engines of the deployments asked, one profile per bucket.

A deployment precision is a precision per graph (config/precision.yaml `deployments`, e.g. `int8` =
text encoder FP32 + step INT8 Q/DQ + vocoder FP16). `compile` builds only the deployments given with
`--trt-precision` (default: the recipe's `default`), each engine once even when deployments share it,
with one optimization profile per bucket of the manifest's table (min = opt = max; the vocoder's
frame axis is a range per bucket, see `f5rt.backends.trt.profiles`), and prints how many engines and
profiles that is: each profile costs TensorRT tuning time on the device. Networks are strongly typed
(precision comes from the Q/DQ and casts in the ONNX, as TensorRT 10/11 want); TF32 is on for the FP32
layers unless `--trt-no-tf32`; the tactic timing cache lives in engines/timing.cache.

Every run first writes the build plan (engines/build_plan.json) and engines/build_engines.sh. The
script is what a Jetson runs: it checks its prerequisites (TensorRT's Python bindings, cuda-python for
the driver, numpy, pyyaml, f5rt and f5build; no Polygraphy, ONNX or torch), then builds the plan with
`python3 -m f5build.compile --trt-from-plan`, which verifies each engine by deserializing it and
records it, the deployments and the TensorRT/CUDA versions, GPU name and SM in the manifest. Without
TensorRT or a GPU the stage stops after the plan, says why and exits 0 (stage status "planned").
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

import yaml

from f5build.cli import ROOT, add_common, artifacts_dir
from f5build.trt_build import Target, build_engine, current_target, load_tensorrt, verify_engine
from f5rt._fs import atomic_write_bytes, atomic_write_json, sha256_file, sha256_json
from f5rt.backends.trt.contract import GRAPH_INPUTS, GRAPH_OUTPUTS
from f5rt.backends.trt.engines import Deployment, parse_deployments, same_release
from f5rt.backends.trt.profiles import plan_profiles, profile_shapes
from f5rt.buckets import BucketTable
from f5rt.errors import BackendUnavailable, ManifestError
from f5rt.manifest import GRAPHS, Manifest, file_entry, load_manifest, update_manifest

ENGINES_DIR = "engines"
PLAN_NAME = f"{ENGINES_DIR}/build_plan.json"
SCRIPT_NAME = f"{ENGINES_DIR}/build_engines.sh"
TIMING_CACHE = f"{ENGINES_DIR}/timing.cache"
PLAN_FORMAT = 2
RECIPE = ROOT / "config" / "precision.yaml"

# ONNX TensorProto element types of the graph contract's dtypes.
_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16"}


@dataclass(frozen=True)
class OnnxLimits:
    """What one TensorRT release's ONNX parser (onnx-tensorrt) reads."""

    tensorrt: str  # major.minor
    min_opset: int  # default-domain (ai.onnx) opset range its importers cover
    max_opset: int
    max_ir_version: int  # IR version of the onnx release the parser is built against
    domains: frozenset[str]  # opset domains whose nodes it imports ("" and "ai.onnx" are the default one)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "domains": sorted(self.domains)}


# ONNX limits per target TensorRT (major.minor); add a row for a newer target.
# 10.3 (JetPack 6.1/6.2): onnx-tensorrt's docs/operators.md for 10.x says "TensorRT 10.0 supports
# operators in the inclusive range of opset 9 to opset 20" (release/10.0-GA, 10.1-GA); its README says
# "TensorRT 10.1 supports ONNX release 1.16.0" and .gitmodules pins third_party/onnx to v1.16.0; its
# docs/Changelog.md lists no ONNX submodule change for 10.2-10.5 ("TensorRT 10.6 GA: Updated ONNX
# submodule version to 1.17.0"), so 10.3 parses with onnx 1.16.0, whose IR version is 10 (onnx's
# docs/Versioning.md and onnx.helper.VERSION_TABLE: ('1.16.0', IR 10, opset 21)). onnx 1.16 defines
# opset 21, but the parser's importers stop at 20 (TOOLCHAIN.md: JetPack 6's TensorRT 10.3 parses
# opset <= 20). Nodes of other domains (com.microsoft, ai.onnx.ml) are not TensorRT layers.
ONNX_LIMITS: dict[str, OnnxLimits] = {
    "10.3": OnnxLimits("10.3", min_opset=9, max_opset=20, max_ir_version=10, domains=frozenset({"", "ai.onnx"})),
}
DEFAULT_TRT_TARGET = "10.3"  # JetPack 6 (Jetson AGX Orin)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compile (TensorRT engines)")
    g.add_argument(
        "--trt-precision",
        default="",
        help="comma list of deployment precisions to build (default: the recipe's `deployments.default`)",
    )
    g.add_argument("--trt-recipe", type=Path, default=RECIPE, help="recipe with the `deployments` table (YAML)")
    g.add_argument(
        "--trt-target",
        default=DEFAULT_TRT_TARGET,
        choices=sorted(ONNX_LIMITS),
        help=f"TensorRT release (major.minor) whose ONNX parser the graphs must suit (default {DEFAULT_TRT_TARGET}, JetPack 6)",
    )
    g.add_argument("--trt-opt-level", type=int, default=3, help="builder optimization level 0-5 (default 3)")
    g.add_argument(
        "--trt-workspace-gib", type=float, default=4.0, help="workspace pool limit in GiB (0: TensorRT's default)"
    )
    g.add_argument("--trt-no-tf32", action="store_true", help="keep FP32 layers off TF32 (slower, ~1e-3 more exact)")
    g.add_argument("--trt-force", action="store_true", help="rebuild engines even when up to date")
    g.add_argument("--trt-plan-only", action="store_true", help="write the build plan and script, build nothing")
    g.add_argument(
        "--trt-from-plan",
        action="store_true",
        help="build exactly engines/build_plan.json (what build_engines.sh runs on the device; needs no ONNX package)",
    )


@dataclass(frozen=True)
class BuildOptions:
    """Everything besides the ONNX file and the profiles that changes an engine."""

    opt_level: int = 3
    workspace_gib: float = 4.0
    tf32: bool = True
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
        return cls(int(args.trt_opt_level), float(args.trt_workspace_gib), not bool(args.trt_no_tf32))


def read_deployments(path: Path) -> tuple[dict[str, Deployment], str]:
    """The recipe's deployment table and its default name."""
    try:
        data: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"precision recipe {path} not found") from None
    table = dict((data or {}).get("deployments") or {})
    default = str(table.pop("default", ""))
    deployments = parse_deployments(table, f"{path} deployments")
    if default not in deployments:
        raise ValueError(f"{path}: deployments.default must name one of {', '.join(deployments)}, got {default!r}")
    return deployments, default


def chosen_deployments(requested: str, table: Mapping[str, Deployment], default: str) -> list[Deployment]:
    """`--trt-precision a,b` -> those deployments (default: the recipe's default one)."""
    names = [n.strip() for n in requested.split(",") if n.strip()] or [default]
    bad = [n for n in names if n not in table]
    if bad:
        raise ValueError(f"--trt-precision: unknown deployment(s) {bad} (the recipe has {', '.join(table)})")
    return [table[n] for n in dict.fromkeys(names)]


Dim = int | str | None


@dataclass(frozen=True)
class GraphIO:
    """An ONNX graph's inputs {name: (dims, dtype)} and outputs {name: dtype}; dims are ints or symbols.

    With what the parser checks: IR version, opset imports {domain: version} and the domains its
    nodes use (subgraphs and local functions included); None where not read (hand-made GraphIO).
    """

    inputs: dict[str, tuple[tuple[Dim, ...], str]]
    outputs: dict[str, str]
    ir_version: int | None = None
    opsets: dict[str, int] | None = None
    node_domains: frozenset[str] | None = None
    function_domains: frozenset[str] = frozenset()


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

    def domains(nodes: Any) -> set[str]:
        out: set[str] = set()
        for node in nodes:
            out.add(node.domain)
            for attr in node.attribute:
                for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    out |= domains(g.node)
        return out

    used = domains(model.graph.node)
    for fn in model.functions:
        used |= domains(fn.node)
    initializers = {i.name for i in model.graph.initializer}
    inputs = {vi.name: (dims(vi), dtype(vi)) for vi in model.graph.input if vi.name not in initializers}
    return GraphIO(
        inputs,
        {vi.name: dtype(vi) for vi in model.graph.output},
        ir_version=int(model.ir_version),
        opsets={o.domain: int(o.version) for o in model.opset_import},
        node_domains=frozenset(used),
        function_domains=frozenset(fn.domain for fn in model.functions),
    )


def onnx_limits(target: str) -> OnnxLimits:
    """The ONNX limits of a TensorRT release, by major.minor ("10.3" or "10.3.0.30")."""
    key = ".".join(str(target).split(".")[:2])
    if key not in ONNX_LIMITS:
        raise ValueError(
            f"no ONNX limits known for TensorRT {target} (known: {', '.join(sorted(ONNX_LIMITS))}); "
            "add its row to f5build.compile.ONNX_LIMITS"
        )
    return ONNX_LIMITS[key]


def check_onnx_version(io: GraphIO, limits: OnnxLimits, rel: str) -> None:
    """Refuse an ONNX file the target TensorRT's parser cannot read: IR version, default-domain opset,
    node domains it has no importers for (an opset import no node uses is harmless)."""
    where = f"{rel}: TensorRT {limits.tensorrt}'s ONNX parser"
    if io.ir_version is None or io.opsets is None or io.node_domains is None:
        raise ValueError(f"{rel}: IR version and opsets not read; use read_graph_io")
    if io.ir_version > limits.max_ir_version:
        raise ValueError(
            f"{where} reads IR version <= {limits.max_ir_version}, the file has IR version {io.ir_version}; "
            f"write it with ir_version <= {limits.max_ir_version} (onnx.helper.make_model(..., ir_version=...)) or target a newer TensorRT"
        )
    default = [v for d, v in io.opsets.items() if d in ("", "ai.onnx")]
    if not default:
        if io.node_domains & {"", "ai.onnx"}:
            raise ValueError(f"{rel}: nodes of the default ONNX domain but no ai.onnx opset import")
    else:
        opset = max(default)
        if not limits.min_opset <= opset <= limits.max_opset:
            raise ValueError(
                f"{where} supports opset {limits.min_opset} to {limits.max_opset}, the file has opset {opset}; "
                f"export or quantize it at an opset in that range (export's --opset, default 17)"
            )
    unknown = sorted(io.node_domains - limits.domains - io.function_domains)
    if unknown:
        raise ValueError(
            f"{where} does not know the opset domain(s) {unknown} its nodes use "
            f"(it imports {sorted({d or 'ai.onnx' for d in limits.domains})} and local functions)"
        )


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


def onnx_sources(manifest: Manifest, deployments: Sequence[Deployment]) -> list[tuple[str, str, str, str]]:
    """(graph, precision, onnx rel path, onnx sha256) of every ONNX file the deployments need, each once."""
    out = []
    for graph in GRAPHS:
        have = manifest.precisions(graph, "onnx")
        for precision in dict.fromkeys(d.graphs[graph] for d in deployments):
            found = [
                (r, m)
                for r, m in manifest.files.items()
                if m.get("graph") == graph and m.get("kind") == "onnx" and m.get("precision") == precision
            ]
            if not found:
                users = ", ".join(d.name for d in deployments if d.graphs[graph] == precision)
                stage = "export" if precision == "fp32" else "quantize"
                raise ManifestError(
                    f"{manifest.root}: deployment {users} needs a {precision} {graph} ONNX (have {', '.join(have) or 'none'}); "
                    f"run `nox -s {stage}`"
                )
            rel, meta = found[0]
            out.append((graph, precision, rel, str(meta["sha256"])))
    return out


def make_plan(
    manifest: Manifest,
    options: BuildOptions,
    graph_io: Mapping[str, GraphIO],
    deployments: Sequence[Deployment],
    trt_target: str = DEFAULT_TRT_TARGET,
) -> dict[str, Any]:
    """The whole build as data: deployments, engines, their ONNX sources and hashes, profiles.

    `graph_io` maps ONNX rel path -> its I/O (from `read_graph_io`), so this stays pure. Every ONNX
    must suit the ONNX parser of TensorRT `trt_target` (major.minor); the plan records the limits.
    """
    buckets = manifest.buckets
    mel_dim, text_dim = model_dims(manifest)
    limits = onnx_limits(trt_target)
    engines = []
    for graph, precision, rel, sha in onnx_sources(manifest, deployments):
        check_onnx_version(graph_io[rel], limits, rel)
        engines.append(
            {
                "graph": graph,
                "precision": precision,
                "onnx": rel,
                "onnx_sha256": sha,
                "engine": engine_rel(graph, precision),
                "profiles": profile_table(graph, graph_io[rel], buckets, mel_dim, text_dim, rel),
            }
        )
    return {
        "format": PLAN_FORMAT,
        "name": manifest.name,
        "buckets": buckets.to_dict(),
        "model": {"mel_dim": mel_dim, "text_dim": text_dim},
        "options": asdict(options),
        "deployments": {d.name: d.to_dict() for d in deployments},
        "onnx_checked_for": limits.to_dict(),
        "timing_cache": TIMING_CACHE,
        "engines": engines,
    }


def plan_summary(plan: Mapping[str, Any]) -> str:
    n_profiles = sum(len(e["profiles"]) for e in plan["engines"])
    names = ", ".join(plan["deployments"])
    return f"{len(plan['engines'])} engines, {n_profiles} profiles (deployment {names})"


# The prerequisites build_engines.sh checks, each with how to get it on JetPack 6.
PREREQUISITES = (
    ("tensorrt", "TensorRT's Python bindings (JetPack: sudo apt install python3-libnvinfer)"),
    ("cuda.bindings.runtime", "cuda-python for this driver (JetPack 6: pip install 'cuda-python>=12.6.1,<13')"),
    ("numpy", "numpy (pip install numpy)"),
    ("yaml", "pyyaml (pip install pyyaml)"),
    ("f5rt", "f5rt (from the f5-aot checkout: pip install --no-deps ./runtime)"),
    ("f5build.compile", "f5build (from the f5-aot checkout: pip install --no-deps ./build)"),
)


def build_script(plan: Mapping[str, Any]) -> str:
    """A bash script for the device: check the prerequisites, then build and record the plan."""
    lines = [
        "#!/usr/bin/env bash",
        f"# TensorRT engines for artifacts '{plan['name']}', generated by `f5build compile` from {PLAN_NAME}:",
        f"# {plan_summary(plan)}.",
        "# Run it on the target device: engines are only valid for the TensorRT release and GPU that build them.",
        "# Needs TensorRT's Python bindings, cuda-python for the driver, numpy, pyyaml, f5rt and f5build (checked",
        "# below); no Polygraphy, ONNX or torch. PYTHON=... picks the interpreter (default python3).",
        "set -euo pipefail",
        'cd "$(dirname "$0")/.."',
        'PY="${PYTHON:-python3}"',
        "missing=0",
        'need() { if ! "$PY" -c "import $1" >/dev/null 2>&1; then echo "build_engines.sh: missing $2" >&2; missing=1; fi; }',
    ]
    lines += [f"need {module} {shlex.quote(hint)}" for module, hint in PREREQUISITES]
    lines += [
        '[ "$missing" = 0 ] || { echo "build_engines.sh: install the above, then run it again" >&2; exit 2; }',
        f"echo {shlex.quote('== ' + plan_summary(plan))}",
        'exec "$PY" -m f5build.compile --artifacts-root "$(cd .. && pwd)" --name "$(basename "$(pwd)")" --trt-from-plan',
    ]
    return "\n".join(lines) + "\n"


def inputs_fingerprint(plan: Mapping[str, Any]) -> str:
    return sha256_json(
        {
            "onnx": sorted((e["onnx"], e["onnx_sha256"]) for e in plan["engines"]),
            "buckets": plan["buckets"],
            "deployments": plan["deployments"],
            "options": plan["options"],
        }
    )


def write_plan(root: Path, plan: Mapping[str, Any]) -> tuple[Path, Path]:
    plan_path, script_path = root / PLAN_NAME, root / SCRIPT_NAME
    atomic_write_json(plan_path, plan)
    atomic_write_bytes(script_path, build_script(plan).encode())
    script_path.chmod(script_path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return plan_path, script_path


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


def record_deployments(root: Path, plan: Mapping[str, Any]) -> None:
    """The deployments whose engines are all built, as the runtime's `--precision` names them."""
    update_manifest(root, lambda d: d.setdefault("deployments", {}).update(plan["deployments"]))


def _target_or_reason() -> tuple[Any, Target | None, str]:
    """(tensorrt module, build target, "") or (None, None, why the build cannot run here)."""
    try:
        trt = load_tensorrt()
        return trt, current_target(trt), ""
    except BackendUnavailable as e:
        return None, None, str(e)


def build_plan(root: Path, plan: Mapping[str, Any], trt: Any, target: Target, force: bool) -> None:
    """Build (or keep, when up to date) every engine of the plan; record each and the deployments."""
    options = BuildOptions(**plan["options"])
    mel_dim, text_dim = int(plan["model"]["mel_dim"]), int(plan["model"]["text_dim"])
    print(f"building with TensorRT {target.tensorrt} on {target.gpu} (SM {target.sm}, CUDA {target.cuda})")
    for e in plan["engines"]:
        if not force and up_to_date(load_manifest(root), e, options, target):
            print(f"  {e['engine']}: up to date")
            continue
        t1 = time.perf_counter()
        build_engine(
            trt,
            root / e["onnx"],
            root / e["engine"],
            e["profiles"],
            opt_level=options.opt_level,
            workspace_bytes=options.workspace_bytes,
            tf32=options.tf32,
            strongly_typed=options.strongly_typed,
            timing_cache=root / TIMING_CACHE,
        )
        verify_engine(trt, root / e["engine"], e["engine"], e["graph"], e["profiles"], mel_dim, text_dim)
        record_engine(root, e, options, target)
        size = (root / e["engine"]).stat().st_size
        print(
            f"  {e['engine']}: {len(e['profiles'])} profiles, {size / 2**20:.1f} MiB, {time.perf_counter() - t1:.1f} s"
        )
    record_deployments(root, plan)


def check_plan_target(plan: Mapping[str, Any], target: Target) -> None:
    """The ONNX files were checked for one TensorRT's parser: building on another needs a new plan."""
    checked = str((plan.get("onnx_checked_for") or {}).get("tensorrt", ""))
    here = ".".join(target.tensorrt.split(".")[:2])
    if checked != here:
        fix = f"re-run `f5build compile --trt-target {here}` on the build machine"
        if here not in ONNX_LIMITS:
            fix = f"add TensorRT {here}'s parser limits to f5build.compile.ONNX_LIMITS, then {fix}"
        raise ManifestError(
            f"{PLAN_NAME} was checked for TensorRT {checked or '?'}'s ONNX parser, this device has TensorRT "
            f"{target.tensorrt}: {fix}"
        )


def load_plan(root: Path, manifest: Manifest) -> dict[str, Any]:
    """engines/build_plan.json, checked against the manifest (the ONNX files must be the planned ones)."""
    path = root / PLAN_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no build plan; run `f5build compile` on the build machine first")
    plan: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if plan.get("format") != PLAN_FORMAT:
        raise ManifestError(f"{path}: plan format {plan.get('format')} is not {PLAN_FORMAT}; re-run `f5build compile`")
    for e in plan["engines"]:
        meta = manifest.files.get(e["onnx"], {})
        if meta.get("sha256") != e["onnx_sha256"]:
            raise ManifestError(f"{PLAN_NAME}: {e['onnx']} changed since the plan was made; re-run `f5build compile`")
        manifest.verify(e["onnx"])
    return plan


def _note_bucket_file(args: argparse.Namespace, table: BucketTable) -> None:
    """Engines follow the manifest's bucket table (the ONNX graphs were exported and checked for it)."""
    path = getattr(args, "buckets", None)
    if not path or not Path(path).is_file():
        return
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
    t0 = time.perf_counter()
    if args.trt_from_plan:
        plan = load_plan(root, manifest)
    else:
        options = BuildOptions.from_args(args)
        table, default = read_deployments(args.trt_recipe)
        deployments = chosen_deployments(str(args.trt_precision or ""), table, default)
        _note_bucket_file(args, manifest.buckets)
        sources = onnx_sources(manifest, deployments)
        graph_io = {rel: read_graph_io(manifest.verify(rel)) for _, _, rel, _ in sources}
        plan = make_plan(manifest, options, graph_io, deployments, str(getattr(args, "trt_target", DEFAULT_TRT_TARGET)))
        plan_path, script_path = write_plan(root, plan)
        print(f"plan: {plan_summary(plan)} -> {plan_path} and {script_path}")

    trt, target, reason = _target_or_reason()
    if target is None or (args.trt_plan_only and not args.trt_from_plan):
        if target is None:
            print(reason)
            print(f"engines not built; on the target device run {root / SCRIPT_NAME}")
            if args.trt_from_plan:
                return 2
        record_stage(root, plan, "planned", time.perf_counter() - t0, target)
        return 0
    check_plan_target(plan, target)
    build_plan(root, plan, trt, target, bool(args.trt_force))
    record_stage(root, plan, "built", time.perf_counter() - t0, target)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m f5build.compile`: this stage alone (build_engines.sh runs it on the device)."""
    parser = argparse.ArgumentParser(prog="python -m f5build.compile", description=__doc__)
    add_common(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ManifestError, BackendUnavailable, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"f5build compile: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
