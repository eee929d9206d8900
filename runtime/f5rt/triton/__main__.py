"""`python -m f5rt.triton repository|serve`: write a model repository, or serve one locally.

python -m f5rt.triton repository --artifacts artifacts/tiny [--out DIR] [--instances 2] [--precision int8]
python -m f5rt.triton serve --model-repository artifacts/tiny/triton [--workdir DIR]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from f5rt.errors import F5RTError


def _repository(args: argparse.Namespace) -> int:
    from f5rt.triton.repository import RepositoryOptions, write_repository

    opts = RepositoryOptions(
        voices_path=args.voices,
        voice_cache_path=args.voice_cache,
        precision=args.precision,
        instances=args.instances,
        default_nfe=args.nfe,
        default_cfg=args.cfg,
        threads=args.threads,
        limits_path=args.limits,
        queue_delay_us=args.queue_delay_us,
    )
    out = args.out or args.artifacts / "triton"
    repo = write_repository(args.artifacts, out, opts)
    p = repo.placement
    print(f"{out}: {len(repo.files)} files; {p.kind} x{opts.instances} on {p.backend}/{p.precision} ({p.reason})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from f5rt.triton.local import LocalTritonServer

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="f5rt-triton-"))
    server = LocalTritonServer(args.model_repository, workdir)
    with server:
        print(
            f"tritonserver ready: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url}; "
            f"log {server.log_path}; Ctrl-C stops it",
            flush=True,
        )
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # after the server started: it must not inherit the mask
        signal.sigwait(stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m f5rt.triton", description=__doc__.strip().splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("repository", help="write <artifacts>/triton/ (or --out)")
    r.add_argument("--artifacts", type=Path, required=True)
    r.add_argument("--out", type=Path, help="repository folder (default: <artifacts>/triton)")
    r.add_argument("--voices", help="voices folder, relative = to the repository (default: <artifacts>/voices)")
    r.add_argument("--voice-cache", default="", help="voice preparation cache (default: inside the voices folder)")
    r.add_argument("--precision", help="deployment / ONNX variant (default: a built TensorRT deployment, else fp32)")
    r.add_argument("--instances", type=int, default=1, help="instances per model (per GPU for KIND_GPU)")
    r.add_argument("--nfe", type=int, default=32, help="default NFE of requests that send none")
    r.add_argument("--cfg", type=float, default=2.0, help="default guidance strength of requests that send none")
    r.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime threads per instance (0 = the CPUs usable / CPU instances)"
    )
    r.add_argument("--limits", default="", help="limits JSON (f5rt.limits.Limits); relative = to the repository")
    r.add_argument(
        "--queue-delay-us", type=int, help="dynamic batcher delay (0 = none; default: 50 ms on GPU, none on CPU)"
    )
    s = sub.add_parser("serve", help="serve a repository with the nvidia-pytriton wheel's tritonserver")
    s.add_argument("--model-repository", type=Path, required=True)
    s.add_argument("--workdir", type=Path, help="backend folder and log (default: a new temp folder)")
    args = parser.parse_args(argv)
    try:
        return _repository(args) if args.cmd == "repository" else _serve(args)
    except (F5RTError, ValueError, RuntimeError) as e:
        print(f"f5rt.triton {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
