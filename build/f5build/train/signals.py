"""Cheap alignment signals: does the model say *this* text, before any ASR time is spent?

F5-TTS learns which part of the text each stretch of audio speaks implicitly; until it does, its
output sounds like speech in the right voice but says something else. Two figures show alignment
without an ASR model, on held-out speakers and sentences, generated at the true total length (so
frames line up with the ground truth):

- `mel_l1`: mean absolute log-mel difference between generated and true audio of the sentence;
- `loudness_corr`: Pearson correlation of the per-frame loudness contours (word and pause rhythm).

Both are set beside the same figures between the true audio and an *unrelated* utterance of the
same split stretched to the same length (`*_unrelated`): a model that has not aligned scores like
the unrelated audio; an aligned one scores clearly better.

When the training-time CTC head is on (f5build.train.ctc), `ctc_readout` asks it directly: its
character error rate reading the held-out line's target span off the DiT's hidden states at flow
time 0 (pure noise: only the text and the reference can say where each character goes, which is
what sampling needs) and at 0.9 (the speech is in x_t: an ASR task, the shortcut the head can take
instead). Low at 0.9 and near 1 at 0 means the lower blocks recognise speech but do not yet place
the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from f5build.train.corpus import Corpus, Utterance

if TYPE_CHECKING:
    from f5build.train.ctc import CTCAlignment


@dataclass(frozen=True)
class AlignmentSignals:
    items: int
    mel_l1: float
    mel_l1_unrelated: float
    loudness_corr: float
    loudness_corr_unrelated: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def loudness(mel: np.ndarray) -> np.ndarray:
    """Per-frame loudness in dB-like units from a (frames, 100) log-mel."""
    return np.log(np.exp(mel).sum(axis=1) + 1e-5)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-8 or b.std() < 1e-8:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _stretch(mel: np.ndarray, frames: int) -> np.ndarray:
    idx = np.linspace(0, mel.shape[0] - 1, frames).round().astype(int)
    return mel[idx]


def ref_text(text: str) -> str:
    """f5-tts' inference appends a space to a reference text that ends in a one-byte character."""
    return text + " " if len(text[-1].encode("utf-8")) == 1 else text


def token_ids(char_map: Mapping[str, int], text: str) -> list[int]:
    """f5-tts' tokens of `text` as vocabulary indices (0, its filler, for a character outside it)."""
    from f5build.train.f5 import tokens

    return [char_map.get(t, 0) for t in tokens(text)]


@dataclass(frozen=True)
class HeldOutLine:
    """A held-out line laid out as the DiT sees it at inference, for the readers that ask the DiT
    without sampling (`ctc_readout`, f5build.train.textuse)."""

    ref: Utterance
    target: Utterance
    x1: torch.Tensor
    """(1, reference + target frames, 100) true log-mel, on the CPU (noise is drawn there)."""
    cond: torch.Tensor
    """`x1` with the target's frames zeroed: the condition, on the model's device."""
    start: int
    """The target's first frame."""

    def text_ids(self, char_map: Mapping[str, int], text: str) -> torch.Tensor:
        """(1, tokens) ids of the reference's text followed by `text`, on the condition's device."""
        return torch.tensor([token_ids(char_map, ref_text(self.ref.text) + text)], device=self.cond.device)


def held_out_lines(corpus: Corpus, count: int, device: torch.device) -> list[HeldOutLine]:
    """The first `count` held-out lines (fewer where the set is smaller), each after its speaker's
    reference line."""
    lines = []
    for ref, tgt in corpus.held_out_pairs()[:count]:
        ref_mel = corpus.mel_of(ref)
        x1 = torch.from_numpy(np.concatenate([ref_mel, corpus.mel_of(tgt)]))[None].float()
        cond = x1.clone()
        cond[:, ref_mel.shape[0] :] = 0
        lines.append(HeldOutLine(ref, tgt, x1, cond.to(device), ref_mel.shape[0]))
    return lines


