"""`python -m f5build <stage>`: one entry point for every stage, as the nox sessions call it.

Each stage module exposes `add_arguments(parser)`, an options dataclass `Options` with
`from_args(args)`, and `run(options) -> int`: this module is the only place an argparse Namespace is
read, so the stages' library code takes typed options and can be called without a command line.
(A stage module without `Options` still gets `run(args)`.) Arguments shared by every stage (which
model, where its artifacts go, the bucket table) are added once by `add_common`; those several stages
take under their own prefix (recipe, corpus, voices, threads, reports, force) by `add_shared`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from f5rt.errors import F5RTError

STAGES: dict[str, str] = {
    "export": "f5build.export",
    "calibrate": "f5build.calibrate",
    "quantize": "f5build.quantize",
    "compile": "f5build.compile",
    "validate": "f5build.validate",
    "bench": "f5build.bench",
    "cost": "f5build.cost",
    "triton": "f5build.triton",
}
PIPELINE = ("export", "calibrate", "quantize", "compile", "validate", "cost", "triton")
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


_SHARED: dict[str, dict[str, Any]] = {
    "recipe": {"type": Path, "default": ROOT / "config" / "precision.yaml", "help": "precision recipe (YAML)"},
    "corpus": {
        "type": Path,
        "default": ROOT / "calibration",
        "help": "calibration corpus folder (manifest.json, texts/, corpus.py)",
    },
    "voices": {"type": Path, "help": "reference voices folder (default: <corpus>/voices)"},
    "threads": {"type": int, "default": 0, "help": "ONNX Runtime intra-op threads (0 = default)"},
    "reports": {"type": Path, "default": ROOT / "reports", "help": "folder for the stage's reports"},
    "force": {"action": "store_true", "help": "redo the stage even when its outputs are up to date"},
}


def add_shared(g: argparse._ActionsContainer, prefix: str, *names: str, **help_for: str) -> None:
    """Add `--<prefix>-<name>` for each of `names` (recipe, corpus, voices, threads, reports, force).

    One definition per argument, so stages that take the same kind of input spell, default and parse
    it the same way; `help_for` replaces a help text where a stage means something more specific.
    """
    for name in names:
        if name not in _SHARED:
            raise ValueError(f"add_shared: unknown argument {name!r} (known: {', '.join(_SHARED)})")
        spec = dict(_SHARED[name])
        if name in help_for:
            spec["help"] = help_for[name]
        g.add_argument(f"--{prefix}-{name}", **spec)


@dataclass(frozen=True)
class ModelSource:
    """Which model a stage loads (add_common's --model, --vocab, --vocoder, --model-config, --weights, --seed)."""

    model: str = "tiny"
    seed: int = 0
    vocab: Path | None = None
    vocoder: Path | None = None
    model_config: str = "F5TTS_v1_Base"
    weights: str = "ema"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelSource:
        return cls(
            model=str(args.model),
            seed=int(args.seed),
            vocab=Path(args.vocab) if args.vocab else None,
            vocoder=Path(args.vocoder) if args.vocoder else None,
            model_config=str(args.model_config),
            weights=str(args.weights),
        )


def csv_list(text: str | None) -> tuple[str, ...]:
    """A comma-separated option as its non-empty, stripped items (empty or None: none)."""
    return tuple(x.strip() for x in str(text or "").split(",") if x.strip())


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
            mod = importlib.import_module(STAGES[stage])
            options = getattr(mod, "Options", None)
            rc = mod.run(options.from_args(args) if options is not None else args)
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
