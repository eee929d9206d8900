"""Training the embedded F5-TTS: f5-tts' own CFM + DiT, its mel, tokenizer and masking recipe.

The loss is f5-tts' `CFM.forward` unchanged (random 70-100 % infilling span, audio dropped 30 % and
text + audio 20 % of the time for classifier-free guidance, flow-matching MSE on the span), so the
trained weights are an f5-tts checkpoint in every respect. What this module adds is what a 2-core
CPU needs: frame-budget batches with a length curriculum (`batches`), an EMA kept as f5-tts' trainer
keeps it (`ema_model_state_dict` with `ema_model.*` keys), resumable state saved atomically outside
the work tree, and cheap alignment signals on held-out speakers (`signals`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from f5build.train.batches import Curriculum, FrameBatches
from f5build.train.corpus import Corpus
from f5build.train.ctc import CTCAlignment, CTCOptions
from f5build.train.device import on_cpu, resolve_device, step_clock
from f5build.train.signals import ctc_readout
from f5build.train.state import (
    corpus_history_of,
    load_state,
    note_setting,
    save_state,
    trim_log,
    warm_starts_of,
)

# The DiT sizes the recipe trains (`--train-size`). Both keep f5-tts' DiT and depth 6; "wide" doubles the
# width and the heads (6.3 M parameters against 1.6 M). On this corpus it reached the small size's
# alignment signals in under half the steps (docs/training.md), at about 1.5x the CPU time per step.
SIZES: dict[str, dict[str, Any]] = {
    "small": dict(
        dim=128, depth=6, heads=2, dim_head=64, ff_mult=2, text_dim=64, conv_layers=2, text_mask_padding=True
    ),
    "wide": dict(
        dim=256, depth=6, heads=4, dim_head=64, ff_mult=2, text_dim=128, conv_layers=2, text_mask_padding=True
    ),
}
DEFAULT_SIZE = "wide"  # the release's; "small" was the release's size until step 15,000 (docs/training.md)
# f5-tts' DiT option text_embedding_average_upsampling (`--train-average-upsampling`): each character's
# embedding is held over an equal share of the frames (ZipVoice's average upsampling) instead of sitting
# at frames 0..len(text)-1, so the attention starts from a rough alignment instead of discovering one.
UPSAMPLING = "text_embedding_average_upsampling"
DEFAULT_AVERAGE_UPSAMPLING = True


def upsamples(arch: dict[str, Any]) -> bool:
    """Whether a DiT architecture spreads the text by f5-tts' average upsampling (absent: no)."""
    return bool(arch.get(UPSAMPLING, False))


def recipe_arch(size: str, average_upsampling: bool) -> dict[str, Any]:
    """The DiT arguments of a named size, with f5-tts' average upsampling of the text when asked."""
    return {**SIZES[size], UPSAMPLING: True} if average_upsampling else dict(SIZES[size])


def arch_flags(arch: dict[str, Any]) -> str | None:
    """The `f5build train` options that select `arch`, or None for an architecture the recipe does not name."""
    upsampling = upsamples(arch)
    size = next((name for name in SIZES if recipe_arch(name, upsampling) == arch), None)
    if size is None:
        return None
    return f"--train-size {size} " + ("--train-average-upsampling" if upsampling else "--no-train-average-upsampling")


ARCH = recipe_arch(DEFAULT_SIZE, DEFAULT_AVERAGE_UPSAMPLING)  # the recipe's default architecture


MEL = dict(
    n_fft=1024, hop_length=256, win_length=1024, n_mel_channels=100, target_sample_rate=24000, mel_spec_type="vocos"
)