@torch.no_grad()
def generate(cfm: torch.nn.Module, ref_mel: np.ndarray, text: str, frames: int, nfe: int, seed: int) -> np.ndarray:
    """f5-tts' own sampler (Euler, sway -1, CFG 2): the generated part's (frames, 100) log-mel."""
    from f5build.train.f5 import tokens

    cond = torch.from_numpy(ref_mel)[None]
    out, _ = cfm.sample(
        cond=cond,
        text=[tokens(text)],
        duration=ref_mel.shape[0] + frames,
        steps=nfe,
        cfg_strength=2.0,
        sway_sampling_coef=-1.0,
        seed=seed,
    )
    return out[0, ref_mel.shape[0] :].float().numpy()


EVAL_NFE = 16  # the checkpoint figures' NFE (f5build.train.evaluate)


def say(cfm: torch.nn.Module, corpus: Corpus, ref: Utterance, tgt: Utterance, seed: int) -> np.ndarray:
    """A held-out line as the checkpoint figures synthesize it: in `ref`'s voice, at NFE `EVAL_NFE`
    and at the line's true length, so that its WER measures what is said, not how long it takes."""
    return generate(cfm, corpus.mel_of(ref), ref_text(ref.text) + tgt.text, int(round(tgt.frames)), EVAL_NFE, seed)


def alignment_signals(cfm: torch.nn.Module, corpus: Corpus, count: int = 8, nfe: int = 16) -> AlignmentSignals:
    pairs = corpus.held_out_pairs()[:count]
    if len(pairs) < 2:
        raise ValueError("the corpus has fewer than two held-out (reference, eval) pairs")
    l1, l1_u, corr, corr_u = [], [], [], []
    cfm.eval()
    for i, (ref, tgt) in enumerate(pairs):
        true = corpus.mel_of(tgt)
        other = _stretch(corpus.mel_of(pairs[(i + 1) % len(pairs)][1]), true.shape[0])
        gen = generate(cfm, corpus.mel_of(ref), ref_text(ref.text) + tgt.text, true.shape[0], nfe, seed=i)
        l1.append(np.abs(gen - true).mean())
        l1_u.append(np.abs(other - true).mean())
        corr.append(_corr(loudness(gen), loudness(true)))
        corr_u.append(_corr(loudness(other), loudness(true)))
    return AlignmentSignals(len(pairs), *(float(np.mean(x)) for x in (l1, l1_u, corr, corr_u)))


READOUT_TIMES = (0.0, 0.9)


def char_error_rate(hyp: list[int], ref: list[int]) -> float:
    """Levenshtein distance over the reference length."""
    row = list(range(len(ref) + 1))
    for i, h in enumerate(hyp, 1):
        diag, row[0] = row[0], i
        for j, r in enumerate(ref, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (h != r))
    return row[-1] / max(1, len(ref))


@torch.no_grad()
def ctc_readout(
    cfm: torch.nn.Module,
    ctc: CTCAlignment,
    corpus: Corpus,
    char_map: Mapping[str, int],
    count: int = 8,
    times: tuple[float, ...] = READOUT_TIMES,
) -> dict[str, float]:
    """`ctc_cer_t<time>`: the CTC head's character error rate on the target span of held-out lines,
    the reference's mel as the condition (as at inference), x_t from a fixed noise seed; the main
    random streams are not touched, so a resumed run stays bitwise."""
    lines = held_out_lines(corpus, count, next(cfm.parameters()).device)
    texts = [line.text_ids(char_map, line.target.text) for line in lines]
    targets = [token_ids(char_map, line.target.text) for line in lines]
    out: dict[str, float] = {}
    for time in times:
        gen = torch.Generator().manual_seed(0)
        cers = []
        for line, text, target in zip(lines, texts, targets, strict=True):
            x = ((1 - time) * torch.randn(line.x1.shape, generator=gen) + time * line.x1).to(line.cond.device)
            ids = ctc.spell(cfm, x, line.cond, text, time, from_frame=line.start)  # the target's frames
            cers.append(char_error_rate(ids, target))
        out[f"ctc_cer_t{time:g}"] = round(float(np.mean(cers)), 4)
    return out
