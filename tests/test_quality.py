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


def _cond(
    precision: str, nfe: int, wer_: float, sim: float, ovrl: float, cfg: float = 2.0, schedule: str = "sway"
) -> ConditionScore:
    from f5build.quality.sweep import condition_name

    utts = [_utt(i, wer_, sim, sim - 0.1, ovrl) for i in range(3)]
    return ConditionScore.of(condition_name(precision, nfe, schedule, cfg), precision, nfe, schedule, utts, cfg)


def test_condition_means_and_speaker_verification():
    scores = [_utt(0, 0.2, 0.9, 0.7, 3.0), _utt(1, 0.4, 0.6, 0.8, 2.0)]
    c = ConditionScore.of("x", "fp32", 16, "sway", scores)
    assert (c.wer, c.sim, c.verify_rate, c.ovrl) == pytest.approx((0.3, 0.75, 0.5, 2.5))
    babble = [_utt(0, 0.5, 0.8, 0.7, 2.0), _utt(1, 0.6, 0.8, 0.7, 2.0), _utt(2, 7.0, 0.8, 0.7, 2.0)]
    c = ConditionScore.of("x", "fp32", 16, "sway", babble)  # one hallucinated line moves the mean only
    assert (c.wer, c.wer_median, c.lines_said) == pytest.approx((2.7, 0.6, 1))
    with pytest.raises(ValueError, match="no utterances"):
        ConditionScore.of("x", "fp32", 16, "sway", [])


def test_verification_carries_its_interval_and_the_similarity_margin():
    from f5build.quality.scoring import wilson_interval

    # 26 of 48 verified: the interval is about 28 points wide, so 54 % cannot be told from 57 % or 48 %
    lines = [_utt(i, 1.0, 0.78, 0.76, 2.0) for i in range(26)] + [_utt(i, 1.0, 0.75, 0.77, 2.0) for i in range(22)]
    c = ConditionScore.of("x", "fp32", 16, "sway", lines)
    assert (c.lines_verified, c.verify_rate) == (26, pytest.approx(26 / 48))
    assert c.sim_margin == pytest.approx((26 * 0.02 - 22 * 0.02) / 48)
    from scipy.stats import binomtest

    for k, n in ((26, 48), (0, 10), (10, 10), (3, 7)):  # Wilson's interval as scipy computes it
        want = binomtest(k, n).proportion_ci(0.95, "wilson")
        assert wilson_interval(k, n) == pytest.approx((want.low, want.high), abs=1e-4), (k, n)
    assert c.verify_interval == wilson_interval(26, 48)
    assert c.verified_label == "54% (40-67)"
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0  # stays inside [0, 1]
    for bad in ((3, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError, match="successes"):
            wilson_interval(*bad)


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
        _cond("fp32", 7, 0.4, 0.70, 1.8, schedule="epss"),
        _cond("fp32", 7, 0.3, 0.72, 1.9, cfg=1.0, schedule="epss"),
        _cond("int8", 7, 0.3, 0.72, 1.9, cfg=1.0, schedule="epss"),  # equal to its FP32 twin at CFG 1
        _cond("int8", 7, 0.3, 0.60, 1.9, cfg=0.5, schedule="epss"),  # no FP32 twin at CFG 0.5: not gated
        _cond("fp32", 16, 0.2, 0.72, 1.9, cfg=1.0, schedule="epss"),  # NFE 16: not a chat-reader candidate
    ]
    verdicts = {v.condition: v for v in check(results, QualityGates())}
    assert set(verdicts) == {"int8/nfe7/epss/cfg1"}
    assert verdicts["int8/nfe7/epss/cfg1"].passed and verdicts["int8/nfe7/epss/cfg1"].reference == "fp32/nfe7/epss/cfg1"
    chosen = choose_default(results)
    assert chosen is not None and (chosen.score.nfe, chosen.score.cfg) == (7, 1.0)


