"""Report writing: reports/accuracy.md, accuracy.json and the PNG plots, each written atomically.

Rendered from the report's JSON form (`AccuracyReport.to_dict()`), the file the README cites and the
tests read, so the markdown, the plots and the JSON always show the same numbers.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from f5build.validate.comparator import bucket_key
from f5build.validate.struct import SEED_FLOOR_LABEL, AccuracyReport
from f5rt.files import atomic_path, atomic_write_bytes, atomic_write_json

REPORT_JSON = "accuracy.json"
REPORT_MD = "accuracy.md"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else ("inf" if f > 0 else "-inf" if f < 0 else None)
    if isinstance(x, np.integer):
        return int(x)
    return x


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.{digits}f}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def _save_png(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plots(report: dict[str, Any], gates: dict[str, Any], outdir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    graphs = report["graphs"]
    if graphs:
        fig, axes = plt.subplots(1, len(graphs), figsize=(6 * len(graphs), 3.8), squeeze=False)
        for ax, (graph, precs) in zip(axes[0], graphs.items(), strict=True):
            buckets = sorted({b for r in precs.values() for b in r["by_bucket"]}, key=bucket_key)
            width = 0.8 / max(1, len(precs))
            for k, (prec, res) in enumerate(precs.items()):
                vals = [min(res["by_bucket"].get(b, {}).get("min_snr_db", np.nan), 120.0) for b in buckets]
                ax.bar(np.arange(len(buckets)) + k * width, vals, width, label=prec)
                bound = ((gates.get("graphs", {}).get(graph, {}) or {}).get(prec) or {}).get("min_snr_db")
                if bound is not None:
                    ax.axhline(bound, ls="--", lw=1, color=f"C{k}")
            ax.set_xticks(np.arange(len(buckets)) + width * (len(precs) - 1) / 2, buckets, rotation=30, fontsize=8)
            ax.set_ylabel("worst SNR vs FP32 (dB)")
            ax.set_title(f"{graph}: error per bucket (dashed: gates)")
            ax.legend(fontsize=8)
        _save_png(fig, outdir / "accuracy_buckets.png")
        made.append("accuracy_buckets.png")
    step = graphs.get("step")
    if step:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        for k, (prec, res) in enumerate(step.items()):
            rows = res["rows"]
            ax.scatter([r["t"] for r in rows], [min(r["snr_db"], 120.0) for r in rows], s=10, alpha=0.5, color=f"C{k}")
            by = sorted(res["by_step"].values(), key=lambda g: g["t"])
            ax.plot(
                [g["t"] for g in by], [min(g["mean_snr_db"], 120.0) for g in by], color=f"C{k}", label=f"{prec} (mean)"
            )
        ax.set_xlabel("t (ODE time of the step)")
        ax.set_ylabel("SNR vs FP32 (dB)")
        ax.set_title("step graph: error along the ODE (held-out samples)")
        ax.legend(fontsize=8)
        _save_png(fig, outdir / "accuracy_timesteps.png")
        made.append("accuracy_timesteps.png")
    rows = report.get("e2e", {}).get("utterances") or []
    if rows:
        series = {p: [r["precisions"][p] for r in rows] for p in rows[0]["precisions"]}
        if all(r.get("seed_floor") for r in rows):
            series[SEED_FLOOR_LABEL] = [r["seed_floor"] for r in rows]
        fig, ax = plt.subplots(figsize=(7, 3.6))
        width = 0.8 / max(1, len(series))
        for k, (label, ms) in enumerate(series.items()):
            vals = [min(m["mel_snr_db"], 120.0) for m in ms]
            ax.bar(np.arange(len(rows)) + k * width, vals, width, label=label)
        ax.set_xticks(np.arange(len(rows)) + width * (len(series) - 1) / 2, [f"{r['voice']}" for r in rows], fontsize=8)
        ax.set_ylabel("mel SNR vs FP32 (dB)")
        ax.set_title("end to end: each precision's audio vs FP32 audio")
        ax.legend(fontsize=8)
        _save_png(fig, outdir / "accuracy_e2e.png")
        made.append("accuracy_e2e.png")
    return made


def markdown(report: dict[str, Any], images: list[str]) -> str:
    L = [f"# Accuracy: `{report['model']}` — reduced precision vs FP32", ""]
    L.append(f"Artifacts `{report['artifacts']}`; {report['date']}; ONNX Runtime CPU (Q/DQ emulated).")
    L.append(f"Result: **{'all gates passed' if report['passed'] else 'FAILED'}**.")
    if report.get("int8_arithmetic"):
        L.append(f"cpu-int8 measured with this processor's INT8 arithmetic: {report['int8_arithmetic']['text']}.")
    L += ["", "## Gates", "", "| gate | value | bound | where | |", "|---|---|---|---|---|"]
    for g in report["gates"]:
        d = 6 if "cosine" in g["gate"] else 4
        L.append(
            f"| `{g['gate']}` | {fmt(g['value'], d)} | {fmt(g['bound'], d)} | {g['where']} | {'✅' if g['passed'] else '❌'} |"
        )
    for graph, precs in report["graphs"].items():
        L += ["", f"## {graph} graph (held-out recorded inputs)", ""]
        for prec, res in precs.items():
            pg = res.get("polygraphy")
            if pg:
                L.append(
                    f"**{prec}**: Polygraphy `compare_accuracy` ({pg['stat']} error, atol {pg['atol']}, rtol "
                    f"{pg['rtol']}): {100 * pg['pass_rate']:.0f}% of {len(res['rows'])} samples pass."
                )
                L.append("")
        L += [
            "| precision | bucket | n | min cosine | min SNR dB | max abs | mean abs | max rel |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for prec, res in precs.items():
            for b, s in res["by_bucket"].items():
                L.append(
                    f"| {prec} | {b} | {s['n']} | {fmt(s['min_cosine'], 6)} | {fmt(s['min_snr_db'])} | "
                    f"{fmt(s['max_abs'])} | {fmt(s['mean_abs'])} | {fmt(s['max_rel'])} |"
                )
        if graph == "step":
            precs_l = list(precs)
            L += ["", "Per timestep (worst sample):", ""]
            L.append("| step | t | " + " | ".join(f"{p} cosine | {p} SNR dB" for p in precs_l) + " |")
            L.append("|---|---|" + "---|---|" * len(precs_l))
            steps = sorted({int(k) for p in precs.values() for k in p["by_step"]})
            for k in steps:
                cells = []
                t = None
                for p in precs_l:
                    s = precs[p]["by_step"].get(str(k))
                    t = t if t is not None else (s or {}).get("t")
                    cells += [fmt(s["min_cosine"], 6), fmt(s["min_snr_db"])] if s else ["–", "–"]
                L.append(f"| {k} | {fmt(t, 3)} | " + " | ".join(cells) + " |")
    e2e = report.get("e2e") or {}
    if e2e.get("utterances"):
        L += ["", f"## End to end (f5rt Synthesizer, NFE {e2e['nfe']}, same seed per utterance)", ""]
        L += [
            "| voice | text | s | precision | mel SNR dB | MCD dB | STOI | PESQ | wave SNR dB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in e2e["utterances"]:
            rows = list(r["precisions"].items())
            if r.get("seed_floor"):
                rows.append((SEED_FLOOR_LABEL, r["seed_floor"]))
            for prec, m in rows:
                L.append(
                    f"| {r['voice']} | {r['text'][:30]} | {r['seconds']:.1f} | {prec} | {fmt(m['mel_snr_db'])} | "
                    f"{fmt(m['mcd_db'])} | {fmt(m['stoi'])} | {fmt(m['pesq'])} | {fmt(m['wave_snr_db'])} |"
                )
        if any(r.get("seed_floor") for r in e2e["utterances"]):
            L += [
                "",
                f"`{SEED_FLOOR_LABEL}`: FP32 at a second seed against FP32, the distance between two equally "
                "valid samples of the line (the scale of the `*_seed_ratio` gates).",
            ]
        measured = [m for r in e2e["utterances"] for m in (*r["precisions"].values(), r.get("seed_floor") or {})]
        notes = sorted({n for m in measured for n in m.get("notes", [])})
        if notes:
            L += ["", "Notes: " + "; ".join(notes)]
    placement = report.get("placement") or {}
    if placement:
        L += [
            "",
            "## Q/DQ placement (quantize stage)",
            "",
            "| graph | Q/DQ pairs | INT8 nodes | FP16 nodes | guarded FP32 |",
            "|---|---|---|---|---|",
        ]
        for rel, p in placement.items():
            q = ", ".join(f"{k} {v}" for k, v in p.get("quantized", {}).items()) or "–"
            L.append(
                f"| {rel} | {p.get('qdq_pairs', 0)} | {q} | {sum(p.get('fp16_nodes', {}).values())} | {sum(p.get('guarded', {}).values())} |"
            )
    for img in images:
        L += ["", f"![{img}]({img})"]
    return "\n".join(L) + "\n"


def write_reports(report: AccuracyReport, gates: dict[str, Any], outdir: Path) -> list[str]:
    """accuracy.json, accuracy.md and the plots into `outdir`; returns the plots' file names."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    images = plots(data, gates, outdir)
    atomic_write_json(outdir / REPORT_JSON, _jsonable(data))
    with atomic_path(outdir / REPORT_MD) as tmp:
        tmp.write_text(markdown(data, images), encoding="utf-8")
    return images
