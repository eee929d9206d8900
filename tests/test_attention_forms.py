"""The attention-form measurement (f5build.attention_forms) on the tiny model's FP32 artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("modelopt.onnx.autocast", reason="nvidia-modelopt is not installed")

from f5build.attention_forms import FormsOptions, run


def test_each_form_is_checked_against_the_pattern_and_measured(tiny_artifacts: Path, tmp_path: Path) -> None:
    opts = FormsOptions(
        tiny_artifacts, forms=("fused-fp16", "fp32-softmax"), reports=tmp_path, buckets=(256,), timesteps=(0.5,)
    )
    results = {r.form: r for r in run(opts, log=lambda s: None)}
    fused, fp32 = results["fused-fp16"], results["fp32-softmax"]
    # the tiny model's 2 blocks: fusable in the default form, none with FP32 softmax
    assert fused.pattern["fusable_blocks"] == 2 and fp32.pattern["fusable_blocks"] == 0
    assert fused.gates == {"min_cosine": 0.9999, "min_snr_db": 35.0}  # config/gates.yaml graphs.step.fp16
    for r in (fused, fp32):
        assert r.rows and all(row["finite"] for row in r.rows)
        assert r.passed and r.worst["snr_db"] >= 35.0
    report = json.loads((tmp_path / "attention_forms.json").read_text())
    assert [f["form"] for f in report["results"]] == ["fused-fp16", "fp32-softmax"]


def test_bad_forms_options_are_refused(tiny_artifacts: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        FormsOptions(tiny_artifacts, forms=("fused-int4",))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FormsOptions(tiny_artifacts, timesteps=(1.0,))
