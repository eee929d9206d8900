"""The trained weights in f5-tts' released layout, read back by the real-checkpoint path.

    models/<name>/
      model_<steps>.safetensors   EMA DiT weights under `ema_model.transformer.*` (FP32), as released
                                  F5-TTS checkpoints hold them
      vocab.txt                   the tokenizer's vocab, one token per line, space first
      <name>.yaml                 the architecture, in f5-tts' config layout (`model.arch`)
      vocos/config.yaml           the vocoder, in Vocos' own config layout
      vocos/pytorch_model.bin     its state dict (feature extractor buffers included)
      checkpoint.json             steps, training time, corpus identity and every file's sha256

The folder is written beside its target and renamed into place when complete; the previous release
stays until then. `f5build.load` reads it through the same code as a user's checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from f5build.train.corpus import Corpus
from f5build.train.f5 import batch_history_of, ctc_history_of, lr_history_of, upsampling_history_of
from f5build.train.state import corpus_history_of, load_state, staged_folder, warm_starts_of
from f5rt.files import sha256_file

VOCOS_CLASSES = {
    "feature_extractor": "vocos.feature_extractors.MelSpectrogramFeatures",
    "backbone": "vocos.models.VocosBackbone",
    "head": "vocos.heads.ISTFTHead",
}


def vocos_config(arch: dict[str, Any]) -> dict[str, Any]:
    return {
        "feature_extractor": {
            "class_path": VOCOS_CLASSES["feature_extractor"],
            "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
        },
        "backbone": {
            "class_path": VOCOS_CLASSES["backbone"],
            "init_args": {
                "input_channels": 100,
                "dim": arch["dim"],
                "intermediate_dim": arch["intermediate_dim"],
                "num_layers": arch["num_layers"],
            },
        },
        "head": {
            "class_path": VOCOS_CLASSES["head"],
            "init_args": {"dim": arch["dim"], "n_fft": 1024, "hop_length": 256, "padding": arch["padding"]},
        },
    }


def model_yaml(name: str, arch: dict[str, Any]) -> dict[str, Any]:
    """f5-tts' config layout (configs/F5TTS_v1_Base.yaml): what --model-config reads."""
    return {
        "model": {
            "name": name,
            "tokenizer": "custom",
            "backbone": "DiT",
            "arch": dict(arch),
            "mel_spec": {
                "target_sample_rate": 24000,
                "n_mel_channels": 100,
                "hop_length": 256,
                "win_length": 1024,
                "n_fft": 1024,
                "mel_spec_type": "vocos",
            },
            "vocoder": {"is_local": True, "local_path": "vocos"},
        }
    }


def trained(history: list[dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    """The entries of a training record (each with its `from_step`) that some step was trained under: a
    setting noted where the run stopped (a run seeded from a release and exported without a step, a
    Vocos seeded but never trained on) changed no weight. What held from step 0 stays."""
    return [e for e in history if int(e["from_step"]) < steps or int(e["from_step"]) == 0]


def export_release(train_dir: Path, out: Path, corpus: Corpus) -> Path:
    from safetensors.torch import save_file

    f5 = load_state(train_dir / "f5_state.pt")
    vocos = load_state(train_dir / "vocos_state.pt")
    if f5 is None or vocos is None:
        raise FileNotFoundError(f"{train_dir}: no trained DiT and Vocos states yet (run the vocos and f5 parts first)")
    step = int(f5["step"])
    ema = {
        k: v.float().contiguous()
        for k, v in f5["ema_model_state_dict"].items()
        if k.startswith("ema_model.transformer.")
    }
    with staged_folder(out) as tmp:
        save_file(ema, str(tmp / f"model_{step}.safetensors"), metadata={"format": "pt"})
        (tmp / "vocab.txt").write_text("".join(t + "\n" for t in f5["vocab"]), encoding="utf-8")
        (tmp / f"{out.name}.yaml").write_text(yaml.safe_dump(model_yaml(out.name, f5["arch"]), sort_keys=False))
        (tmp / "vocos").mkdir()
        (tmp / "vocos" / "config.yaml").write_text(yaml.safe_dump(vocos_config(vocos["arch"]), sort_keys=False))
        torch.save(vocos["model"], tmp / "vocos" / "pytorch_model.bin")
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        for rel in files:  # safetensors writes 0600: the release is an ordinary, readable folder
            os.chmod(tmp / rel, 0o644)
        vocos_step = int(vocos["step"])
        meta = {
            "name": out.name,
            "steps": step,
            "vocos_steps": vocos_step,
            "train_cpu_hours": round((float(f5.get("seconds", 0)) + float(vocos.get("seconds", 0))) / 3600, 2),
            "train_device": f5.get("device", "cpu"),  # a GPU-trained DiT's seconds are wall seconds
            # the training-time CTC alignment aid (f5build.train.ctc), when used: its head is not released;
            # its settings and the step each took effect
            "train_ctc": trained(ctc_history_of(f5), step) or None,
            # f5-tts' text_embedding_average_upsampling over the run (a resumed run may switch it on)
            "train_average_upsampling": trained(upsampling_history_of(f5), step),
            # the peak learning rate over the run (a resumed run may step it down with --train-lr)
            "train_lr": trained(lr_history_of(f5), step),
            # the batches' frame budget over the run (--train-batch-frames)
            "train_batch_frames": trained(batch_history_of(f5), step),
            # the steps each was seeded from an earlier release at (--train-from): AdamW's moments
            # restarted from zero and the warmup ran again there; the DiT's raw weights became its EMA
            "train_warm_starts": [s for s in warm_starts_of(f5) if s < step],
            "vocos_warm_starts": [s for s in warm_starts_of(vocos) if s < vocos_step],
            # the corpora each trained on (utts.jsonl and speakers.json sha256) and the step each took
            # effect: a run continued on another corpus (--train-from, a new --train-corpus) says so
            "train_corpus": trained(corpus_history_of(f5), step),
            "vocos_corpus": trained(corpus_history_of(vocos), vocos_step),
            "arch": f5["arch"],
            "vocos_arch": vocos["arch"],
            "corpus": json.loads((corpus.root / "corpus.json").read_text())["files"],
            "files": {f: sha256_file(tmp / f) for f in files},
        }
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
