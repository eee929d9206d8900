"""Every kept checkpoint scored: alignment signals and the listening figures, in PyTorch.

The kept EMA snapshots (`f5_ema_<step>.pt`, every `keep_every` steps) and the newest state are each
run through f5-tts' own sampler (NFE 16, sway, seed = item index) and the trained Vocos, on the
held-out speakers and sentences, and scored by the quality instruments. This needs no export: it is
how training progress is followed between releases. Writes reports/train/checkpoints.{md,json}.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from f5build.common import package_hash
from f5build.load import make_vocos, tensors_sha256
from f5build.quality.scoring import ConditionScore, UtteranceScore
from f5build.quality.store import ScoreStore
from f5build.quality.sweep import Listener, eval_items
from f5build.train.corpus import SAMPLE_RATE, Corpus
from f5build.train.signals import alignment_signals, generate, ref_text
from f5build.train.state import load_state
from f5rt.files import atomic_write_bytes, atomic_write_json


@dataclass(frozen=True)
class CheckpointScore:
    step: int
    mel_l1: float
    mel_l1_unrelated: float
    loudness_corr: float
    loudness_corr_unrelated: float
    listening: ConditionScore


def _snapshots(train_dir: Path) -> list[tuple[int, dict[str, torch.Tensor]]]:
    out = []
    for path in sorted(train_dir.glob("f5_ema_*.pt")):
        state = load_state(path, require="ema_model_state_dict")  # snapshots before 2026-12 hold no "step"
        if state is not None:
            out.append((int(path.stem.rsplit("_", 1)[1]), state["ema_model_state_dict"]))
    newest = load_state(train_dir / "f5_state.pt")
    if newest is not None and all(step != int(newest["step"]) for step, _ in out):
        out.append((int(newest["step"]), newest["ema_model_state_dict"]))
    return out


def evaluate_checkpoints(train_dir: Path, corpus: Corpus, out: Path, utts: int = 8) -> Path:
    """Score each kept snapshot on the corpus' held-out (ref, eval) pairs."""
    from f5build.train.f5 import build_cfm

    newest = load_state(train_dir / "f5_state.pt")
    vstate = load_state(train_dir / "vocos_state.pt")
    if newest is None or vstate is None:
        raise FileNotFoundError(f"{train_dir}: no DiT and Vocos training states yet")
    vocos = make_vocos(**vstate["arch"])
    vocos.load_state_dict(vstate["model"])
    vocos.eval()
    cfm = build_cfm(newest["vocab"], newest["arch"])
    cache = out.parent / ".quality-cache"
    listener = Listener(corpus, cache)
    items = eval_items(corpus, utts)
    # a snapshot's listening scores are kept (f5build.quality.store): a rerun scores new snapshots only
    store = ScoreStore.for_run(cache / "scores" / "checkpoints", corpus, items, "base")
    made_with = {
        "vocos": tensors_sha256(vstate["model"]),
        "sampler": package_hash(Path(__file__).parent, ("evaluate.py", "signals.py")),
    }
    rows: list[CheckpointScore] = []
    for step, ema in _snapshots(train_dir):
        model = copy.deepcopy(cfm)
        model.load_state_dict({k[len("ema_model.") :]: v for k, v in ema.items() if k.startswith("ema_model.")})
        model.eval()
        signals = alignment_signals(model, corpus)
        name, made_from = f"step {step}", made_with | {"ema": tensors_sha256(ema)}

        def listen(model: torch.nn.Module = model) -> list[UtteranceScore]:
            scores = []
            for i, (ref, tgt) in enumerate(items):
                gen_frames = int(round(tgt.frames))  # the true length: WER here measures content, not duration
                mel = generate(model, corpus.mel_of(ref), ref_text(ref.text) + tgt.text, gen_frames, 16, seed=i)
                with torch.inference_mode():
                    wave = vocos.decode(torch.from_numpy(mel.T[None]).float())[0].numpy()
                scores.append(listener.score(tgt, np.clip(wave, -1, 1), SAMPLE_RATE))
            return scores

        scores = store.scored(name, made_from, listen)
        listening = ConditionScore.of(f"step {step}", "torch-fp32", 16, "sway", scores)
        rows.append(CheckpointScore(step, signals.mel_l1, signals.mel_l1_unrelated, signals.loudness_corr,
                                    signals.loudness_corr_unrelated, listening))  # fmt: skip
        print(f"checkpoint {step}: {signals.to_dict()} WER {listening.wer:.3f} sim {listening.sim:.3f} "
              f"OVRL {listening.ovrl:.2f}", flush=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Kept checkpoints",
        "",
        "Held-out speakers and sentences, f5-tts' sampler at NFE 16 (sway), the true length, the trained Vocos.",
        "",
        "| step | mel L1 (unrelated) | loudness corr (unrelated) | WER | WER median | lines said | similarity "
        "| verified | OVRL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r.listening
        lines.append(
            f"| {r.step} | {r.mel_l1:.3f} ({r.mel_l1_unrelated:.3f}) | {r.loudness_corr:.3f} "
            f"({r.loudness_corr_unrelated:.3f}) | {s.wer:.3f} | {s.wer_median:.3f} | {s.lines_said} | {s.sim:.3f} "
            f"| {s.verify_rate:.0%} | {s.ovrl:.2f} |"
        )
    atomic_write_bytes(out / "checkpoints.md", ("\n".join(lines) + "\n").encode("utf-8"))
    atomic_write_json(out / "checkpoints.json", [asdict(r) for r in rows])
    return out
