"""Validate: every reduced-precision variant against FP32, per graph, bucket and timestep, and end to end.

Graphs: Polygraphy (`OnnxrtRunner` + `SessionFromOnnx`; `TrtRunner` for the compiled engines where
TensorRT exists) runs FP32 and each variant on held-out inputs recorded by the calibrate stage (real
sampler states from held-out texts and voices, never the calibration set), `Comparator.run` +
`Comparator.compare_accuracy` give Polygraphy's own verdict, and each output is also measured on the
request's real frames: max/mean absolute and relative error, cosine, SNR, grouped per bucket and, for
the step graph, per timestep along the ODE.

End to end: the real runtime (f5rt Synthesizer, ONNX Runtime backend) synthesizes held-out corpus
lines with held-out voices at every precision with the same seed; each precision's audio is compared
with the FP32 audio: mel SNR, mel cepstral distortion, STOI, PESQ (16 kHz) and duration.

Thresholds come from config/gates.yaml. Writes reports/accuracy.md, accuracy.json and PNG plots
(atomically), records a summary in the manifest, and exits 1 naming each gate that failed.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from f5build.cli import ROOT, artifacts_dir
from f5build.common import log, peak_rss_mb, tool_versions
from f5build.metrics import audio_metrics, tensor_errors
from f5build.quantize import RecordedSamples, calibration_file
from f5rt._fs import atomic_path, atomic_write_bytes, atomic_write_json
from f5rt.buckets import BucketTable
from f5rt.manifest import Manifest, load_manifest, update_manifest

GRAPH_METRICS = ("min_cosine", "min_snr_db", "max_max_abs", "max_mean_abs", "min_polygraphy_pass")
E2E_METRICS = ("min_mel_snr_db", "max_mcd_db", "min_stoi", "min_pesq", "max_duration_diff_s")
POLYGRAPHY_DEFAULT = {"atol": 0.05, "rtol": 0.05, "stat": "mean"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("validate (accuracy vs FP32, gated)")
    g.add_argument("--val-gates", type=Path, default=ROOT / "config" / "gates.yaml", help="gate thresholds (YAML)")
    g.add_argument("--val-reports", type=Path, default=ROOT / "reports", help="folder for accuracy.md/.json/plots")
    g.add_argument("--val-precisions", default="", help="comma list (default: every variant in the manifest)")
    g.add_argument("--val-max-samples", type=int, default=0, help="held-out samples per graph (0 = all)")
    g.add_argument("--val-e2e-lines", type=int, default=4, help="held-out corpus lines synthesized end to end")
    g.add_argument("--val-e2e-nfe", type=int, default=32, help="sampler steps of the end-to-end runs")
    g.add_argument("--val-no-e2e", action="store_true", help="skip the end-to-end audio comparison")
    g.add_argument("--val-corpus", type=Path, default=ROOT / "calibration", help="calibration corpus folder")
    g.add_argument("--val-voices", type=Path, help="voices folder (default: <corpus>/voices)")
    g.add_argument(
        "--val-threads", type=int, default=0, help="ONNX Runtime threads of the end-to-end runs (0 = default)"
    )


# -- gates --------------------------------------------------------------------------------------------


def load_gates(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"gates file {path} not found") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'graphs' and 'e2e'")
    for graph, precs in (data.get("graphs") or {}).items():
        for prec, metrics in (precs or {}).items():
            for m in metrics or {}:
                if m not in (*GRAPH_METRICS, "polygraphy"):
                    raise ValueError(f"{path}: graphs.{graph}.{prec}.{m}: unknown metric (known: {GRAPH_METRICS})")
    for prec, metrics in (data.get("e2e") or {}).items():
        for m in metrics or {}:
            if m not in E2E_METRICS:
                raise ValueError(f"{path}: e2e.{prec}.{m}: unknown metric (known: {E2E_METRICS})")
    return data


def _check(name: str, bound: float, value: float | None, where: str) -> dict[str, Any]:
    kind = name.split(".")[-1].split("_", 1)[0]  # min | max
    if value is None or (isinstance(value, float) and math.isnan(value)):
        ok = False
        where = f"{where}; not measurable".lstrip("; ")
    else:
        ok = value >= bound if kind == "min" else value <= bound
    return {"gate": name, "bound": bound, "value": value, "passed": bool(ok), "where": where}


# -- graph comparison ---------------------------------------------------------------------------------


class RecordedLoader:
    """Polygraphy data loader over recorded held-out feeds (iterable of name -> array dicts)."""

    def __init__(self, samples: RecordedSamples, idx: list[int]) -> None:
        self.samples, self.idx = samples, idx

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in self.idx:
            yield self.samples.feed(i)

    def __len__(self) -> int:
        return len(self.idx)


def _runner(path: Path, name: str) -> Any:
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    return OnnxrtRunner(SessionFromOnnx(str(path), providers=["cpu"]), name=name)


def trt_runners(manifest: Manifest, graph: str, precision: str) -> list[tuple[dict[str, Any], Any]]:
    """(profile, TrtRunner) per optimization profile of the compiled engine, where TensorRT exists."""
    from f5rt.backends.trt.backend import unavailable_reason

    if unavailable_reason() is not None:
        return []
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    out = []
    for rel, meta in manifest.files.items():
        if meta.get("kind") == "engine" and meta.get("graph") == graph and meta.get("precision") == precision:
            engine = EngineFromBytes(BytesFromPath(str(manifest.verify(rel))))
            for prof in meta.get("profiles", []):
                out.append((prof, TrtRunner(engine, name=f"trt-{precision}", optimization_profile=int(prof["index"]))))
    return out


def _sample_rows(graph: str, samples: RecordedSamples, idx: list[int], buckets: BucketTable) -> list[dict[str, Any]]:
    rows = []
    for i in idx:
        m = {k: v[i] for k, v in samples.meta.items()}
        frames, batch = int(m.get("frames", 0)), int(m.get("batch", 1))
        if graph == "vocoder":  # vocodes exactly the generated frames: group by the bucket holding them
            n = next((f for f in buckets.frames if f >= frames), buckets.max_frames)
            bucket = f"n{n}_b{batch}"
        else:
            bucket = f"n{frames}_b{batch}"
        row: dict[str, Any] = {"sample": i, "bucket": bucket}
        if "step" in m:
            row.update(step=int(m["step"]), t=float(m["t"]), nfe=int(m["nfe"]))
        rows.append(row)
    return rows


def sample_errors(graph: str, feed: dict[str, np.ndarray], ref: Any, out: Any) -> dict[str, float]:
    """Errors of one call's outputs on the request's real frames (worst output by cosine).

    Step graph: measured on the velocity v = (x_next - x) / dt the DiT + CFG computed, with the state
    x_next's own errors kept as state_*: x_next = x + v / 32 or so, so its error hides behind x and
    would look ~30 dB better than the network really is.
    """
    if graph == "step":
        valid = feed["mask"][..., None]
        x = feed["x"].astype(np.float64)
        dt = feed["dt"].astype(np.float64)[:, None, None]
        v_ref = (np.asarray(ref["x_next"], dtype=np.float64) - x) / dt
        v_out = (np.asarray(out["x_next"], dtype=np.float64) - x) / dt
        errs = tensor_errors(v_ref, v_out, valid)
        state = tensor_errors(ref["x_next"], out["x_next"], valid)
        return {
            **errs,
            "state_cosine": state["cosine"],
            "state_snr_db": state["snr_db"],
            "state_max_abs": state["max_abs"],
        }
    per_output = [tensor_errors(ref[name], out[name]) for name in ref]
    return min(per_output, key=lambda e: e["cosine"] if not math.isnan(e["cosine"]) else -1.0)


def compare_graph(
    manifest: Manifest,
    graph: str,
    precisions: list[str],
    samples: RecordedSamples,
    idx: list[int],
    gates: dict[str, Any],
) -> dict[str, Any]:
    """Polygraphy run of FP32 and each variant on the held-out samples; metrics per sample."""
    from polygraphy.comparator import Comparator, CompareFunc
    from polygraphy.logger import G_LOGGER

    runners = [_runner(manifest.find(graph, "fp32"), "fp32")]
    runners += [_runner(manifest.find(graph, p), p) for p in precisions]
    loader = RecordedLoader(samples, idx)
    t0 = time.perf_counter()
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        results = Comparator.run(runners, data_loader=loader)
    seconds = time.perf_counter() - t0
    if not results:
        raise RuntimeError(f"{graph}: Polygraphy could not run the graphs on the recorded inputs")
    by_name = {name: iters for name, iters in results}
    base_rows = _sample_rows(graph, samples, idx, manifest.buckets)
    out: dict[str, Any] = {}
    for k, prec in enumerate(precisions, start=1):
        pg = {
            **POLYGRAPHY_DEFAULT,
            **((gates.get("graphs", {}).get(graph, {}).get(prec) or {}).get("polygraphy") or {}),
        }
        func = CompareFunc.simple(atol=float(pg["atol"]), rtol=float(pg["rtol"]), check_error_stat=str(pg["stat"]))
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            acc = Comparator.compare_accuracy(results, comparisons=[(0, k)], compare_func=func)
        pass_rate = float(acc[0].percentage()) if len(acc) else float("nan")
        rows = []
        for j, (row, i) in enumerate(zip(base_rows, idx, strict=True)):
            rows.append({**row, **sample_errors(graph, samples.feed(i), by_name["fp32"][j], by_name[prec][j])})
        out[prec] = {
            "rows": rows,
            "polygraphy": {"pass_rate": pass_rate, **pg},
            "by_bucket": _group(rows, "bucket"),
            "by_step": _group(rows, "step") if graph == "step" else {},
            "seconds": round(seconds, 2),
        }
        trt = trt_compare(manifest, graph, prec, samples, idx, base_rows)
        if trt is not None:
            out[f"trt-{prec}"] = trt
    return out


def trt_compare(
    manifest: Manifest,
    graph: str,
    prec: str,
    samples: RecordedSamples,
    idx: list[int],
    base_rows: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """The compiled engine at `prec` against FP32 ONNX Runtime, one Polygraphy run per profile."""
    runners = trt_runners(manifest, graph, prec)
    if not runners:
        return None
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    rows = []
    ref = _runner(manifest.find(graph, "fp32"), "fp32")
    for prof, runner in runners:
        mine = [(r, i) for r, i in zip(base_rows, idx, strict=True) if r["bucket"] == prof.get("bucket")]
        if not mine:
            continue
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            results = Comparator.run([ref, runner], data_loader=RecordedLoader(samples, [i for _, i in mine]))
        its = {name: iters for name, iters in results}
        for j, (row, i) in enumerate(mine):
            rows.append({**row, **sample_errors(graph, samples.feed(i), its["fp32"][j], its[runner.name][j])})
    return {
        "rows": rows,
        "by_bucket": _group(rows, "bucket"),
        "by_step": _group(rows, "step") if graph == "step" else {},
    }


def _group(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if key in r:
            groups[r[key]].append(r)
    out = {}
    for k in sorted(groups, key=lambda x: (str(type(x)), x) if not isinstance(x, str) else (0, _bucket_key(x))):
        rs = groups[k]
        out[str(k)] = {
            "n": len(rs),
            "t": rs[0].get("t"),
            "min_cosine": min(r["cosine"] for r in rs),
            "min_snr_db": min(r["snr_db"] for r in rs),
            "mean_snr_db": float(np.mean([min(r["snr_db"], 300.0) for r in rs])),
            "max_abs": max(r["max_abs"] for r in rs),
            "mean_abs": float(np.mean([r["mean_abs"] for r in rs])),
            "max_rel": max(r["max_rel"] for r in rs),
        }
    return out


def _bucket_key(name: str) -> tuple[int, int]:
    try:
        n, b = name[1:].split("_b")
        return int(n), int(b)
    except ValueError:
        return (0, 0)


def graph_gates(graph: str, prec: str, res: dict[str, Any], gates: dict[str, Any]) -> list[dict[str, Any]]:
    # a TensorRT engine ("trt-int8") is held to its precision's gates
    spec = (gates.get("graphs", {}).get(graph, {}) or {}).get(prec.removeprefix("trt-")) or {}
    checks: list[dict[str, Any]] = []
    rows = res["rows"]
    if not rows:
        return checks

    def where(r: dict[str, Any]) -> str:
        s = f"bucket {r['bucket']}"
        if "step" in r:
            s += f", step {r['step']} (t={r['t']:.3f})"
        return s

    for metric, bound in spec.items():
        if metric == "polygraphy":
            continue
        name = f"{graph}.{prec}.{metric}"
        if metric == "min_polygraphy_pass":
            if "polygraphy" not in res:
                continue
            checks.append(_check(name, float(bound), res["polygraphy"]["pass_rate"], "held-out samples"))
            continue
        field = {"min_cosine": "cosine", "min_snr_db": "snr_db", "max_max_abs": "max_abs", "max_mean_abs": "mean_abs"}[
            metric
        ]
        pick = min if metric.startswith("min") else max
        r = pick(rows, key=lambda x: x[field])
        checks.append(_check(name, float(bound), float(r[field]), where(r)))
    return checks


# -- end to end ------------------------------------------------------------------------------------


def pick_utterances(lines: list[Any], voice_langs: dict[str, str], count: int) -> list[tuple[str, str, str]]:
    """(lang, text, voice id): held-out lines round-robin over the corpus files, voice of the same language."""
    by_file: dict[str, list[Any]] = defaultdict(list)
    for ln in lines:
        if ln.held_out:
            by_file[ln.file].append(ln)
    files = sorted(by_file, key=lambda f: (f.endswith("long.txt"), f))  # paragraphs last: they are slow
    out: list[tuple[str, str, str]] = []
    depth = 0
    voices = sorted(voice_langs)
    while len(out) < count and any(depth < len(v) for v in by_file.values()):
        for f in files:
            if depth < len(by_file[f]) and len(out) < count:
                ln = by_file[f][depth]
                same = [v for v in voices if voice_langs[v] == ln.lang] or voices
                out.append((ln.lang, ln.text, same[len(out) % len(same)]))
        depth += 1
    return out


def end_to_end(
    root: Path,
    precisions: list[str],
    utterances: list[tuple[str, str, str]],
    voices: dict[str, Any],
    nfe: int,
    threads: int,
) -> list[dict[str, Any]]:
    from f5rt.synthesizer import SynthesisOptions, Synthesizer

    audio: dict[str, list[np.ndarray]] = {}
    timing: dict[str, float] = {}
    rate = 24000
    for prec in ["fp32", *precisions]:
        t0 = time.perf_counter()
        with Synthesizer(root, backend="onnxruntime", precision=prec, threads=threads or None) as synth:
            rate = synth.sample_rate
            audio[prec] = [
                synth.synthesize(text, voices[vid], SynthesisOptions(nfe=nfe, seed=100 + i)).audio
                for i, (_lang, text, vid) in enumerate(utterances)
            ]
        timing[prec] = round(time.perf_counter() - t0, 1)
        log(f"  e2e {prec}: {len(utterances)} utterances in {timing[prec]:.1f} s")
    rows = []
    for i, (lang, text, vid) in enumerate(utterances):
        ref = audio["fp32"][i]
        row: dict[str, Any] = {"text": text, "lang": lang, "voice": vid, "seconds": len(ref) / rate, "precisions": {}}
        for prec in precisions:
            row["precisions"][prec] = audio_metrics(ref, audio[prec][i], rate)
        rows.append(row)
    return rows


def e2e_gates(prec: str, rows: list[dict[str, Any]], gates: dict[str, Any]) -> list[dict[str, Any]]:
    spec = (gates.get("e2e") or {}).get(prec) or {}
    checks: list[dict[str, Any]] = []
    for metric, bound in spec.items():
        field = metric.split("_", 1)[1]
        vals = [(r["precisions"][prec].get(field), r) for r in rows]
        known = [(v, r) for v, r in vals if v is not None]
        if not known:
            checks.append(_check(f"e2e.{prec}.{metric}", float(bound), None, "no utterance measurable"))
            continue
        v, r = (min if metric.startswith("min") else max)(known, key=lambda x: x[0])
        checks.append(_check(f"e2e.{prec}.{metric}", float(bound), float(v), f"{r['voice']}: {r['text'][:40]}"))
    return checks


# -- reports --------------------------------------------------------------------------------------


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


def _fmt(v: Any, digits: int = 4) -> str:
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
            buckets = sorted({b for r in precs.values() for b in r["by_bucket"]}, key=_bucket_key)
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
        precs = list(rows[0]["precisions"])
        fig, ax = plt.subplots(figsize=(7, 3.6))
        width = 0.8 / max(1, len(precs))
        for k, prec in enumerate(precs):
            vals = [min(r["precisions"][prec]["mel_snr_db"], 120.0) for r in rows]
            ax.bar(np.arange(len(rows)) + k * width, vals, width, label=prec)
        ax.set_xticks(np.arange(len(rows)) + width * (len(precs) - 1) / 2, [f"{r['voice']}" for r in rows], fontsize=8)
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
    L += ["", "## Gates", "", "| gate | value | bound | where | |", "|---|---|---|---|---|"]
    for g in report["gates"]:
        d = 6 if "cosine" in g["gate"] else 4
        L.append(
            f"| `{g['gate']}` | {_fmt(g['value'], d)} | {_fmt(g['bound'], d)} | {g['where']} | {'✅' if g['passed'] else '❌'} |"
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
                    f"| {prec} | {b} | {s['n']} | {_fmt(s['min_cosine'], 6)} | {_fmt(s['min_snr_db'])} | "
                    f"{_fmt(s['max_abs'])} | {_fmt(s['mean_abs'])} | {_fmt(s['max_rel'])} |"
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
                    cells += [_fmt(s["min_cosine"], 6), _fmt(s["min_snr_db"])] if s else ["–", "–"]
                L.append(f"| {k} | {_fmt(t, 3)} | " + " | ".join(cells) + " |")
    e2e = report.get("e2e") or {}
    if e2e.get("utterances"):
        L += ["", f"## End to end (f5rt Synthesizer, NFE {e2e['nfe']}, same seed per utterance)", ""]
        L += [
            "| voice | text | s | precision | mel SNR dB | MCD dB | STOI | PESQ | wave SNR dB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in e2e["utterances"]:
            for prec, m in r["precisions"].items():
                L.append(
                    f"| {r['voice']} | {r['text'][:30]} | {r['seconds']:.1f} | {prec} | {_fmt(m['mel_snr_db'])} | "
                    f"{_fmt(m['mcd_db'])} | {_fmt(m['stoi'])} | {_fmt(m['pesq'])} | {_fmt(m['wave_snr_db'])} |"
                )
        notes = sorted({n for r in e2e["utterances"] for m in r["precisions"].values() for n in m.get("notes", [])})
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


# -- the stage ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from f5build.calibrate import load_corpus_module

    t_start = time.perf_counter()
    root = artifacts_dir(args)
    manifest = load_manifest(root)
    gates = load_gates(args.val_gates)
    wanted = [p.strip() for p in args.val_precisions.split(",") if p.strip()]
    report: dict[str, Any] = {
        "model": manifest.name,
        "artifacts": str(root),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "files": {rel: m["sha256"] for rel, m in manifest.files.items() if m.get("kind") in ("onnx", "calibration")},
        "graphs": {},
        "gates": [],
        "tools": tool_versions(("onnx", "onnxruntime", "polygraphy", "nvidia-modelopt", "tensorrt")),
    }
    checks: list[dict[str, Any]] = []
    step_precs: list[str] = []
    for graph in ("text_encoder", "step", "vocoder"):
        precs = [p for p in manifest.precisions(graph) if p != "fp32" and (not wanted or p in wanted)]
        if graph == "step":
            step_precs = precs
        if not precs:
            continue
        calib = calibration_file(manifest, graph)
        if calib is None:
            raise FileNotFoundError(f"{root}: no recorded inputs for '{graph}'; run `nox -s calibrate` first")
        samples = RecordedSamples(calib)
        try:
            idx = samples.indices(split=1, limit=args.val_max_samples or None)
            if not idx:
                raise ValueError(f"{calib}: no held-out samples (split 1); calibrate with --calib-heldout-requests > 0")
            log(f"{graph}: FP32 vs {', '.join(precs)} on {len(idx)} held-out samples (Polygraphy, ONNX Runtime)")
            res = compare_graph(manifest, graph, precs, samples, idx, gates)
        finally:
            samples.close()
        report["graphs"][graph] = res
        for prec, r in res.items():
            if prec.startswith("trt-"):
                checks += graph_gates(graph, prec, r, gates)
                continue
            worst = min(r["rows"], key=lambda x: x["cosine"])
            log(
                f"  {graph}.{prec}: min cosine {worst['cosine']:.6f}, min SNR {min(x['snr_db'] for x in r['rows']):.1f} dB, "
                f"max abs {max(x['max_abs'] for x in r['rows']):.3g}, Polygraphy pass {100 * r['polygraphy']['pass_rate']:.0f}%"
            )
            checks += graph_gates(graph, prec, r, gates)

    e2e_precs = step_precs
    if e2e_precs and not args.val_no_e2e and args.val_e2e_lines > 0:
        corpus = load_corpus_module(args.val_corpus)
        cm = corpus.read_manifest(args.val_corpus)
        voices_dir = Path(args.val_voices or Path(args.val_corpus) / "voices")
        corpus.ensure_voices(voices_dir, root=args.val_corpus, log=log)
        from f5rt.voices import VoiceStore

        store = VoiceStore(voices_dir, cache_dir=voices_dir / ".cache")
        langs = {v["id"]: v["lang"] for v in cm["voices"] if v["id"] in cm["held_out"]["voices"]}
        langs = {v: lang for v, lang in langs.items() if v in store.list()}
        if not langs:
            raise ValueError(f"no held-out voice in {voices_dir}")
        utts = pick_utterances(corpus.read_lines(args.val_corpus, cm), langs, args.val_e2e_lines)
        log(f"end to end: {len(utts)} held-out lines x fp32/{'/'.join(e2e_precs)} (NFE {args.val_e2e_nfe})")
        rows = end_to_end(root, e2e_precs, utts, {v: store.get(v) for v in langs}, args.val_e2e_nfe, args.val_threads)
        report["e2e"] = {"nfe": args.val_e2e_nfe, "utterances": rows}
        for prec in e2e_precs:
            m = [r["precisions"][prec] for r in rows]
            log(
                f"  e2e {prec}: mel SNR min {min(x['mel_snr_db'] for x in m):.1f} dB, MCD max "
                f"{max(x['mcd_db'] for x in m):.2f} dB, STOI {', '.join(_fmt(x['stoi'], 3) for x in m)}, "
                f"PESQ {', '.join(_fmt(x['pesq'], 2) for x in m)}"
            )
            checks += e2e_gates(prec, rows, gates)

    report["placement"] = manifest.data.get("stages", {}).get("quantize", {}).get("placement", {})
    report["gates"] = checks
    report["passed"] = all(c["passed"] for c in checks)
    outdir = Path(args.val_reports)
    outdir.mkdir(parents=True, exist_ok=True)
    images = plots(report, gates, outdir)
    atomic_write_json(outdir / "accuracy.json", _jsonable(report))
    with atomic_path(outdir / "accuracy.md") as tmp:
        tmp.write_text(markdown(report, images), encoding="utf-8")
    failed = [c for c in checks if not c["passed"]]
    seconds = round(time.perf_counter() - t_start, 1)

    def mutate(data: dict[str, Any]) -> None:
        data.setdefault("stages", {})["validate"] = {
            "passed": not failed,
            "failed_gates": [c["gate"] for c in failed],
            "gates": len(checks),
            "report": str(outdir / "accuracy.md"),
            "seconds": seconds,
            "peak_rss_mb": round(peak_rss_mb()),
        }

    update_manifest(root, mutate)
    log(f"wrote {outdir / 'accuracy.md'} (+ .json, {len(images)} plots) in {seconds:.1f} s")
    if not checks:
        log("no reduced-precision variant to validate (run `nox -s quantize`)")
    for c in failed:
        d = 6 if "cosine" in c["gate"] else 4
        log(f"validate: gate {c['gate']} failed: {_fmt(c['value'], d)} vs bound {_fmt(c['bound'], d)} ({c['where']})")
    return 1 if failed else 0
