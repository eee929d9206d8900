"""Training report: loss curves and alignment signals -> reports/train/{train.md,train.json,loss.png}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from f5rt.files import atomic_path, atomic_write_bytes, atomic_write_json


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_training_report(train_dir: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f5 = _rows(train_dir / "f5_log.jsonl")
    vocos = _rows(train_dir / "vocos_log.jsonl")
    losses = [r for r in f5 if "loss_avg" in r]
    signals = [{"step": r["step"], **r["signals"]} for r in f5 if "signals" in r]
    out.mkdir(parents=True, exist_ok=True)
    readout = [s for s in signals if "ctc_cer_t0" in s]  # the CTC head's reading, when the aid is on
    # how much the DiT uses its text (f5build.train.textuse), in logs written since it joined the signals
    uses = [s for s in signals if "text_gain_t0.1" in s]
    panels = 3 + bool(readout) + bool(uses)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    axes[0].plot([r["step"] for r in losses], [r["loss_avg"] for r in losses])
    axes[0].set(title="DiT flow-matching loss", xlabel="step", yscale="log")
    axes[1].plot([r["step"] for r in vocos], [r["mel_l1"] for r in vocos], label="mel L1")
    axes[1].plot([r["step"] for r in vocos], [r["stft"] for r in vocos], label="MR-STFT")
    axes[1].set(title="Vocos losses", xlabel="step")
    axes[1].legend()
    for key, style in (("loudness_corr", "-"), ("loudness_corr_unrelated", "--")):
        axes[2].plot([s["step"] for s in signals], [s[key] for s in signals], style, label=key)
    axes[2].set(title="alignment: loudness contour vs truth", xlabel="step")
    axes[2].legend()
    if readout:
        for key, label in (("ctc_cer_t0", "from noise (t=0)"), ("ctc_cer_t0.9", "from speech (t=0.9)")):
            axes[3].plot([s["step"] for s in readout], [s[key] for s in readout], label=label)
        axes[3].set(title="CTC head's reading: character error rate", xlabel="step", ylim=(0, 1.05))
        axes[3].legend()
    if uses:
        for key, label in (("text_gain_t0.1", "t=0.1"), ("text_gain_t0.2", "t=0.2")):
            axes[-1].plot([s["step"] for s in uses], [s[key] for s in uses], label=label)
        axes[-1].set(title="text use: error with another line's text - own", xlabel="step")
        axes[-1].legend()
    fig.tight_layout()
    with atomic_path(out / "loss.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    atomic_write_json(out / "train.json", {"f5": losses, "vocos": vocos, "signals": signals})
    lines = ["# Training", "", "![losses](loss.png)", ""]
    if losses:
        last = losses[-1]
        lines += [
            f"DiT: step {last['step']}, loss {last['loss_avg']:.4f}, {last['sec'] / 3600:.2f} CPU-hours of training steps.",
            "",
        ]
    if vocos:
        last = vocos[-1]
        lines += [f"Vocos: step {last['step']}, mel L1 {last['mel_l1']:.4f}, {last['sec'] / 3600:.2f} CPU-hours.", ""]
    if signals:
        head = "| step | mel L1 | unrelated | loudness corr | unrelated |"
        head += " CTC CER t=0 | t=0.9 |" if readout else ""
        head += " text gain t=0.1 | t=0.2 |" if uses else ""
        lines += [head, "|---" * (5 + 2 * bool(readout) + 2 * bool(uses)) + "|"]
        for s in signals:
            row = (
                f"| {s['step']} | {s['mel_l1']:.3f} | {s['mel_l1_unrelated']:.3f} | {s['loudness_corr']:.3f} "
                f"| {s['loudness_corr_unrelated']:.3f} |"
            )
            if readout:
                row += "".join(f" {s[k]:.3f} |" if k in s else " - |" for k in ("ctc_cer_t0", "ctc_cer_t0.9"))
            if uses:
                row += "".join(f" {s[k]:.3f} |" if k in s else " - |" for k in ("text_gain_t0.1", "text_gain_t0.2"))
            lines.append(row)
    atomic_write_bytes(out / "train.md", ("\n".join(lines) + "\n").encode("utf-8"))
    return out
