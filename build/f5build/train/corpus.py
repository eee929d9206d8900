"""The training corpus: espeak-ng speech of template lines by many synthetic speakers, cached.

`make_corpus` is deterministic for a given espeak-ng version and settings: the same seed gives the
same speakers, lines, audio and mels. The corpus is written in chunks to a staging folder beside its
target (f5build.train.staging) and renamed into place only when complete, so a killed run leaves the
previous corpus, or none, and its rerun goes on from the last complete chunk. Its `corpus.json`
records the settings, the espeak-ng version and each file's sha256; `load_corpus` refuses a folder
whose files do not match it.

Its size is `CorpusOptions.train_sentences` x `voices_per_sentence`: the recipe's 6,000 sentences in
one voice each are 5.1 hours; 35,000 in four voices are 114 hours (27.5 GB), what a GPU run that
is to say its text needs (docs/training.md, "What stage 2 needs"). The held-out lines are the same
in every corpus made from one seed.

Layout of `artifacts/train-corpus/`:

    corpus.json     settings, counts, espeak-ng version, file hashes
    utts.jsonl      one utterance per line: id, speaker, text, split, sample and frame offsets
    speakers.json   every speaker's espeak-ng arguments, and which are held out
    audio.npy       every utterance's 24 kHz waveform, int16, end to end
    mel.npy         every utterance's f5-tts mel (frames, 100), float16, end to end

Splits: `phrase` and `train` (training speakers; single words / short phrases and sentences),
`eval` (held-out sentences spoken by held-out speakers) and `ref` (one reference utterance per
held-out speaker, the voice prompt when the eval sentences are generated).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from f5build.train.sentences import phrases, sentences
from f5build.train.speakers import FORMANT_RANGE, FORMANT_SCALES, Speaker, espeak_version, make_speakers
from f5build.train.staging import RowFile, Staging
from f5rt.files import atomic_write_json, sha256_file

SAMPLE_RATE = 24000
HOP = 256
FORMAT = 1
HELD_OUT_AT = 6000  # the recipe's train_sentences: the release's held-out lines follow its training lines
CHUNK = 1024  # utterances spoken, turned into mels and appended at a time (about 45 minutes of audio)


@dataclass(frozen=True)
class CorpusOptions:
    """How big the corpus is; every count is part of its identity (recorded in corpus.json)."""

    train_speakers: int = 96
    held_out_speakers: int = 8
    held_out_variants: int = 8
    train_sentences: int = 6000
    phrases: int = 2500
    eval_sentences: int = 48
    seed: int = 1234
    formant_scales: tuple[int, ...] = FORMANT_SCALES
    """The formant-frequency scales (percent) training speakers draw from (f5build.train.speakers); the
    held-out speakers and every line's text and speaker are the same whatever they are. (100,) is the
    plain corpus, as espeak-ng ships its voices."""
    voices_per_sentence: int = 1
    """How many training speakers say each training sentence (distinct ones, drawn per sentence). The
    templates make about 47,000 distinct sentences, so a corpus of about 100 hours says each in several
    voices; 1 is the recipe's corpus, whose draws it keeps."""
    held_out_at: int = HELD_OUT_AT
    """Where in the sentence stream the held-out lines (evaluation sentences, then the references) are
    taken; training sentences are the stream without them. At the default every corpus made from the
    same seed holds out the recipe's lines whatever its `train_sentences`, so figures compare across
    corpora of every size."""

    def __post_init__(self) -> None:
        lo, hi = FORMANT_RANGE
        if not self.formant_scales or any(not lo <= int(p) <= hi for p in self.formant_scales):
            raise ValueError(f"formant scales must be percents in {lo}-{hi}, got {list(self.formant_scales)}")
        if not 1 <= self.voices_per_sentence <= self.train_speakers:
            raise ValueError(
                f"voices per sentence must be 1-{self.train_speakers} (the training speakers), "
                f"got {self.voices_per_sentence}"
            )
        if self.train_sentences < 0 or self.held_out_at < 0:
            raise ValueError(
                f"sentence counts must be >= 0, got train_sentences={self.train_sentences}, "
                f"held_out_at={self.held_out_at}"
            )

    def record(self) -> dict[str, object]:
        """As corpus.json records the options. What an option left at the layout corpora had before it
        existed is left out (no formant scaling, one voice per sentence, the held-out lines right after
        the training sentences), so those corpora's records still match."""
        out = asdict(self)
        out["formant_scales"] = [int(p) for p in self.formant_scales]
        if out["formant_scales"] == [100]:
            del out["formant_scales"]
        if self.voices_per_sentence == 1:
            del out["voices_per_sentence"]
        if self.held_out_at == self.train_sentences:
            del out["held_out_at"]
        return out


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: str
    text: str
    split: str
    sample_start: int
    samples: int
    frame_start: int
    frames: int


