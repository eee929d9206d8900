"""The corpus at the size stage 2 asks for: more sentences in more voices with the held-out lines kept,
made in chunks that a killed run resumes, by one process at a time, into the files np.save writes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from killing import run_killed
from test_train import SMALL  # 3 training speakers, 6 sentences, 10 phrases, 4 held-out lines

from f5build.train.corpus import CorpusOptions, _plan, load_corpus, make_corpus
from f5build.train.staging import NPY_HEADER_BYTES, RowFile, Staging, npy_header

# The (split, speaker, text) of every utterance of the corpus the release's checkpoint.json names
# (utts.jsonl sha256 e1787bb7...), in corpus order, as json.dumps of a list of lists.
RECIPE_PLAN_SHA256 = "6dd994c503d2fbf8227ec90e0ae2600a29ab6a01ed010f179f010bd963379c54"

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install -y espeak-ng)"
)


def _digest(plan: list[tuple[str, str, str]]) -> str:
    return hashlib.sha256(json.dumps([list(p) for p in plan]).encode()).hexdigest()


def test_the_recipe_corpus_keeps_every_line_and_voice_the_release_trained_on():
    _, _, plan = _plan(CorpusOptions())
    assert _digest(plan) == RECIPE_PLAN_SHA256
    # corpus.json of the release's corpus records these options, and nothing the new ones add
    assert set(CorpusOptions().record()) == {
        "train_speakers", "held_out_speakers", "held_out_variants", "train_sentences", "phrases",
        "eval_sentences", "seed", "formant_scales",
    }  # fmt: skip


def test_more_sentences_in_more_voices_keep_the_held_out_lines():
    _, _, small = _plan(SMALL)
    wide = replace(SMALL, train_sentences=40, voices_per_sentence=2)
    _, _, big = _plan(wide)
    held = [p for p in small if p[0] in ("ref", "eval")]
    assert held and held == [p for p in big if p[0] in ("ref", "eval")]
    assert [p for p in small if p[0] == "phrase"] == [p for p in big if p[0] == "phrase"]
    train = [p for p in big if p[0] == "train"]
    texts = list(dict.fromkeys(t for _, _, t in train))
    assert len(texts) == 40 and len(train) == 80
    for t in texts:  # each sentence in two distinct voices
        assert len({s for _, s, x in train if x == t}) == 2
    assert {t for _, _, t in small if _ == "train"} <= set(texts)  # the smaller corpus' sentences stay
    assert not set(texts) & {t for _, _, t in held}  # no held-out line is trained on
    # the recipe's held-out lines, whatever the count: a corpus that holds them out right after its own
    # training sentences (the layout before held_out_at) draws other lines
    at_end = replace(SMALL, held_out_at=SMALL.train_sentences)
    assert [p for p in _plan(at_end)[2] if p[0] == "eval"] != [p for p in small if p[0] == "eval"]
    assert "held_out_at" not in at_end.record() and SMALL.record()["held_out_at"] == 6000
    assert wide.record()["voices_per_sentence"] == 2 and "voices_per_sentence" not in SMALL.record()


def test_bad_corpus_sizes_are_refused():
    for bad in (0, 4):
        with pytest.raises(ValueError, match="voices per sentence must be 1-3"):
            replace(SMALL, voices_per_sentence=bad)
    with pytest.raises(ValueError, match="must be >= 0"):
        replace(SMALL, train_sentences=-1)
    with pytest.raises(ValueError, match="must be >= 0"):
        replace(SMALL, held_out_at=-5)


def test_train_options_name_the_corpus_size(tmp_path: Path):
    import argparse

    from f5build.train import Options, add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    base = ["--train-dir", str(tmp_path)]
    assert Options.from_args(p.parse_args(base)).corpus_options() == CorpusOptions()
    big = Options.from_args(p.parse_args([*base, "--train-sentences", "35000", "--train-voices-per-sentence", "4"]))
    assert big.corpus_options() == replace(CorpusOptions(), train_sentences=35000, voices_per_sentence=4)
    with pytest.raises(ValueError, match="--train-sentences must be at least 1"):
        Options.from_args(p.parse_args([*base, "--train-sentences", "0"]))
    with pytest.raises(ValueError, match="--train-voices-per-sentence: voices per sentence must be 1-96"):
        Options.from_args(p.parse_args([*base, "--train-voices-per-sentence", "97"]))


def test_the_npy_header_is_the_one_np_save_writes(tmp_path: Path):
    for arr in (np.zeros(0, np.int16), np.arange(7, dtype=np.int16), np.ones((3, 100), np.float16)):
        np.save(tmp_path / "a.npy", arr)
        assert (tmp_path / "a.npy").read_bytes()[:NPY_HEADER_BYTES] == npy_header(arr.dtype, arr.shape)
    # a 100-hour corpus' shapes take the same room, so the header is written over in place
    assert len(npy_header(np.dtype(np.float16), (34_000_000_000, 100))) == NPY_HEADER_BYTES


FILES = (RowFile("a.npy", np.dtype(np.int16)), RowFile("m.npy", np.dtype(np.float16), (3,)))


def _chunk(k: int) -> tuple[list[str], dict[str, np.ndarray]]:
    a = np.arange(5 * k, 5 * k + 5, dtype=np.int16)
    return [f'{{"n": {k}}}'], {"a.npy": a, "m.npy": np.full((2, 3), k, np.float16)}


def test_staging_resumes_from_its_last_complete_chunk(tmp_path: Path):
    out = tmp_path / "c"
    key = {"options": {"n": 1}}
    st = Staging(out, key, FILES)
    assert st.open() == 0
    st.append(*_chunk(0))
    st.append(*_chunk(1))
    for name in ("a.npy", "m.npy", "utts.jsonl"):  # a third chunk, killed half-written
        with open(st.folder / name, "ab") as fh:
            fh.write(b"\x07" * 5)
    again = Staging(out, key, FILES)
    assert again.open() == 2 and again.rows == {"a.npy": 10, "m.npy": 4}
    again.append(*_chunk(2))
    again.finish()
    # killed after the headers, while the caller hashed and wrote the last files: nothing is spoken again
    finished = Staging(out, key, FILES)
    assert finished.open() == 3
    folder = finished.finish()
    np.testing.assert_array_equal(np.load(folder / "a.npy"), np.arange(15, dtype=np.int16))
    np.testing.assert_array_equal(np.load(folder / "m.npy")[:, 0], [0, 0, 1, 1, 2, 2])
    assert (folder / "utts.jsonl").read_text().splitlines() == ['{"n": 0}', '{"n": 1}', '{"n": 2}']
    (out).mkdir()
    (out / "previous").write_text("the corpus before")
    out.with_name(".c.old").mkdir()  # what a run killed while it swapped folders leaves
    (out.with_name(".c.old") / "older").write_text("the corpus before that")
    assert finished.replace_out() == out and not (out / "previous").exists() and (out / "a.npy").is_file()
    assert not finished.folder.exists() and not out.with_name(".c.old").exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "m.npy", "utts.jsonl"]


def test_staging_starts_afresh_when_what_it_holds_is_not_what_is_made(tmp_path: Path):
    out = tmp_path / "c"
    st = Staging(out, {"options": {"n": 1}}, FILES)
    st.open()
    st.append(*_chunk(0))
    assert Staging(out, {"options": {"n": 2}}, FILES).open() == 0  # other options: discarded
    st = Staging(out, {"options": {"n": 1}}, FILES)
    st.open()
    st.append(*_chunk(0))
    (st.folder / "m.npy").write_bytes(b"\0" * NPY_HEADER_BYTES)  # shorter than progress.json says
    assert Staging(out, {"options": {"n": 1}}, FILES).open() == 0
    (st.folder / "progress.json").write_text("{not json")
    assert Staging(out, {"options": {"n": 1}}, FILES).open() == 0


def test_staging_refuses_a_chunk_that_does_not_fit_its_files(tmp_path: Path):
    st = Staging(tmp_path / "c", {}, FILES)
    st.open()
    lines, rows = _chunk(0)
    with pytest.raises(ValueError, match=r"a chunk has rows for \['a.npy'\]"):
        st.append(lines, {"a.npy": rows["a.npy"]})
    with pytest.raises(ValueError, match="m.npy: rows of float32"):
        st.append(lines, rows | {"m.npy": rows["m.npy"].astype(np.float32)})
    with pytest.raises(ValueError, match=r"m.npy: rows of float16 \(4,\)"):
        st.append(lines, rows | {"m.npy": np.zeros((2, 4), np.float16)})
    assert st.done == 0 and (st.folder / "a.npy").stat().st_size == NPY_HEADER_BYTES


KILLED_CORPUS = """
import f5build.train.corpus as corpus
from test_corpus_scale import SMALL

