"""Scores of one utterance and their means over a condition: typed results, no dicts.

- word error rate: jiwer's WER between the normalised intended text and the normalised transcript
  (lowercase, punctuation dropped, digits spelled out as Whisper sometimes writes numbers as digits);
- speaker similarity: cosine of the output's embedding with its own reference's, and the highest
  cosine with any *other* held-out speaker's reference; `verified` when its own is the higher, so
  cloning is shown against other voices, not assumed. The verification rate of a few dozen lines
  is a coarse figure (48 lines: a 95 % interval about 28 points wide), so each condition also
  carries its interval (Wilson's) and the mean margin of own over best other similarity, which
  moves continuously where the rate moves by whole lines;
- DNSMOS OVRL / SIG / BAK and P.808.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from f5rt.options import SynthesisOptions

DEFAULT_CFG = SynthesisOptions().cfg  # the runtime's (f5-tts') guidance strength
SAID_WER = 0.5  # a line counts as said (most of its words heard) at this WER or below

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
]
_ONES += ["seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _spell(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + _spell(rest))
    return " ".join(_ONES[int(d)] for d in str(n))


def normalize(text: str) -> str:
    """Lowercase words only: digits spelled out, punctuation and case dropped, spaces collapsed."""
    text = re.sub(r"\d+", lambda m: f" {_spell(int(m.group()))} ", text.lower())
    text = text.replace("ok ", "okay ").replace("'", "")
    return " ".join(re.sub(r"[^a-z]+", " ", text).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        raise ValueError(f"reference text {reference!r} has no words")
    return float(jiwer.wer(ref, hyp)) if hyp else 1.0


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval for a rate of `successes` in `trials` (95 % at z = 1.96): unlike the
    normal approximation it stays inside [0, 1] and is honest at 0 or all successes."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"a rate needs 0 <= successes <= trials and trials > 0, got {successes} of {trials}")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass(frozen=True)
class UtteranceScore:
    """One generated (or ceiling) utterance, scored."""

    id: str
    speaker: str
    text: str
    transcript: str
    wer: float
    sim_own: float
    sim_other: float
    ovrl: float
    sig: float
    bak: float
    p808: float
    seconds: float

    @property
    def verified(self) -> bool:
        return self.sim_own > self.sim_other


@dataclass(frozen=True)
class ConditionScore:
    """Means over the utterances of one condition (a precision at an NFE, schedule and guidance strength,
    or a ceiling)."""

    name: str
    precision: str
    nfe: int
    schedule: str
    utterances: int
    wer: float
    sim: float
    verify_rate: float
    ovrl: float
    sig: float
    bak: float
    p808: float
    cfg: float = DEFAULT_CFG  # classifier-free guidance strength
    # the median line's WER and how many lines have at most SAID_WER: a model that does not say its text
    # yet gets Whisper's hallucinations on babble (WER far above 1), and one such line moves the mean
    wer_median: float = float("nan")
    lines_said: int = 0
    lines_verified: int = 0
    # mean of sim_own - sim_other: above 0, the outputs are nearer their own voices than any other on average
    sim_margin: float = float("nan")

    @property
    def verify_interval(self) -> tuple[float, float]:
        """The verification rate's 95 % interval over this condition's lines (Wilson score interval)."""
        return wilson_interval(self.lines_verified, self.utterances)

    @property
    def verified_label(self) -> str:
        """The rate with its interval, as the reports print it: "54 % (40-67)"."""
        lo, hi = self.verify_interval
        return f"{self.verify_rate:.0%} ({lo * 100:.0f}-{hi * 100:.0f})"

    @classmethod
    def of(
        cls, name: str, precision: str, nfe: int, schedule: str, scores: list[UtteranceScore], cfg: float = DEFAULT_CFG
    ) -> ConditionScore:
        if not scores:
            raise ValueError(f"{name}: no utterances were scored")

        def mean(attr: str) -> float:
            return float(np.mean([getattr(s, attr) for s in scores]))

        verified = sum(s.verified for s in scores)
        wers = [s.wer for s in scores]
        margin = float(np.mean([s.sim_own - s.sim_other for s in scores]))
        return cls(name, precision, nfe, schedule, len(scores), mean("wer"), mean("sim_own"), verified / len(scores),
                   mean("ovrl"), mean("sig"), mean("bak"), mean("p808"), cfg, float(np.median(wers)),
                   sum(w <= SAID_WER for w in wers), verified, margin)  # fmt: skip

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
