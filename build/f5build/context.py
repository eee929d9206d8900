"""What every stage shares with the command line: where things are, and the options all stages spell alike.

Stage modules import from here, never from `f5build.cli`: the CLI loads the stages (by module name,
`f5build.cli.STAGES`), the stages do not load the CLI back.

- `ROOT`: the checkout (defaults of config/, calibration/, artifacts/, reports/ live under it).
- `add_common(parser)`: --model, --vocab, --vocoder, --model-config, --weights, --name,
  --artifacts-root, --buckets, --seed (every stage and `pipeline`).
- `add_shared(group, prefix, *names)`: --<prefix>-{recipe,corpus,voices,threads,reports,force}.
- `ModelSource.from_args(args)`, `artifacts_dir(args)`, `csv_list(text)`: the boundary conversions.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="tiny",
        help="tiny (seeded, for tests; default) | f5tts-small-en (the trained embedded model) | "
        "f5tts-v1-base (real architecture, seeded weights) | path to an f5-tts checkpoint (.pt/.safetensors)",
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
    p.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when another build holds this artifacts folder, wait up to SECONDS for it (default 0: refuse at once)",
    )


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
    from f5build.load import NAMED

    name = args.name or (args.model if args.model in NAMED else Path(args.model).stem)
    return Path(args.artifacts_root) / name