# The files whose sha256 names a corpus in training records (Corpus.identity)
IDENTITY_FILES = ("utts.jsonl", "speakers.json")


@dataclass
class Corpus:
    """A loaded corpus: utterances, speakers, and memory-mapped audio and mels."""

    root: Path
    utts: list[Utterance]
    speakers: dict[str, Speaker]
    held_out: set[str]
    audio: np.ndarray
    mel: np.ndarray

    def split(self, name: str) -> list[Utterance]:
        return [u for u in self.utts if u.split == name]

    @property
    def identity(self) -> dict[str, str]:
        """Which corpus this is, as a training record names it: the sha256 of its lines (utts.jsonl) and of
        its speakers (speakers.json, formant scales included), from corpus.json. Its audio is a function of
        these and the espeak-ng version; its mels' bytes also vary with the CPU's float rounding, so
        neither is part of the name."""
        files = json.loads((self.root / "corpus.json").read_text(encoding="utf-8"))["files"]
        return {name: files[name] for name in IDENTITY_FILES}

    def wave(self, u: Utterance) -> np.ndarray:
        """float32 waveform in [-1, 1]."""
        return self.audio[u.sample_start : u.sample_start + u.samples].astype(np.float32) / 32768.0

    def mel_of(self, u: Utterance) -> np.ndarray:
        """(frames, 100) float32 log-mel."""
        return self.mel[u.frame_start : u.frame_start + u.frames].astype(np.float32)

    def held_out_pairs(self, count: int | None = None) -> list[tuple[Utterance, Utterance]]:
        """(reference, line) for the held-out lines in corpus order, each in its speaker's reference
        voice: the pairs every held-out figure (training signals, listening figures) is measured on,
        so that a figure on the first n lines and another on the first m share their first min(n, m).
        `count` takes the first `count` and refuses more than the set holds; None takes all."""
        refs = {u.speaker: u for u in self.split("ref")}
        pairs = [(refs[u.speaker], u) for u in self.split("eval") if u.speaker in refs]
        if count is None:
            return pairs
        if not 0 <= count <= len(pairs):
            raise ValueError(f"{count} held-out lines asked for, the held-out set has {len(pairs)}")
        return pairs[:count]


def speak(speaker: Speaker, text: str) -> np.ndarray:
    """espeak-ng speech of `text` at 24 kHz, float32, silence trimmed to 0.1 s lead / 0.15 s tail."""
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        cmd = ["espeak-ng", *speaker.espeak_args(), "-w", str(wav), "--", text]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        import soundfile as sf

        raw, rate = sf.read(wav, dtype="float32")
    if rate != 22050:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz audio, 22050 Hz expected")
    audio = resample_poly(raw, 160, 147).astype(np.float32)
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng made silence for {text!r} with {speaker.voice}")
    start = max(0, loud[0] - int(0.1 * SAMPLE_RATE))
    end = min(audio.size, loud[-1] + int(0.15 * SAMPLE_RATE))
    audio = audio[start:end]
    rms = float(np.sqrt(np.mean(audio**2)))
    # Speech-like loudness with some spread, so the model does not learn one level.
    gain = (0.06 + 0.06 * (hash_unit(text + speaker.id))) / max(rms, 1e-6)
    return np.clip(audio * gain, -1.0, 1.0)


