"""Splitting the text to speak into model calls, as f5-tts' infer_process does.

The reference text gets a sentence stop (normalize_ref_text), the chunk size is reference bytes per
second times the seconds left of 22 s (max_chars_for), and chunk_text packs sentences up to it.
"""

from __future__ import annotations

import re

from f5rt.errors import AudioError, TextError
from f5rt.text.checks import _check_text, _nbytes, _positive

MAX_CHARS_HORIZON_S = 22.0  # infer_process sizes chunks so reference + chunk stays near 22 s

# Sentence boundaries of chunk_text: ASCII punctuation needs following whitespace, CJK does not.
_SENTENCE_SPLIT = re.compile(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])")


def normalize_ref_text(text: str) -> str:
    """End the reference text with a sentence stop, as preprocess_ref_audio_text does.

    Idempotent (the result ends with ". " or "。"), so callers may apply it more than once.
    f5-tts transcribes an empty reference text with Whisper; the runtime cannot, so it refuses.
    """
    text = _check_text(text, "reference text")
    if not text.strip():
        raise TextError("reference text is empty (f5rt does not transcribe reference audio)")
    if text.endswith(". ") or text.endswith("。"):
        return text
    return text + (" " if text.endswith(".") else ". ")


def chunk_text(text: str, max_chars: int = 135) -> list[str]:
    """Split `text` into chunks of about `max_chars` UTF-8 bytes, equal to f5-tts' chunk_text.

    Sentences end after ASCII ;:,.!? followed by whitespace, or right after full-width ；：，。！？.
    Sentences are packed greedily; one longer than `max_chars` becomes its own chunk. A sentence
    ending in a 1-byte character gets a trailing space before the next one is appended.
    """
    text = _check_text(text, "text")
    chunks: list[str] = []
    current = ""
    for sentence in _SENTENCE_SPLIT.split(text):
        if not sentence:
            continue
        piece = sentence + " " if _nbytes(sentence[-1]) == 1 else sentence
        if _nbytes(current) + _nbytes(sentence) <= max_chars:
            current += piece
        else:
            if current:
                chunks.append(current.strip())
            current = piece
    if current:
        chunks.append(current.strip())
    return chunks


def max_chars_for(ref_text: str, ref_seconds: float, speed: float = 1.0) -> int:
    """Chunk size of infer_process: reference bytes per second times the seconds left of 22 s.

    `ref_text` is the normalised reference text (what infer_process receives); `ref_seconds` the
    reference duration at its original sample rate. Can be <= 0 for references near 22 s, which
    makes chunk_text put every sentence in its own chunk, as in f5-tts.
    """
    ref_text = _check_text(ref_text, "reference text")
    seconds = _positive(ref_seconds, "reference duration (s)", AudioError)
    speed = _positive(speed, "speed")
    return int(_nbytes(ref_text) / seconds * (MAX_CHARS_HORIZON_S - seconds) * speed)
