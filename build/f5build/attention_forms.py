"""Every attention form of the recipe measured against FP32 attention: step SNR per bucket and timestep.

`python -m f5build.attention_forms --artifacts artifacts/<name> [--forms fused-fp16,fused-bf16,fp32-softmax]`
builds, for each form, the FP16 step graph the quantize stage would make with that form (ModelOpt
autocast with the recipe's keep-FP32 rules; BF16 retyping for `fused-bf16`; no calibration needed),
checks it against TensorRT's fusable MHA pattern (f5build.attention_pattern), then runs it and the
FP32 graph on the same inputs with ONNX Runtime and measures the velocity error per bucket (B = 1)
and timestep with validate's own metric (f5build.validate.comparator.sample_errors) against the
step graph's fp16 gates (config/gates.yaml). `fused-bf16` runs as its CPU stand-in (BF16 storage,
FP32 arithmetic: f5build.attention_form.simulate_bf16), since ONNX Runtime's CPU provider has no BF16
kernels.

Inputs per bucket: every held-out recorded step call of the calibrate stage in that bucket (when the
artifacts have a recording: real sampler states), plus `--forms-synthetic` full-length requests
(every frame real, so the scores span the whole bucket: where FP16 overflow would show) made from
the model's own text encoder and mel-like noise at `--forms-timesteps` timesteps.

Writes `<reports>/attention_forms.{md,json}`. The end-to-end and listening figures of a form come from
the pipeline itself: `python -m f5build quantize --quant-attention-form FORM --quant-force` then
`python -m f5build validate --val-reports reports/attention/FORM` (and the quality module on those
artifacts); `variant_for_form` is the one place a form's graph is made.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from f5build.attention_form import has_bf16_compute, retype_attention_bf16, simulate_bf16
from f5build.attention_pattern import AttentionPatternReport, check_attention
from f5build.context import ROOT, csv_list
from f5build.recipe import TRT_ATTENTION_FORMS, GraphRecipe, load_recipe
from f5rt.files import atomic_write_bytes, atomic_write_json
from f5rt.manifest import Manifest, load_manifest


@dataclass(frozen=True)
class FormsOptions:
    artifacts: Path
    forms: tuple[str, ...] = TRT_ATTENTION_FORMS
    recipe: Path = ROOT / "config" / "precision.yaml"
    gates: Path = ROOT / "config" / "gates.yaml"
    reports: Path = ROOT / "reports"
    buckets: tuple[int, ...] = ()  # frame counts; empty: every N of the manifest's table
    timesteps: tuple[float, ...] = (0.0, 0.5, 0.97)
    synthetic: int = 1  # full-length synthetic requests per bucket and timestep
    recorded: int = 4  # held-out recorded calls per bucket at most (0: none)
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        bad = [f for f in self.forms if f not in TRT_ATTENTION_FORMS]
        if bad or not self.forms:
            raise ValueError(f"--forms: unknown {bad} (choose from {', '.join(TRT_ATTENTION_FORMS)})")
        if any(not 0.0 <= t < 1.0 for t in self.timesteps):
            raise ValueError(f"--forms-timesteps must lie in [0, 1), got {list(self.timesteps)}")


@dataclass
class FormResult:
    form: str
    pattern: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per (bucket, source, timestep)
    gates: dict[str, float] = field(default_factory=dict)
    passed: bool = False
    seconds: float = 0.0
    worst: dict[str, Any] = field(default_factory=dict)


def variant_for_form(
    src: Path, recipe: GraphRecipe, form: str, manifest: Manifest
) -> tuple[Any, AttentionPatternReport]:
    """The FP16 step graph (ModelProto) the quantize stage makes with attention `form`, and its pattern check."""
    from f5build.modelopt_calls import autocast_fp16

    rule = dataclasses.replace(recipe, attention=dataclasses.replace(recipe.attention, form=form))
    model = autocast_fp16(src, rule, None, [])
    depth, heads = manifest.model.get("depth"), manifest.model.get("heads")
    if form == "fused-bf16":
        retype_attention_bf16(model, depth, heads)
    return model, check_attention(model, form, depth, heads)


def _session(model_or_path: Any, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    arg = str(model_or_path) if isinstance(model_or_path, Path) else model_or_path
    return ort.InferenceSession(arg, so, providers=["CPUExecutionProvider"])


def synthetic_feed(
    manifest: Manifest, text_sess: Any, frames: int, t: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """A full-length request in an N-frame bucket: mel-like condition on the first 40 %, noisy state at t."""
    mel_dim = int(manifest.model.get("mel_dim", manifest.audio["n_mels"]))
    vocab = int(manifest.model.get("vocab_size", 256))
    ref = max(1, int(0.4 * frames))
    # log-mel-like values: a smooth spectral envelope in [-11, 3] plus a little noise
    env = np.linspace(1.5, -8.0, mel_dim)[None, :] + rng.normal(0, 1.0, (frames, mel_dim))
    target = np.clip(env, -11.0, 3.0).astype(np.float32)[None]
    cond = np.zeros_like(target)
    cond[:, :ref] = target[:, :ref]
    noise = rng.standard_normal(target.shape).astype(np.float32)
    x = ((1.0 - t) * noise + t * target).astype(np.float32)
    ids = rng.integers(0, max(2, vocab - 1), (1, frames)).astype(np.int32)
    mask = np.ones((1, frames), dtype=bool)
    text_cond, text_uncond = text_sess.run(None, {"text_ids": ids, "mask": mask})
    return {
        "x": x, "cond": cond, "text_cond": text_cond, "text_uncond": text_uncond, "mask": mask,
        "t": np.array([t], np.float32), "dt": np.array([1.0 / 16], np.float32), "cfg": np.array([2.0], np.float32),
    }  # fmt: skip


def recorded_feeds(
    manifest: Manifest, frames: Sequence[int], per_bucket: int
) -> list[tuple[int, str, dict[str, np.ndarray]]]:
    """(bucket frames, label, feed) of held-out recorded step calls, one row each, at most `per_bucket` per bucket."""
    from f5build.recordings import RecordedSamples, calibration_file
    from f5build.validate.comparator import exact_rows

    path = calibration_file(manifest, "step")
    if path is None or per_bucket <= 0:
        return []
    out: list[tuple[int, str, dict[str, np.ndarray]]] = []
    with RecordedSamples(path) as samples:
        for i in samples.indices(split=1):
            feed = samples.feed(i)
            n = int(feed["x"].shape[1])
            if n not in frames or sum(1 for f, _, _ in out if f == n) >= per_bucket:
                continue
            step = int(samples.meta.get("step", np.full(i + 1, -1))[i])
            for row in exact_rows(feed)[:1]:
                out.append((n, f"recorded #{i} step {step}", row))
    return out


def run(opts: FormsOptions, log: Any = print) -> list[FormResult]:
    from f5build.validate.comparator import sample_errors
    from f5build.validate.gates import step_bounds

    manifest = load_manifest(opts.artifacts)
    recipe = load_recipe(opts.recipe).graphs["step"]
    src = manifest.find("step", "fp32")
    frames = list(opts.buckets) or sorted(set(manifest.buckets.frames))
    gates = step_bounds(opts.gates, "fp16")
    rng = np.random.default_rng(opts.seed)
    text = _session(manifest.find("text_encoder", "fp32"), opts.threads)
    feeds = recorded_feeds(manifest, frames, opts.recorded)
    for n in frames:
        for t in opts.timesteps:
            for k in range(opts.synthetic):
                feeds.append(
                    (
                        n,
                        f"synthetic full-length t={t:g}" + (f" #{k}" if k else ""),
                        synthetic_feed(manifest, text, n, t, rng),
                    )
                )
    del text
    log(f"attention forms {', '.join(opts.forms)}: {len(feeds)} step calls over buckets {frames}")
    ref_sess = _session(src, opts.threads)
    refs = []
    for n, label, feed in feeds:
        t0 = time.perf_counter()
        refs.append(dict(zip(["x_next"], ref_sess.run(None, feed), strict=True)))
        log(f"  fp32 n{n}: {label} ({time.perf_counter() - t0:.1f} s)")
    del ref_sess
    results = []
    for form in opts.forms:
        t_form = time.perf_counter()
        model, pattern = variant_for_form(src, recipe, form, manifest)
        log(f"  {form}: {pattern.summary()}")
        res = FormResult(form, pattern.to_dict(), gates=gates)
        with tempfile.TemporaryDirectory(prefix=f"attn-{form}-") as tmp:
            from f5build.modelopt_calls import save_model

            path = Path(tmp) / "step.onnx"
            save_model(simulate_bf16(model) if has_bf16_compute(model) else model, path)
            del model
            sess = _session(path, opts.threads)
            for (n, label, feed), ref in zip(feeds, refs, strict=True):
                t0 = time.perf_counter()
                out = dict(zip(["x_next"], sess.run(None, feed), strict=True))
                e = sample_errors("step", feed, ref, out)
                finite = bool(np.all(np.isfinite(out["x_next"])))
                res.rows.append(
                    {"bucket": f"n{n}_b1", "frames": n, "source": label, "t": float(feed["t"][0]), "finite": finite,
                     **{k: float(v) for k, v in e.items()}, "seconds": round(time.perf_counter() - t0, 2)}
                )  # fmt: skip
                log(f"    n{n} {label}: velocity SNR {e['snr_db']:.1f} dB, cosine {e['cosine']:.6f}, finite {finite}")
            del sess
        worst = min(res.rows, key=lambda r: r["snr_db"] if not math.isnan(r["snr_db"]) else -1e9)
        res.worst = worst
        res.passed = all(r["finite"] for r in res.rows) and all(
            (min(r["cosine"] for r in res.rows) >= gates["min_cosine"]) if k == "min_cosine" else
            (min(r["snr_db"] for r in res.rows) >= gates["min_snr_db"])
            for k in gates
        )  # fmt: skip
        res.seconds = round(time.perf_counter() - t_form, 1)
        results.append(res)
    write_reports(opts, manifest, results)
    return results


def markdown(opts: FormsOptions, manifest: Manifest, results: Sequence[FormResult]) -> str:
    m = manifest.model
    lines = [
        f"# Attention forms vs FP32 attention ({manifest.name})",
        "",
        f"Model dim {m.get('dim')}, depth {m.get('depth')}, heads {m.get('heads')}. Step velocity vs the FP32 graph "
        "on the same inputs (validate's metric: v = (x_next - x) / dt on the real frames), ONNX Runtime CPU "
        "(FP16 ops run with FP16 inputs and outputs; `fused-bf16` as its BF16-storage stand-in). Gates: "
        + ", ".join(f"{k} {v:g}" for k, v in (results[0].gates if results else {}).items())
        + " (config/gates.yaml graphs.step.fp16).",
        "",
        "| form | TensorRT pattern | worst velocity SNR dB | worst cosine | all finite | gates | where worst |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        w = r.worst
        lines.append(
            f"| {r.form} | {'fusable' if r.pattern['fused'] else 'not fusable'} ({r.pattern['fusable_blocks']}/"
            f"{r.pattern['expected_blocks']}) | {w.get('snr_db', math.nan):.1f} | {min(x['cosine'] for x in r.rows):.6f} | "
            f"{all(x['finite'] for x in r.rows)} | {'pass' if r.passed else 'FAIL'} | {w.get('bucket')} {w.get('source')} |"
        )
    lines += ["", "Pattern check:", ""] + [f"- {r.form}: {r.pattern['reason']}" for r in results]
    for r in results:
        lines += [
            "",
            f"## {r.form}",
            "",
            "| bucket | input | t | velocity SNR dB | cosine | max abs | finite |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in r.rows:
            lines.append(
                f"| {x['bucket']} | {x['source']} | {x['t']:.3f} | {x['snr_db']:.1f} | {x['cosine']:.6f} | "
                f"{x['max_abs']:.3g} | {x['finite']} |"
            )
    return "\n".join(lines) + "\n"


def write_reports(opts: FormsOptions, manifest: Manifest, results: Sequence[FormResult]) -> None:
    opts.reports.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(opts.reports / "attention_forms.md", markdown(opts, manifest, results).encode())
    atomic_write_json(
        opts.reports / "attention_forms.json",
        {
            "artifacts": str(opts.artifacts),
            "model": dict(manifest.model),
            "results": [dataclasses.asdict(r) for r in results],
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m f5build.attention_forms", description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", type=Path, required=True, help="artifacts folder (manifest.json, step.onnx)")
    p.add_argument("--forms", default=",".join(TRT_ATTENTION_FORMS), help="comma list of attention forms")
    p.add_argument("--forms-buckets", default="", help="comma list of frame counts (default: the manifest's table)")
    p.add_argument("--forms-timesteps", default="0,0.5,0.97", help="timesteps of the synthetic inputs")
    p.add_argument(
        "--forms-synthetic", type=int, default=1, help="synthetic full-length requests per bucket and timestep"
    )
    p.add_argument("--forms-recorded", type=int, default=4, help="held-out recorded calls per bucket at most")
    p.add_argument("--reports", type=Path, default=ROOT / "reports")
    p.add_argument("--recipe", type=Path, default=ROOT / "config" / "precision.yaml")
    p.add_argument("--gates", type=Path, default=ROOT / "config" / "gates.yaml")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    try:
        opts = FormsOptions(
            artifacts=a.artifacts, forms=csv_list(a.forms), recipe=a.recipe, gates=a.gates, reports=a.reports,
            buckets=tuple(int(x) for x in csv_list(a.forms_buckets)),
            timesteps=tuple(float(x) for x in csv_list(a.forms_timesteps)),
            synthetic=a.forms_synthetic, recorded=a.forms_recorded, threads=a.threads,
        )  # fmt: skip
        results = run(opts)
    except (ValueError, FileNotFoundError) as e:
        print(f"f5build.attention_forms: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({r.form: {"passed": r.passed, "worst_snr_db": r.worst.get("snr_db")} for r in results}))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