def hash_unit(key: str) -> float:
    """A stable number in [0, 1) from a string (Python's hash() is salted per process)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def _plan(opts: CorpusOptions) -> tuple[list[Speaker], list[Speaker], list[tuple[str, str, str]]]:
    """Speakers and (split, speaker id, text) for every utterance, in corpus order."""
    import random

    train_spk, held_spk = make_speakers(
        opts.train_speakers, opts.held_out_speakers, opts.held_out_variants, opts.seed, opts.formant_scales
    )
    n_held = opts.eval_sentences + opts.held_out_speakers
    at = opts.held_out_at
    lines = sentences(max(at, opts.train_sentences) + n_held, opts.seed + 1)
    eval_lines = lines[at : at + opts.eval_sentences]
    ref_lines = lines[at + opts.eval_sentences : at + n_held]
    train_lines = (lines[:at] + lines[at + n_held :])[: opts.train_sentences]
    rng = random.Random(opts.seed + 2)
    plan: list[tuple[str, str, str]] = []
    plan += [("phrase", rng.choice(train_spk).id, t) for t in phrases(opts.phrases, opts.seed + 3)]
    # sample(k=1) draws as choice() does, so one voice per sentence is the recipe's corpus
    plan += [("train", s.id, t) for t in train_lines for s in rng.sample(train_spk, opts.voices_per_sentence)]
    plan += [("ref", s.id, ref_lines[i]) for i, s in enumerate(held_spk)]
    plan += [("eval", held_spk[i % len(held_spk)].id, t) for i, t in enumerate(eval_lines)]
    return train_spk, held_spk, plan


def _mel_spec() -> Callable[[np.ndarray], np.ndarray]:
    """f5-tts' own mel (vocos type) of a waveform, (frames, 100) float32; safe to call from threads."""
    import torch
    from f5_tts.model.modules import MelSpec

    spec = MelSpec(n_fft=1024, hop_length=HOP, win_length=1024, n_mel_channels=100, target_sample_rate=SAMPLE_RATE)

    def mel(wave: np.ndarray) -> np.ndarray:
        # per thread: torch's grad mode is thread-local. Not inference_mode: f5-tts caches its window and
        # mel basis per device, and an inference tensor in that cache breaks a later training step's mel loss
        with torch.no_grad():
            return spec(torch.from_numpy(wave)[None])[0].T.numpy()

    return mel


def disk_bytes(texts: Iterable[str]) -> int:
    """About what the audio and mels of these lines take on disk: espeak-ng speaks 1,600-1,900 samples
    per character at the corpus' rates (2,000 taken), each an int16 sample and 100/256 float16 mel values."""
    return int(2000 * sum(len(t) for t in texts) * (2 + 100 * 2 / HOP))


SPLITS = ("phrase", "train", "ref", "eval")


def _speakers_json(train_spk: list[Speaker], held_spk: list[Speaker]) -> dict[str, object]:
    return {"speakers": [s.to_dict() for s in [*train_spk, *held_spk]], "held_out": [s.id for s in held_spk]}


def speakers_record(opts: CorpusOptions) -> dict[str, object]:
    """What a corpus made with `opts` writes to speakers.json, without speaking a line: whether a release
    was trained on the recipe's corpus can be checked against its record (`Corpus.identity`)."""
    train_spk, held_spk, _ = _plan(opts)
    return _speakers_json(train_spk, held_spk)


