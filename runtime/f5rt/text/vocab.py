"""The model's vocabulary: vocab.txt read as f5-tts' get_tokenizer does, tokens mapped to ids."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np

from f5rt.errors import ManifestError


def load_vocab(path: str | PathLike[str]) -> dict[str, int]:
    """Read vocab.txt the way f5-tts' get_tokenizer(path, "custom") does.

    Token = each line minus its last character (the newline; text mode, so "\\r\\n" counts as one),
    id = line number. A later duplicate overwrites the earlier id, as in f5-tts' dict build.
    """
    vocab: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                vocab[line[:-1]] = i
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read vocab file {path}: {e}") from None
    if not vocab:
        raise ManifestError(f"vocab file {path} is empty")
    return vocab


def tokens_to_ids(tokens: Sequence[str], vocab: dict[str, int]) -> np.ndarray:
    """Map tokens to ids as list_str_to_idx does: unknown tokens become 0 (the space slot)."""
    return np.asarray([vocab.get(t, 0) for t in tokens], dtype=np.int32).reshape(-1)
