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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from f5build.train.corpus import Corpus, Utterance


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


def eval_pairs(corpus: Corpus, count: int) -> list[tuple[Utterance, Utterance]]:
    """(reference, target) pairs: held-out speakers' reference line, then one of their eval lines."""
    refs = {u.speaker: u for u in corpus.split("ref")}
    pairs = [(refs[u.speaker], u) for u in corpus.split("eval") if u.speaker in refs]
    return pairs[:count]


def ref_text(text: str) -> str:
    """f5-tts' inference appends a space to a reference text that ends in a one-byte character."""
    return text + " " if len(text[-1].encode("utf-8")) == 1 else text


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


def alignment_signals(cfm: torch.nn.Module, corpus: Corpus, count: int = 8, nfe: int = 16) -> AlignmentSignals:
    pairs = eval_pairs(corpus, count)
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
