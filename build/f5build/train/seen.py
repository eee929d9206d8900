"""The held-out sentences in voices the DiT trained on: is what it lacks cloning, or new timbres?

The checkpoint figures clone held-out speakers, whose espeak-ng variants no training speaker uses
(f5build.train.speakers), so a low speaker similarity there may mean the DiT cannot clone at all, or
that it clones the timbres it has heard and not new ones. The two call for different training
(longer training or a larger model against more distinct voices in the corpus), so the evaluate
part can score the same sentences in training speakers' voices too, beside those speakers' own
audio of other training lines as the ceiling, with the same instruments and the same verification
(own reference against every other reference of the set).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from f5build.train.corpus import Corpus, Utterance


@dataclass(frozen=True)
class SeenVoices:
    """The seen-voice set matching the first `len(pairs)` held-out pairs."""

    refs: dict[str, Utterance]
    """Training speaker -> the reference utterance its lines are cloned from."""
    pairs: list[tuple[Utterance, Utterance]]
    """(reference, line): each held-out line, said by the training speaker standing in for its held-out
    speaker. The line keeps its id, text and length; it has no audio in that voice (do not read its
    wave or mel: they are the held-out speaker's)."""
    truth: list[Utterance]
    """The ceiling: as many other training utterances of each stand-in speaker as it has lines, real
    audio in the voice, other sentences."""

    @classmethod
    def of(cls, corpus: Corpus, pairs: list[tuple[Utterance, Utterance]]) -> SeenVoices:
        """Held-out speaker k (in order of first appearance) stands for the k-th of as many training
        speakers taken evenly over the sorted training set; each one's reference is its training
        utterance nearest the held-out references' median length, so both sets clone from prompts of
        about the same length."""
        by_speaker: dict[str, list[Utterance]] = {}
        for u in corpus.split("train"):
            by_speaker.setdefault(u.speaker, []).append(u)
        held = list(dict.fromkeys(ref.speaker for ref, _ in pairs))
        if len(held) < 2:
            raise ValueError("seen voices need held-out lines of at least two held-out speakers")
        train = sorted(by_speaker)
        if len(train) < len(held):
            raise ValueError(f"the corpus has {len(train)} training speakers, {len(held)} held-out ones to stand for")
        stride = len(train) // len(held)
        stand_in = {h: train[i * stride] for i, h in enumerate(held)}
        frames = float(np.median([ref.frames for ref, _ in pairs]))
        refs = {s: min(by_speaker[s], key=lambda u: (abs(u.frames - frames), u.id)) for s in stand_in.values()}
        out_pairs = [(refs[stand_in[ref.speaker]], replace(line, speaker=stand_in[ref.speaker])) for ref, line in pairs]
        truth: list[Utterance] = []
        for h, s in stand_in.items():
            wanted = sum(ref.speaker == h for ref, _ in pairs)
            others = [u for u in by_speaker[s] if u.id != refs[s].id][:wanted]
            if len(others) < wanted:
                raise ValueError(f"training speaker {s} has {len(others)} other lines, {wanted} are needed")
            truth += others
        return cls(refs, out_pairs, truth)