# the 8th utterance dies: chunks of 3, so two are complete and the third is half-spoken
corpus.speak = dying(corpus.speak, 8)
corpus.make_corpus(Path({out!r}), SMALL, workers=1, progress=False, chunk=3)
"""


@needs_espeak
def test_a_killed_corpus_run_resumes_to_the_bytes_of_an_uninterrupted_one(tmp_path: Path):
    whole = make_corpus(tmp_path / "whole", SMALL, progress=False)
    out = tmp_path / "c"
    run_killed(KILLED_CORPUS.format(out=str(out)))
    staging = tmp_path / ".c.making"
    assert json.loads((staging / "progress.json").read_text())["done"] == 6 and not out.exists()
    make_corpus(out, SMALL, workers=1, progress=False, chunk=3)
    a = json.loads((whole / "corpus.json").read_text())
    b = json.loads((out / "corpus.json").read_text())
    assert a == b  # audio, mels, lines and speakers, byte for byte
    assert not staging.exists() and not (tmp_path / ".c.lock").exists()
    assert len(load_corpus(out).utts) == 22


@needs_espeak
def test_two_runs_never_make_one_corpus_at_once(tmp_path: Path):
    from f5build.buildlock import BuildLock

    out = tmp_path / "c"
    maker = (
        "from pathlib import Path; from test_corpus_scale import SMALL; from f5build.train.corpus import make_corpus; "
        f"make_corpus(Path({str(out)!r}), SMALL, progress=False)"
    )
    with BuildLock(out, command="another corpus maker"):  # held by this process; the maker is another
        r = subprocess.run([sys.executable, "-c", maker], cwd=Path(__file__).parent, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert r.returncode != 0 and "LockBusy" in r.stderr and "another corpus maker" in r.stderr, r.stderr[-2000:]
    assert not out.exists() and not (tmp_path / ".c.making").exists()


def test_a_write_the_disk_refuses_names_the_file_and_the_rerun_goes_on(tmp_path: Path):
    """A real kernel refusal: RLIMIT_FSIZE (EFBIG, what a full disk does to a write) stops the second
    chunk's audio half-written; nothing of that chunk is recorded, and the next run cuts it off."""
    import resource

    from f5rt.files import WriteError

    st = Staging(tmp_path / "c", {}, FILES)
    st.open()
    st.append(*_chunk(0))
    limit = (st.folder / "a.npy").stat().st_size + 4  # room for 2 of the next chunk's 5 samples
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(WriteError, match=r"c.making/a.npy: cannot write it \(File too large\).*and rerun"):
            st.append(*_chunk(1))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert (st.folder / "a.npy").stat().st_size == limit  # the half-written chunk is on disk
    again = Staging(tmp_path / "c", {}, FILES)
    assert again.open() == 1
    again.append(*_chunk(1))
    np.testing.assert_array_equal(np.load(again.finish() / "a.npy"), np.arange(10, dtype=np.int16))


@needs_espeak
def test_too_little_room_for_the_corpus_is_refused_before_a_line_is_spoken(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    from f5build.space import NotEnoughSpace

    monkeypatch.setattr("f5build.space.free_bytes", lambda folder: 1000)
    with pytest.raises(
        NotEnoughSpace, match=r"the training corpus c needs about .* but only 1.0 kB .*elsewhere with --train-corpus"
    ):
        make_corpus(tmp_path / "c", SMALL, workers=1, progress=False)
    assert json.loads((tmp_path / ".c.making" / "progress.json").read_text())["done"] == 0
