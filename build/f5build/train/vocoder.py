"""Training the embedded Vocos from the `vocos` package's own modules, on f5-tts mels.

The vocoder is trained on exactly the mels the DiT produces (f5-tts' MelSpec, cached in the corpus),
so copy-synthesis through it is the ceiling the generated speech is measured against. Losses: L1
between log-mels of the output and the target (Vocos' own reconstruction loss) and a multi-resolution
STFT loss (spectral convergence + log magnitude at three resolutions), whose overlapping windows
also constrain the phase the ISTFT head predicts. Vocos' GAN discriminators are left out: on a
2-core CPU they would cost about three times the step time; the README says what the vocoder
sounds like without them.

Segments: `frames` consecutive mel frames and the audio between the first and the last frame
centres, ((frames - 1) * hop samples), which is what the ISTFT head with `padding="center"` returns.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from f5build.load import make_vocos
from f5build.train.corpus import HOP, Corpus
from f5build.train.state import corpus_history_of, load_state, note_setting, save_state, trim_log, warm_starts_of

VOCOS_ARCH = dict(dim=192, intermediate_dim=576, num_layers=6, padding="center")
RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
WARMUP = 200  # learning-rate warmup steps


@dataclass(frozen=True)
class VocosTrainOptions:
    steps: int = 40000  # the release's: an hour on one thread (3,000, the first release's, left it buzzy)
    lr: float = 5e-4
    batch: int = 8
    frames: int = 33
    seed: int = 0
    threads: int = 1
    save_every: int = 250
    arch: dict[str, Any] = field(default_factory=lambda: dict(VOCOS_ARCH))


def stft_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss (spectral convergence + log-magnitude L1), averaged."""
    total = y.new_zeros(())
    for n_fft, hop in RESOLUTIONS:
        win = torch.hann_window(n_fft)
        sy = torch.stft(y, n_fft, hop, window=win, return_complex=True).abs().clamp(min=1e-7)
        sx = torch.stft(x, n_fft, hop, window=win, return_complex=True).abs().clamp(min=1e-7)
        # Spectral convergence over the whole batch (as Parallel WaveGAN computes it): per segment it
        # explodes on a near-silent target.
        sc = torch.linalg.norm(sx - sy) / torch.linalg.norm(sx).clamp(min=1e-3)
        total = total + sc + F.l1_loss(sy.log(), sx.log())
    return total / len(RESOLUTIONS)


