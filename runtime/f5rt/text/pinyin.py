"""Tokenisation equal to f5-tts' convert_char_to_pinyin, the one the model was trained on.

jieba words; tone-3 pinyin with tone sandhi for Chinese, raw characters for everything else.
rjieba and pypinyin are imported when first used (pypinyin loads its dictionaries on import).
"""

from __future__ import annotations

from collections.abc import Sequence

from f5rt.errors import TextError
from f5rt.text.checks import _check_text, _nbytes

# The only character substitutions f5-tts applies before segmentation (OOV punctuation).
_TRANSLATE = str.maketrans({";": ",", "\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


def _is_chinese(c: str) -> bool:
    """f5-tts' notion of a Chinese character (Bopomofo .. CJK Unified): it gets a leading space."""
    return "\u3100" <= c <= "\u9fff"


def _pinyin(text: str) -> list[str]:
    # Imported lazily: pypinyin loads its dictionaries on import (about a second).
    from pypinyin import Style, lazy_pinyin

    return list(lazy_pinyin(text, style=Style.TONE3, tone_sandhi=True))


def _tokenize_one(text: str, polyphone: bool) -> list[str]:
    import rjieba

    out: list[str] = []
    for seg in rjieba.cut(text.translate(_TRANSLATE)):
        nbytes = _nbytes(seg)
        if nbytes == len(seg):
            # ASCII only: keep characters; a word longer than one char is separated by a space
            # unless the previous token already is a separator-like character.
            if out and nbytes > 1 and out[-1] not in " :'\"":
                out.append(" ")
            out.extend(seg)
        elif polyphone and nbytes == 3 * len(seg):
            # Only 3-byte characters: pinyin of the whole word, so polyphones and sandhi see context.
            # Indexing by character position is f5-tts' behaviour (pypinyin merges runs of
            # non-Chinese characters into one item, which can misalign or run out).
            word = _pinyin(seg)
            for i, c in enumerate(seg):
                if _is_chinese(c):
                    out.append(" ")
                try:
                    out.append(word[i])
                except IndexError:
                    raise TextError(f"f5-tts' tokenizer cannot handle the segment {seg!r}") from None
        else:
            # Mixed widths: character by character, Chinese ones in isolation.
            for c in seg:
                if ord(c) < 256:
                    out.append(c)
                elif _is_chinese(c):
                    out.append(" ")
                    out.extend(_pinyin(c))
                else:
                    out.append(c)
    return out


def convert_char_to_pinyin(texts: Sequence[str], polyphone: bool = True) -> list[list[str]]:
    """Token lists for `texts`, equal to f5_tts.model.utils.convert_char_to_pinyin."""
    if isinstance(texts, str):
        raise TextError("convert_char_to_pinyin takes a list of str, got a single str")
    return [_tokenize_one(_check_text(t, "text"), polyphone) for t in texts]