def test_the_chat_reader_default_is_what_the_service_runs_chosen_by_what_a_listener_can_judge():
    """Only FP32 at NFE 6-8 at the schedule `f5rt serve --nfe N` runs (EPSS at 6 and 7, uniform + sway at 8)
    is a candidate; the lowest WER wins while any candidate says its text, the highest similarity when none
    does (WER then ranks Whisper's hallucinations on babble)."""
    from f5build.quality.report import choose_default
    from f5build.quality.sweep import served_schedule

    assert [served_schedule(n) for n in (4, 6, 7, 8, 16, 32)] == ["sway", "epss", "epss", "sway", "epss", "sway"]
    said = [
        _cond("fp32", 7, 0.10, 0.70, 1.8, schedule="sway"),  # the service never runs sway at NFE 7
        _cond("fp32", 7, 0.30, 0.70, 1.8, schedule="epss"),
        _cond("fp32", 8, 0.25, 0.65, 1.8, schedule="sway"),
        _cond("fp32", 8, 0.05, 0.90, 1.8, schedule="midpoint"),  # not an Euler schedule
        _cond("int8", 6, 0.01, 0.90, 1.8, schedule="epss"),  # FP32 only
        _cond("fp32", 6, 0.90, 0.90, 1.8, schedule="epss"),
    ]
    chosen = choose_default(said)
    assert chosen is not None and chosen.by_wer and chosen.score.name == "fp32/nfe8/sway"
    babble = [
        _cond("fp32", 6, 0.98, 0.73, 1.9, schedule="epss"),
        _cond("fp32", 7, 0.95, 0.71, 1.9, schedule="epss"),  # the lowest WER, but nothing is said
        _cond("fp32", 8, 2.39, 0.72, 1.8, schedule="sway"),
    ]
    chosen = choose_default(babble)
    assert chosen is not None and not chosen.by_wer and chosen.score.name == "fp32/nfe6/epss"
    assert "highest speaker similarity" in chosen.reason
    assert choose_default([_cond("fp32", 7, 0.2, 0.7, 1.8, schedule="sway")]) is None


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
    assert Options.from_args(_parser().parse_args(["quality"])).schedules == ()  # the service's at each NFE
    with pytest.raises(ValueError, match="sway, epss and/or midpoint"):
        Options.from_args(_parser().parse_args(["quality", "--quality-schedules", "sway,rk4"]))


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
    assert names == ["fp32/nfe16/epss", "int8/nfe16/epss"]  # the schedule the service runs at NFE 16
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

    from f5build.quality.sweep import Condition, synthesize_condition
    from f5build.train.corpus import SAMPLE_RATE, CorpusOptions, load_corpus, make_corpus
    from f5rt.synthesizer import SynthesisOptions, Synthesizer

    small = CorpusOptions(train_speakers=1, held_out_speakers=2, held_out_variants=2, train_sentences=1, phrases=1,
                          eval_sentences=2)  # fmt: skip
    evalset = load_corpus(make_corpus(tmp_path / "eval", small, splits=("ref", "eval"), progress=False))
    items = evalset.held_out_pairs(1)
    ref, tgt = items[0]
    with Synthesizer(tiny_artifacts, backend="onnxruntime", precision="fp32", threads=1) as synth:
        ((_, low, _),) = synthesize_condition(synth, Condition("fp32", 4, "sway", 0.5), evalset, items)
        ((_, default, _),) = synthesize_condition(synth, Condition("fp32", 4, "sway"), evalset, items)
        voice = synth.voice_from_audio(evalset.wave(ref), ref.text, sample_rate=SAMPLE_RATE, voice_id=ref.speaker)
        direct = synth.synthesize(tgt.text, voice, SynthesisOptions(nfe=4, cfg=0.5, seed=0)).audio
    np.testing.assert_array_equal(low, np.clip(direct, -1, 1))
    assert not np.array_equal(low, default)


