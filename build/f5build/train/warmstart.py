"""Continue training from a released checkpoint when the training state itself is gone.

The resumable state (`f5_state.pt`, `vocos_state.pt`: weights, optimizer moments, RNG) lives outside
the work tree and is about twice the size of the release, so it is not committed; a machine that
starts from a clone has only `models/<name>/`. `--train-from models/<name>` seeds an empty
`--train-dir` from that release: the DiT and its EMA both start from the released EMA weights, the
Vocos from its released state dict, and the step counters from `checkpoint.json`, so the batch
sequence (a function of seed and step) and the curriculum continue where the release stopped. What
cannot be recovered is stated, not hidden: the optimizer moments start at zero (AdamW rebuilds them
within a few hundred steps; the learning-rate warmup is run again for that reason) and the DiT's raw
weights equal its EMA. A release whose vocab or architecture differs from this recipe's is refused.
The release's record of how it was trained (the CTC aid's, average upsampling's, learning rate's and
batch budget's settings and the step each took effect) is carried into the state, so that a release
exported from the continued run still says how all of its steps were trained, and at which steps
its DiT and Vocos were warm-started (`train_warm_starts`, `vocos_warm_starts`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from f5build.load import ReleasedCheckpoint
from f5build.train.corpus import IDENTITY_FILES
from f5build.train.f5 import arch_flags

# checkpoint.json's training records (f5build.train.release) -> the F5Trainer attribute each seeds
RECORDS = {
    "train_ctc": "ctc_history",
    "train_average_upsampling": "upsampling_history",
    "train_lr": "lr_history",
    "train_batch_frames": "batch_history",
    "train_corpus": "corpus_history",
}


@dataclass(frozen=True)
class Release:
    """A released layout's weights and records, verified against its checkpoint.json."""

    folder: Path
    steps: int
    vocos_steps: int
    train_cpu_hours: float
    vocab: list[str]
    arch: dict[str, Any]
    vocos_arch: dict[str, Any]
    ema_transformer: dict[str, torch.Tensor]
    vocos_state: dict[str, torch.Tensor]
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The training records `checkpoint.json` holds, by the trainer's name for them (`ctc_history`,
    `upsampling_history`, `lr_history`, `batch_history`); a record an older release lacks is absent."""
    warm_starts: tuple[int, ...] = ()
    """The steps the release's DiT was itself seeded from an earlier release at (`train_warm_starts`)."""
    vocos_warm_starts: tuple[int, ...] = ()
    """The same for its Vocos (`vocos_warm_starts`)."""
    vocos_corpus: list[dict[str, Any]] | None = None
    """The corpora its Vocos trained on and the step each took effect (`vocos_corpus`); None where the
    release has no record of the corpus at all."""

    @classmethod
    def read(cls, folder: Path) -> Release:
        from safetensors.torch import load_file

        rel = ReleasedCheckpoint.open(folder)  # every file's sha256 checked
        meta = json.loads((folder / "checkpoint.json").read_text(encoding="utf-8"))
        try:
            steps, vocos_steps = int(meta["steps"]), int(meta["vocos_steps"])
            hours = float(meta.get("train_cpu_hours", 0.0))
            vocos_arch = dict(meta["vocos_arch"])
            warm = tuple(int(s) for s in meta.get("train_warm_starts", []))
            vocos_warm = tuple(int(s) for s in meta.get("vocos_warm_starts", []))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{folder / 'checkpoint.json'}: no training record to continue from ({e})") from None
        arch = dict(yaml.safe_load(rel.model_config.read_text(encoding="utf-8"))["model"]["arch"])
        vocab = rel.vocab.read_text(encoding="utf-8").split("\n")
        if vocab and vocab[-1] == "":
            vocab = vocab[:-1]
        ema = {k: v for k, v in load_file(str(rel.checkpoint)).items() if k.startswith("ema_model.transformer.")}
        vocos = torch.load(rel.vocoder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        histories = {name: [dict(e) for e in meta[key] or []] for key, name in RECORDS.items() if key in meta}
        vocos_corpus = [dict(e) for e in meta["vocos_corpus"]] if "vocos_corpus" in meta else None
        if "train_corpus" not in meta and "corpus" in meta:
            # a release from before the corpus record names the corpus it was exported with: both the DiT
            # and the Vocos are taken to have trained on it from step 0
            only = [{"from_step": 0, "corpus": {k: meta["corpus"][k] for k in IDENTITY_FILES}}]
            histories["corpus_history"], vocos_corpus = only, [dict(e) for e in only]
        return cls(
            folder,
            steps,
            vocos_steps,
            hours,
            vocab,
            arch,
            vocos_arch,
            ema,
            vocos,
            histories,
            warm,
            vocos_warm,
            vocos_corpus,
        )

    def check_matches(self, vocab: list[str], arch: dict[str, Any], vocos_arch: dict[str, Any]) -> None:
        problems = []
        if self.vocab != vocab:
            problems.append(f"its vocab ({len(self.vocab)} tokens) is not the corpus' ({len(vocab)})")
        if self.arch != arch:
            theirs = arch_flags(self.arch)
            hint = f" (pass {theirs} to continue it)" if theirs else ""
            problems.append(f"its DiT arch {self.arch} is not the recipe's {arch}{hint}")
        if self.vocos_arch != vocos_arch:
            problems.append(f"its Vocos arch {self.vocos_arch} is not the recipe's {vocos_arch}")
        if problems:
            raise ValueError(f"--train-from {self.folder}: {'; '.join(problems)}; train from scratch instead")

    def cfm_state(self) -> dict[str, torch.Tensor]:
        """The EMA transformer as a CFM state dict (the mel extractor has no weights)."""
        return {k[len("ema_model.") :]: v.clone() for k, v in self.ema_transformer.items()}


def seed_train_dir(train_dir: Path, release: Release, f5: Any, vocos: Any) -> bool:
    """Give empty trainers `f5` (F5Trainer) and `vocos` (VocosTrainer) the release's weights and steps.

    Returns False (and touches nothing) when `train_dir` already holds a state: a run in progress is
    always continued from its own, complete state.
    """
    if (train_dir / "f5_state.pt").exists() or (train_dir / "vocos_state.pt").exists():
        return False
    state = release.cfm_state()
    missing, unexpected = f5.cfm.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("mel_spec.") for k in missing):
        raise ValueError(f"--train-from {release.folder}: weights do not fit the DiT ({missing[:3]} {unexpected[:3]})")
    f5.ema.load_state_dict(f5.cfm.state_dict())
    f5.warm_start(release.steps, release.histories, release.warm_starts)
    vocos.vocos.load_state_dict(release.vocos_state)
    vocos.warm_start(release.vocos_steps, release.vocos_warm_starts, release.vocos_corpus)
    f5.seconds = release.train_cpu_hours * 3600.0  # DiT + Vocos together, as the release records them
    random.seed(f5.opts.seed * 1_000_003 + release.steps)
    f5.save()
    vocos.save()
    with open(train_dir / "f5_log.jsonl", "a", encoding="utf-8") as log:
        note = f"warm start from {release.folder} at step {release.steps}: optimizer moments reset, warmup rerun"
        log.write(json.dumps({"step": release.steps, "note": note}) + "\n")
    return True
