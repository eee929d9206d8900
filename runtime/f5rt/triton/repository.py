"""Write a Triton Inference Server model repository over one artifacts folder.

    <artifacts>/triton/
        f5tts/config.pbtxt          Python backend, one response per request (dynamic batching on GPU)
        f5tts/1/model.py            `from f5rt.triton.model import SynthesisModel as TritonPythonModel`
        f5tts_stream/config.pbtxt   the same inputs, decoupled: one response per audio piece
        f5tts_stream/1/model.py

Where the engines run follows from the manifest: a deployment whose TensorRT engines are all built
(`deployments` in manifest.json, written by `f5build compile` or the device's build_engines.sh) gets
KIND_GPU instances on the TensorRT backend; otherwise KIND_CPU instances on ONNX Runtime. The build
machine writes it with the pipeline; a Jetson rewrites it after building its engines
(`python -m f5rt.triton repository --artifacts artifacts/<model>`), with no torch anywhere.

Every file is written atomically (a half-written config.pbtxt would fail a server's reload).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from f5rt.errors import ManifestError
from f5rt.files import atomic_write_bytes
from f5rt.manifest import Manifest, load_manifest
from f5rt.names import AUTO, GRAPHS
from f5rt.precision import resolve
from f5rt.triton.params import ModelParams

BATCH_MODEL = "f5tts"
STREAM_MODEL = "f5tts_stream"
DEFAULT_QUEUE_DELAY_US = 50_000  # GPU instances: the batch window of `f5rt serve` (Limits.batch_window_ms = 50)

_INPUTS = (
    ("text", "TYPE_STRING", False),
    ("voice_id", "TYPE_STRING", False),
    ("seed", "TYPE_INT64", True),
    ("nfe_step", "TYPE_INT32", True),
    ("speed", "TYPE_FP32", True),
)
_OUTPUTS = (("audio", "TYPE_FP32", -1), ("sample_rate", "TYPE_INT32", 1))
_CLASSES = {BATCH_MODEL: "SynthesisModel", STREAM_MODEL: "StreamingModel"}


@dataclass(frozen=True)
class Placement:
    """Where the instances run: (KIND_GPU, tensorrt, a built deployment) or (KIND_CPU, onnxruntime, a variant)."""

    kind: str
    backend: str
    precision: str
    reason: str


@dataclass(frozen=True)
class RepositoryOptions:
    """What the repository's configs say. Paths are written as given (relative = to the repository root);
    artifacts_path / voices_path None: the artifacts folder and its `voices/`, relative to the repository.

    queue_delay_us: how long Triton's dynamic batcher holds a request for others to join it; 0 = no
    dynamic batching (every request runs alone); None = by placement: 50 ms on KIND_GPU, where a B = 4
    engine call costs little more than B = 1, none on KIND_CPU, where ONNX Runtime's cost grows with
    the rows and batching mixed lengths pads every row to the longest (README "Scaling out").
    """

    artifacts_path: str | None = None
    voices_path: str | None = None
    voice_cache_path: str = ""
    precision: str | None = None  # None: the built TensorRT deployment if there is one, else fp32
    instances: int = 1
    default_nfe: int = 32
    default_cfg: float = 2.0
    threads: int = 0
    limits_path: str = ""
    queue_delay_us: int | None = None
    max_batch: int | None = None  # None: the bucket table's largest batch

    def __post_init__(self) -> None:
        if not isinstance(self.instances, int) or not 1 <= self.instances <= 64:
            raise ValueError(f"instances must be an integer in [1, 64], got {self.instances!r}")
        if self.queue_delay_us is not None and (
            not isinstance(self.queue_delay_us, int) or not 0 <= self.queue_delay_us <= 10_000_000
        ):
            raise ValueError(f"queue delay must be in [0, 10 s] in microseconds, got {self.queue_delay_us!r}")
        if self.max_batch is not None and not 1 <= self.max_batch <= 64:
            raise ValueError(f"max_batch must be in [1, 64], got {self.max_batch!r}")


@dataclass
class Repository:
    """A written repository: its root, where it runs, and the files written (relative to root)."""

    root: Path
    placement: Placement
    max_batch: int
    files: list[str] = field(default_factory=list)


def choose_placement(manifest: Manifest, precision: str | None) -> Placement:
    """TensorRT on GPU instances when the deployment's engines exist, else ONNX Runtime on CPU instances.

    precision None (or "auto") picks as the runtime's `--precision auto` does (f5rt.precision): the
    most reduced TensorRT deployment compiled, else the best CPU variant validate passed, else fp32.
    """
    built = dict(manifest.data.get("deployments") or {})
    if precision is None or precision == AUTO:
        if built:
            name = resolve(manifest, "tensorrt", AUTO)
            return Placement("KIND_GPU", "tensorrt", name, f"TensorRT engines of deployment {name!r} are built")
        name = resolve(manifest, "onnxruntime", AUTO)
        return Placement(
            "KIND_CPU", "onnxruntime", name, f"no TensorRT deployment is built: ONNX Runtime {name} on CPU"
        )
    if precision in built:
        return Placement("KIND_GPU", "tensorrt", precision, f"TensorRT engines of deployment {precision!r} are built")
    if precision in manifest.precisions("step"):
        why = f"no TensorRT deployment {precision!r} is built (have {sorted(built) or 'none'}): ONNX Runtime on CPU"
        return Placement("KIND_CPU", "onnxruntime", precision, why)
    raise ManifestError(
        f"{manifest.root}: precision {precision!r} has neither built engines (deployments {sorted(built) or 'none'}) "
        f"nor a step ONNX variant (have {manifest.precisions('step')}); run `nox -s quantize` / `nox -s compile`"
    )


def queue_delay(placement: Placement, opts: RepositoryOptions) -> int:
    """The f5tts dynamic batcher's delay in microseconds (0: no dynamic batching)."""
    if opts.queue_delay_us is not None:
        return opts.queue_delay_us
    return DEFAULT_QUEUE_DELAY_US if placement.kind == "KIND_GPU" else 0


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(
    name: str, placement: Placement, opts: RepositoryOptions, max_batch: int, paths: dict[str, str]
) -> str:
    """config.pbtxt (protobuf text format) of one model; `paths`: the artifacts and voices parameters."""
    lines = [
        f"# Written by f5rt.triton.repository (`f5build triton`); {placement.reason}.",
        f"name: {_quote(name)}",
        'backend: "python"',
        f"max_batch_size: {max_batch}",
        "input [",
    ]
    entries = []
    for inp, dtype, optional in _INPUTS:
        extra = " optional: true" if optional else ""
        entries.append(f"  {{ name: {_quote(inp)} data_type: {dtype} dims: [ 1 ]{extra} }}")
    lines += [",\n".join(entries), "]", "output ["]
    outs = [f"  {{ name: {_quote(o)} data_type: {dtype} dims: [ {d} ] }}" for o, dtype, d in _OUTPUTS]
    lines += [",\n".join(outs), "]"]
    lines.append(f"instance_group [ {{ kind: {placement.kind} count: {opts.instances} }} ]")
    if name == STREAM_MODEL:
        lines.append("model_transaction_policy { decoupled: true }")
        # Streams start at once (execute() only hands them to the instance's worker, which interleaves
        # them chunk by chunk): no queue delay.
        lines.append("dynamic_batching { }")
    else:
        delay = queue_delay(placement, opts)
        if delay > 0:
            lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {delay} }}")
    params = {
        **paths,
        "voice_cache": opts.voice_cache_path,
        "backend": placement.backend,
        "precision": placement.precision,
        "default_nfe": str(opts.default_nfe),
        "default_cfg": f"{opts.default_cfg:g}",
        "threads": str(opts.threads),
        "limits": opts.limits_path,
    }
    lines.append("parameters [")
    lines.append(
        ",\n".join(f"  {{ key: {_quote(k)} value: {{ string_value: {_quote(v)} }} }}" for k, v in params.items())
    )
    lines.append("]")
    return "\n".join(lines) + "\n"


