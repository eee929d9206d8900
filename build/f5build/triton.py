"""triton: a Triton Inference Server model repository over the artifacts -> artifacts/<model>/triton/.

Two Python-backend models over f5rt.Synthesizer: `f5tts` (dynamic batching, one response per
request) and `f5tts_stream` (decoupled, one response per audio piece). Instances are KIND_GPU on the
TensorRT backend when the manifest records a built deployment, else KIND_CPU on ONNX Runtime. The
writer itself is runtime code (f5rt.triton.repository), so a Jetson rewrites the repository after
building its engines without this package; this stage runs it and records every file it wrote in
the manifest (kind "triton") with the options and placement.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from f5rt.manifest import file_entry, update_manifest
from f5rt.triton.repository import RepositoryOptions, queue_delay, write_repository

REPOSITORY = "triton"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("triton")
    g.add_argument(
        "--triton-precision",
        help="deployment (TensorRT, when its engines are built) or ONNX variant; default: a built deployment, else fp32",
    )
    g.add_argument("--triton-instances", type=int, default=1, help="instances per model (per GPU on KIND_GPU)")
    g.add_argument(
        "--triton-voices",
        help="voices folder the instances share; relative = to the repository (default <model>/voices)",
    )
    g.add_argument("--triton-voice-cache", default="", help="voice cache folder (default: inside the voices folder)")
    g.add_argument("--triton-nfe", type=int, default=32, help="NFE of requests that send none (f5-tts' default 32)")
    g.add_argument(
        "--triton-cfg", type=float, default=2.0, help="guidance strength of requests that send none (f5-tts' default 2)"
    )
    g.add_argument("--triton-threads", type=int, default=0, help="ONNX Runtime threads per instance (0 = its default)")
    g.add_argument("--triton-limits", default="", help="limits JSON (fields of f5rt.limits.Limits) for the models")
    g.add_argument(
        "--triton-queue-delay-us",
        type=int,
        help="dynamic batcher queue delay of f5tts in us (0 = none); default 50000 on GPU instances, none on CPU",
    )


@dataclass(frozen=True)
class TritonStageOptions:
    """Where the repository goes (the artifacts folder) and what it holds (RepositoryOptions)."""

    artifacts: Path
    repository: RepositoryOptions

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TritonStageOptions:
        from f5build.context import artifacts_dir

        return cls(
            artifacts=Path(artifacts_dir(args)),
            repository=RepositoryOptions(
                voices_path=args.triton_voices,
                voice_cache_path=args.triton_voice_cache,
                precision=args.triton_precision,
                instances=args.triton_instances,
                default_nfe=args.triton_nfe,
                default_cfg=args.triton_cfg,
                threads=args.triton_threads,
                limits_path=args.triton_limits,
                queue_delay_us=args.triton_queue_delay_us,
            ),
        )


Options = TritonStageOptions


def run(options: TritonStageOptions) -> int:
    t0 = time.perf_counter()
    root = options.artifacts
    opts = options.repository
    repo = write_repository(root, root / REPOSITORY, opts)
    rels = [f"{REPOSITORY}/{rel}" for rel in repo.files]
    entries = {rel: file_entry(root, rel, kind="triton", stage="triton") for rel in rels}
    stage = {
        "status": "ok",
        "repository": REPOSITORY,
        "placement": asdict(repo.placement),
        "max_batch_size": repo.max_batch,
        "options": asdict(opts),
        "queue_delay_us": queue_delay(repo.placement, opts),
        "files": rels,
        "seconds": round(time.perf_counter() - t0, 3),
    }

    def record(data: dict) -> None:
        files = {k: v for k, v in data.get("files", {}).items() if v.get("stage") != "triton"}
        data["files"] = {**files, **entries}
        data.setdefault("stages", {})["triton"] = stage

    update_manifest(root, record)
    p = repo.placement
    print(f"  {root / REPOSITORY}: f5tts + f5tts_stream, {p.kind} x{opts.instances} on {p.backend}/{p.precision}")
    delay = queue_delay(p, opts)
    batching = f"dynamic batching, queue delay {delay} us" if delay else "no dynamic batching"
    print(f"  {p.reason}; max_batch_size {repo.max_batch}, {batching}")
    return 0
