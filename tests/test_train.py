"""The training side of the embedded model: corpus, batches, resumable training, released layout.

The corpus tests speak with espeak-ng (CI installs it); the training tests use a tiny architecture
and a few steps, so they prove the mechanics (determinism, resume, the layout users' loaders read),
not the model's quality (that is `f5build quality`'s job).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from f5build.train.batches import Curriculum, FrameBatches
from f5build.train.corpus import CorpusOptions, corpus_is_current, load_corpus, make_corpus
from f5build.train.sentences import phrases, sentences
from f5build.train.speakers import FORMANT_SCALES

ROOT = Path(__file__).resolve().parents[1]
SMALL = CorpusOptions(
    train_speakers=3,
    held_out_speakers=2,
    held_out_variants=2,
    train_sentences=6,
    phrases=10,
    eval_sentences=4,
    formant_scales=(100,),  # the plain corpus; WIDE below scales it
)
TINY_ARCH = dict(dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, text_dim=32, conv_layers=1, text_mask_padding=True)
TINY_VOCOS = dict(dim=32, intermediate_dim=64, num_layers=1, padding="center")

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install -y espeak-ng)"
)


def test_lines_are_distinct_and_fixed_by_the_seed():
    a, b = sentences(200, 7), sentences(200, 7)
    assert a == b and len(set(a)) == 200
    assert sentences(200, 8) != a
    p = phrases(300, 7)
    assert len(set(p)) == 300 and max(len(x.split()) for x in p) <= 7
    with pytest.raises(ValueError, match="distinct"):
        phrases(100_000, 7)


def test_curriculum_grows_and_batches_are_a_function_of_the_step():
    from f5build.train.corpus import Utterance

    utts = [Utterance(f"u{i}", "s", "x", "train", 0, 0, 0, 40 + 7 * i) for i in range(120)]
    cur = Curriculum(start_frames=100, max_frames=800, ramp_steps=10, batch_frames=600)
    assert cur.cap(0) == 100 and cur.cap(5) == 450 and cur.cap(10) == cur.cap(99) == 800
    fb = FrameBatches(utts, cur, seed=3)
    for step in (0, 4, 50):
        batch = fb.batch(step)
        assert [u.id for u in batch] == [u.id for u in FrameBatches(utts, cur, seed=3).batch(step)]
        assert max(u.frames for u in batch) <= cur.cap(step)
        assert len(batch) == 1 or len(batch) * max(u.frames for u in batch) <= cur.batch_frames
    with pytest.raises(ValueError, match="start cap"):
        FrameBatches(utts[10:], Curriculum(start_frames=50), seed=0)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install -y espeak-ng)")
    return make_corpus(tmp_path_factory.mktemp("corpus") / "c", SMALL, progress=False)


WIDE = replace(SMALL, formant_scales=(88, 112))


@pytest.fixture(scope="module")
def wide_corpus(small_corpus: Path) -> Path:
    """SMALL's lines and speakers with each training speaker's formants scaled to 88 or 112 %."""
    return make_corpus(small_corpus.parent / "wide", WIDE, progress=False)


@needs_espeak
def test_corpus_is_deterministic_split_and_verified(small_corpus: Path, tmp_path: Path):
    again = make_corpus(tmp_path / "again", SMALL, progress=False)
    a = json.loads((small_corpus / "corpus.json").read_text())
    b = json.loads((again / "corpus.json").read_text())
    assert a["files"] == b["files"]  # same speech, mels and split, byte for byte
    assert corpus_is_current(small_corpus, SMALL) and not corpus_is_current(small_corpus, replace(SMALL, seed=9))
    c = load_corpus(small_corpus)
    assert {s: len(c.split(s)) for s in ("phrase", "train", "ref", "eval")} == {
        "phrase": 10,
        "train": 6,
        "ref": 2,
        "eval": 4,
    }
    held = {c.speakers[s].variant for s in c.held_out}
    trained = {c.speakers[u.speaker].variant for u in c.utts if u.split in ("phrase", "train")}
    assert held and not held & trained  # held-out speakers use timbres no training speaker has
    for u in c.utts:
        assert c.mel_of(u).shape == (u.samples // 256 + 1, 100)
        assert np.abs(c.wave(u)).max() > 0.05
    # the held-out set alone has the same utterances as in the full corpus
    ev = load_corpus(make_corpus(tmp_path / "ev", SMALL, progress=False, splits=("ref", "eval")))
    assert [(u.id, u.text) for u in ev.utts] == [(u.id, u.text) for u in c.utts if u.split in ("ref", "eval")]
    np.testing.assert_array_equal(ev.mel_of(ev.utts[0]), c.mel_of(c.split("ref")[0]))
    # every held-out figure reads the same (reference, line) pairs: each eval line after its speaker's reference
    pairs = ev.held_out_pairs()
    assert [t.id for _, t in pairs] == [u.id for u in ev.split("eval")]
    assert all(r.split == "ref" and r.speaker == t.speaker for r, t in pairs)
    assert ev.held_out_pairs(3) == pairs[:3] and ev.held_out_pairs(0) == []
    with pytest.raises(ValueError, match="5 held-out lines asked for, the held-out set has 4"):
        ev.held_out_pairs(5)
    # a changed file is refused
    tampered = tmp_path / "tampered"
    shutil.copytree(small_corpus, tampered)
    (tampered / "utts.jsonl").write_text((tampered / "utts.jsonl").read_text().replace("train", "trian", 1))
    with pytest.raises(ValueError, match="sha256"):
        load_corpus(tampered)


def test_a_variant_file_is_scaled_formant_by_formant():
    from f5build.train.speakers import scale_variant

    text = "language variant\nname travis\nformant 0 90 90 90 90\nformant 2 50 100 80 95\npitch 75 120\n"
    out = scale_variant(text, "travis_f110", 110).splitlines()
    assert out[:5] == ["language variant", "name travis_f110", "formant 0 99 90 90 90", "formant 2 55 100 80 95",
                       "pitch 75 120"]  # fmt: skip
    # the formants the file leaves at 100 % of the base voice are added at the scale
    assert out[5:] == [f"formant {n} 110 100 100 100" for n in (1, 3, 4, 5, 6, 7, 8)]


@needs_espeak
def test_a_formant_scaled_speaker_is_another_timbre_and_100_percent_is_the_shipped_voice():
    import subprocess

    from f5build.train.corpus import speak
    from f5build.train.speakers import Speaker, scaled_voices

    plain = Speaker("s", "en-us", "travis", 50, 155)
    assert plain.to_dict() == {"id": "s", "accent": "en-us", "variant": "travis", "pitch": 50, "rate": 155}
    assert "--path" not in plain.espeak_args()
    wider = replace(plain, formant=112)
    assert wider.voice == "en-us+travis_f112" and wider.to_dict()["formant"] == 112
    line = "Thanks for the follow."
    a, b = speak(plain, line), speak(wider, line)
    assert not (a.shape == b.shape and np.array_equal(a, b))
    path = Path(wider.espeak_args()[1])
    assert (path / "espeak-ng-data" / "voices" / "!v" / "travis_f112").is_file()

    def wav(*data: str) -> bytes:
        return subprocess.run(["espeak-ng", *data, *plain.espeak_args(), "--stdout", line], capture_output=True,
                              check=True, timeout=60).stdout  # fmt: skip

    # the shipped variant through the private data folder is the same voice, byte for byte
    assert wav("--path", str(path)) == wav()
    with pytest.raises(ValueError, match="outside 70-130"):
        scaled_voices("travis", 150)
    with pytest.raises(FileNotFoundError, match="no voice variant 'nobody'"):
        scaled_voices("nobody", 110)


@needs_espeak
def test_a_corpus_with_formant_scales_keeps_every_line_and_every_held_out_voice(small_corpus: Path, wide_corpus: Path):
    wide = load_corpus(wide_corpus)
    base = load_corpus(small_corpus)
    assert [(u.id, u.speaker, u.text, u.split) for u in wide.utts] == [
        (u.id, u.speaker, u.text, u.split) for u in base.utts
    ]
    for u, v in zip(base.utts, wide.utts, strict=True):
        if u.split in ("ref", "eval"):  # held-out speakers keep their voices as shipped
            assert np.array_equal(base.wave(u), wide.wave(v)), u.id
    trained = {u.speaker for u in base.utts if u.split in ("phrase", "train")}
    assert {wide.speakers[s].formant for s in trained} <= {88, 112}
    assert all(base.speakers[s].formant == 100 for s in base.speakers)
    assert any(not np.array_equal(base.wave(u), wide.wave(v)) for u, v in zip(base.utts, wide.utts, strict=True))
    assert corpus_is_current(wide_corpus, WIDE) and not corpus_is_current(wide_corpus, SMALL)
    assert "formant_scales" not in json.loads((small_corpus / "corpus.json").read_text())["options"]
    with pytest.raises(ValueError, match="formant scales must be percents in 70-130"):
        replace(SMALL, formant_scales=(60, 100))
    with pytest.raises(ValueError, match="formant scales must be percents"):
        replace(SMALL, formant_scales=())


def _trainers(
    corpus_root: Path,
    ckpt: Path,
    ctc: float = 0.0,
    ctc_max_time: float = 1.0,
    upsampling: bool = False,
    lr: float = 5e-4,
    batch_frames: int = 800,
    signals_every: int = 1000,
):
    from f5build.train.ctc import CTCOptions
    from f5build.train.f5 import F5Trainer, F5TrainOptions, make_vocab
    from f5build.train.vocoder import VocosTrainer, VocosTrainOptions

    corpus = load_corpus(corpus_root)
    cur = Curriculum(start_frames=400, max_frames=400, ramp_steps=1, batch_frames=batch_frames)
    arch = {**TINY_ARCH, "text_embedding_average_upsampling": True} if upsampling else dict(TINY_ARCH)
    opts = F5TrainOptions(
        arch=arch,
        curriculum=cur,
        save_every=2,
        signals_every=signals_every,
        lr=lr,
        ctc=CTCOptions(weight=ctc, block=1, max_time=ctc_max_time),
    )
    f5 = F5Trainer(corpus, make_vocab(corpus), ckpt, opts)
    voc = VocosTrainer(corpus, ckpt, VocosTrainOptions(arch=dict(TINY_VOCOS), batch=2, save_every=2, steps=4))
    return f5, voc


def _released(corpus_root: Path, tmp_path: Path):
    """Two steps of each trainer, exported as a release: (f5 trainer, vocos trainer, release folder)."""
    from f5build.train.release import export_release

    f5, voc = _trainers(corpus_root, tmp_path / "ckpt")
    f5.run_until(2, progress=False)
    voc.run_until(2, progress=False)
    return f5, voc, export_release(tmp_path / "ckpt", tmp_path / "models" / "small", load_corpus(corpus_root))


@needs_espeak
def test_training_resumes_to_the_same_weights(small_corpus: Path, tmp_path: Path):
    once, _ = _trainers(small_corpus, tmp_path / "once")
    once.run_until(4, progress=False)
    first, _ = _trainers(small_corpus, tmp_path / "twice")
    first.run_until(2, progress=False)
    resumed, _ = _trainers(small_corpus, tmp_path / "twice")  # a new process would start like this
    resumed.run_until(4, progress=False)
    assert resumed.step == once.step == 4
    for (name, a), b in zip(once.cfm.state_dict().items(), resumed.cfm.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    losses = [
        json.loads(x)["loss"] for x in (tmp_path / "once" / "f5_log.jsonl").read_text().splitlines() if "loss" in x
    ]
    assert all(np.isfinite(losses))


@needs_espeak
def test_training_resumes_to_the_same_weights_across_its_alignment_signals(small_corpus: Path, tmp_path: Path):
    """The held-out signals sample through f5-tts' `CFM.sample(seed=...)`, which reseeds torch's global
    generator. They run after the state is saved, so unless they leave the training's random stream as
    they found it, an uninterrupted run draws other flow times and noise after each signal step than a
    run resumed from that step's state."""
    from f5build.train.signals import alignment_signals

    corpus = load_corpus(small_corpus)

    def signals(ema: torch.nn.Module, step: int) -> dict[str, float]:
        return alignment_signals(ema, corpus, count=2, nfe=2).to_dict()

    once, _ = _trainers(small_corpus, tmp_path / "once", signals_every=2)
    once.run_until(4, signals=signals, progress=False)
    first, _ = _trainers(small_corpus, tmp_path / "twice", signals_every=2)
    first.run_until(2, signals=signals, progress=False)
    resumed, _ = _trainers(small_corpus, tmp_path / "twice", signals_every=2)
    resumed.run_until(4, signals=signals, progress=False)
    for (name, a), b in zip(once.cfm.state_dict().items(), resumed.cfm.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    logged = [json.loads(x) for x in (tmp_path / "once" / "f5_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "signals" in r] == [2, 4]  # the signals did run


@needs_espeak
def test_released_layout_loads_through_the_checkpoint_path(small_corpus: Path, tmp_path: Path):
    from f5build.load import ReleasedCheckpoint, _checkpoint

    f5, voc, out = _released(small_corpus, tmp_path)
    rel = ReleasedCheckpoint.open(out)
    assert rel.checkpoint.name == "model_2.safetensors"
    bundle = _checkpoint(rel.checkpoint, rel.vocab, rel.vocoder, str(rel.model_config), "ema")
    for name, value in f5.ema.transformer.state_dict().items():
        torch.testing.assert_close(bundle.dit.state_dict()[name], value, rtol=0, atol=0, msg=name)
    for name, value in voc.vocos.state_dict().items():
        torch.testing.assert_close(bundle.vocos.state_dict()[name], value, rtol=0, atol=0, msg=name)
    (out / "vocab.txt").write_text((out / "vocab.txt").read_text() + "x\n")
    with pytest.raises(ValueError, match="sha256 differs"):
        ReleasedCheckpoint.open(out)


def test_the_committed_embedded_checkpoint_loads_and_matches_its_hashes():
    from f5build.load import EMBEDDED_DIR, load_model
    from f5build.train.f5 import ARCH
    from f5build.train.vocoder import VOCOS_ARCH, VocosTrainOptions

    meta = json.loads((EMBEDDED_DIR / "checkpoint.json").read_text())
    size = sum((EMBEDDED_DIR / rel).stat().st_size for rel in meta["files"])
    assert size < 40 * 2**20, f"the committed checkpoint is {size / 2**20:.1f} MB, over the 40 MB budget"
    bundle = load_model("f5tts-small-en")  # verifies every sha256 in checkpoint.json on the way
    assert bundle.source["kind"] == "checkpoint" and bundle.arch == meta["arch"]
    assert meta["arch"] == ARCH  # `nox -s train` trains the release's architecture by default
    assert (meta["vocos_arch"], meta["vocos_steps"]) == (VOCOS_ARCH, VocosTrainOptions().steps)  # and its Vocos
    assert sum(p.numel() for p in bundle.dit.parameters()) > 1e6
    # the README names the release's weights file and its sha256: a newcomer checks against them
    readme = (EMBEDDED_DIR.parents[1] / "README.md").read_text(encoding="utf-8")
    named = re.search(r"`(model_\d+\.safetensors)`\s+sha256 `([0-9a-f]{64})`", readme)
    assert named is not None, "README.md no longer names the embedded checkpoint's weights and sha256"
    assert meta["files"].get(named[1]) == named[2], f"README.md names {named[1]} {named[2]}, not the release's"
    assert f"model_{meta['steps']}.safetensors" == named[1]


@needs_espeak
def test_the_recipe_corpus_is_the_one_the_committed_checkpoint_last_trained_on(tmp_path: Path):
    """`nox -s train -- --train-from models/f5tts-small-en` continues the release on the corpus its last
    steps were trained on: the recipe's speakers.json is byte for byte the one its record names."""
    from f5build.load import EMBEDDED_DIR
    from f5build.train.corpus import speakers_record
    from f5rt.files import atomic_write_json, sha256_file

    meta = json.loads((EMBEDDED_DIR / "checkpoint.json").read_text())
    last = meta["train_corpus"][-1]
    assert last["from_step"] < meta["steps"]
    atomic_write_json(tmp_path / "speakers.json", speakers_record(CorpusOptions()))
    assert sha256_file(tmp_path / "speakers.json") == last["corpus"]["speakers.json"]
    atomic_write_json(tmp_path / "plain.json", speakers_record(replace(CorpusOptions(), formant_scales=(100,))))
    assert sha256_file(tmp_path / "plain.json") == meta["train_corpus"][0]["corpus"]["speakers.json"]


KILLED_RUN = """
import torch
import f5build.train.f5 as f5mod
from test_train import _trainers

# the 2nd save of the training state dies half-way: its temp file is written, not yet renamed
f5mod.save_state = dying(
    f5mod.save_state, 2, counts=lambda path, state: path.name == "f5_state.pt",
    last_words=lambda path, state: torch.save(state, path.with_name("." + path.name + ".half.tmp")),
)
trainer, _ = _trainers(Path({corpus!r}), Path({ckpt!r}))
trainer.run_until(6, progress=False)
"""


@needs_espeak
def test_training_killed_mid_save_resumes_to_the_same_weights(small_corpus: Path, tmp_path: Path):
    """SIGKILL while the training state is being saved: the previous state stays loadable, and the
    rerun reaches bitwise the weights of an uninterrupted run."""
    from killing import run_killed

    once, _ = _trainers(small_corpus, tmp_path / "once")
    once.run_until(6, progress=False)
    run_killed(KILLED_RUN.format(corpus=str(small_corpus), ckpt=str(tmp_path / "k")))
    from f5build.train.state import load_state

    assert load_state(tmp_path / "k" / "f5_state.pt")["step"] == 2  # the 1st save (save_every=2), intact
    resumed, _ = _trainers(small_corpus, tmp_path / "k")
    resumed.run_until(6, progress=False)
    for (name, a), b in zip(once.cfm.state_dict().items(), resumed.cfm.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@needs_espeak
def test_a_resumed_run_cuts_its_logs_back_to_its_state(small_corpus: Path, tmp_path: Path):
    """A run killed between saves logged steps its state never reached (and maybe half a line); the
    resumed run trains those steps again, so its logs, the loss curve and the signal table drawn from
    them must hold each step once."""
    f5, voc = _trainers(small_corpus, tmp_path / "k")
    f5.run_until(2, progress=False)
    voc.run_until(2, progress=False)
    kept = {"step": 2, "signals": {"loudness_corr": 0.5}}
    for log in (f5.log_path, voc.log_path):
        with open(log, "a", encoding="utf-8") as f:  # what the killed run wrote after its last save
            f.write(json.dumps(kept) + "\n" + json.dumps({"step": 3, "loss": 1.0}) + '\n{"step": 4, "lo')
    resumed, resumed_voc = _trainers(small_corpus, tmp_path / "k")
    resumed.run_until(3, progress=False)
    resumed_voc.run_until(3, progress=False)
    for log in (resumed.log_path, resumed_voc.log_path):
        rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        assert rows == [kept], log.name  # no log row falls on steps 3-4 of this tiny run
    from f5build.train.state import trim_log

    assert trim_log(tmp_path / "none.jsonl", 0) == 0  # a run with no log yet


@needs_espeak
def test_training_continues_from_a_released_checkpoint(small_corpus: Path, tmp_path: Path):
    """A fresh clone has the release, not the state: --train-from seeds the state from it."""
    from f5build.train.f5 import SIZES
    from f5build.train.warmstart import Release, seed_train_dir

    f5, voc, out = _released(small_corpus, tmp_path)
    release = Release.read(out)
    assert (release.steps, release.vocos_steps) == (2, 2)
    release.check_matches(f5.vocab, dict(TINY_ARCH), dict(TINY_VOCOS))
    with pytest.raises(ValueError, match="DiT arch"):
        release.check_matches(f5.vocab, {**TINY_ARCH, "depth": 3}, dict(TINY_VOCOS))
    with pytest.raises(ValueError, match=r"pass --train-size wide --no-train-average-upsampling to continue it"):
        replace(release, arch=dict(SIZES["wide"])).check_matches(f5.vocab, SIZES["small"], TINY_VOCOS)
    with pytest.raises(ValueError, match="vocab"):
        release.check_matches(f5.vocab[:-1], dict(TINY_ARCH), dict(TINY_VOCOS))

    fresh, fresh_voc = _trainers(small_corpus, tmp_path / "fresh")
    assert seed_train_dir(tmp_path / "fresh", release, fresh, fresh_voc)
    assert not seed_train_dir(tmp_path / "fresh", release, fresh, fresh_voc)  # a state exists: left alone
    resumed, resumed_voc = _trainers(small_corpus, tmp_path / "fresh")
    resumed.run_until(2, progress=False)  # nothing to do: the state is at step 2 already
    resumed_voc.run_until(2, progress=False)
    assert resumed.step == 2 and resumed_voc.step == 2
    assert resumed.lr_at(2) == pytest.approx(resumed.opts.lr / resumed.opts.warmup)  # warmup runs again
    # ... and for the Vocos, whose AdamW moments start at zero too: its step 2 is the warm start's first
    # warmup step (1/200 of the schedule's rate), where the run that trained through it was at 3/200
    assert (resumed_voc.warmup_from, voc.warmup_from) == (2, 0)
    assert resumed_voc.lr_at(2) == pytest.approx(voc.lr_at(2) / 3)
    for name, value in f5.ema.state_dict().items():
        torch.testing.assert_close(resumed.cfm.state_dict()[name], value, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(resumed.ema.state_dict()[name], value, rtol=0, atol=0, msg=name)
    for name, value in voc.vocos.state_dict().items():
        torch.testing.assert_close(resumed_voc.vocos.state_dict()[name], value, rtol=0, atol=0, msg=name)
    resumed.run_until(3, progress=False)  # and it trains on
    assert resumed.step == 3


@needs_espeak
def test_a_release_continued_from_keeps_its_training_record(small_corpus: Path, tmp_path: Path):
    """--train-from carries the release's record (CTC aid, learning rate, batch budget, average upsampling
    and the step each took effect) into the state, and this run's own settings go on top of it from the
    release's step, so the next release says how every one of its steps was trained."""
    from f5build.train.release import export_release
    from f5build.train.warmstart import Release, seed_train_dir

    f5, voc = _trainers(small_corpus, tmp_path / "first", ctc=0.5)
    f5.run_until(2, progress=False)
    voc.run_until(2, progress=False)
    first = export_release(tmp_path / "first", tmp_path / "models" / "first", load_corpus(small_corpus))
    release = Release.read(first)
    assert release.histories["ctc_history"] == [{"from_step": 0, "weight": 0.5, "block": 1, "max_time": 1.0}]

    on, on_voc = _trainers(small_corpus, tmp_path / "on", ctc=0.5, lr=1e-4, batch_frames=1600)
    assert seed_train_dir(tmp_path / "on", release, on, on_voc)
    on.run_until(3, progress=False)
    on_voc.run_until(3, progress=False)
    meta = json.loads(
        (
            export_release(tmp_path / "on", tmp_path / "models" / "on", load_corpus(small_corpus)) / "checkpoint.json"
        ).read_text()
    )
    assert meta["train_ctc"] == [{"from_step": 0, "weight": 0.5, "block": 1, "max_time": 1.0}]
    assert meta["train_lr"] == [{"from_step": 0, "lr": 5e-4}, {"from_step": 2, "lr": 1e-4}]
    assert meta["train_batch_frames"] == [{"from_step": 0, "batch_frames": 800}, {"from_step": 2, "batch_frames": 1600}]
    assert meta["train_average_upsampling"] == [{"from_step": 0, "average_upsampling": False}]
    assert (meta["train_warm_starts"], meta["vocos_warm_starts"]) == ([2], [2])  # optimizers restarted there

    # continued again from that release: both warm starts are recorded, in order, through a resume
    again, again_voc = _trainers(small_corpus, tmp_path / "again")
    assert seed_train_dir(tmp_path / "again", Release.read(tmp_path / "models" / "on"), again, again_voc)
    again, again_voc = _trainers(small_corpus, tmp_path / "again")  # a new process resumes the seeded state
    again.run_until(4, progress=False)
    again_voc.run_until(4, progress=False)
    meta = json.loads(
        (
            export_release(tmp_path / "again", tmp_path / "models" / "again", load_corpus(small_corpus))
            / "checkpoint.json"
        ).read_text()
    )
    assert (meta["train_warm_starts"], meta["vocos_warm_starts"]) == ([2, 3], [2, 3])
    assert json.loads((first / "checkpoint.json").read_text())["train_warm_starts"] == []  # trained from scratch

    # a release from before a record existed continues with this run's settings from step 0, as before
    older = replace(release, histories={})
    plain, plain_voc = _trainers(small_corpus, tmp_path / "older", lr=1e-4)
    assert seed_train_dir(tmp_path / "older", older, plain, plain_voc)
    assert (plain.ctc_history, plain.lr_history) == ([], [{"from_step": 0, "lr": 1e-4}])

    # a state from before the warm-start record kept only the newest one (its warmup_from)
    from f5build.train.state import warm_starts_of

    assert warm_starts_of({"warmup_from": 40000}) == [40000] and warm_starts_of({"step": 5}) == []


@needs_espeak
def test_a_run_continued_on_another_corpus_records_which_corpus_trained_which_steps(
    small_corpus: Path, wide_corpus: Path, tmp_path: Path
):
    """A release continued with --train-from on another corpus (a formant-scaled one, say) names each
    corpus its DiT and its Vocos trained on and the step each took effect, through a resume; a release from
    before the record is taken to have trained on the corpus it names from step 0."""
    from f5build.train.release import export_release
    from f5build.train.state import corpus_history_of
    from f5build.train.warmstart import Release, seed_train_dir

    small, wide = load_corpus(small_corpus).identity, load_corpus(wide_corpus).identity
    assert small != wide and set(small) == {"utts.jsonl", "speakers.json"}
    _, _, first = _released(small_corpus, tmp_path)
    meta = json.loads((first / "checkpoint.json").read_text())
    assert meta["train_corpus"] == meta["vocos_corpus"] == [{"from_step": 0, "corpus": small}]

    on, on_voc = _trainers(wide_corpus, tmp_path / "on")
    assert seed_train_dir(tmp_path / "on", Release.read(first), on, on_voc)
    # exported before a step on the new corpus: no weight was trained on it, and the release says so
    meta = json.loads(
        (
            export_release(tmp_path / "on", tmp_path / "models" / "seeded", load_corpus(wide_corpus))
            / "checkpoint.json"
        ).read_text()
    )
    assert meta["train_corpus"] == meta["vocos_corpus"] == [{"from_step": 0, "corpus": small}]
    assert meta["train_warm_starts"] == meta["vocos_warm_starts"] == []
    assert on.corpus_history[-1] == {"from_step": 2, "corpus": wide}  # the state keeps it for the steps to come
    on.run_until(3, progress=False)
    on, on_voc = _trainers(wide_corpus, tmp_path / "on")  # a new process resumes on the same corpus
    on.run_until(4, progress=False)
    on_voc.run_until(4, progress=False)
    record = [{"from_step": 0, "corpus": small}, {"from_step": 2, "corpus": wide}]
    meta = json.loads(
        (
            export_release(tmp_path / "on", tmp_path / "models" / "on", load_corpus(wide_corpus)) / "checkpoint.json"
        ).read_text()
    )
    assert meta["train_corpus"] == meta["vocos_corpus"] == record

    back, back_voc = _trainers(small_corpus, tmp_path / "on")  # resumed on the first corpus again
    back.run_until(5, progress=False)
    back_voc.run_until(4, progress=False)
    assert back.corpus_history == [*record, {"from_step": 4, "corpus": small}]
    assert back_voc.corpus_history == [*record, {"from_step": 4, "corpus": small}]

    # a release from before the record: the corpus it was exported with, from step 0
    older_meta = {
        k: v
        for k, v in json.loads((first / "checkpoint.json").read_text()).items()
        if k not in ("train_corpus", "vocos_corpus")
    }
    (first / "checkpoint.json").write_text(json.dumps(older_meta))
    older = Release.read(first)
    assert older.histories["corpus_history"] == older.vocos_corpus == [{"from_step": 0, "corpus": small}]
    seeded, seeded_voc = _trainers(wide_corpus, tmp_path / "older")
    assert seed_train_dir(tmp_path / "older", older, seeded, seeded_voc)
    assert seeded.corpus_history == seeded_voc.corpus_history == record
    # a state from before the record names no corpus; it starts where the state is resumed
    assert corpus_history_of({"step": 5}) == []


@needs_espeak
def test_ctc_alignment_aid_trains_the_dit_resumes_exactly_and_is_not_released(small_corpus: Path, tmp_path: Path):
    """The CTC head is a training-time aid: its gradient reaches the DiT blocks below it, a resumed run
    reaches the uninterrupted one's weights bit for bit (head and optimizer included), and neither the
    EMA nor the release carries it; checkpoint.json records from which step it was used."""
    from f5build.train.release import export_release

    once, voc = _trainers(small_corpus, tmp_path / "once", ctc=0.5)
    once.run_until(4, progress=False)
    logged = [json.loads(x) for x in (tmp_path / "once" / "f5_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["ctc"]) for r in logged if "ctc" in r)
    plain, _ = _trainers(small_corpus, tmp_path / "plain")
    plain.run_until(4, progress=False)
    block0 = "transformer.transformer_blocks.0.attn.to_q.weight"
    assert not torch.equal(once.cfm.state_dict()[block0], plain.cfm.state_dict()[block0])  # the aid trained it

    first, _ = _trainers(small_corpus, tmp_path / "twice", ctc=0.5)
    first.run_until(2, progress=False)
    resumed, _ = _trainers(small_corpus, tmp_path / "twice", ctc=0.5)
    resumed.run_until(4, progress=False)
    assert resumed.ctc is not None and once.ctc is not None
    for (name, a), b in zip(once.cfm.state_dict().items(), resumed.cfm.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for name, a in once.ctc.head.state_dict().items():
        torch.testing.assert_close(a, resumed.ctc.head.state_dict()[name], rtol=0, atol=0, msg=name)

    assert not any("ctc" in k or "head" in k for k in once.ema.state_dict())
    voc.run_until(2, progress=False)
    out = export_release(tmp_path / "once", tmp_path / "models" / "small", load_corpus(small_corpus))
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["train_ctc"] == [{"from_step": 0, "weight": 0.5, "block": 1, "max_time": 1.0}]
    from safetensors import safe_open

    with safe_open(str(out / "model_4.safetensors"), "pt") as f:
        assert set(f.keys()) == {f"ema_model.{k}" for k in once.ema.state_dict() if k.startswith("transformer.")}


@needs_espeak
def test_average_upsampling_joins_a_run_trained_without_it_and_the_release_records_when(
    small_corpus: Path, tmp_path: Path
):
    """The flag changes no weight (only where the text enters), so a resumed run may switch it on; the state
    and the release say from which step, and the released arch is the one the weights were last trained with."""
    import yaml

    from f5build.train.release import export_release

    plain, voc = _trainers(small_corpus, tmp_path / "run")
    plain.run_until(2, progress=False)
    voc.run_until(2, progress=False)
    spread, _ = _trainers(small_corpus, tmp_path / "run", upsampling=True)
    spread.run_until(4, progress=False)
    want = [{"from_step": 0, "average_upsampling": False}, {"from_step": 2, "average_upsampling": True}]
    assert spread.upsampling_history == want
    again, _ = _trainers(small_corpus, tmp_path / "run", upsampling=True)
    again.run_until(5, progress=False)
    assert again.upsampling_history == want  # resuming with the same setting adds nothing
    out = export_release(tmp_path / "run", tmp_path / "models" / "spread", load_corpus(small_corpus))
    assert json.loads((out / "checkpoint.json").read_text())["train_average_upsampling"] == want
    arch = yaml.safe_load((out / "spread.yaml").read_text())["model"]["arch"]
    assert arch["text_embedding_average_upsampling"] is True


@needs_espeak
def test_a_resumed_run_may_step_the_learning_rate_down_and_the_release_records_when(small_corpus: Path, tmp_path: Path):
    """--train-lr on a resumed run takes effect at once (no second warm-up) for the DiT and the CTC head; the
    state and checkpoint.json record each rate and its first step, so the release says how it was trained."""
    from f5build.train.release import export_release

    first, voc = _trainers(small_corpus, tmp_path / "run", ctc=0.5)
    first.run_until(2, progress=False)
    voc.run_until(2, progress=False)
    low, _ = _trainers(small_corpus, tmp_path / "run", ctc=0.5, lr=1e-4)
    low.run_until(4, progress=False)
    assert low.ctc is not None
    # the warm-up (300 steps) still counts from step 0: step 3 ran at 4/300 of the new rate, in both optimizers
    assert [g["lr"] for o in (low.opt, low.ctc.opt) for g in o.param_groups] == [1e-4 * (4 / 300)] * 2
    want = [{"from_step": 0, "lr": 5e-4}, {"from_step": 2, "lr": 1e-4}]
    assert low.lr_history == want
    again, _ = _trainers(small_corpus, tmp_path / "run", ctc=0.5, lr=1e-4)
    again.run_until(5, progress=False)
    assert again.lr_history == want  # resuming at the same rate adds nothing
    out = export_release(tmp_path / "run", tmp_path / "models" / "low", load_corpus(small_corpus))
    assert json.loads((out / "checkpoint.json").read_text())["train_lr"] == want


@needs_espeak
def test_a_resumed_run_may_take_larger_batches_and_the_release_records_when(small_corpus: Path, tmp_path: Path):
    """--train-batch-frames (the next experiment's lever on a GPU) takes effect from the resumed step, and
    the state and checkpoint.json record each budget and its first step; the option is checked."""
    import argparse

    from f5build.train import MIN_BATCH_FRAMES, Options, add_arguments
    from f5build.train.release import export_release

    first, voc = _trainers(small_corpus, tmp_path / "run")
    first.run_until(2, progress=False)
    voc.run_until(2, progress=False)
    small_batch = first._batch(2)[2]
    big, _ = _trainers(small_corpus, tmp_path / "run", batch_frames=4000)
    big.run_until(3, progress=False)
    big_batch = big._batch(2)[2]
    assert int(big_batch.numel()) > int(small_batch.numel())  # more lines in the step-2 batch
    want = [{"from_step": 0, "batch_frames": 800}, {"from_step": 2, "batch_frames": 4000}]
    assert big.batch_history == want
    out = export_release(tmp_path / "run", tmp_path / "models" / "big", load_corpus(small_corpus))
    assert json.loads((out / "checkpoint.json").read_text())["train_batch_frames"] == want

    assert Curriculum().max_frames == MIN_BATCH_FRAMES  # the parser's bound (no torch at parse time)
    p = argparse.ArgumentParser()
    add_arguments(p)
    opts = Options.from_args(p.parse_args(["--train-batch-frames", "38400"])).f5_options()
    assert opts.curriculum == replace(Curriculum(), batch_frames=38400)
    assert Options.from_args(p.parse_args([])).f5_options().curriculum == Curriculum()
    with pytest.raises(ValueError, match="must hold the curriculum's longest utterance"):
        Options.from_args(p.parse_args(["--train-batch-frames", "600"]))


@needs_espeak
def test_ctc_joins_a_run_trained_without_it_and_skips_text_dropped_batches(small_corpus: Path, tmp_path: Path):
    plain, _ = _trainers(small_corpus, tmp_path / "run")
    plain.run_until(2, progress=False)
    aided, _ = _trainers(small_corpus, tmp_path / "run", ctc=0.5)
    aided.run_until(3, progress=False)
    assert aided.ctc_from == 2  # the state had no head: it starts at the step the aid joined
    assert aided.ctc is not None
    mel, text, lens = aided._batch(0)
    with torch.no_grad():
        aided.cfm.transformer(
            x=mel, cond=mel, text=torch.zeros(len(text), 4, dtype=torch.long), time=torch.rand(len(text)),
            mask=None, drop_text=True,
        )  # fmt: skip
    assert aided.ctc.loss([[1, 2]] * len(text), lens) is None  # CFG dropped the text: nothing to spell
    with pytest.raises(RuntimeError, match="no DiT forward pass recorded"):
        aided.ctc.loss([[1, 2]] * len(text), lens)


@needs_espeak
def test_ctc_spells_only_rows_below_its_flow_time_and_records_each_setting(small_corpus: Path, tmp_path: Path):
    from f5build.train.f5 import ctc_history_of
    from f5build.train.release import export_release

    aided, voc = _trainers(small_corpus, tmp_path / "run", ctc=0.5)
    aided.run_until(2, progress=False)
    low, _ = _trainers(small_corpus, tmp_path / "run", ctc=0.5, ctc_max_time=0.25)
    low.run_until(4, progress=False)  # resumed with the aid restricted to low flow times
    assert low.ctc_history == [
        {"from_step": 0, "weight": 0.5, "block": 1, "max_time": 1.0},
        {"from_step": 2, "weight": 0.5, "block": 1, "max_time": 0.25},
    ]
    assert low.ctc_from == 0
    voc.run_until(2, progress=False)
    meta = json.loads(
        (export_release(tmp_path / "run", tmp_path / "rel", load_corpus(small_corpus)) / "checkpoint.json").read_text()
    )
    assert meta["train_ctc"] == low.ctc_history

    assert low.ctc is not None
    mel, text, lens = low._batch(0)
    ids = torch.randint(1, 5, (len(text), 6))
    targets = [[1, 2, 3]] * len(text)

    def term(times: list[float]) -> torch.Tensor | None:
        with torch.no_grad():
            low.cfm.transformer(x=mel, cond=mel, text=ids, time=torch.tensor(times), mask=None, drop_text=False)
        return low.ctc.loss(targets, lens)

    assert term([0.9] * len(text)) is None  # every row's x_t still carries its speech: nothing to spell
    mixed = term([0.1] + [0.9] * (len(text) - 1))
    alone = term([0.1] * len(text))  # the same first row, now with every row below the limit
    assert mixed is not None and alone is not None
    with torch.no_grad():  # the first row's term alone, from a pass over it alone
        low.cfm.transformer(x=mel[:1], cond=mel[:1], text=ids[:1], time=torch.tensor([0.1]), mask=None, drop_text=False)
    first = low.ctc.loss(targets[:1], lens[:1])
    assert first is not None
    torch.testing.assert_close(mixed, first, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(alone, first)  # the mean now covers every row

    legacy = {"ctc_from": 7, "options": {"ctc": {"weight": 0.1, "block": 3}}}  # a state from before the record
    assert ctc_history_of(legacy) == [{"from_step": 7, "weight": 0.1, "block": 3, "max_time": 1.0}]
    assert ctc_history_of({"options": {"ctc": {"weight": 0.0, "block": 3}}}) == []


@needs_espeak
def test_ctc_readout_is_a_signal_that_leaves_the_trajectory_alone(small_corpus: Path, tmp_path: Path):
    """The head's reading of held-out lines joins the signals (and the report) without touching the
    random streams or the weights: a run read out midway ends bitwise where an unread one does."""
    from f5build.train.report import write_training_report
    from f5build.train.signals import alignment_signals, char_error_rate, ctc_readout

    assert char_error_rate([1, 2, 3], [1, 2, 3]) == 0.0
    assert char_error_rate([], [1, 2, 3, 4]) == 1.0
    assert char_error_rate([1, 9, 3, 4, 5], [1, 2, 3, 4]) == 0.5  # one substitution, one insertion

    plain, _ = _trainers(small_corpus, tmp_path / "plain", ctc=0.5)
    plain.run_until(4, progress=False)  # first and whole: the trainers share torch's global generator
    read, _ = _trainers(small_corpus, tmp_path / "read", ctc=0.5)
    read.run_until(2, progress=False)
    assert read.ctc is not None
    got = ctc_readout(read.cfm, read.ctc, read.corpus, read.char_map, count=2)
    assert set(got) == {"ctc_cer_t0", "ctc_cer_t0.9"}
    assert all(v >= 0 for v in got.values())
    assert got == ctc_readout(read.cfm, read.ctc, read.corpus, read.char_map, count=2)  # fixed noise
    read.run_until(4, progress=False)
    for (name, a), b in zip(read.cfm.state_dict().items(), plain.cfm.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

    logged, _ = _trainers(small_corpus, tmp_path / "logged", ctc=0.5)
    logged = type(logged)(logged.corpus, logged.vocab, tmp_path / "logged", replace(logged.opts, signals_every=2))
    logged.run_until(
        2, progress=False, signals=lambda ema, step: alignment_signals(ema, logged.corpus, count=2).to_dict()
    )
    rows = [json.loads(line) for line in (tmp_path / "logged" / "f5_log.jsonl").read_text().splitlines()]
    assert {"ctc_cer_t0", "ctc_cer_t0.9", "loudness_corr"} <= set(rows[-1]["signals"])
    (tmp_path / "logged" / "vocos_log.jsonl").write_text("")
    report = write_training_report(tmp_path / "logged", tmp_path / "reports")
    assert "CTC CER t=0" in (report / "train.md").read_text()


@needs_espeak
def test_text_use_is_zero_where_the_text_cannot_reach_the_model_and_leaves_the_run_alone(
    small_corpus: Path, tmp_path: Path
):
    """The text-use figure (own text against another line's) is exactly 0 for a DiT whose input projection
    drops the text, and not 0 once the text reaches it; it draws its own fixed noise, puts the model's mode
    back and logs with the signals, so a run read midway ends bitwise where an unread one does."""
    from f5build.train.report import write_training_report
    from f5build.train.textuse import TextUse, text_use, text_use_signals

    plain, _ = _trainers(small_corpus, tmp_path / "plain", upsampling=True)
    plain.run_until(4, progress=False)
    read, _ = _trainers(small_corpus, tmp_path / "read", upsampling=True)
    read.run_until(2, progress=False)
    read.cfm.train()
    figures = text_use(read.cfm, read.corpus, count=2)
    assert read.cfm.training  # the mode it had
    assert [f.time for f in figures] == [0.1, 0.2] and all(f.lines == 2 and f.own > 0 for f in figures)
    assert all(abs(f.gain) > 1e-6 for f in figures)  # an untrained DiT still reacts to which text it gets
    assert figures == text_use(read.cfm, read.corpus, count=2)  # fixed noise
    read.run_until(4, progress=False)
    for (name, a), b in zip(read.cfm.state_dict().items(), plain.cfm.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

    deaf = copy.deepcopy(plain.cfm)  # the text enters the DiT only through the input projection's last columns
    text_dim = deaf.transformer.text_embed.text_embed.embedding_dim
    with torch.no_grad():
        deaf.transformer.input_embed.proj.weight[:, -text_dim:] = 0
    assert [f.gain for f in text_use(deaf, plain.corpus, count=2)] == [0.0, 0.0]
    assert text_use_signals([TextUse(0.1, 0.5, 0.75, 2)]) == {"text_gain_t0.1": 0.25, "text_err_t0.1": 0.5}
    with pytest.raises(ValueError, match="at least two held-out lines"):
        text_use(deaf, plain.corpus, count=1)
    with pytest.raises(ValueError, match=r"flow times must lie in \[0, 1\)"):
        text_use(deaf, plain.corpus, count=2, times=(0.1, 1.0))

    rows = [{"step": 2, "signals": {"mel_l1": 2.5, "mel_l1_unrelated": 3.0, "loudness_corr": 0.5,
                                    "loudness_corr_unrelated": 0.4} | text_use_signals(figures)}]  # fmt: skip
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "f5_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = (write_training_report(tmp_path / "log", tmp_path / "reports") / "train.md").read_text()
    assert "text gain t=0.1 | t=0.2 |" in report and f" {figures[0].gain:.3f} | {figures[1].gain:.3f} |" in report


def test_ctc_and_learning_rate_options_are_checked(tmp_path: Path):
    import argparse

    from f5build.train import Options, add_arguments
    from f5build.train.ctc import CTCAlignment, CTCOptions
    from f5build.train.f5 import F5TrainOptions, build_cfm

    p = argparse.ArgumentParser()
    add_arguments(p)
    for bad, match in ((["--train-ctc", "-1"], "--train-ctc must be"), (["--train-ctc-block", "0"], "at least 1")):
        with pytest.raises(ValueError, match=match):
            Options.from_args(p.parse_args(bad))
    opts = Options.from_args(p.parse_args(["--train-ctc", "0.2", "--train-ctc-block", "2"])).f5_options()
    assert (opts.ctc.weight, opts.ctc.block) == (0.2, 2)
    assert opts.lr == F5TrainOptions().lr  # the recipe's rate unless --train-lr says otherwise
    for bad in ("0", "-1e-4", "2"):
        with pytest.raises(ValueError, match="--train-lr must be"):
            Options.from_args(p.parse_args([f"--train-lr={bad}"]))
    for bad in ("0", "1.5"):
        with pytest.raises(ValueError, match="--train-ctc-max-time must be"):
            Options.from_args(p.parse_args([f"--train-ctc-max-time={bad}"]))
        with pytest.raises(ValueError, match="--train-ctc-max-time must be"):
            CTCOptions(weight=0.1, max_time=float(bad))
    assert Options.from_args(p.parse_args(["--train-ctc-max-time", "0.25"])).f5_options().ctc.max_time == 0.25
    assert Options.from_args(p.parse_args(["--train-lr", "2e-4"])).f5_options().lr == 2e-4
    with pytest.raises(ValueError, match="only 2 blocks"):
        CTCAlignment(
            build_cfm([" ", "a"], dict(TINY_ARCH)), 2, CTCOptions(weight=1, block=3), torch.device("cpu"), 1e-3
        )


@needs_espeak
def test_dit_size_is_a_named_recipe_option_and_a_state_keeps_its_size(small_corpus: Path, tmp_path: Path):
    import argparse

    from f5build.train import SIZE_NAMES, Options, add_arguments
    from f5build.train.f5 import ARCH, SIZES, UPSAMPLING, F5Trainer, F5TrainOptions, arch_flags, make_vocab
    from f5build.train.state import save_state

    assert tuple(SIZES) == SIZE_NAMES  # the parser's list (no torch at parse time) is the recipe's
    p = argparse.ArgumentParser()
    add_arguments(p)

    def arch(*argv: str) -> dict:
        return Options.from_args(p.parse_args(list(argv))).f5_options().arch

    assert arch() == ARCH == F5TrainOptions().arch
    wide = arch("--train-size", "wide", "--no-train-average-upsampling")
    assert wide == SIZES["wide"] != ARCH
    spread = arch("--train-size", "wide", "--train-average-upsampling")
    assert spread == {**SIZES["wide"], UPSAMPLING: True} == arch("--train-size", "wide")  # the recipe's default
    assert arch("--train-size", "small") == {**SIZES["small"], UPSAMPLING: True}
    assert arch_flags(spread) == "--train-size wide --train-average-upsampling"
    assert arch_flags(wide) == "--train-size wide --no-train-average-upsampling"
    assert arch_flags(dict(TINY_ARCH)) is None
    with pytest.raises(ValueError, match="--train-size: unknown size 'huge'; known: small, wide"):
        Options.from_args(p.parse_args(["--train-size", "huge"]))

    corpus = load_corpus(small_corpus)
    vocab = make_vocab(corpus)
    save_state(tmp_path / "f5_state.pt", {"step": 3, "arch": spread, "vocab": vocab})
    small = F5Trainer(corpus, vocab, tmp_path, F5TrainOptions(arch=dict(SIZES["small"])))
    with pytest.raises(ValueError, match="pass --train-size wide --train-average-upsampling to resume it"):
        small.resume()
    save_state(tmp_path / "f5_state.pt", {"step": 3, "arch": dict(SIZES["small"]), "vocab": vocab[:-1]})
    with pytest.raises(ValueError, match="another vocab"):
        small.resume()


@needs_espeak
def test_kept_snapshots_are_what_evaluate_scores(small_corpus: Path, tmp_path: Path):
    """`--train-parts evaluate` reads every kept EMA snapshot and the newest state, older snapshots
    (saved without a top-level step) included."""
    from f5build.train.evaluate import _snapshots
    from f5build.train.state import load_state

    f5, _ = _trainers(small_corpus, tmp_path)
    f5 = type(f5)(f5.corpus, f5.vocab, tmp_path, replace(f5.opts, keep_every=2))
    f5.run_until(5, progress=False)
    newest = load_state(tmp_path / "f5_state.pt")
    assert [step for step, _ in _snapshots(tmp_path, newest)] == [2, 4, 5]
    old = torch.load(tmp_path / "f5_ema_000002.pt", weights_only=False)
    torch.save({"ema_model_state_dict": old["ema_model_state_dict"]}, tmp_path / "f5_ema_000002.pt")
    snaps = dict(_snapshots(tmp_path, newest))
    assert sorted(snaps) == [2, 4, 5]
    for name, value in f5.ema.state_dict().items():
        torch.testing.assert_close(snaps[5][f"ema_model.{name}"], value, rtol=0, atol=0, msg=name)


@needs_espeak
def test_evaluate_scores_each_snapshot_once(small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A rerun of `--train-parts evaluate` takes back the listening scores of snapshots it has scored
    (the same EMA weights, Vocos and sampler) and scores only the new ones; other Vocos weights score all.
    The ceilings (ground truth, copy-synthesis) are scored on the same lines, once."""
    from f5build.quality.scoring import UtteranceScore
    from f5build.train import evaluate

    calls: list[str] = []

    class Listener:  # stands in for Whisper + resemblyzer + DNSMOS: scores from the audio, counted
        def __init__(self, corpus, cache, threads=1) -> None:
            pass

        def score(self, u, audio, rate) -> UtteranceScore:
            calls.append(u.id)
            level = float(np.sqrt(np.mean(np.square(audio))))
            return UtteranceScore(u.id, u.speaker, u.text, "", level, 0.8, 0.5, 2.0, 2.0, 3.0, 3.0, 1.0)

    monkeypatch.setattr(evaluate, "Listener", Listener)
    f5, voc = _trainers(small_corpus, tmp_path / "run")
    f5 = type(f5)(f5.corpus, f5.vocab, tmp_path / "run", replace(f5.opts, keep_every=2))
    f5.run_until(2, progress=False)
    voc.run_until(2, progress=False)
    corpus, reports = load_corpus(small_corpus), tmp_path / "reports" / "train"
    two = evaluate.EvaluateOptions(utts=2)
    evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, two)
    first = json.loads((reports / "checkpoints.json").read_text())
    assert [r["step"] for r in first["checkpoints"]] == [2] and len(calls) == 2 + 2 * 2  # and the two ceilings
    assert [c["name"] for c in first["ceilings"]] == ["ground truth", "copy-synthesis"]
    listened = first["checkpoints"][0]["listening"]  # own 0.8 against another's 0.5 on both lines
    assert (listened["lines_verified"], listened["sim_margin"]) == (2, pytest.approx(0.3))
    assert "| +0.300 | 100% (34-100) |" in (reports / "checkpoints.md").read_text()  # Wilson's for 2 of 2
    assert [(u["time"], u["lines"]) for u in first["checkpoints"][0]["text_use"]] == [(0.1, 2), (0.2, 2)]
    truth = [corpus.wave(t) for _, t in corpus.held_out_pairs(2)]
    assert first["ceilings"][0]["wer"] == pytest.approx(np.mean([np.sqrt(np.mean(np.square(w))) for w in truth]))
    f5.run_until(4, progress=False)
    evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, two)
    again = json.loads((reports / "checkpoints.json").read_text())
    assert [r["step"] for r in again["checkpoints"]] == [2, 4] and len(calls) == 8  # step 2 came back from the store
    assert again["checkpoints"][0]["listening"] == first["checkpoints"][0]["listening"]
    voc.run_until(3, progress=False)  # other Vocos weights: every snapshot and copy-synthesis sound different
    evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, two)
    assert len(calls) == 8 + 2 * 3
    # a run forked from this state has its own "step 4": scoring it keeps this run's scores
    shutil.copytree(tmp_path / "run", tmp_path / "fork")
    f5.run_until(6, progress=False)
    fork, _ = _trainers(small_corpus, tmp_path / "fork", lr=1e-4)
    fork = type(fork)(fork.corpus, fork.vocab, tmp_path / "fork", replace(fork.opts, keep_every=2))
    fork.run_until(6, progress=False)
    evaluate.evaluate_checkpoints(tmp_path / "fork", corpus, reports, evaluate.EvaluateOptions(2, (6,)))
    assert len(calls) == 14 + 2 * 2 + 2  # a run's scores are its own: the fork scores its ceilings once too
    evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, evaluate.EvaluateOptions(2, (6,)))
    assert len(calls) == 20 + 2
    evaluate.evaluate_checkpoints(tmp_path / "fork", corpus, reports, evaluate.EvaluateOptions(2, (6,)))
    evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, evaluate.EvaluateOptions(2, (6,)))
    assert len(calls) == 22  # neither run's step 6 evicted the other's


@needs_espeak
def test_evaluate_says_the_held_out_sentences_in_seen_voices(small_corpus: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    """--train-eval-seen-voices: each held-out line is also said by a training speaker standing in for its
    held-out speaker, verified against the stand-ins' references, beside the stand-ins' own audio."""
    from f5build.quality.scoring import UtteranceScore
    from f5build.train import evaluate
    from f5build.train.seen import SeenVoices

    corpus = load_corpus(small_corpus)
    pairs = corpus.held_out_pairs(2)
    seen = SeenVoices.of(corpus, pairs)
    trained = {u.speaker for u in corpus.split("train")}
    assert set(seen.refs) <= trained and len(seen.refs) == 2  # one stand-in per held-out speaker
    assert all(ref.split == "train" and ref.speaker == s for s, ref in seen.refs.items())
    for (ref, line), (_, held) in zip(seen.pairs, pairs, strict=True):
        assert line.speaker == ref.speaker in trained  # said in the stand-in's voice
        assert (line.id, line.text, line.frames) == (held.id, held.text, held.frames)
    assert {u.speaker for u in seen.truth} == set(seen.refs) and len(seen.truth) == len(pairs)
    assert not {u.id for u in seen.truth} & {r.id for r in seen.refs.values()}  # other lines than the prompts
    with pytest.raises(ValueError, match="at least two held-out speakers"):
        SeenVoices.of(corpus, [p for p in corpus.held_out_pairs() if p[0].speaker == pairs[0][0].speaker])

    heard: list[tuple[str, str]] = []  # (whose references verify, speaker of the line)

    class Listener:  # the instruments stand-in: own 0.8 / other 0.5 for held-out voices, 0.6 / 0.7 for seen
        def __init__(self, corpus, cache, threads=1, refs=None) -> None:
            self.refs = refs

        def for_voices(self, corpus, refs) -> Listener:
            return Listener(corpus, None, refs=[u.speaker for u in refs])

        def score(self, u, audio, rate) -> UtteranceScore:
            heard.append(("seen" if self.refs else "held-out", u.speaker))
            own, other = (0.6, 0.7) if self.refs else (0.8, 0.5)
            return UtteranceScore(u.id, u.speaker, u.text, "", 1.0, own, other, 2.0, 2.0, 3.0, 3.0, 1.0)

    monkeypatch.setattr(evaluate, "Listener", Listener)
    f5, voc = _trainers(small_corpus, tmp_path / "run")
    f5.run_until(2, progress=False)
    voc.run_until(2, progress=False)
    reports = tmp_path / "reports"
    evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, evaluate.EvaluateOptions(2, seen_voices=True))
    assert sorted(s for who, s in heard if who == "seen") == sorted([u.speaker for u in seen.truth] * 2)
    assert {s for who, s in heard if who == "held-out"} == {ref.speaker for ref, _ in pairs}
    got = json.loads((reports / "checkpoints.json").read_text())
    assert got["seen_ceiling"]["name"] == "seen voices, ground truth"
    assert (got["checkpoints"][0]["seen"]["sim_margin"], got["checkpoints"][0]["listening"]["sim_margin"]) == (
        pytest.approx(-0.1),
        pytest.approx(0.3),
    )
    md = (reports / "checkpoints.md").read_text()
    assert "## The same sentences in voices the DiT trained on" in md and "| step 2 | 1.000 |" in md
    evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, evaluate.EvaluateOptions(2))
    assert "trained on" not in (reports / "checkpoints.md").read_text()  # without the option: no such table


def test_several_draws_per_line_give_each_line_its_verification_share_against_its_ground_truth():
    """RepeatedSamples: a line's share is over its own draws, the gap is taken line by line against the
    line's ground-truth verification, the standard errors are over lines; draws that do not score the
    ground truth's lines are refused."""
    from f5build.quality.scoring import UtteranceScore
    from f5build.train.repeats import RepeatedSamples

    def score(line: int, own: float, wer: float) -> UtteranceScore:
        return UtteranceScore(f"u{line}", "s", "t", "", wer, own, 0.5, 2.0 + line, 3.0, 3.0, 3.0, 1.0)

    truth = [score(0, 0.9, 0.1), score(1, 0.4, 0.1), score(2, 0.9, 0.1)]  # verified, not, verified
    draws = [
        [score(0, 0.6, 0.2), score(1, 0.7, 1.0), score(2, 0.3, 1.2)],
        [score(0, 0.4, 0.9), score(1, 0.8, 0.4), score(2, 0.2, 1.1)],
    ]
    r = RepeatedSamples.of(draws, truth)
    share, gap = np.array([0.5, 1.0, 0.0]), np.array([-0.5, 1.0, -1.0])
    assert (r.samples, r.lines) == (2, 3)
    assert r.verify_rate == pytest.approx(0.5) and r.verify_gap == pytest.approx(-1 / 6)
    assert r.verify_se == pytest.approx(share.std(ddof=1) / np.sqrt(3))
    assert r.verify_gap_se == pytest.approx(gap.std(ddof=1) / np.sqrt(3))
    assert (r.gap_interval, r.gap_label) == ((-1.0, 1.0), "-17 (-100 to +100)")  # three lines: clipped to the range
    steadier = replace(r, lines=48, verify_gap=-0.1, verify_gap_se=0.04)
    assert steadier.gap_interval == pytest.approx((-0.1 - 0.0784, -0.1 + 0.0784), abs=1e-4)
    assert steadier.gap_label == "-10 (-18 to -2)"
    assert r.sim == pytest.approx(np.mean([0.6, 0.7, 0.3, 0.4, 0.8, 0.2]))
    assert r.sim_margin == pytest.approx(r.sim - 0.5)
    assert (r.samples_said, r.wer_median, r.ovrl) == (2, pytest.approx(0.95), pytest.approx(3.0))
    with pytest.raises(ValueError, match="at least two"):
        RepeatedSamples.of(draws[:1], truth)
    with pytest.raises(ValueError, match=r"the same 3 lines .* got \[3, 2\]"):
        RepeatedSamples.of([draws[0], draws[1][:2]], truth)
    with pytest.raises(ValueError, match="draw 1 scores lines"):
        RepeatedSamples.of([draws[0], draws[1][::-1]], truth)


@needs_espeak
def test_evaluate_says_each_line_several_times_from_other_draws(small_corpus: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    """--train-eval-samples 3: each line is said from three noise draws; the first is the single-sample
    figures' own (seed = line index, taken back from the store), the others are new draws, stored too; the
    single-sample row does not change."""
    from f5build.quality.scoring import UtteranceScore
    from f5build.train import evaluate, signals

    seeds: list[int] = []
    say = signals.say

    def said(cfm, corpus, ref, tgt, seed):
        seeds.append(seed)
        return say(cfm, corpus, ref, tgt, seed)

    class Listener:  # the instruments stand-in: the audio's level as its WER, so other draws score otherwise
        def __init__(self, corpus, cache, threads=1) -> None:
            pass

        def score(self, u, audio, rate) -> UtteranceScore:
            level = float(np.sqrt(np.mean(np.square(audio))))
            return UtteranceScore(u.id, u.speaker, u.text, "", level, 0.8, 0.5, 2.0, 2.0, 3.0, 3.0, 1.0)

    monkeypatch.setattr(evaluate, "Listener", Listener)
    monkeypatch.setattr(evaluate, "say", said)
    f5, voc = _trainers(small_corpus, tmp_path / "run")
    f5.run_until(2, progress=False)
    voc.run_until(2, progress=False)
    corpus, reports = load_corpus(small_corpus), tmp_path / "reports"
    single = evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, evaluate.EvaluateOptions(2))
    assert seeds == [0, 1] and "Several draws" not in (reports / "checkpoints.md").read_text()
    report = evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, evaluate.EvaluateOptions(2, samples=3))
    assert seeds == [0, 1, 1000, 1001, 2000, 2001]  # draw 0 came back from the store
    (row,) = report.checkpoints
    assert row.listening == single.checkpoints[0].listening
    assert row.repeated is not None and (row.repeated.samples, row.repeated.lines) == (3, 2)
    assert (row.repeated.verify_rate, row.repeated.verify_gap) == (1.0, 0.0)  # own 0.8 > 0.5 everywhere
    assert row.repeated.wer_median != row.listening.wer_median  # other draws, other audio
    md = (reports / "checkpoints.md").read_text()
    assert "## Several draws of each line" in md and "| 2 | 3 x 2 | 100% ± 0 | +0 (+0 to +0) |" in md
    evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, evaluate.EvaluateOptions(2, samples=3))
    assert len(seeds) == 6  # every draw is stored
    with pytest.raises(ValueError, match="draws per line must be at least 1"):
        evaluate.EvaluateOptions(2, samples=0)


@needs_espeak
def test_evaluate_scores_the_steps_asked_for_and_refuses_steps_not_kept(small_corpus: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    """`--train-eval-steps` picks kept snapshots; a step with no snapshot is refused before anything is scored,
    naming the steps that are kept; `--train-eval-utts` sets the lines and a count above the held-out set is
    refused."""
    from f5build.quality.scoring import UtteranceScore
    from f5build.train import evaluate

    scored: list[str] = []

    class Listener:
        def __init__(self, corpus, cache, threads=1) -> None:
            pass

        def score(self, u, audio, rate) -> UtteranceScore:
            scored.append(u.id)
            return UtteranceScore(u.id, u.speaker, u.text, "", 0.6, 0.8, 0.5, 2.0, 2.0, 3.0, 3.0, 1.0)

    monkeypatch.setattr(evaluate, "Listener", Listener)
    f5, voc = _trainers(small_corpus, tmp_path / "run")
    f5 = type(f5)(f5.corpus, f5.vocab, tmp_path / "run", replace(f5.opts, keep_every=2))
    f5.run_until(5, progress=False)
    voc.run_until(1, progress=False)
    corpus, reports = load_corpus(small_corpus), tmp_path / "reports"
    with pytest.raises(ValueError, match=r"no kept snapshot at step\(s\) \[3\]; kept: \[2, 4, 5\]"):
        evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, evaluate.EvaluateOptions(steps=(3, 4)))
    assert scored == [] and not reports.exists()
    held = len(corpus.split("eval"))
    with pytest.raises(ValueError, match=f"{held + 1} held-out lines asked for, the held-out set has {held}"):
        evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, evaluate.EvaluateOptions(utts=held + 1))
    report = evaluate.evaluate_checkpoints(tmp_path / "run", corpus, reports, evaluate.EvaluateOptions(1, (4, 5)))
    assert [r.step for r in report.checkpoints] == [4, 5] and len(scored) == 2 + 2
    assert [r.lines_near for r in report.checkpoints] == [1, 1]  # WER 0.6 is near, not said
    assert [r.listening.lines_said for r in report.checkpoints] == [0, 0]
    assert [r.text_use for r in report.checkpoints] == [(), ()]  # one line has no other line's text to borrow
    table = (reports / "checkpoints.md").read_text()
    assert "| ground truth |" in table and "| 5 |" in table and "| 2 |" not in table


def test_evaluate_options_are_checked_at_the_command_line(tmp_path: Path):
    import argparse

    from f5build.train import Options, add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    base = ["--train-dir", str(tmp_path)]
    opts = Options.from_args(
        p.parse_args([*base, "--train-eval-steps", "50000, 45000,50000", "--train-eval-utts", "48"])
    )
    assert opts.eval_steps == (45000, 50000) and opts.eval_utts == 48
    assert Options.from_args(p.parse_args(base)).eval_steps == ()
    assert not Options.from_args(p.parse_args(base)).evaluate_options().seen_voices
    assert Options.from_args(p.parse_args([*base, "--train-eval-seen-voices"])).evaluate_options().seen_voices
    assert Options.from_args(p.parse_args([*base, "--train-formant-scales", "88, 112"])).formant_scales == (88, 112)
    assert Options.from_args(p.parse_args(base)).formant_scales == FORMANT_SCALES == CorpusOptions().formant_scales
    assert Options.from_args(p.parse_args([*base, "--train-formant-scales", "100"])).formant_scales == (100,)
    for bad in ("150", "88,abc"):
        with pytest.raises(ValueError, match="--train-formant-scales"):
            Options.from_args(p.parse_args([*base, "--train-formant-scales", bad]))
    with pytest.raises(ValueError, match="--train-eval-steps must be a comma list of steps"):
        Options.from_args(p.parse_args([*base, "--train-eval-steps", "45k"]))
    with pytest.raises(ValueError, match="--train-eval-utts must be at least 1"):
        Options.from_args(p.parse_args([*base, "--train-eval-utts", "0"]))
    assert Options.from_args(p.parse_args(base)).evaluate_options().samples == 1
    assert Options.from_args(p.parse_args([*base, "--train-eval-samples", "3"])).evaluate_options().samples == 3
    with pytest.raises(ValueError, match="--train-eval-samples must be at least 1"):
        Options.from_args(p.parse_args([*base, "--train-eval-samples", "0"]))


def test_train_device_is_checked_not_guessed():
    from f5build.train.device import on_cpu, resolve_device

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="expected cpu or cuda"):
        resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
    lin = torch.nn.Linear(2, 2)
    assert on_cpu(lin) is lin  # nothing copied when it is on the CPU already


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
@needs_espeak
def test_training_on_a_gpu_saves_a_state_the_cpu_resumes(small_corpus: Path, tmp_path: Path):
    from f5build.train.f5 import F5Trainer, F5TrainOptions, make_vocab

    corpus = load_corpus(small_corpus)
    cur = Curriculum(start_frames=400, max_frames=400, ramp_steps=1, batch_frames=800)
    opts = F5TrainOptions(arch=dict(TINY_ARCH), curriculum=cur, save_every=2, device="cuda")
    gpu = F5Trainer(corpus, make_vocab(corpus), tmp_path, opts)
    gpu.run_until(2, progress=False)
    assert next(gpu.cfm.parameters()).device.type == "cuda"
    cpu = F5Trainer(corpus, make_vocab(corpus), tmp_path, replace(opts, device="cpu"))
    cpu.run_until(3, progress=False)  # resumes the GPU's state on the CPU and trains on
    assert cpu.step == 3


def test_a_damaged_training_state_is_refused_by_name(tmp_path: Path):
    from f5build.train.state import load_state, save_state

    path = tmp_path / "f5_state.pt"
    assert load_state(path) is None  # no state yet: start from scratch
    save_state(path, {"step": 7, "w": torch.ones(3)})
    assert load_state(path)["step"] == 7
    path.write_bytes(path.read_bytes()[:40])  # truncated, as a full disk or a copy cut short leaves it
    with pytest.raises(ValueError, match=r"f5_state\.pt: training state unreadable .* delete it to start over"):
        load_state(path)
    save_state(path, {"weights": torch.ones(3)})
    with pytest.raises(ValueError, match="not a training state"):
        load_state(path)


@needs_espeak
def test_training_locks_its_state_and_reading_it_runs_beside(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Two runs never train one state at once (the second is refused, the holder named); `plot` and
    `evaluate` only read the state, so they run while training holds it."""
    from f5build.cli import EXIT_BUSY, main
    from faults.faultkit import lock_held_elsewhere

    train_dir = tmp_path / "state"
    with lock_held_elsewhere(train_dir) as pid:
        where = ["--train-dir", str(train_dir), "--train-corpus", str(small_corpus)]
        assert main(["train", "--train-parts", "f5", "--train-steps", "1", *where]) == EXIT_BUSY
        err = capsys.readouterr().err
        assert f"pid {pid}" in err and "another build is running" in err
        reports = tmp_path / "reports"
        assert main(["train", "--train-parts", "plot", *where, "--train-reports", str(reports)]) == 0
        assert (reports / "train.md").is_file()
        assert f"== f5build train ({train_dir})" in capsys.readouterr().out  # the banner names what it works on