class _CountingListener:
    """Scores from the audio itself (so a stored score can be told from a fresh one), counting calls;
    `fail_after` raises on that call, as a sweep killed mid-condition stops."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def score(self, u, audio, rate) -> UtteranceScore:
        import numpy as np

        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        level = float(np.sqrt(np.mean(np.square(audio))))
        return UtteranceScore(u.id, u.speaker, u.text, "", level, 0.8, 0.5, 2.0, 2.0, 3.0, 3.0, audio.size / rate)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install -y espeak-ng)")
def test_a_killed_or_widened_sweep_scores_each_condition_once(tiny_artifacts: Path, tmp_path: Path):
    """Each condition is stored when scored; a rerun takes back what it holds for the same graphs and
    scores only the rest, in the order asked; a damaged file, other graphs or --quality-rescore score again."""
    from f5build.quality.store import ScoreStore, graph_hashes
    from f5build.quality.sweep import Condition, ceilings, run_conditions
    from f5build.train.corpus import CorpusOptions, load_corpus, make_corpus
    from f5rt.manifest import load_manifest

    small = CorpusOptions(train_speakers=1, held_out_speakers=2, held_out_variants=2, train_sentences=1, phrases=1,
                          eval_sentences=2)  # fmt: skip
    evalset = load_corpus(make_corpus(tmp_path / "eval", small, splits=("ref", "eval"), progress=False))
    items = evalset.held_out_pairs(2)
    folder = tmp_path / "scores"
    a, b, c = Condition("fp32", 4, "sway"), Condition("fp32", 4, "midpoint"), Condition("fp32", 5, "sway", 1.0)

    def sweep(conds, listener, reuse=True):
        store = ScoreStore.for_run(folder, evalset, items, "base", reuse)
        return run_conditions(tiny_artifacts, conds, evalset, items, listener, 1, store=store)

    killed = _CountingListener(fail_after=3)  # dies on the last line of the second condition
    with pytest.raises(KeyboardInterrupt):
        sweep([a, b], killed)
    assert [p.name.split("-")[0] for p in folder.iterdir()] == ["fp32_nfe4_sway"]

    again = _CountingListener()
    results, details = sweep([c, a, b], again)  # widened by c, resumed after a
    assert again.calls == 4  # b and c, two lines each; a came from the store
    assert [r.name for r in results] == ["fp32/nfe5/sway/cfg1", "fp32/nfe4/sway", "fp32/nfe4/midpoint"]
    fresh = _CountingListener()
    ref_results, ref_details = run_conditions(tiny_artifacts, [c, a, b], evalset, items, fresh, 1)
    assert results == ref_results and details == ref_details  # stored scores are the scores

    third = _CountingListener()
    assert sweep([a, b, c], third)[0] == ref_results[1:] + ref_results[:1] and third.calls == 0
    next(folder.glob("fp32_nfe4_midpoint-*.json")).write_text("{ torn")
    assert sweep([a, b, c], third)[1] == {n: ref_details[n] for n in [a.name, b.name, c.name]}
    assert third.calls == 2  # only the damaged one
    rescored = _CountingListener()
    sweep([a], rescored, reuse=False)
    assert rescored.calls == 2 and len(list(folder.glob("fp32_nfe4_sway-*.json"))) == 1

    store = ScoreStore.for_run(folder, evalset, items, "base")
    graphs = graph_hashes(load_manifest(tiny_artifacts), "fp32")
    assert store.get(a.name, graphs) is not None
    assert store.get(a.name, {**graphs, "step.onnx": "0" * 64}) is None  # a rebuilt step graph
    assert ScoreStore.for_run(folder, evalset, items[:1], "base").get(a.name, graphs) is None  # other lines
    assert ScoreStore.for_run(folder, evalset, items, "tiny.en").get(a.name, graphs) is None  # other ASR

    ceiling = _CountingListener()
    first = ceilings(tiny_artifacts, evalset, items, ceiling, 1, store)
    assert ceilings(tiny_artifacts, evalset, items, ceiling, 1, store) == first and ceiling.calls == 4


def test_a_precisions_stored_scores_depend_on_its_own_graphs_only():
    """The key of a precision names its step graph (and weights file) and every text encoder and vocoder
    variant the runtime may fall back to; copy-synthesis names only the FP32 vocoder."""
    from types import SimpleNamespace

    from f5build.quality.store import graph_hashes

    def entry(graph: str, precision: str, sha: str, **more: object) -> dict[str, object]:
        return {"graph": graph, "precision": precision, "kind": "onnx", "sha256": sha, **more}

    manifest = SimpleNamespace(files={
        "text_encoder.onnx": entry("text_encoder", "fp32", "t"),
        "step.onnx": entry("step", "fp32", "s"),
        "step.int8.onnx": entry("step", "int8", "s8"),
        "step.cpu-int8.onnx": entry("step", "cpu-int8", "c8", external_data=["step.cpu-int8.onnx.data"]),
        "step.cpu-int8.onnx.data": {"kind": "onnx-data", "sha256": "c8d"},
        "vocoder.onnx": entry("vocoder", "fp32", "v"),
        "vocoder.int8.onnx": entry("vocoder", "int8", "v8"),
        "calibration/step.npz": {"graph": "step", "kind": "calibration", "sha256": "x"},
    })  # fmt: skip
    shared = {"text_encoder.onnx": "t", "vocoder.onnx": "v", "vocoder.int8.onnx": "v8"}
    assert graph_hashes(manifest, "int8") == {**shared, "step.int8.onnx": "s8"}
    assert graph_hashes(manifest, "cpu-int8") == {
        **shared, "step.cpu-int8.onnx": "c8", "step.cpu-int8.onnx.data": "c8d"
    }  # fmt: skip
    assert graph_hashes(manifest, None) == {"vocoder.onnx": "v"}


def test_stored_scores_follow_the_scoring_source_not_the_reports(tmp_path: Path):
    from f5build.common import package_hash
    from f5build.quality.store import SCORING_MODULES

    for name in (*SCORING_MODULES, "report.py"):
        (tmp_path / name).write_text(f"# {name}\n")
    before = package_hash(tmp_path, SCORING_MODULES)
    (tmp_path / "report.py").write_text("# another table\n")
    assert package_hash(tmp_path, SCORING_MODULES) == before
    (tmp_path / "scoring.py").write_text("# another normalisation\n")
    assert package_hash(tmp_path, SCORING_MODULES) != before
    assert package_hash(tmp_path) != package_hash(tmp_path, SCORING_MODULES)  # the default reads every source
    (tmp_path / "sweep.py").unlink()
    with pytest.raises(FileNotFoundError, match="no such module to hash: .*sweep.py"):
        package_hash(tmp_path, SCORING_MODULES)  # a renamed module is an error, not a silent gap


def test_a_store_the_disk_refuses_warns_and_the_sweep_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from f5build.quality.store import ScoreStore

    blocked = tmp_path / "scores"
    blocked.write_text("a file where the folder should be")
    store = ScoreStore(blocked, {"items": [["r", "u0"]]})
    assert store.put("fp32/nfe7/epss", {}, [_utt(0, 1.0, 0.7, 0.6, 1.9)]) is None
    assert "fp32/nfe7/epss's scores not stored, a rerun will score it again" in capsys.readouterr().out
    assert store.get("fp32/nfe7/epss", {}) is None
    ok = ScoreStore(tmp_path / "ok", {"items": [["r", "u0"]]})
    assert ok.put("fp32/nfe7/epss", {}, [_utt(0, 1.0, 0.7, 0.6, 1.9)]) is not None
    assert ok.get("fp32/nfe7/epss", {}) == [_utt(0, 1.0, 0.7, 0.6, 1.9)]
    assert ok.get("fp32/nfe7/epss", {"step.onnx": "other"}) is None
