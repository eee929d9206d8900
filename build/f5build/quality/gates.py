"""Listening gates: each reduced precision against FP32 at the same NFE, schedule and seeds.

Read from the `quality` section of config/gates.yaml:

    quality:
      vs_fp32:
        max_wer_increase: 0.02      # absolute word error rate
        max_similarity_drop: 0.02   # cosine similarity to the reference
        max_ovrl_drop: 0.1          # DNSMOS OVRL
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from f5build.quality.scoring import ConditionScore

KEYS = ("max_wer_increase", "max_similarity_drop", "max_ovrl_drop")


@dataclass(frozen=True)
class QualityGates:
    max_wer_increase: float = 0.02
    max_similarity_drop: float = 0.02
    max_ovrl_drop: float = 0.1

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


def check(results: Sequence[ConditionScore], gates: QualityGates) -> list[GateVerdict]:
    """A verdict for every non-FP32 condition that has an FP32 twin (same NFE and schedule)."""
    fp32 = {(r.nfe, r.schedule): r for r in results if r.precision == "fp32" and r.nfe > 0}
    verdicts = []
    for r in results:
        ref = fp32.get((r.nfe, r.schedule))
        if r.precision in ("fp32", "-") or ref is None:
            continue
        fails = []
        if r.wer - ref.wer > gates.max_wer_increase:
            fails.append(f"WER {r.wer:.3f} vs FP32 {ref.wer:.3f} (+{r.wer - ref.wer:.3f} > {gates.max_wer_increase})")
        if ref.sim - r.sim > gates.max_similarity_drop:
            fails.append(
                f"similarity {r.sim:.3f} vs FP32 {ref.sim:.3f} (-{ref.sim - r.sim:.3f} > {gates.max_similarity_drop})"
            )
        if ref.ovrl - r.ovrl > gates.max_ovrl_drop:
            fails.append(f"OVRL {r.ovrl:.2f} vs FP32 {ref.ovrl:.2f} (-{ref.ovrl - r.ovrl:.2f} > {gates.max_ovrl_drop})")
        verdicts.append(GateVerdict(r.name, ref.name, not fails, tuple(fails)))
    return verdicts