def render_model_py(name: str) -> str:
    cls = _CLASSES[name]
    return (
        f'"""Triton Python-backend entry of `{name}` (written by `f5build triton`): the model is\n'
        f'f5rt.triton.model.{cls}, so this file never needs editing; `pip install f5rt` in the stub\'s Python."""\n\n'
        f"from f5rt.triton.model import {cls} as TritonPythonModel\n\n"
        '__all__ = ["TritonPythonModel"]\n'
    )


def write_repository(artifacts: str | Path, out: str | Path, opts: RepositoryOptions | None = None) -> Repository:
    """Write both models' config.pbtxt and model.py under `out`; the configs are checked by parsing them back."""
    opts = opts or RepositoryOptions()
    manifest = load_manifest(artifacts)
    for graph in GRAPHS:  # a repository over artifacts that cannot run would only fail at the server's load
        if not manifest.precisions(graph):
            raise ManifestError(f"{manifest.root}: no {graph} ONNX in the manifest; run `nox -s export` first")
    placement = choose_placement(manifest, opts.precision)
    max_batch = opts.max_batch or manifest.buckets.max_batch
    root = Path(out)
    paths = {
        "artifacts": opts.artifacts_path or os.path.relpath(manifest.root.resolve(), root.resolve()),
        "voices": opts.voices_path or os.path.relpath((manifest.root / "voices").resolve(), root.resolve()),
    }
    # The parameters must parse as the model will parse them (paths, limits, NFE and CFG within the limits).
    ModelParams.from_strings(
        {
            **paths,
            "voice_cache": opts.voice_cache_path,
            "default_nfe": str(opts.default_nfe),
            "default_cfg": f"{opts.default_cfg:g}",
            "threads": str(opts.threads),
            "limits": opts.limits_path,
            "backend": placement.backend,
            "precision": placement.precision,
        },
        root,
    )
    repo = Repository(root, placement, max_batch)
    for name in (BATCH_MODEL, STREAM_MODEL):
        for rel, text in (
            (f"{name}/config.pbtxt", render_config(name, placement, opts, max_batch, paths)),
            (f"{name}/1/model.py", render_model_py(name)),
        ):
            atomic_write_bytes(root / rel, text.encode("utf-8"))
            repo.files.append(rel)
    return repo


__all__ = [
    "BATCH_MODEL",
    "STREAM_MODEL",
    "Placement",
    "Repository",
    "RepositoryOptions",
    "choose_placement",
    "queue_delay",
    "render_config",
    "write_repository",
]
