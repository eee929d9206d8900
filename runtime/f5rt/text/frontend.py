"""TextFrontend: one request's text -> token ids -> chunk plan, without a model.

Chunks come from f5rt.text.chunking, ids from f5rt.text.pinyin and the vocabulary; each chunk is
then sized with f5-tts' duration heuristic (reference frames per reference byte times generated
bytes, or a fixed duration split by byte weight) within CFM.sample's bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np

from f5rt.audio.mel import HOP_LENGTH, SAMPLE_RATE
from f5rt.errors import ManifestError, TextError
from f5rt.text.checks import _check_text, _nbytes, _positive, _ref_samples
from f5rt.text.chunking import chunk_text, max_chars_for, normalize_ref_text
from f5rt.text.pinyin import convert_char_to_pinyin
from f5rt.text.vocab import load_vocab, tokens_to_ids

# f5-tts' inference constants (infer/utils_infer.py, model/cfm.py); the mel's own come from f5rt.audio.mel.
CROSS_FADE_S = 0.15
MAX_FRAMES = 65536  # CFM.sample(max_duration=...) default: the duration is clamped to it
SHORT_TEXT_BYTES = 10  # generated chunks shorter than this (UTF-8 bytes) are spoken at speed 0.3
SHORT_TEXT_SPEED = 0.3


@dataclass(frozen=True, eq=False)
class ChunkPlan:
    """One model call: the chunk's text, the ids of reference + chunk, and the frame counts.

    `frames` is the total mel length the sampler integrates (reference + generated), after
    CFM.sample's bounds; `ref_frames` (= ref_samples // hop) is where the generated part starts,
    i.e. where f5-tts cuts the sampled mel before vocoding. `ids` is read-only.
    """

    text: str
    ids: np.ndarray = field(repr=False)
    frames: int
    ref_frames: int

    @property
    def gen_frames(self) -> int:
        """Mel frames that are vocoded for this chunk."""
        return self.frames - self.ref_frames


class TextFrontend:
    """The per-request text path of f5-tts' infer_process / infer_batch_process, without a model."""

    def __init__(
        self,
        vocab: dict[str, int],
        hop_length: int = HOP_LENGTH,
        sample_rate: int = SAMPLE_RATE,
        cross_fade_s: float = CROSS_FADE_S,
    ) -> None:
        if not vocab:
            raise ManifestError("vocab is empty")
        self.vocab = vocab
        self.hop_length = int(hop_length)
        self.sample_rate = int(sample_rate)
        self.cross_fade_s = float(cross_fade_s)

    @classmethod
    def from_file(cls, vocab_path: str | PathLike[str], **kwargs: Any) -> TextFrontend:
        """A front-end over the vocab.txt shipped with the artifacts (kwargs as __init__)."""
        return cls(load_vocab(vocab_path), **kwargs)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int32) of one text, as the model sees it."""
        return tokens_to_ids(convert_char_to_pinyin([text])[0], self.vocab)

    def _fix_durations(self, chunks: list[str], ref_samples: int, fix_duration: float | None) -> list[float | None]:
        """Per-chunk fixed durations: f5-tts splits a total over chunks by byte weight.

        Each chunk gets the reference seconds plus its share of the generated seconds; the
        cross-fade overlaps are added to the shared part since they are lost when joining.
        """
        if fix_duration is None or len(chunks) < 2:
            return [fix_duration] * len(chunks)
        ref_sec = (ref_samples // self.hop_length) * self.hop_length / self.sample_rate
        weights = [_nbytes(c) for c in chunks]
        total = sum(weights)
        allocatable = fix_duration - ref_sec + self.cross_fade_s * (len(chunks) - 1)
        return [ref_sec + allocatable * w / total for w in weights]

    def plan(
        self,
        ref_text: str,
        ref_samples: int,
        gen_text: str,
        speed: float = 1.0,
        fix_duration: float | None = None,
        ref_seconds: float | None = None,
    ) -> list[ChunkPlan]:
        """Chunk `gen_text` and size every chunk exactly as f5-tts' infer_process would.

        `ref_samples` is the reference length at `sample_rate`. `ref_seconds` overrides
        ref_samples / sample_rate for the chunk size only: f5-tts measures it on the reference
        before resampling. `fix_duration` (seconds, reference included) replaces the estimate.
        """
        ref = normalize_ref_text(ref_text)
        gen_text = _check_text(gen_text, "text")
        if not gen_text.strip():
            raise TextError("text to synthesize is empty")
        ref_samples = _ref_samples(ref_samples)
        speed = _positive(speed, "speed")
        seconds = ref_samples / self.sample_rate if ref_seconds is None else ref_seconds

        chunks = chunk_text(gen_text, max_chars_for(ref, seconds, speed))
        return self.plan_chunks(ref, ref_samples, chunks, speed, fix_duration)

    def plan_chunks(
        self,
        ref_text: str,
        ref_samples: int,
        chunks: Sequence[str],
        speed: float = 1.0,
        fix_duration: float | None = None,
    ) -> list[ChunkPlan]:
        """Size already-chunked text as f5-tts' infer_batch_process does (ids, frames per chunk).

        `plan` calls this with f5-tts' own chunking; the synthesizer calls it directly to give a
        stream a short first chunk, or to split a chunk too long for every shape bucket.
        """
        ref = normalize_ref_text(ref_text)
        ref_samples = _ref_samples(ref_samples)
        speed = _positive(speed, "speed")
        if fix_duration is not None:
            fix_duration = _positive(fix_duration, "fix_duration (s)")
        chunks = [_check_text(c, "text chunk") for c in chunks]
        # infer_batch_process: a reference ending in a 1-byte character gets one more space.
        model_ref = ref + " " if _nbytes(ref[-1]) == 1 else ref
        ref_bytes = _nbytes(model_ref)
        ref_frames = ref_samples // self.hop_length
        cond_frames = ref_frames + 1  # mel frames of the reference (center=True STFT)

        plans: list[ChunkPlan] = []
        for chunk, fix_dur in zip(chunks, self._fix_durations(chunks, ref_samples, fix_duration), strict=True):
            ids = self.encode(model_ref + chunk)
            ids.setflags(write=False)
            if fix_dur is not None:
                duration = int(fix_dur * self.sample_rate / self.hop_length)
            else:
                local_speed = SHORT_TEXT_SPEED if _nbytes(chunk) < SHORT_TEXT_BYTES else speed
                duration = ref_frames + int(ref_frames / ref_bytes * _nbytes(chunk) / local_speed)
            # CFM.sample: at least one frame past both the text and the reference, at most MAX_FRAMES.
            frames = min(max(max(len(ids), cond_frames) + 1, duration), MAX_FRAMES)
            plans.append(ChunkPlan(text=chunk, ids=ids, frames=frames, ref_frames=ref_frames))
        return plans