def make_corpus(
    out: Path,
    opts: CorpusOptions,
    workers: int = 2,
    progress: bool = True,
    splits: tuple[str, ...] = SPLITS,
    chunk: int = CHUNK,
) -> Path:
    """Write the corpus to `out` (replacing it only when complete); returns `out`.

    `splits` limits it to some splits (`("ref", "eval")` is the held-out evaluation set the quality
    stage needs, made in seconds): utterance ids and content are the same as in the full corpus.
    It is made `chunk` utterances at a time in a staging folder beside `out` (f5build.train.staging):
    memory stays at one chunk's audio whatever the corpus' size, and a run that is killed resumes from
    its last complete chunk. One process makes a corpus folder at a time (its lock, f5build.buildlock).
    """
    from tqdm import tqdm

    from f5build.buildlock import BuildLock
    from f5build.space import require_space

    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown corpus split(s) {unknown}; known: {', '.join(SPLITS)}")
    if chunk < 1:
        raise ValueError(f"a corpus is made at least one utterance at a time, got chunk={chunk}")
    train_spk, held_spk, full_plan = _plan(opts)
    speakers = {s.id: s for s in [*train_spk, *held_spk]}
    numbered = [(i, p) for i, p in enumerate(full_plan) if p[0] in splits]
    key = {"format": FORMAT, "options": opts.record(), "splits": list(splits), "espeak": espeak_version()}
    files = (RowFile("audio.npy", np.dtype(np.int16)), RowFile("mel.npy", np.dtype(np.float16), (100,)))
    with BuildLock(out, command=f"making the training corpus {out}"):
        staging = Staging(out, key | {"utterances": len(numbered)}, files)
        done = staging.open()
        if done:
            print(f"resuming the corpus in {staging.folder} at utterance {done} of {len(numbered)}", flush=True)
        need = disk_bytes(p[2] for _, p in numbered[done:])
        require_space(out.parent, need, f"the training corpus {out.name}", "make it elsewhere with --train-corpus")
        mel = _mel_spec()

        def speech(p: tuple[str, str, str]) -> tuple[np.ndarray, np.ndarray]:
            wave = speak(speakers[p[1]], p[2])
            return wave, mel(wave)

        bar = tqdm(total=len(numbered), initial=done, desc="corpus", disable=not progress, mininterval=5)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for lo in range(done, len(numbered), chunk):
                part = numbered[lo : lo + chunk]
                spoken = list(pool.map(speech, [p for _, p in part]))
                s0, f0 = staging.rows["audio.npy"], staging.rows["mel.npy"]
                lines = []
                for (i, (split, spk, text)), (w, m) in zip(part, spoken, strict=True):
                    u = Utterance(f"{split}{i:05d}", spk, text, split, s0, w.size, f0, m.shape[0])
                    lines.append(json.dumps(asdict(u), ensure_ascii=False))
                    s0, f0 = s0 + w.size, f0 + m.shape[0]
                audio = np.concatenate([np.round(w * 32767).astype(np.int16) for w, _ in spoken])
                mels = np.concatenate([m for _, m in spoken]).astype(np.float16)
                staging.append(lines, {"audio.npy": audio, "mel.npy": mels})
                bar.update(len(part))
        bar.close()
        tmp = staging.finish()
        utts = [Utterance(**json.loads(line)) for line in (tmp / "utts.jsonl").read_text(encoding="utf-8").splitlines()]
        atomic_write_json(tmp / "speakers.json", _speakers_json(train_spk, held_spk))
        names = ("audio.npy", "mel.npy", "utts.jsonl", "speakers.json")
        counts = {s: sum(u.split == s for u in utts) for s in splits}
        hours = {s: round(sum(u.samples for u in utts if u.split == s) / SAMPLE_RATE / 3600, 3) for s in counts}
        atomic_write_json(
            tmp / "corpus.json",
            {
                "format": FORMAT,
                "options": opts.record(),
                "splits": list(splits),
                "espeak": key["espeak"],
                "counts": counts,
                "hours": hours,
                "files": {name: sha256_file(tmp / name) for name in names},
            },
        )
        return staging.replace_out()


def corpus_is_current(root: Path, opts: CorpusOptions, splits: tuple[str, ...] = SPLITS) -> bool:
    """True when `root` holds a complete corpus made with these options and splits."""
    try:
        meta = json.loads((root / "corpus.json").read_text())
    except (OSError, ValueError):
        return False
    made = tuple(meta.get("splits", SPLITS))
    return meta.get("format") == FORMAT and meta.get("options") == opts.record() and made == tuple(splits)


def load_corpus(root: Path, verify: bool = True) -> Corpus:
    """Read a corpus folder; with `verify`, every file's sha256 must match corpus.json."""
    meta_path = root / "corpus.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root}: no corpus.json (make the corpus with `nox -s train -- --train-parts corpus`)")
    meta = json.loads(meta_path.read_text())
    if verify:
        for name, digest in meta["files"].items():
            if sha256_file(root / name) != digest:
                raise ValueError(f"{root / name}: sha256 differs from corpus.json (remake the corpus)")
    utts = [Utterance(**json.loads(line)) for line in (root / "utts.jsonl").read_text(encoding="utf-8").splitlines()]
    spk = json.loads((root / "speakers.json").read_text())
    speakers = {d["id"]: Speaker(**d) for d in spk["speakers"]}
    return Corpus(
        root,
        utts,
        speakers,
        set(spk["held_out"]),
        np.load(root / "audio.npy", mmap_mode="r"),
        np.load(root / "mel.npy", mmap_mode="r"),
    )
