"""Listening figures: the scoring rules, the gates, and a smoke of the whole stage on the trained model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from f5build.quality.gates import QualityGates, check
from f5build.quality.scoring import ConditionScore, UtteranceScore, normalize, wer


def test_text_is_normalised_before_word_error_rate():
    assert normalize("Hi Alice, welcome to the stream!") == "hi alice welcome to the stream"
    assert normalize("It is 7 here, 42 to 100.") == "it is seven here forty two to one hundred"
    assert normalize("Don't") == "dont"
    assert wer("Thanks for the rocket, Bob!", "thanks for the rocket bob") == 0.0
    assert wer("one two three four", "one two tree four") == pytest.approx(0.25)
    assert wer("one two", "") == 1.0
    with pytest.raises(ValueError, match="no words"):
        wer("?!", "anything")


def _utt(i: int, wer_: float, own: float, other: float, ovrl: float) -> UtteranceScore:
    return UtteranceScore(f"u{i}", "s", "t", "t", wer_, own, other, ovrl, 3.0, 3.5, 3.2, 2.0)


def _cond(precision: str, nfe: int, wer_: float, sim: float, ovrl: float, cfg: float = 2.0) -> ConditionScore:
    from f5build.quality.sweep import condition_name

    utts = [_utt(i, wer_, sim, sim - 0.1, ovrl) for i in range(3)]
    return ConditionScore.of(condition_name(precision, nfe, "sway", cfg), precision, nfe, "sway", utts, cfg)


def test_condition_means_and_speaker_verification():
    scores = [_utt(0, 0.2, 0.9, 0.7, 3.0), _utt(1, 0.4, 0.6, 0.8, 2.0)]
    c = ConditionScore.of("x", "fp32", 16, "sway", scores)
    assert (c.wer, c.sim, c.verify_rate, c.ovrl) == pytest.approx((0.3, 0.75, 0.5, 2.5))
    with pytest.raises(ValueError, match="no utterances"):
        ConditionScore.of("x", "fp32", 16, "sway", [])


def test_gates_compare_each_precision_with_fp32_at_the_same_nfe():
    gates = QualityGates()
    results = [
        _cond("fp32", 16, 0.10, 0.90, 3.0),
        _cond("int8", 16, 0.115, 0.885, 2.95),  # within every gate
        _cond("fp32", 7, 0.10, 0.90, 3.0),
        _cond("int8", 7, 0.13, 0.90, 3.0),  # WER +0.03
        _cond("cpu-int8", 7, 0.10, 0.87, 2.8),  # similarity -0.03, OVRL -0.2
        _cond("fp16", 32, 0.5, 0.1, 1.0),  # no FP32 twin: not gated
    ]
    verdicts = {v.condition: v for v in check(results, gates)}
    assert set(verdicts) == {"int8/nfe16/sway", "int8/nfe7/sway", "cpu-int8/nfe7/sway"}
    assert verdicts["int8/nfe16/sway"].passed
    assert not verdicts["int8/nfe7/sway"].passed and "WER" in verdicts["int8/nfe7/sway"].failures[0]
    failures = " ".join(verdicts["cpu-int8/nfe7/sway"].failures)
    assert "similarity" in failures and "OVRL" in failures


def test_wer_is_gated_only_where_fp32_says_the_text():
    """Babble (FP32 WER above the bound): a WER jump is noted, not failed; similarity still gates."""
    results = [
        _cond("fp32", 16, 1.25, 0.60, 1.3),
        _cond("cpu-fp32", 16, 8.0, 0.60, 1.3),  # Whisper looped on one utterance
        _cond("int8", 16, 1.25, 0.55, 1.3),  # similarity -0.05
    ]
    verdicts = {v.condition: v for v in check(results, QualityGates())}
    assert verdicts["cpu-fp32/nfe16/sway"].passed and "WER not gated" in verdicts["cpu-fp32/nfe16/sway"].notes[0]
    assert not verdicts["int8/nfe16/sway"].passed and "similarity" in verdicts["int8/nfe16/sway"].failures[0]
    strict = check(results, QualityGates(wer_gated_below=10.0))  # a bound above FP32's WER: gated again
    assert not next(v for v in strict if v.condition == "cpu-fp32/nfe16/sway").passed


def test_guidance_strength_is_a_condition_gated_against_fp32_at_the_same_strength():
    """A reduced precision at CFG 1 is compared with FP32 at CFG 1, never with FP32 at f5-tts' CFG 2; the
    chat-reader default is chosen over every strength swept."""
    from f5build.quality.report import choose_default

    results = [
        _cond("fp32", 7, 1.5, 0.70, 1.8),
        _cond("fp32", 7, 1.1, 0.72, 1.9, cfg=1.0),
        _cond("int8", 7, 1.1, 0.72, 1.9, cfg=1.0),  # equal to its FP32 twin at CFG 1
        _cond("int8", 7, 1.1, 0.60, 1.9, cfg=0.5),  # no FP32 twin at CFG 0.5: not gated
        _cond("fp32", 16, 1.0, 0.72, 1.9, cfg=1.0),  # NFE 16: not a chat-reader candidate
    ]
    verdicts = {v.condition: v for v in check(results, QualityGates())}
    assert set(verdicts) == {"int8/nfe7/sway/cfg1"}
    assert verdicts["int8/nfe7/sway/cfg1"].passed and verdicts["int8/nfe7/sway/cfg1"].reference == "fp32/nfe7/sway/cfg1"
    default = choose_default(results)
    assert default is not None and (default.nfe, default.cfg) == (7, 1.0)


def test_bad_sweep_conditions_are_refused():
    from f5build.cli import _parser
    from f5build.quality import Options
    from f5build.quality.sweep import Condition

    with pytest.raises(ValueError, match="guidance strength >= 0"):
        Condition("fp32", 7, "sway", -1.0)
    assert Condition("fp32", 7, "sway", 2.0).name == "fp32/nfe7/sway"  # f5-tts' strength: the name omits it
    assert Condition("fp32", 7, "sway", 0.5).name == "fp32/nfe7/sway/cfg0.5"
    for value, message in (("1,x", "comma list of numbers"), ("-1", r"in \[0, 10\]"), ("nan", r"in \[0, 10\]")):
        with pytest.raises(ValueError, match=message):
            Options.from_args(_parser().parse_args(["quality", f"--quality-cfg={value}"]))
    assert Options.from_args(_parser().parse_args(["quality", "--quality-cfg", "1,2"])).cfgs == (1.0, 2.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("quality: {vs_fp32: {max_wer_increase: -1}}", "must be a number >= 0"),
        ("quality: {vs_fp32: {max_wer: 0.1}}", "unknown key"),
        ("quality: {vs_fp32: [1, 2]}", "must be a mapping"),
        ("quality: {vs_fp32: {max_ovrl_drop: yes}}", "must be a number"),
        ("quality: [", "not valid YAML"),
    ],
)
def test_bad_quality_gates_are_refused_naming_the_file(tmp_path: Path, text: str, message: str):
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        QualityGates.load(path)
    assert str(path) in str(e.value)


def test_the_repository_gates_hold_the_issue_figures():
    g = QualityGates.load(Path(__file__).resolve().parents[1] / "config" / "gates.yaml")
    assert (g.max_wer_increase, g.max_similarity_drop, g.max_ovrl_drop) == (0.02, 0.02, 0.1)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install -y espeak-ng)")
def test_quality_smoke_on_the_trained_model(tmp_path: Path):
    """What CI runs of the listening sweep: the trained model, FP32 and INT8 at NFE 16, a few utterances."""
    from f5build.cli import main

    root = ["--model", "f5tts-small-en", "--artifacts-root", str(tmp_path / "a")]
    assert main(["export", *root]) == 0
    assert main(["calibrate", *root, "--calib-requests", "4", "--calib-heldout-requests", "2"]) == 0
    assert main(["quantize", *root, "--quant-variants", "int8"]) == 0
    reports = tmp_path / "r"
    rc = main([
        "quality", *root, "--quality-precisions", "fp32,int8", "--quality-nfe", "16", "--quality-utts", "3",
        "--quality-eval", str(tmp_path / "eval"), "--quality-reports", str(reports),
    ])  # fmt: skip
    report = json.loads((reports / "f5tts-small-en" / "quality.json").read_text())
    names = [c["name"] for c in report["conditions"]]
    assert names == ["fp32/nfe16/sway", "int8/nfe16/sway"]
    assert [c["name"] for c in report["ceilings"]] == ["ground truth", "copy-synthesis"]
    assert rc == (0 if report["passed"] else 1)
    assert all(len(report["utterances"][n]) == 3 for n in names)


def test_quality_skips_seeded_models_saying_why(tiny_artifacts: Path, capsys: pytest.CaptureFixture[str]):
    from f5build.cli import main

    root = ["--model", "tiny", "--artifacts-root", str(tiny_artifacts.parent)]
    assert main(["quality", *root, "--quality-utts", "2"]) == 0
    assert "skipped: tiny has seeded weights" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install -y espeak-ng)")
def test_a_conditions_guidance_strength_reaches_the_sampler(tiny_artifacts: Path, tmp_path: Path):
    """Each condition synthesizes with its own CFG: the audio equals a direct request at that strength and
    differs from f5-tts' default strength on the same seed."""
    import numpy as np

    from f5build.quality.sweep import Condition, eval_items, synthesize_condition
    from f5build.train.corpus import SAMPLE_RATE, CorpusOptions, load_corpus, make_corpus
    from f5rt.synthesizer import SynthesisOptions, Synthesizer

    small = CorpusOptions(train_speakers=1, held_out_speakers=2, held_out_variants=2, train_sentences=1, phrases=1,
                          eval_sentences=2)  # fmt: skip
    evalset = load_corpus(make_corpus(tmp_path / "eval", small, splits=("ref", "eval"), progress=False))
    items = eval_items(evalset, 1)
    ref, tgt = items[0]
    with Synthesizer(tiny_artifacts, backend="onnxruntime", precision="fp32", threads=1) as synth:
        ((_, low, _),) = synthesize_condition(synth, Condition("fp32", 4, "sway", 0.5), evalset, items)
        ((_, default, _),) = synthesize_condition(synth, Condition("fp32", 4, "sway"), evalset, items)
        voice = synth.voice_from_audio(evalset.wave(ref), ref.text, sample_rate=SAMPLE_RATE, voice_id=ref.speaker)
        direct = synth.synthesize(tgt.text, voice, SynthesisOptions(nfe=4, cfg=0.5, seed=0)).audio
    np.testing.assert_array_equal(low, np.clip(direct, -1, 1))
    assert not np.array_equal(low, default)
