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
import importlib.metadata
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from f5build.context import ROOT, add_common, add_shared, artifacts_dir, csv_list
from f5build.onnx_check import (
    DEFAULT_TRT_TARGET,
    ONNX_LIMITS,
    GraphIO,
    OnnxLimits,
    check_graph_io,
    check_onnx_version,
    onnx_limits,
    read_graph_io,
)
from f5build.trt_build import Target, build_engine, current_target, load_tensorrt, verify_engine
from f5build.trt_inspect import AttentionFusion, inspect_attention
from f5build.trt_plan import (
    ENGINES_DIR,
    PLAN_FORMAT,
    PLAN_NAME,
    SCRIPT_NAME,
    TIMING_CACHE,
    BuildOptions,
    build_script,
    chosen_deployments,
    engine_rel,
    inputs_fingerprint,
    load_plan,
    make_plan,
    onnx_sources,
    plan_summary,
    profile_table,
    read_deployments,
    write_plan,
)
from f5rt.backends.trt.engines import same_release
from f5rt.buckets import BucketTable
from f5rt.errors import BackendUnavailable, ManifestError
from f5rt.files import sha256_file
from f5rt.manifest import Manifest, file_entry, load_manifest, update_manifest

# The stage's public names, wherever they are defined (tests and build_engines.sh use f5build.compile).
__all__ = [
    "DEFAULT_TRT_TARGET",
    "ENGINES_DIR",
    "ONNX_LIMITS",
    "PLAN_FORMAT",
    "PLAN_NAME",
    "SCRIPT_NAME",
    "TIMING_CACHE",
    "BuildOptions",
    "CompileOptions",
    "GraphIO",
    "OnnxLimits",
    "Options",
    "Target",
    "add_arguments",
    "build_plan",
    "build_script",
    "check_graph_io",
    "check_onnx_version",
    "check_plan_target",
    "chosen_deployments",
    "engine_meta",
    "engine_rel",
    "inputs_fingerprint",
    "load_plan",
    "main",
    "make_plan",
    "onnx_limits",
    "onnx_sources",
    "plan_summary",
    "profile_table",
    "read_deployments",
    "read_graph_io",
    "record_deployments",
    "record_engine",
    "record_stage",
    "run",
    "up_to_date",
    "write_plan",
]

RECIPE = ROOT / "config" / "precision.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compile (TensorRT engines)")
    g.add_argument(
        "--trt-precision",
        default="",
        help="comma list of deployment precisions to build (default: the recipe's `deployments.default`)",
    )
    add_shared(g, "trt", "recipe", recipe="recipe with the `deployments` table (YAML)")
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
    add_shared(g, "trt", "force", force="rebuild engines even when up to date")
    g.add_argument("--trt-plan-only", action="store_true", help="write the build plan and script, build nothing")
    g.add_argument(
        "--trt-from-plan",
        action="store_true",
        help="build exactly engines/build_plan.json (what build_engines.sh runs on the device; needs no ONNX package)",
    )


@dataclass(frozen=True)
class CompileOptions:
    """One compile run. `from_plan`: build exactly engines/build_plan.json (the device side);
    `plan_only`: write the plan and script, build nothing. `buckets`: the bucket file the user named,
    only compared with the manifest's table (engines follow the manifest)."""

    root: Path
    recipe: Path = RECIPE
    precisions: tuple[str, ...] = ()
    target: str = DEFAULT_TRT_TARGET
    build: BuildOptions = BuildOptions()
    force: bool = False
    plan_only: bool = False
    from_plan: bool = False
    buckets: Path | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CompileOptions:
        return cls(
            root=artifacts_dir(args),
            recipe=Path(args.trt_recipe),
            precisions=csv_list(args.trt_precision),
            target=str(getattr(args, "trt_target", DEFAULT_TRT_TARGET)),
            build=BuildOptions.from_args(args),
            force=bool(args.trt_force),
            plan_only=bool(args.trt_plan_only),
            from_plan=bool(args.trt_from_plan),
            buckets=Path(args.buckets) if getattr(args, "buckets", None) else None,
        )


Options = CompileOptions


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


def record_engine(
    root: Path,
    engine: Mapping[str, Any],
    options: BuildOptions,
    target: Target,
    attention: AttentionFusion | None = None,
) -> None:
    extra = {"attention": attention.to_dict()} if attention is not None else {}
    entry = file_entry(root, engine["engine"], **engine_meta(engine, options, target), **extra)
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
        built = verify_engine(trt, root / e["engine"], e["engine"], e["graph"], e["profiles"], mel_dim, text_dim)
        attention = step_attention(trt, built, e, load_manifest(root)) if e["graph"] == "step" else None
        record_engine(root, e, options, target, attention)
        size = (root / e["engine"]).stat().st_size
        print(
            f"  {e['engine']}: {len(e['profiles'])} profiles, {size / 2**20:.1f} MiB, {time.perf_counter() - t1:.1f} s"
        )
        if attention is not None:
            print(f"  {e['engine']}: {attention.summary()}")
            warning = attention.warning()
            if warning:
                print(f"  {e['engine']}: {warning}", file=sys.stderr)
    record_deployments(root, plan)


def step_attention(trt: Any, engine: Any, planned: Mapping[str, Any], manifest: Manifest) -> AttentionFusion | None:
    """The engine inspector's account of a step engine's attention (None when the model's depth is unknown)."""
    depth, heads = manifest.model.get("depth"), manifest.model.get("heads")
    if not depth or not heads:
        print(f"  {planned['engine']}: manifest has no model depth/heads; attention fusion not inspected")
        return None
    return inspect_attention(trt, engine, planned["profiles"], int(depth), int(heads))


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


def _note_bucket_file(path: Path | None, table: BucketTable) -> None:
    """Engines follow the manifest's bucket table (the ONNX graphs were exported and checked for it)."""
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


def run(opts: CompileOptions) -> int:
    root = opts.root
    manifest = load_manifest(root)
    t0 = time.perf_counter()
    if opts.from_plan:
        plan = load_plan(root, manifest)
    else:
        table, default = read_deployments(opts.recipe)
        deployments = chosen_deployments(",".join(opts.precisions), table, default)
        _note_bucket_file(opts.buckets, manifest.buckets)
        sources = onnx_sources(manifest, deployments)
        graph_io = {rel: read_graph_io(manifest.verify(rel)) for _, _, rel, _ in sources}
        plan = make_plan(manifest, opts.build, graph_io, deployments, opts.target)
        plan_path, script_path = write_plan(root, plan)
        print(f"plan: {plan_summary(plan)} -> {plan_path} and {script_path}")

    trt, target, reason = _target_or_reason()
    if target is None or (opts.plan_only and not opts.from_plan):
        if target is None:
            print(reason)
            print(f"engines not built; on the target device run {root / SCRIPT_NAME}")
            if opts.from_plan:
                return 2
        record_stage(root, plan, "planned", time.perf_counter() - t0, target)
        return 0
    check_plan_target(plan, target)
    build_plan(root, plan, trt, target, opts.force)
    record_stage(root, plan, "built", time.perf_counter() - t0, target)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m f5build.compile`: this stage alone (build_engines.sh runs it on the device)."""
    parser = argparse.ArgumentParser(prog="python -m f5build.compile", description=__doc__)
    add_common(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(CompileOptions.from_args(args))
    except (ManifestError, BackendUnavailable, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"f5build compile: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