@dataclass(frozen=True)
class F5TrainOptions:
    steps: int = 60000
    lr: float = 5e-4
    warmup: int = 300
    grad_clip: float = 1.0
    ema_beta: float = 0.999
    seed: int = 0
    threads: int = 1
    device: str = "cpu"  # "cuda" trains the same recipe on a GPU (f5build.train.device)
    save_every: int = 250
    keep_every: int = 2500
    signals_every: int = 1000
    curriculum: Curriculum = field(default_factory=Curriculum)
    # training-time alignment aid (f5build.train.ctc): weight 0.1 on the head after block 3. On the embedded
    # model it moved the alignment signals from below chance to above it within 1,000 steps (docs/training.md)
    ctc: CTCOptions = field(default_factory=lambda: CTCOptions(weight=0.1, block=3))
    arch: dict[str, Any] = field(default_factory=lambda: dict(ARCH))


def tokens(text: str) -> list[str]:
    """f5-tts' front-end for one line (pinyin conversion leaves English as characters)."""
    from f5_tts.model.utils import convert_char_to_pinyin

    return list(convert_char_to_pinyin([text])[0])


def make_vocab(corpus: Corpus) -> list[str]:
    """Space first (id 0, also f5-tts' unknown), then every token the training text uses, sorted."""
    seen = {t for u in corpus.utts if u.split in ("phrase", "train") for t in tokens(u.text)}
    seen.discard(" ")
    return [" ", *sorted(seen)]


def build_cfm(vocab: list[str], arch: dict[str, Any]) -> torch.nn.Module:
    from f5_tts.model.backbones.dit import DiT
    from f5_tts.model.cfm import CFM

    dit = DiT(**arch, text_num_embeds=len(vocab), mel_dim=100)
    return CFM(transformer=dit, mel_spec_kwargs=MEL, vocab_char_map={t: i for i, t in enumerate(vocab)})