class VocosTrainer:
    def __init__(self, corpus: Corpus, ckpt_dir: Path, opts: VocosTrainOptions) -> None:
        from f5_tts.model.modules import MelSpec

        self.corpus = corpus
        self.ckpt_dir = ckpt_dir
        self.opts = opts
        torch.manual_seed(opts.seed)
        self.vocos = make_vocos(**opts.arch)
        self.mel = MelSpec(n_fft=1024, hop_length=HOP, win_length=1024, n_mel_channels=100, target_sample_rate=24000)
        params = [*self.vocos.backbone.parameters(), *self.vocos.head.parameters()]
        self.opt = torch.optim.AdamW(params, lr=opts.lr, betas=(0.8, 0.9))
        self.utts = [u for u in corpus.split("phrase") + corpus.split("train") if u.frames > opts.frames]
        self.step = 0
        self.warmup_from = 0  # the step the learning-rate warmup starts at (a warm start reruns it)
        self.warm_starts: list[int] = []  # every step this vocoder was seeded from a release at
        # the corpora it trained on and the step each took effect (f5build.train.state.corpus_history_of)
        self.corpus_history = [{"from_step": 0, "corpus": corpus.identity}]
        self.seconds = 0.0  # CPU seconds spent in training steps, over every resumed run
        self.log_path = ckpt_dir / "vocos_log.jsonl"

    def lr_at(self, step: int) -> float:
        """Cosine decay to 10 % over the run (Vocos' own schedule), after a short warmup.

        A run continued from a release (`--train-from`) starts with AdamW's moments at zero, so its
        first updates would be about lr per weight whatever the gradient: the warmup runs again from
        the step it was seeded at."""
        warm = min(1.0, (step - self.warmup_from + 1) / WARMUP)
        return self.opts.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / self.opts.steps))))

    def warm_start(
        self, step: int, earlier: Sequence[int] = (), corpus_history: Sequence[dict[str, Any]] | None = None
    ) -> None:
        """Continue at `step` a vocoder whose weights were loaded from its release: AdamW's moments
        start at zero, so the warmup runs again from `step` (f5build.train.warmstart). `earlier`: the
        steps the release itself was warm-started at; `corpus_history`: the corpora it trained on
        (None: a release without the record, this run's corpus from step 0)."""
        self.step = step
        self.warmup_from = step
        self.warm_starts = [*earlier, step]
        if corpus_history is not None:
            self.corpus_history = [dict(e) for e in corpus_history]
        note_setting(self.corpus_history, step, {"corpus": self.corpus.identity})

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(self.opts.seed * 1_000_003 + step)
        mels, waves = [], []
        n = self.opts.frames
        for u in rng.sample(self.utts, self.opts.batch):
            a = rng.randrange(u.frames - n)
            mels.append(self.corpus.mel_of(u)[a : a + n])
            w = self.corpus.wave(u)
            seg = w[a * HOP : (a + n - 1) * HOP]
            waves.append(np.pad(seg, (0, (n - 1) * HOP - seg.size)))
        return torch.from_numpy(np.stack(mels)).transpose(1, 2), torch.from_numpy(np.stack(waves))

    def resume(self) -> bool:
        state = load_state(self.ckpt_dir / "vocos_state.pt")
        if state is None:
            return False
        if state["arch"] != self.opts.arch:
            raise ValueError(f"{self.ckpt_dir}: its Vocos state is for another architecture; delete it to start over")
        self.vocos.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.warmup_from = int(state.get("warmup_from", 0))
        self.warm_starts = warm_starts_of(state)
        self.seconds = float(state.get("seconds", 0.0))
        self.corpus_history = corpus_history_of(state)
        note_setting(self.corpus_history, self.step, {"corpus": self.corpus.identity})
        return True

    def save(self) -> None:
        state = {
            "model": self.vocos.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "warmup_from": self.warmup_from,
            "warm_starts": self.warm_starts,
            "corpus_history": self.corpus_history,
            "seconds": self.seconds,
            "arch": self.opts.arch,
            "options": asdict(self.opts),
        }
        save_state(self.ckpt_dir / "vocos_state.pt", state)

    def train_step(self) -> dict[str, float]:
        mel, wave = self._batch(self.step)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        self.vocos.train()
        # Vocos.decode runs under inference_mode: call its parts for gradients.
        out = self.vocos.head(self.vocos.backbone(mel))
        mel_loss = F.l1_loss(self.mel(out), self.mel(wave))
        spec_loss = stft_loss(out, wave)
        loss = mel_loss + spec_loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.vocos.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        return {"loss": loss.item(), "mel_l1": mel_loss.item(), "stft": spec_loss.item()}

    def run_until(self, steps: int, progress: bool = True) -> None:
        from tqdm import tqdm

        torch.set_num_threads(self.opts.threads)
        self.resume()
        trim_log(self.log_path, self.step)
        bar = tqdm(total=steps, initial=self.step, desc="vocos", disable=not progress, mininterval=10)
        acc: dict[str, list[float]] = {}
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log:
            while self.step < steps:
                t_step = time.process_time()
                rec = self.train_step()
                self.seconds += time.process_time() - t_step
                for k, v in rec.items():
                    acc.setdefault(k, []).append(v)
                bar.update(1)
                if self.step % 50 == 0:
                    row = {"step": self.step, **{k: float(np.mean(v)) for k, v in acc.items()}}
                    row["sec"] = round(self.seconds, 1)
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    bar.set_postfix(mel=f"{row['mel_l1']:.3f}")
                    acc = {}
                if self.step % self.opts.save_every == 0 or self.step == steps:
                    self.save()
        bar.close()
