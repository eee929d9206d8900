"""The TensorRT build plan: which engines the deployments need, with one profile per bucket, as data.

The plan (engines/build_plan.json) and the script that builds it on the device (build_engines.sh) are
made on the build machine from the manifest alone; the device then needs neither ONNX nor torch.
`BuildOptions` holds everything besides the ONNX file and the profiles that changes an engine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import stat
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from f5build.onnx_check import DEFAULT_TRT_TARGET, GraphIO, check_graph_io, check_onnx_version, onnx_limits
from f5rt.backends.trt.engines import Deployment, parse_deployments
from f5rt.backends.trt.profiles import plan_profiles, profile_shapes
from f5rt.buckets import BucketTable
from f5rt.errors import ManifestError
from f5rt.files import atomic_write_bytes, atomic_write_json, sha256_json
from f5rt.manifest import GRAPHS, Manifest

ENGINES_DIR = "engines"
PLAN_NAME = f"{ENGINES_DIR}/build_plan.json"
SCRIPT_NAME = f"{ENGINES_DIR}/build_engines.sh"
TIMING_CACHE = f"{ENGINES_DIR}/timing.cache"
PLAN_FORMAT = 2


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