def ema_state(ema: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
    """The EMA as f5-tts' trainer saves it (ema_pytorch layout): ema_model.* + initted + step."""
    state = {f"ema_model.{k}": v.detach().clone() for k, v in ema.state_dict().items()}
    state["initted"] = torch.tensor(True)
    state["step"] = torch.tensor(step)
    return state


class F5Trainer:
    """One training run; `run_until(step)` resumes from the newest state in `ckpt_dir`."""

    def __init__(self, corpus: Corpus, vocab: list[str], ckpt_dir: Path, opts: F5TrainOptions) -> None:
        self.corpus = corpus
        self.vocab = vocab
        self.ckpt_dir = ckpt_dir
        self.opts = opts
        self.device = resolve_device(opts.device)
        torch.manual_seed(opts.seed)
        self.cfm = build_cfm(vocab, opts.arch).to(self.device)
        self.ema = copy.deepcopy(self.cfm).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.cfm.parameters(), lr=opts.lr, weight_decay=0.01)
        self.char_map = {t: i for i, t in enumerate(vocab)}
        self.ctc: CTCAlignment | None = None
        # the alignment aid's settings and the step each took effect: a resumed run may change them
        # (--train-ctc, --train-ctc-block, --train-ctc-max-time), and the release records every one
        self.ctc_history: list[dict[str, Any]] = []
        self.upsampling_history = [{"from_step": 0, "average_upsampling": upsamples(opts.arch)}]
        # the peak learning rate and the step each took effect: a resumed run may step it down (--train-lr)
        self.lr_history = [{"from_step": 0, "lr": opts.lr}]
        # the batches' frame budget and the step each took effect (--train-batch-frames)
        self.batch_history = [{"from_step": 0, "batch_frames": opts.curriculum.batch_frames}]
        # the corpora it trained on and the step each took effect (a run continued on another corpus)
        self.corpus_history = [{"from_step": 0, "corpus": corpus.identity}]
        if opts.ctc.weight > 0:  # after the EMA copy: the hooks belong to the trained model only
            self.ctc = CTCAlignment(self.cfm, len(vocab), opts.ctc, self.device, opts.lr)
        self.step = 0
        self.warmup_from = 0  # the step the learning-rate warmup starts at (a warm start reruns it)
        self.warm_starts: list[int] = []  # every step the run was seeded from a release at (raw weights = EMA)
        self.seconds = 0.0  # seconds spent in training steps (CPU time; wall time on a GPU), over every resumed run
        self.batches = FrameBatches(corpus.split("phrase") + corpus.split("train"), opts.curriculum, opts.seed)
        self.log_path = ckpt_dir / "f5_log.jsonl"

    @property
    def ctc_from(self) -> int | None:
        """The step the CTC term first joined the loss (None: never)."""
        return int(self.ctc_history[0]["from_step"]) if self.ctc_history else None

    def _note_ctc_settings(self) -> None:
        now = {"weight": self.opts.ctc.weight, "block": self.opts.ctc.block, "max_time": self.opts.ctc.max_time}
        if self.ctc is None:
            now["weight"] = 0.0
            if not self.ctc_history:
                return  # never used: nothing to record
        note_setting(self.ctc_history, self.step, now)

    def lr_at(self, step: int) -> float:
        return self.opts.lr * min(1.0, (step - self.warmup_from + 1) / self.opts.warmup)

    def warm_start(self, step: int, records: dict[str, list[dict[str, Any]]], earlier: Sequence[int] = ()) -> None:
        """Continue at `step` a run whose weights were loaded from its release (f5build.train.warmstart).

        AdamW's moments start at zero, so the warmup runs again from `step`. `records` are the release's
        training records by attribute name (`ctc_history`, `upsampling_history`, `lr_history`,
        `batch_history`, `corpus_history`); one a release lacks keeps this run's default. `earlier`: the steps the
        release itself was warm-started at."""
        self.step = step
        self.warmup_from = step
        self.warm_starts = [*earlier, step]
        self.ctc_history = [dict(e) for e in records.get("ctc_history", self.ctc_history)]
        self.upsampling_history = [dict(e) for e in records.get("upsampling_history", self.upsampling_history)]
        self.lr_history = [dict(e) for e in records.get("lr_history", self.lr_history)]
        self.batch_history = [dict(e) for e in records.get("batch_history", self.batch_history)]
        self.corpus_history = [dict(e) for e in records.get("corpus_history", self.corpus_history)]
        self.note_run_settings()

    def note_run_settings(self) -> None:
        """Record this run's settings on top of the histories it continues (a resumed state's or a
        release's): average upsampling (it changes no weight, only where the text enters), the peak
        learning rate, the batches' frame budget and the corpus, each from the step this run starts at. The CTC
        aid's settings are noted by the first step (`_note_ctc_settings`)."""
        note_setting(self.upsampling_history, self.step, {"average_upsampling": upsamples(self.opts.arch)})
        note_setting(self.lr_history, self.step, {"lr": self.opts.lr})
        note_setting(self.batch_history, self.step, {"batch_frames": self.opts.curriculum.batch_frames})
        note_setting(self.corpus_history, self.step, {"corpus": self.corpus.identity})

    def resume(self) -> bool:
        state = load_state(self.ckpt_dir / "f5_state.pt")
        if state is None:
            return False
        switched = _without_upsampling(state["arch"]) == _without_upsampling(self.opts.arch)
        if state["arch"] != self.opts.arch and not switched:
            theirs, ours = arch_flags(state["arch"]), arch_flags(self.opts.arch)
            raise ValueError(
                f"{self.ckpt_dir}: its training state is for another DiT ({theirs or state['arch']}) than this "
                f"run's ({ours or self.opts.arch}); "
                + (f"pass {theirs} to resume it, " if theirs else "")
                + "pass another --train-dir, or delete it to start over"
            )
        if state["vocab"] != self.vocab:
            raise ValueError(
                f"{self.ckpt_dir}: its training state is for another vocab (another corpus); "
                "pass another --train-dir or delete it to start over"
            )
        self.cfm.load_state_dict(state["model_state_dict"])
        self.ema.load_state_dict(
            {k[len("ema_model.") :]: v for k, v in state["ema_model_state_dict"].items() if k.startswith("ema_model.")}
        )
        self.opt.load_state_dict(state["optimizer_state_dict"])
        self.step = int(state["step"])
        self.warmup_from = int(state.get("warmup_from", 0))
        self.warm_starts = warm_starts_of(state)
        self.seconds = float(state.get("seconds", 0.0))
        self.ctc_history = ctc_history_of(state)
        self.upsampling_history = upsampling_history_of(state)
        self.lr_history = lr_history_of(state)
        self.batch_history = batch_history_of(state)
        self.corpus_history = corpus_history_of(state)
        self.note_run_settings()
        if self.ctc is not None:
            self.ctc.load_state_dict(state)
        random.setstate(state["py_rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return True

    def save(self) -> None:
        state = {
            "model_state_dict": self.cfm.state_dict(),
            "ema_model_state_dict": ema_state(self.ema, self.step),
            "optimizer_state_dict": self.opt.state_dict(),
            "step": self.step,
            "warmup_from": self.warmup_from,
            "warm_starts": self.warm_starts,
            "seconds": self.seconds,
            "vocab": self.vocab,
            "arch": self.opts.arch,
            "options": {k: v for k, v in asdict(self.opts).items() if k != "curriculum"},
            "py_rng": random.getstate(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "device": self.device.type,
            "ctc_history": self.ctc_history,
            "upsampling_history": self.upsampling_history,
            "lr_history": self.lr_history,
            "batch_history": self.batch_history,
            "corpus_history": self.corpus_history,
        }
        if self.ctc is not None:
            state |= self.ctc.state_dict()
        save_state(self.ckpt_dir / "f5_state.pt", state)
        if self.step % self.opts.keep_every == 0:
            save_state(
                self.ckpt_dir / f"f5_ema_{self.step:06d}.pt",
                {"ema_model_state_dict": state["ema_model_state_dict"], "step": self.step},
            )

    def _batch(self, step: int) -> tuple[torch.Tensor, list[list[str]], torch.Tensor]:
        utts = self.batches.batch(step)
        longest = max(u.frames for u in utts)
        mel = torch.zeros(len(utts), longest, 100)
        for i, u in enumerate(utts):
            mel[i, : u.frames] = torch.from_numpy(self.corpus.mel_of(u))
        lens = torch.tensor([u.frames for u in utts])
        return mel.to(self.device), [tokens(u.text) for u in utts], lens.to(self.device)

    def train_step(self) -> dict[str, float]:
        mel, text, lens = self._batch(self.step)
        optimizers = [self.opt] if self.ctc is None else [self.opt, self.ctc.opt]
        for opt in optimizers:
            for g in opt.param_groups:
                g["lr"] = self.lr_at(self.step)
        self.cfm.train()
        loss, _, _ = self.cfm(mel, text=text, lens=lens)
        total, extra = loss, {}
        self._note_ctc_settings()
        if self.ctc is not None:
            ctc = self.ctc.loss([[self.char_map.get(t, 0) for t in row] for row in text], lens)
            if ctc is not None:
                total = loss + self.opts.ctc.weight * ctc
                extra["ctc"] = float(ctc.detach())
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.cfm.parameters(), self.opts.grad_clip)
        if self.ctc is not None:
            self.ctc.step(self.opts.grad_clip)
        self.opt.step()
        with torch.no_grad():
            beta = min(self.opts.ema_beta, (1 + self.step) / (10 + self.step))
            for e, p in zip(self.ema.parameters(), self.cfm.parameters(), strict=False):
                e.lerp_(p, 1 - beta)
        self.step += 1
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(norm),
            "frames": int(lens.sum()),
            "batch": len(lens),
        } | extra

    @contextlib.contextmanager
    def _random_streams_kept(self) -> Iterator[None]:
        """Leave the training's random streams as they were: the held-out signals sample through
        f5-tts' `CFM.sample(seed=...)`, which reseeds torch's global generator (on every device). They
        run after the state is saved, so a run resumed from that state would otherwise draw other
        flow times and noise than the run that went on."""
        cuda = [self.device] if self.device.type == "cuda" else []
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=cuda):
                yield
        finally:
            random.setstate(py_state)

    def run_until(self, steps: int, signals: Any = None, progress: bool = True) -> None:
        from tqdm import tqdm

        torch.set_num_threads(self.opts.threads)
        if self.step == 0 and not self.resume():
            random.seed(self.opts.seed)
        trim_log(self.log_path, self.step)  # a killed run's steps past its state are trained again
        bar = tqdm(total=steps, initial=self.step, desc="f5", disable=not progress, mininterval=10)
        window: list[float] = []
        ctc_window: list[float] = []
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log:
            while self.step < steps:
                t_step = step_clock(self.device)
                rec = self.train_step()
                self.seconds += step_clock(self.device) - t_step
                window.append(rec["loss"])
                if "ctc" in rec:
                    ctc_window.append(rec["ctc"])
                bar.update(1)
                if not math.isfinite(rec["loss"]):
                    raise FloatingPointError(f"loss is {rec['loss']} at step {self.step}; lower --train-lr")
                if self.step % 50 == 0:
                    rec |= {"step": self.step, "loss_avg": float(np.mean(window)), "lr": self.lr_at(self.step)}
                    rec |= {"cap": self.batches.curriculum.cap(self.step), "sec": round(self.seconds, 1)}
                    post = {"loss": f"{rec['loss_avg']:.3f}"}
                    if ctc_window:
                        rec["ctc_avg"] = float(np.mean(ctc_window))
                        post["ctc"] = f"{rec['ctc_avg']:.2f}"
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    bar.set_postfix(post)
                    window, ctc_window = [], []
                if self.step % self.opts.save_every == 0 or self.step == steps:
                    self.save()
                if signals is not None and self.step % self.opts.signals_every == 0:
                    with self._random_streams_kept():
                        out = signals(on_cpu(self.ema), self.step)
                        if self.ctc is not None:  # what the head reads, at flow time 0 and 0.9 (f5build.train.signals)
                            out |= ctc_readout(self.cfm, self.ctc, self.corpus, self.char_map)
                    log.write(json.dumps({"step": self.step, "signals": out}) + "\n")
                    log.flush()
        bar.close()


