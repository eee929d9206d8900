"""SmoothQuant-style smoothing of the step graph's INT8 MatMul inputs (f5build.smooth), on the tiny model.

The recipe (config/precision.yaml) smooths the inputs of to_q/to_k/to_v and ff.0 in the int8 and
cpu-int8 step variants: the FP32 graph must compute the same thing after the rewrite, the variants
must carry it, and a smoothing that changes the FP32 output or names nothing is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytest.importorskip("modelopt.onnx.quantization", reason="nvidia-modelopt is not installed")

from test_quantize import build_quantized  # shares the session's quantized artifacts

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = (r".*/attn/to_[qkv]/", r".*/ff/ff/ff\.0/")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, tiny_artifacts: Path) -> Path:
    return build_quantized(tmp_path_factory, tiny_artifacts)


def _samples(root: Path) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    from f5build.recordings import RecordedSamples

    with RecordedSamples(root / "calibration" / "step.npz") as s:
        return [s.feed(i) for i in s.indices(split=0)[:4]], s.feed(s.indices(split=1)[0])


def _run(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_smoothing_keeps_the_fp32_graph_and_flattens_channel_peaks(quantized: Path, tmp_path: Path) -> None:
    from f5build.recipe import SmoothRule
    from f5build.smooth import smooth_file

    feeds, check = _samples(quantized)
    out = tmp_path / "step.smooth.onnx"
    rep = smooth_file(quantized / "step.onnx", out, SmoothRule(PATTERNS, 0.5), feeds, check)
    depth = 2  # tiny: one q/k/v input and one ff.0 input per block
    assert len(rep.groups) == 2 * depth and sum(len(g.matmuls) for g in rep.groups) == 4 * depth
    assert all(g.amax_after <= g.amax_before * 1.0001 for g in rep.groups)
    assert rep.fp32_rel_error < 1e-5
    ref, got = _run(quantized / "step.onnx", check), _run(out, check)
    assert np.abs(ref - got).max() <= 1e-5 * np.abs(ref).max()
    m = onnx.load(str(out))
    assert len([n for n in m.graph.node if "/smooth_shift/" in n.name]) == 2 * depth
    used = {i for n in m.graph.node for i in n.input}
    assert all(i.name in used for i in m.graph.initializer)  # the unsmoothed weights are gone


def test_smoothing_refuses_a_changed_fp32_graph_and_empty_patterns(
    quantized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from f5build import smooth
    from f5build.recipe import SmoothRule

    feeds, check = _samples(quantized)
    with pytest.raises(ValueError, match="name no quantized MatMul"):
        smooth.smooth_file(quantized / "step.onnx", tmp_path / "a.onnx", SmoothRule((r"/nothing/",)), feeds, check)
    # excluded from INT8: not smoothed either
    with pytest.raises(ValueError, match="name no quantized MatMul"):
        smooth.smooth_file(
            quantized / "step.onnx", tmp_path / "a.onnx", SmoothRule(PATTERNS), feeds, check, exclude=(".*",)
        )
    real = smooth.smooth_graph

    def broken(model, rule, feeds, exclude=()):  # type: ignore[no-untyped-def]
        rep = real(model, rule, feeds, exclude)
        ln = next(n for n in model.graph.node if n.name == rep.groups[0].layernorm)
        init = next(i for i in model.graph.initializer if i.name == ln.input[1])
        v = onnx.numpy_helper.to_array(init) * 1.5  # gamma / s, but not the weights' s: not exact any more
        init.CopyFrom(onnx.numpy_helper.from_array(v.astype(np.float32), init.name))
        return rep

    monkeypatch.setattr(smooth, "smooth_graph", broken)
    with pytest.raises(ValueError, match="differs from the original"):
        smooth.smooth_file(quantized / "step.onnx", tmp_path / "b.onnx", SmoothRule(PATTERNS), feeds, check)


def _smooth_recipe(tmp_path: Path, int8: bool = True, cpu: bool = True) -> Path:
    import yaml

    data = yaml.safe_load((ROOT / "config" / "precision.yaml").read_text())
    step = data["graphs"]["step"]
    for section, on in (("int8", int8), ("cpu", cpu)):
        if on:
            step[section]["smooth"] = {"nodes": list(PATTERNS), "alpha": 0.5}
    path = tmp_path / "smooth.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_recipe_smooth_entries(tmp_path: Path) -> None:
    import yaml

    from f5build.recipe import load_recipe

    # the committed recipe smooths the TensorRT INT8 step's q/k/v and ff.0 inputs (its gates failed without
    # on the released weights, docs/precision.md), not the dynamically scaled cpu-int8 step
    rec = load_recipe(ROOT / "config" / "precision.yaml").graphs["step"]
    assert rec.int8 is not None and rec.int8.smooth is not None and rec.int8.smooth.nodes == PATTERNS
    assert rec.cpu is not None and rec.cpu.smooth is None
    rec = load_recipe(_smooth_recipe(tmp_path)).graphs["step"]
    assert rec.int8 is not None and rec.int8.smooth is not None and rec.int8.smooth.nodes == PATTERNS
    assert rec.cpu is not None and rec.cpu.smooth is not None and rec.cpu.smooth.alpha == 0.5
    base = yaml.safe_load((ROOT / "config" / "precision.yaml").read_text())
    step = base["graphs"]["step"]
    path = tmp_path / "r.yaml"
    for section, smooth, msg in (
        ("int8", {"nodes": list(PATTERNS), "alpha": 1.5}, r"graphs.step.int8.smooth.alpha: expected a number"),
        ("cpu", {"nodes": list(PATTERNS), "alpha": 0}, r"graphs.step.cpu.smooth.alpha: expected a number"),
        ("int8", {"nodes": [], "alpha": 0.5}, r"graphs.step.int8.smooth.nodes: empty"),
        ("cpu", {"nodes": ["("]}, r"bad regex"),
        ("int8", {"nodes": list(PATTERNS), "beta": 1}, r"graphs.step.int8.smooth: expected a mapping"),
    ):
        bad = {**step, section: {**step[section], "smooth": smooth}}
        path.write_text(yaml.safe_dump(dict(base, graphs={**base["graphs"], "step": bad})))
        with pytest.raises(ValueError, match=msg):
            load_recipe(path)


def test_step_variants_are_built_from_the_smoothed_graph(quantized: Path, tmp_path: Path) -> None:
    """A recipe that smooths: int8 and cpu-int8 carry it (the placement report says so, the graph has
    the shift Muls) and still pass the placement and attention checks; fp16 and cpu-fp32 never do."""
    import shutil

    from f5build.cli import main

    root = tmp_path / "tiny"
    shutil.copytree(quantized, root)
    recipe = _smooth_recipe(tmp_path)
    common = ["--model", "tiny", "--artifacts-root", str(tmp_path), "--quant-recipe", str(recipe)]
    assert main(["quantize", *common, "--quant-graphs", "step"]) == 0
    manifest = json.loads((root / "manifest.json").read_text())
    placement = manifest["stages"]["quantize"]["placement"]
    for rel in ("step.int8.onnx", "step.cpu-int8.onnx"):
        info = placement[rel]["smooth"]
        assert (info["tensors"], info["matmuls"]) == (4, 8) and info["fp32_rel_error"] < 1e-4, rel
        names = [n.name for n in onnx.load(str(root / rel), load_external_data=False).graph.node]
        assert any("/smooth_shift/" in n for n in names), rel
    for rel in ("step.fp16.onnx", "step.cpu-fp32.onnx"):
        assert "smooth" not in placement[rel]
        names = [n.name for n in onnx.load(str(root / rel), load_external_data=False).graph.node]
        assert not any("/smooth_shift/" in n for n in names), rel
