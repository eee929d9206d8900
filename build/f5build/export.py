"""Export the text encoder, step and vocoder graphs to ONNX (FP32, dynamic batch and frame axes).

Writes artifacts/<name>/{text_encoder,step,vocoder}.onnx, vocab.txt and manifest.json. Each graph is
run once through ONNX Runtime against its torch source before the manifest records it, so a graph
that does not match the model never becomes an artifact. A re-run with unchanged inputs (model
weights, architecture, bucket table, exporter code and versions) is a no-op.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from f5build.common import log, peak_rss_mb, read_buckets, source_hash, tool_versions
from f5build.context import ROOT, ModelSource, artifacts_dir
from f5build.graphs import (
    STEP_INPUTS,
    STEP_OUTPUTS,
    TEXT_INPUTS,
    TEXT_OUTPUTS,
    VOCODER_INPUTS,
    VOCODER_OUTPUTS,
    StepGraph,
    TextEncoderGraph,
    VocoderGraph,
    export_attention,
    vocoder_spec,
)
from f5build.load import AUDIO, ModelBundle, load_model
from f5build.space import require_space
from f5rt.errors import ManifestError
from f5rt.files import atomic_path, atomic_write_bytes, sha256_json
from f5rt.manifest import MANIFEST_NAME, file_entry, load_manifest, update_manifest

OPSET = 17  # JetPack 6's TensorRT 10.3 parses opset <= 20; 17 is what the legacy exporter does best
PARITY_TOL = 1e-4


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET}, max 20 for TensorRT 10.3)")
    p.add_argument("--force", action="store_true", help="export even if the artifacts are up to date")


@dataclass(frozen=True)
class ExportOptions:
    """One export run: the model to load, the bucket table its graphs must serve, the opset."""

    root: Path
    source: ModelSource = field(default_factory=ModelSource)
    buckets: Path = ROOT / "config" / "buckets.yaml"
    opset: int = OPSET
    force: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExportOptions:
        return cls(
            root=artifacts_dir(args),
            source=ModelSource.from_args(args),
            buckets=Path(args.buckets),
            opset=int(args.opset),
            force=bool(args.force),
        )


Options = ExportOptions


def example_inputs(bundle: ModelBundle, batch: int, frames: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Realistic inputs for tracing and parity checks: rows of different lengths, ids with -1 padding."""
    g = torch.Generator().manual_seed(seed)
    lens = [frames - (frames // 4) * i for i in range(batch)]
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    ids = torch.full((batch, frames), -1, dtype=torch.int32)
    cond = torch.zeros(batch, frames, AUDIO["n_mels"])
    for i, n in enumerate(lens):
        mask[i, :n] = True
        ntext = max(1, n // 2)
        ids[i, :ntext] = torch.randint(0, len(bundle.vocab), (ntext,), generator=g, dtype=torch.int32)
        cond[i, : n // 3] = torch.randn(n // 3, AUDIO["n_mels"], generator=g) * 2 - 5
    d = bundle.text_dim
    step = {
        "x": torch.randn(batch, frames, AUDIO["n_mels"], generator=g),
        "cond": cond,
        "text_cond": torch.randn(batch, frames, d, generator=g) * mask[..., None],
        "text_uncond": torch.randn(batch, frames, d, generator=g) * mask[..., None],
        "mask": mask,
        "t": torch.full((batch,), 0.3),
        "dt": torch.full((batch,), 1 / 32),
        "cfg": torch.full((batch,), 2.0),
    }
    mel = torch.randn(batch, AUDIO["n_mels"], max(8, frames // 2), generator=g) * 2 - 4
    return {"text_encoder": {"text_ids": ids, "mask": mask}, "step": step, "vocoder": {"mel": mel}}


def graph_modules(
    bundle: ModelBundle, max_frames: int
) -> dict[str, tuple[nn.Module, tuple[str, ...], tuple[str, ...], dict[str, Any]]]:
    """The graphs to export; `max_frames` (the bucket table's largest N) sizes the step's rotary table."""
    b, n, f = "batch", "frames", "mel_frames"
    return {
        "text_encoder": (
            TextEncoderGraph(bundle.dit).eval(),
            TEXT_INPUTS,
            TEXT_OUTPUTS,
            {"text_ids": {0: b, 1: n}, "mask": {0: b, 1: n}, "text_cond": {0: b, 1: n}, "text_uncond": {0: b, 1: n}},
        ),
        "step": (
            StepGraph(bundle.dit, max_frames).eval(),
            STEP_INPUTS,
            STEP_OUTPUTS,
            {
                **{k: {0: b, 1: n} for k in ("x", "cond", "text_cond", "text_uncond", "mask", "x_next")},
                **{k: {0: b} for k in ("t", "dt", "cfg")},
            },
        ),
        "vocoder": (
            VocoderGraph(bundle.vocos).eval(),
            VOCODER_INPUTS,
            VOCODER_OUTPUTS,
            {"mel": {0: b, 2: f}, "audio": {0: b, 1: "samples"}},
        ),
    }


def export_graph(
    module: nn.Module,
    inputs: dict[str, torch.Tensor],
    names_in: tuple[str, ...],
    names_out: tuple[str, ...],
    axes: dict[str, Any],
    path: Path,
    opset: int,
) -> None:
    """torch.onnx.export (TorchScript exporter: fast, and its opset-17 output is what TensorRT 10.3 parses)."""
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            module,
            tuple(inputs[k] for k in names_in),
            str(tmp),
            input_names=list(names_in),
            output_names=list(names_out),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def ort_parity(path: Path, module: nn.Module, inputs: dict[str, torch.Tensor], names_out: tuple[str, ...]) -> float:
    """Max abs difference between ONNX Runtime (FP32, CPU) and the torch module on `inputs`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(list(names_out), {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        want = module(*inputs.values())
    want = want if isinstance(want, tuple) else (want,)
    return max(float(np.max(np.abs(g - w.numpy()))) for g, w in zip(got, want, strict=True))


def vocos_decode_parity(bundle: ModelBundle, mel: torch.Tensor) -> float:
    """Max abs difference between the vocoder graph (torch) and Vocos.decode itself, same length required.

    The ONNX check compares the export with VocoderGraph; this one proves VocoderGraph is the Vocos
    (its ISTFT padding above all: a wrong trim shifts every sample), so neither can drift unseen.
    """
    with torch.no_grad():
        got = VocoderGraph(bundle.vocos).eval()(mel)
        want = bundle.vocos.decode(mel)
    if got.shape != want.shape:
        raise ValueError(
            f"vocoder graph gives audio {tuple(got.shape)}, Vocos.decode {tuple(want.shape)}; not exported"
        )
    err = float((got - want).abs().max())
    if not err <= PARITY_TOL:
        raise ValueError(f"vocoder graph differs from Vocos.decode by {err:.2e} > {PARITY_TOL:.0e}; not exported")
    return err


def fingerprint(bundle: ModelBundle, buckets: dict[str, Any], opset: int) -> str:
    return sha256_json(
        {
            "source": bundle.source,
            "model": bundle.model_config(),
            "buckets": buckets,
            "opset": opset,
            "code": source_hash(),
            "tools": tool_versions(("torch", "onnx", "f5-tts", "vocos")),
        }
    )


def up_to_date(root: Path, fp: str) -> bool:
    try:
        m = load_manifest(root)
        if m.data.get("stages", {}).get("export", {}).get("inputs_sha256") != fp:
            return False
        for rel, meta in m.files.items():
            if meta.get("stage") == "export":
                m.verify(rel)
        return True
    except ManifestError:
        return False


def run(opts: ExportOptions) -> int:
    t_start = time.perf_counter()
    root = opts.root
    src = opts.source
    buckets = read_buckets(opts.buckets)
    log(f"loading model '{src.model}'")
    bundle = load_model(
        src.model,
        seed=src.seed,
        vocab=src.vocab,
        vocoder=src.vocoder,
        model_config=src.model_config,
        weights=src.weights,
    )
    n_params = sum(p.numel() for p in bundle.dit.parameters())
    log(f"DiT {n_params / 1e6:.1f} M parameters, Vocos {sum(p.numel() for p in bundle.vocos.parameters()) / 1e6:.1f} M")
    fp = fingerprint(bundle, buckets.to_dict(), opts.opset)
    if not opts.force and up_to_date(root, fp):
        log(f"{root}: up to date (inputs unchanged), nothing to do")
        return 0

    root.mkdir(parents=True, exist_ok=True)
    # FP32 weights once per graph that holds them (the step graph: the DiT; the vocoder: Vocos) plus
    # the temp file of the graph being written, which exists beside the old one until it replaces it
    weights = 4 * (n_params + sum(p.numel() for p in bundle.vocos.parameters()))
    require_space(root, 2 * weights, "the export (three ONNX graphs)")
    atomic_write_bytes(root / "vocab.txt", "".join(tok + "\n" for tok in bundle.vocab).encode("utf-8"))
    trace_frames = min(64, buckets.frames[0])
    examples = example_inputs(bundle, batch=2, frames=trace_frames)
    checks = example_inputs(bundle, batch=2, frames=trace_frames + 37, seed=1)  # another N: proves the axes are dynamic
    parity: dict[str, float] = {}
    timings: dict[str, float] = {}
    decode_err = vocos_decode_parity(bundle, checks["vocoder"]["mel"])
    log(f"vocoder graph vs Vocos.decode ({vocoder_spec(bundle.vocos).padding} padding): max abs {decode_err:.2e}")
    with export_attention(bundle.dit):
        for name, (module, names_in, names_out, axes) in graph_modules(bundle, buckets.max_frames).items():
            t0 = time.perf_counter()
            log(f"exporting {name} (opset {opts.opset}) …")
            export_graph(module, examples[name], names_in, names_out, axes, root / f"{name}.onnx", opts.opset)
            timings[name] = round(time.perf_counter() - t0, 2)
            log(
                f"  {name}.onnx: {(root / f'{name}.onnx').stat().st_size / 1e6:.1f} MB in {timings[name]:.1f} s; checking with ONNX Runtime"
            )
            err = max(ort_parity(root / f"{name}.onnx", module, ex[name], names_out) for ex in (examples, checks))
            parity[name] = err
            log(f"  {name}: max |onnxruntime - torch| = {err:.2e} (peak RSS {peak_rss_mb():.0f} MB)")
            if not err <= PARITY_TOL:
                raise ValueError(
                    f"{name}.onnx differs from the torch model by {err:.2e} > {PARITY_TOL:.0e}; not recorded"
                )

    seconds = round(time.perf_counter() - t_start, 1)

    def mutate(data: dict[str, Any]) -> None:
        data["name"] = root.name
        data["source"] = bundle.source
        data["model"] = bundle.model_config()
        data["audio"] = dict(AUDIO)
        data["vocoder"] = vocoder_spec(bundle.vocos).to_dict()
        data["buckets"] = buckets.to_dict()
        files = {k: v for k, v in data.get("files", {}).items() if v.get("stage") != "export"}
        files["vocab.txt"] = file_entry(root, "vocab.txt", kind="vocab", stage="export")
        for name in ("text_encoder", "step", "vocoder"):
            files[f"{name}.onnx"] = file_entry(
                root, f"{name}.onnx", graph=name, precision="fp32", kind="onnx", stage="export"
            )
        data["files"] = files
        data.setdefault("stages", {})["export"] = {
            "inputs_sha256": fp,
            "opset": opts.opset,
            "rotary_table_frames": buckets.max_frames,  # the step graph's largest N (its cos/sin table)
            "parity_max_abs": parity,
            "vocoder_vs_vocos_decode_max_abs": decode_err,
            "seconds": seconds,
            "graph_seconds": timings,
            "peak_rss_mb": round(peak_rss_mb()),
            "tools": tool_versions(),
        }

    update_manifest(root, mutate)
    log(f"wrote {root / MANIFEST_NAME} ({seconds:.1f} s, peak RSS {peak_rss_mb():.0f} MB)")
    return 0