def _without_upsampling(arch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arch.items() if k != UPSAMPLING}


def upsampling_history_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    """A training state's record of f5-tts' average upsampling: each setting and the step it took effect
    (a state from before the record held one setting, its arch's, from step 0)."""
    if "upsampling_history" in state:
        return [dict(entry) for entry in state["upsampling_history"]]
    return [{"from_step": 0, "average_upsampling": upsamples(state["arch"])}]


def lr_history_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    """A training state's record of the peak learning rate: each value and the step it took effect (a state
    from before the record ran at its options' rate from step 0)."""
    if "lr_history" in state:
        return [dict(entry) for entry in state["lr_history"]]
    return [{"from_step": 0, "lr": float(state["options"]["lr"])}]


def batch_history_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    """A training state's record of the batches' frame budget: each value and the step it took effect (a
    state from before the record ran at the recipe's budget from step 0)."""
    if "batch_history" in state:
        return [dict(entry) for entry in state["batch_history"]]
    return [{"from_step": 0, "batch_frames": Curriculum().batch_frames}]


def ctc_history_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    """A training state's record of the CTC aid; a state from before the record kept only the step the
    aid joined (`ctc_from`) and the options of its last run."""
    if "ctc_history" in state:
        return [dict(entry) for entry in state["ctc_history"]]
    if state.get("ctc_from") is None:
        return []
    ctc = state["options"]["ctc"]
    entry = {"weight": ctc["weight"], "block": ctc["block"], "max_time": ctc.get("max_time", 1.0)}
    return [{"from_step": int(state["ctc_from"]), **entry}]
