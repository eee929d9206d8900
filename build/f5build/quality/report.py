"""reports/<name>/quality.{md,json,png}: ceilings, every condition, gates, the chat-reader default."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from f5build.quality.gates import GateVerdict
from f5build.quality.scoring import SAID_WER, ConditionScore, UtteranceScore
from f5rt.files import atomic_path, atomic_write_bytes, atomic_write_json

HEAD = (
    f"| condition | utts | WER | WER median | lines said (WER ≤ {SAID_WER:g}) | similarity | margin over other voices "
    "| verified (95 % interval) | OVRL | SIG | BAK | P.808 |"
)
RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|"


def _row(s: ConditionScore) -> str:
    return (
        f"| {s.name} | {s.utterances} | {s.wer:.3f} | {s.wer_median:.3f} | {s.lines_said} | {s.sim:.3f} "
        f"| {s.sim_margin:+.3f} | {s.verified_label} | {s.ovrl:.2f} | {s.sig:.2f} | {s.bak:.2f} | {s.p808:.2f} |"
    )


@dataclass(frozen=True)
class ChatDefault:
    """The chat reader's default condition and the criterion that chose it."""

    score: ConditionScore
    by_wer: bool  # False: no candidate says its text, and similarity chose

    @property
    def reason(self) -> str:
        if self.by_wer:
            return "the lowest WER"
        return f"no candidate says its text yet (every WER above {SAID_WER:g}), so the highest speaker similarity"


def choose_default(results: Sequence[ConditionScore], nfe_range: tuple[int, int] = (6, 8)) -> ChatDefault | None:
    """The chat reader's default: an FP32 condition with NFE in range, at the schedule the service runs at
    that NFE (`served_schedule`: EPSS where f5-tts has a table, else sway; the service has no other), over
    every guidance strength swept, so `f5rt serve --nfe N --cfg C` runs exactly what was measured.

    The one with the lowest WER (ties: fewer steps, then the higher OVRL). Where no candidate says its
    text (every WER above SAID_WER), WER compares Whisper's hallucinations on babble, so the listener's
    next criterion decides: the highest speaker similarity (ties: fewer steps)."""
    from f5build.quality.sweep import served_schedule

    lo, hi = nfe_range
    pool = [r for r in results if r.precision == "fp32" and lo <= r.nfe <= hi and r.schedule == served_schedule(r.nfe)]
    if not pool:
        return None
    if any(r.wer <= SAID_WER for r in pool):
        return ChatDefault(min(pool, key=lambda r: (round(r.wer, 3), r.nfe, -r.ovrl)), by_wer=True)
    return ChatDefault(min(pool, key=lambda r: (-round(r.sim, 3), r.nfe, -r.ovrl)), by_wer=False)


def _plot(results: Sequence[ConditionScore], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for (metric, title), ax in zip(
        (("wer", "word error rate"), ("sim", "speaker similarity"), ("ovrl", "DNSMOS OVRL")), axes, strict=False
    ):
        for precision, schedule, cfg in sorted({(r.precision, r.schedule, r.cfg) for r in results if r.nfe > 0}):
            rows = sorted((r for r in results if (r.precision, r.schedule, r.cfg) == (precision, schedule, cfg)),
                          key=lambda r: r.nfe)  # fmt: skip
            ax.plot([r.nfe for r in rows], [getattr(r, metric) for r in rows], "-o" if schedule == "sway" else "--s",
                    label=f"{precision} {schedule} cfg {cfg:g}")  # fmt: skip
        for r in results:
            if r.nfe == 0:
                ax.axhline(getattr(r, metric), color="grey", linestyle=":", linewidth=1)
        ax.set(title=title, xlabel="NFE", xscale="log")
        nfes = sorted({r.nfe for r in results if r.nfe > 0})
        ax.set_xticks(nfes, [str(n) for n in nfes])  # the NFEs swept, not powers of ten
        ax.minorticks_off()
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def write_quality_report(
    out: Path,
    model: str,
    ceilings: Sequence[ConditionScore],
    results: Sequence[ConditionScore],
    verdicts: Sequence[GateVerdict],
    details: dict[str, list[UtteranceScore]],
    meta: dict[str, Any],
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    chosen = choose_default(results)
    passed = all(v.passed for v in verdicts)
    lines = [
        f"# Listening figures: {model}",
        "",
        f"{'All quality gates passed' if passed else 'QUALITY GATES FAILED'} ({len(verdicts)} checked). "
        f"ASR: Whisper {meta.get('asr')}; similarity: resemblyzer; naturalness: DNSMOS (speechmos).",
        "",
        "## Ceilings",
        "",
        HEAD,
        RULE,
        *(_row(c) for c in ceilings),
        "",
        "## Conditions",
        "",
        HEAD,
        RULE,
        *(_row(r) for r in results),
        "",
        "![quality vs NFE](quality.png)",
        "",
        "## Gates (each precision vs FP32 at the same NFE, schedule, guidance and seeds)",
        "",
        *(
            f"- {'pass' if v.passed else 'FAIL'} {v.condition}"
            + (f": {'; '.join(v.failures)}" if v.failures else "")
            + (f" ({'; '.join(v.notes)})" if v.notes else "")
            for v in verdicts
        ),  # fmt: skip
        "",
    ]
    if chosen is not None:
        default = chosen.score
        lines += [
            "## Chat-reader default",
            "",
            f"`f5rt serve --nfe {default.nfe} --cfg {default.cfg:g}` ({default.schedule} at NFE {default.nfe}): "
            f"WER {default.wer:.3f}, similarity {default.sim:.3f}, verified {default.verified_label}, OVRL "
            f"{default.ovrl:.2f}. Of the FP32 conditions at NFE 6-8 at the schedule the service runs: "
            f"{chosen.reason}.",
            "",
        ]
    atomic_write_bytes(out / "quality.md", ("\n".join(lines) + "\n").encode("utf-8"))
    atomic_write_json(
        out / "quality.json",
        {
            "model": model,
            "meta": meta,
            "passed": passed,
            "ceilings": [c.to_dict() for c in ceilings],
            "conditions": [r.to_dict() for r in results],
            "gates": [asdict(v) for v in verdicts],
            "default": None
            if chosen is None
            else chosen.score.to_dict() | {"chosen_by": "wer" if chosen.by_wer else "similarity"},
            "utterances": {k: [asdict(s) for s in v] for k, v in details.items()},
        },
    )
    if results:
        _plot([*ceilings, *results], out / "quality.png")
    return out
