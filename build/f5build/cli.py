"""`python -m f5build <stage>`: one entry point for every stage, as the nox sessions call it.

Each stage module exposes `add_arguments(parser)` and `run(args) -> int`. Options shared by every
stage (which model, where its artifacts go, the bucket table) are added here once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from f5rt.errors import F5RTError

STAGES: dict[str, str] = {
    "export": "f5build.export",
    "calibrate": "f5build.calibrate",
    "quantize": "f5build.quantize",
    "compile": "f5build.compile",
    "validate": "f5build.validate",
    "bench": "f5build.bench",
    "cost": "f5build.cost",
}
PIPELINE = ("export", "calibrate", "quantize", "compile", "validate", "cost")
ROOT = Path(__file__).resolve().parents[2]


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="tiny",
        help="tiny (embedded, default) | f5tts-v1-base (real architecture, seeded weights) | "
        "path to an f5-tts checkpoint (.pt/.safetensors)",
    )
    p.add_argument("--vocab", type=Path, help="vocab.txt of a real checkpoint (default: f5-tts' Emilia zh/en vocab)")
    p.add_argument(
        "--vocoder", type=Path, help="Vocos directory (config.yaml + pytorch_model.bin) of a real checkpoint"
    )
    p.add_argument(
        "--model-config", default="F5TTS_v1_Base", help="f5-tts architecture name or YAML of a real checkpoint"
    )
    p.add_argument(
        "--weights",
        choices=("ema", "online"),
        default="ema",
        help="which weights of a checkpoint: ema (default, what f5-tts inference uses) or online (non-EMA)",
    )
    p.add_argument("--name", help="artifacts folder name (default: derived from --model)")
    p.add_argument("--artifacts-root", type=Path, default=ROOT / "artifacts")
    p.add_argument("--buckets", type=Path, default=ROOT / "config" / "buckets.yaml", help="bucket table (YAML)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated weights (tiny, f5tts-v1-base)")


def artifacts_dir(args: argparse.Namespace) -> Path:
    """artifacts/<name>: the name is --name, else the model source's name (file stem for checkpoints)."""
    name = args.name or (Path(args.model).stem if args.model not in ("tiny", "f5tts-v1-base") else args.model)
    return Path(args.artifacts_root) / name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="f5build", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage, module in STAGES.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(stage, help=(mod.__doc__ or "").strip().splitlines()[0])
        add_common(p)
        mod.add_arguments(p)
    p = sub.add_parser("pipeline", help="every stage in order: " + " -> ".join(PIPELINE))
    add_common(p)
    for stage in PIPELINE:
        importlib.import_module(STAGES[stage]).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stages = PIPELINE if args.stage == "pipeline" else (args.stage,)
    for stage in stages:
        t0 = time.perf_counter()
        print(f"== f5build {stage} ({artifacts_dir(args)})", flush=True)
        try:
            rc = importlib.import_module(STAGES[stage]).run(args)
        except (F5RTError, FileNotFoundError, ValueError) as e:
            print(f"f5build {stage}: error: {e}", file=sys.stderr)
            return 2
        print(
            f"== f5build {stage}: {'ok' if rc == 0 else f'failed ({rc})'} in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        if rc != 0:
            return rc
    return 0
