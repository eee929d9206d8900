"""The argument checks the text front-end shares, and the UTF-8 byte count f5-tts measures text in.

f5-tts sizes chunks and durations in UTF-8 bytes, so a string must encode (no lone surrogates), and
it divides by speeds and reference seconds, so those must be finite and positive.
"""

from __future__ import annotations

import math

import numpy as np

from f5rt.errors import AudioError, F5RTError, TextError


def _check_text(text: object, what: str) -> str:
    """Reject non-strings and strings UTF-8 cannot encode (lone surrogates): f5-tts counts bytes."""
    if not isinstance(text, str):
        raise TextError(f"{what} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TextError(f"{what} has an invalid character {text[e.start]!r} at index {e.start}") from None
    return text


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _positive(value: object, what: str, error: type[F5RTError] = F5RTError) -> float:
    """A finite number > 0 (bool excluded): f5-tts divides by speed and reference seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise error(f"{what} must be a finite number > 0, got {value!r}")
    return value


def _ref_samples(value: object) -> int:
    """A reference length in samples: an integer > 0 (bool excluded), from which the frames follow."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise AudioError(f"reference audio must have > 0 samples, got {value!r}")
    return int(value)
