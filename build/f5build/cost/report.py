"""cost.md / cost.json / cost.png from a CostReport."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from f5build.cost import (
    PYTORCH_NOT_COMPARABLE,
    PYTORCH_NOTE,
    PYTORCH_RTF,
    CostOptions,
    CostReport,
    GraphCost,
    find,
    report_dict,
    step_share,
)
from f5build.cost.orin import class_times
from f5rt.files import atomic_write_bytes, atomic_write_json

CLASSES = ("int8", "fp16", "fp32", "other")
COLORS = {"int8": "#2a9d8f", "fp16": "#e9c46a", "fp32": "#e76f51", "other": "#adb5bd"}

UTIL_WHY = (
    "0.35 of the dense tensor-core peaks is an assumption, not a measurement: large square GEMMs in "
    "TensorRT reach roughly half of the peak on Ampere, but a B=1 DiT step is made of skinny GEMMs "
    "(M = 2 x frames rows, K = N = 1024..2048), per-layer kernels, reformats around Q/DQ and an Orin "
    "that holds its 1.3 GHz GPU clock only in MAXN; a third of peak is the usual planning figure for such "
    "workloads. Bandwidth 0.7 of 204.8 GB/s is what streaming kernels typically reach on LPDDR5."
)


def _g(x: float) -> str:
    return f"{x / 1e9:.3f}"


def _mb(x: float) -> str:
    return f"{x / 1e6:.1f}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _bucket_key(c: GraphCost) -> tuple[int, int, int]:
    return (
        c.frames,
        c.batch,
        ("fp32", "fp16", "int8").index(c.precision) if c.precision in ("fp32", "fp16", "int8") else 9,
    )


def markdown(report: CostReport, opts: CostOptions) -> str:
    d, u, w = report.device, report.utilisation, report.workload
    wname = f"n{w.bucket_frames}_b{w.batch}"
    m = report.model
    lines = [
        f"# Cost model: FLOPs by precision and a Jetson AGX Orin projection ({report.name})",
        "",
        f"Artifacts `{report.artifacts}`; model dim {m.get('dim')}, depth {m.get('depth')}, heads {m.get('heads')}, "
        f"text_dim {m.get('text_dim')}. Counted from the ONNX graphs themselves (no TensorRT, no device); "
        f"{len(report.results)} graph x variant x bucket counts in {report.seconds:.1f} s.",
        "",
        "## Assumptions",
        "",
        f"- Device: {d.name}. Dense peaks: INT8 {d.int8_tops:g} TOPS, FP16 {d.fp16_tflops:g} TFLOP/s, "
        f"TF32 {d.tf32_tflops:g} TFLOP/s, FP32 {d.fp32_tflops:g} TFLOP/s (CUDA cores), DRAM {d.bandwidth_gbs:g} GB/s. "
        f"Source: {d.source}.",
        f"- Utilisation: math {u.math:g}, bandwidth {u.bandwidth:g}. {UTIL_WHY}",
        "- Time model: per op class c (INT8, FP16, FP32 tensor ops; other ops), t_c = max(FLOPs_c / (peak_c x "
        "u_math), bytes_c / (bandwidth x u_bw)); a graph's time is the sum over its classes. FP32 tensor ops run "
        "at the TF32 peak with TF32 on (compile's default), at the FP32 peak with `--trt-no-tf32`; other ops at the "
        "FP32 CUDA-core peak. No launch overhead, no overlap between classes.",
        f"- Request: {w.ref_seconds:g} s reference + {w.gen_seconds:g} s speech = {w.total_frames} frames -> bucket "
        f"{wname}; text encoder once + NFE x step in that bucket + vocoder on the {w.vocoder_frames} generated "
        f"frames. RTF = request time / {w.gen_seconds:g} s.",
        "- Counting: tensor ops (MatMul, Gemm, Conv, ConvTranspose, Einsum) at 2 FLOPs per multiply-add from "
        "shapes inferred at the bucket's input shapes. INT8 = every data input comes from an int8 "
        "DequantizeLinear (the activation directly); FP16 = float16 inputs; else FP32 (= TF32-eligible). Bytes "
        "of tensor ops: weights (1 byte per INT8 weight) + activations read + output written. Other ops: one op "
        "per output element (rough: a LayerNorm or Softmax costs several), 2x output bytes (written, read "
        "back) unless the output's only consumer is a pointwise op (fused chain); shape arithmetic, constants, "
        "weight casts and Q/DQ fused into INT8 ops are left out.",
        "- Attention: a step variant is projected with TensorRT's fused MHA kernel (the score matrices stay on "
        "chip) only when every attention block of its graph passes the fusable-pattern check "
        "(f5build.attention_pattern: MatMul -> key-mask Add -> Softmax -> MatMul in FP16/BF16, head size 16..256 "
        "and a multiple of 8, count = depth); otherwise the scores go through DRAM. TensorRT may still decline to "
        "fuse: the compile stage reads the built engine's layers to confirm (the manifest's `attention`).",
        "",
        "## FP32 share of the step's FLOPs (goal <= 5 %)",
        "",
        f"| step variant | FP32 share at {wname} | over all buckets | INT8 GFLOP | FP16 GFLOP | FP32 (TF32) GFLOP | "
        "of which attention (act x act) | other Gop | INT8 blocked (DQ behind a Cast) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.workload_costs:
        if c.graph != "step":
            continue
        shares = [r.fp32_share for r in report.results if r.graph == "step" and r.precision == c.precision]
        rng = f"{_pct(min(shares))} - {_pct(max(shares))}" if shares else "-"
        k = c.counts
        lines.append(
            f"| {c.precision} | **{_pct(c.fp32_share)}** | {rng} | {_g(k.int8.flops)} | {_g(k.fp16.flops)} | "
            f"{_g(k.fp32.flops)} | {_g(k.fp32.act_act_flops)} | {_g(k.other.flops)} | {len(k.int8_blocked)} |"
        )
    lines += [
        "",
        "## Attention: fused or not (from the graph check)",
        "",
        "| step variant | form checked | fused | blocks in the pattern | reason |",
        "|---|---|---|---|---|",
    ]
    for prec, a in report.attention.items():
        lines.append(
            f"| {prec} | {a.form} | **{'yes' if a.fused else 'no'}** | {a.fusable_blocks} / {a.blocks} | {a.reason} |"
        )
    lines += [
        "",
        "## Projected time per request on the Orin",
        "",
        "RTF at the attention state the check gives (TF32 on, compile's default); then TF32 off (`--trt-no-tf32`) "
        "and the other attention state, as a what-if.",
        "",
        "| deployment | graphs | NFE | attention | text encoder ms | step ms | vocoder ms | request s | RTF | "
        "RTF (TF32 off) | RTF if the other attention state |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report.headline():
        off, other = find(report, p, tf32=False), find(report, p, fused_attention=not p.fused_attention)
        graphs = ", ".join(f"{g} {v}" for g, v in p.graphs.items())
        lines.append(
            f"| {p.deployment} | {graphs} | {p.nfe} | {'fused' if p.fused_attention else 'not fused'} | "
            f"{1e3 * p.text_encoder_s:.2f} | {1e3 * p.step_s:.2f} | {1e3 * p.vocoder_s:.2f} | {p.total_s:.3f} | "
            f"**{p.rtf:.4f}** | {off.rtf:.4f} | {other.rtf:.4f} |"
        )
    lo, hi = PYTORCH_RTF["nfe6_8"]
    if report.comparable_to_pytorch:
        lines += [
            f"| f5-tts PyTorch (seed, measured on the Orin) | - | 7 | - | - | - | - | - | {PYTORCH_RTF['nfe7']} | - | - |",
            f"| f5-tts PyTorch (seed, measured on the Orin) | - | 6-8 | - | - | - | - | - | {lo}-{hi} | - | - |",
            "",
            f"PyTorch figures: {PYTORCH_NOTE}.",
        ]
    else:
        lines += ["", f"No PyTorch baseline row: {PYTORCH_NOT_COMPARABLE}."]
    fp = report.first_piece
    if fp is not None and report.streaming:
        lines += [
            "",
            f"## Streamed time to first audio ({fp.ref_seconds:g} s reference + {fp.gen_seconds:g} s first piece "
            f"= {fp.total_frames} frames -> n{fp.bucket_frames}_b1)",
            "",
            "Text encoder + NFE steps + vocoder of the first piece's frames, at each deployment's checked attention "
            "state, TF32 on; then the step at B = 2 / 4 in the same bucket relative to B = 1 (what batching the "
            "first pieces of a burst of requests buys).",
            "",
            "| deployment | NFE | attention | step ms | TTFA s | B=2 step / B=1 | B=4 step / B=1 |",
            "|---|---|---|---|---|---|---|",
        ]
        scale = {b.deployment: b for b in report.batch_scaling}
        for s_ in report.streaming:
            b = scale[s_.deployment]
            r2 = f"{b.ratio(2):.2f}" if 2 in b.step_s else "-"
            r4 = f"{b.ratio(4):.2f}" if 4 in b.step_s else "-"
            lines.append(
                f"| {s_.deployment} | {s_.nfe} | {'fused' if s_.fused_attention else 'not fused'} | "
                f"{1e3 * s_.step_s:.2f} | **{s_.ttfa_s:.3f}** | {r2} | {r4} |"
            )
    lines += [
        "",
        f"### Step by op class at {wname} (TF32 on)",
        "",
        "| step variant | class | GFLOP | MB moved | compute ms | bandwidth ms | bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in report.workload_costs:
        if c.graph != "step":
            continue
        times = class_times(c.counts, report.device, report.utilisation, True)
        for cls, cc in c.counts.by_class().items():
            if not cc.ops:
                continue
            t = times[cls]
            bound = "compute" if t.compute_s >= t.bandwidth_s else "bandwidth"
            moved = _mb(cc.bytes) + (f" (unfused {_mb(c.counts.other_unfused_bytes)})" if cls == "other" else "")
            attn = c.counts.attention_bytes.get(cls, 0)
            moved += f"; attention scores {_mb(attn)}" if attn else ""
            lines.append(
                f"| {c.precision} | {cls} | {_g(cc.flops)} | {moved} | {1e3 * t.compute_s:.3f} | "
                f"{1e3 * t.bandwidth_s:.3f} | {bound} |"
            )
    lines += ["", "## Every graph, variant and bucket", ""]
    for graph in ("text_encoder", "step", "vocoder"):
        rows = sorted((r for r in report.results if r.graph == graph), key=_bucket_key)
        rows += [r for r in report.workload_costs if r.graph == graph and r.bucket == "workload"]
        if not rows:
            continue
        lines += [
            f"### {graph}",
            "",
            "| bucket | variant | INT8 GFLOP | FP16 GFLOP | FP32 GFLOP | other Gop | MB moved | weights MB | FP32 share | shapes |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            k = r.counts
            name = r.bucket if r.bucket != "workload" else f"F={r.frames} (request)"
            wb = k.int8.weight_bytes + k.fp16.weight_bytes + k.fp32.weight_bytes
            mb = sum(c.bytes for c in k.by_class().values())
            lines.append(
                f"| {name} | {r.precision} | {_g(k.int8.flops)} | {_g(k.fp16.flops)} | {_g(k.fp32.flops)} | "
                f"{_g(k.other.flops)} | {_mb(mb)} | {_mb(wb)} | {_pct(r.fp32_share)} | {r.shape_method} |"
            )
        lines.append("")
    blocked = {(c.graph, c.precision): c.counts.int8_blocked for c in report.workload_costs if c.counts.int8_blocked}
    if blocked:
        lines += ["## INT8 ops TensorRT cannot fuse (an int8 DequantizeLinear reaches them through another op)", ""]
        for (graph, prec), names in blocked.items():
            lines.append(f"- {graph}.{prec}: " + ", ".join(f"`{n}`" for n in names))
        lines.append("")
    if report.notes:
        lines += ["## Notes", "", *(f"- {s}" for s in report.notes), ""]
    return "\n".join(lines) + "\n"


def plot(report: CostReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    steps = [c for c in report.workload_costs if c.graph == "step"]
    names = [c.precision for c in steps]
    bottom = [0.0] * len(steps)
    for cls in CLASSES:
        vals = [c.counts.by_class()[cls].flops / 1e9 for c in steps]
        ax1.bar(names, vals, bottom=bottom, color=COLORS[cls], label=cls.upper() if cls != "other" else "other (ops)")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for i, c in enumerate(steps):
        ax1.text(i, bottom[i], f"FP32 {100 * c.fp32_share:.0f} %", ha="center", va="bottom", fontsize=9)
    w = report.workload
    ax1.set_title(f"step FLOPs by precision, n{w.bucket_frames}_b{w.batch}")
    ax1.set_ylabel("GFLOP per step")
    ax1.legend(fontsize=8)
    deps = list(dict.fromkeys(p.deployment for p in report.projections))
    nfes = sorted({p.nfe for p in report.projections})
    width = 0.8 / max(1, len(nfes))
    for j, nfe in enumerate(nfes):
        xs = [i + (j - (len(nfes) - 1) / 2) * width for i in range(len(deps))]

        def rtf(d: str, tf32: bool, fused: bool, nfe: int = nfe) -> float:
            return next(
                p.rtf
                for p in report.projections
                if p.deployment == d and p.nfe == nfe and p.tf32 == tf32 and p.fused_attention == fused
            )

        checked = [rtf(d, True, report.fused(d)) for d in deps]
        ax2.bar(xs, checked, width * 0.9, label=f"NFE {nfe} (attention as checked, TF32 on)", color=f"C{j}")
        off = [rtf(d, False, report.fused(d)) for d in deps]
        other = [rtf(d, True, not report.fused(d)) for d in deps]
        ax2.scatter(xs, off, marker="_", s=300, color="k", zorder=3, label="TF32 off" if j == 0 else None)
        ax2.scatter(xs, other, marker="v", s=30, color="k", zorder=3, label="other attention state" if j == 0 else None)
    lo, hi = PYTORCH_RTF["nfe6_8"]
    if report.comparable_to_pytorch:
        ax2.axhspan(lo, hi, color="grey", alpha=0.15, label=f"PyTorch NFE 6-8 ({lo}-{hi}, given)")
        ax2.axhline(PYTORCH_RTF["nfe7"], color="grey", ls="--", label=f"PyTorch NFE 7 ({PYTORCH_RTF['nfe7']}, given)")
    else:
        m = report.model
        ax2.text(
            0.02, 0.98,
            f"dim {m.get('dim')} / depth {m.get('depth')} model: the full-size PyTorch baseline\n"
            "(0.212 at NFE 7) is not comparable and not shown",
            transform=ax2.transAxes, va="top", fontsize=7,
        )  # fmt: skip
    ax2.set_xticks(range(len(deps)), deps)
    ax2.set_ylabel("projected RTF")
    u = report.utilisation
    ax2.set_title(
        f"Jetson AGX Orin 64GB, util {u.math:g} math / {u.bandwidth:g} bw, {w.ref_seconds:g}+{w.gen_seconds:g} s"
    )
    ax2.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_reports(report: CostReport, opts: CostOptions) -> list[Path]:
    out = Path(opts.reports)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "cost.md", out / "cost.json", out / "cost.png"]
    atomic_write_bytes(paths[0], markdown(report, opts).encode("utf-8"))
    data: dict[str, Any] = report_dict(report, opts)
    atomic_write_json(paths[1], data)
    atomic_write_bytes(paths[2], plot(report))
    return paths


__all__ = ["markdown", "plot", "step_share", "write_reports"]
