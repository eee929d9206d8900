"""Listening gates: each reduced precision against FP32 at the same NFE, schedule, guidance and seeds.

Read from the `quality` section of config/gates.yaml:

    quality:
      vs_fp32:
        max_wer_increase: 0.02      # absolute word error rate
        max_similarity_drop: 0.02   # cosine similarity to the reference
        max_ovrl_drop: 0.1          # DNSMOS OVRL
        wer_gated_below: 0.5        # the WER gate applies where FP32's WER is at most this

Why the last key: a model that does not yet say its text makes babble, and Whisper's transcript of
babble is chaotic (greedy decoding on a knife edge: one utterance falls into a repetition loop and
the condition's mean WER jumps from 1.2 to 8 between two graphs whose audio agrees to 120 dB). A WER
difference there measures Whisper, not the precision. Where FP32's WER is above the bound, the
verdict says the WER gate was not applied and why; similarity and DNSMOS are still gated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from f5build.quality.scoring import ConditionScore

KEYS = ("max_wer_increase", "max_similarity_drop", "max_ovrl_drop", "wer_gated_below")


@dataclass(frozen=True)
class QualityGates:
    max_wer_increase: float = 0.02
    max_similarity_drop: float = 0.02
    max_ovrl_drop: float = 0.1
    wer_gated_below: float = 0.5

    @classmethod
    def load(cls, path: Path) -> QualityGates:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        section = ((data or {}).get("quality") or {}).get("vs_fp32")
        if section is None:
            return cls()
        if not isinstance(section, dict):
            raise ValueError(f"{path}: quality.vs_fp32 must be a mapping of {', '.join(KEYS)}")
        unknown = sorted(set(section) - set(KEYS))
        if unknown:
            raise ValueError(f"{path}: quality.vs_fp32 has unknown key(s) {unknown}; known: {', '.join(KEYS)}")
        values = {}
        for key, value in section.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{path}: quality.vs_fp32.{key} must be a number >= 0, got {value!r}")
            values[key] = float(value)
        return cls(**values)


@dataclass(frozen=True)
class GateVerdict:
    condition: str
    reference: str
    passed: bool
    failures: tuple[str, ...]
    notes: tuple[str, ...] = ()  # checks not applied, and why


def check(results: Sequence[ConditionScore], gates: QualityGates) -> list[GateVerdict]:
    """A verdict for every non-FP32 condition that has an FP32 twin (same NFE, schedule and guidance)."""
    fp32 = {(r.nfe, r.schedule, r.cfg): r for r in results if r.precision == "fp32" and r.nfe > 0}
    verdicts = []
    for r in results:
        ref = fp32.get((r.nfe, r.schedule, r.cfg))
        if r.precision in ("fp32", "-") or ref is None:
            continue
        fails, notes = [], []
        if ref.wer > gates.wer_gated_below:
            notes.append(
                f"WER not gated: FP32's WER {ref.wer:.3f} is above {gates.wer_gated_below} (it does not say "
                f"the text yet; Whisper on babble is chaotic); this condition's WER {r.wer:.3f}"
            )
        elif r.wer - ref.wer > gates.max_wer_increase:
            fails.append(f"WER {r.wer:.3f} vs FP32 {ref.wer:.3f} (+{r.wer - ref.wer:.3f} > {gates.max_wer_increase})")
        if ref.sim - r.sim > gates.max_similarity_drop:
            fails.append(
                f"similarity {r.sim:.3f} vs FP32 {ref.sim:.3f} (-{ref.sim - r.sim:.3f} > {gates.max_similarity_drop})"
            )
        if ref.ovrl - r.ovrl > gates.max_ovrl_drop:
            fails.append(f"OVRL {r.ovrl:.2f} vs FP32 {ref.ovrl:.2f} (-{ref.ovrl - r.ovrl:.2f} > {gates.max_ovrl_drop})")
        verdicts.append(GateVerdict(r.name, ref.name, not fails, tuple(fails), tuple(notes)))
    return verdicts
