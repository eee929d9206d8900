"""The listening sweep: every condition synthesizes the held-out set through the real runtime.

A condition is a precision at an NFE with a schedule:

- `sway`: a uniform time grid with f5-tts' sway sampling (coefficient -1);
- `epss`: f5-tts' Empirically Pruned Step Sampling (+ sway) where f5-tts has a table for the NFE
  (5, 6, 7, 10, 12, 16); for another NFE the condition is skipped, as f5-tts falls back to uniform;
- `midpoint`: the midpoint solver on a uniform grid with sway, NFE / 2 steps of two step-graph calls
  (so it is compared with the others at equal graph calls); odd NFE are skipped.

and a classifier-free guidance strength (`cfg`, f5-tts' default 2; the name carries it only when it
differs, "fp32/nfe7/sway/cfg1"): a small model may say its text better with less guidance.

Each utterance clones a held-out speaker from their reference line (audio + text) and says a
held-out sentence, with seed = utterance index, so every condition hears the same requests with the
same noise. Two ceilings are scored the same way: the ground-truth audio and copy-synthesis (the
ground-truth mel through the model's own vocoder graph, FP32).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from f5build.quality.instruments import Dnsmos, SpeakerEncoder, Transcriber
from f5build.quality.scoring import DEFAULT_CFG, ConditionScore, UtteranceScore, cosine, wer
from f5build.quality.store import ScoreStore, graph_hashes
from f5build.train.corpus import SAMPLE_RATE, Corpus, Utterance

SCHEDULES = ("sway", "epss", "midpoint")


@dataclass(frozen=True)
class Condition:
    precision: str
    nfe: int
    schedule: str
    cfg: float = DEFAULT_CFG

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.nfe < 1:
            raise ValueError(f"nfe must be at least 1, got {self.nfe}")
        if not self.cfg >= 0:
            raise ValueError(f"cfg must be a guidance strength >= 0, got {self.cfg}")

    @property
    def name(self) -> str:
        return condition_name(self.precision, self.nfe, self.schedule, self.cfg)

    def runnable(self) -> bool:
        from f5rt.schedules import EPSS_TABLE

        if self.schedule == "epss":
            return self.nfe in EPSS_TABLE
        return self.schedule != "midpoint" or self.nfe % 2 == 0


def served_schedule(nfe: int) -> str:
    """The schedule `f5rt serve` and `f5rt synth` run at `nfe` by default: f5-tts' EPSS where it has a
    table for the NFE, else the uniform grid, both with sway (the runtime's SynthesisOptions.use_epss)."""
    from f5rt.options import SynthesisOptions
    from f5rt.schedules import EPSS_TABLE

    return "epss" if SynthesisOptions().use_epss and nfe in EPSS_TABLE else "sway"


def condition_name(precision: str, nfe: int, schedule: str, cfg: float = DEFAULT_CFG) -> str:
    """The condition's name, "fp32/nfe7/sway", with "/cfg<strength>" where the guidance is not the default."""
    return f"{precision}/nfe{nfe}/{schedule}" + ("" if cfg == DEFAULT_CFG else f"/cfg{cfg:g}")


class Listener:
    """The three instruments, plus the held-out speakers' reference embeddings."""

    def __init__(self, evalset: Corpus, cache: Path, asr_model: str = "base", threads: int = 1) -> None:
        self.asr = Transcriber(cache, asr_model, threads)
        self.speaker = SpeakerEncoder(threads)
        self.mos = Dnsmos()
        self.refs = {u.speaker: self.speaker(evalset.wave(u), SAMPLE_RATE) for u in evalset.split("ref")}
        if len(self.refs) < 2:
            raise ValueError("speaker verification needs at least two held-out speakers with a reference line")

    def for_voices(self, evalset: Corpus, refs: Iterable[Utterance]) -> Listener:
        """A listener with these instruments (loaded once) that verifies speakers against `refs`, one
        reference utterance per speaker, instead of the held-out speakers' (f5build.train.seen)."""
        other = copy.copy(self)
        other.refs = {u.speaker: self.speaker(evalset.wave(u), SAMPLE_RATE) for u in refs}
        if len(other.refs) < 2:
            raise ValueError("speaker verification needs references of at least two speakers")
        return other

    def score(self, u: Utterance, audio: np.ndarray, rate: int) -> UtteranceScore:
        emb = self.speaker(audio, rate)
        own = cosine(emb, self.refs[u.speaker])
        other = max(cosine(emb, e) for s, e in self.refs.items() if s != u.speaker)
        text = self.asr(audio, rate)
        m = self.mos(audio, rate)
        return UtteranceScore(u.id, u.speaker, u.text, text, wer(u.text, text), own, other,
                              m.ovrl, m.sig, m.bak, m.p808, audio.shape[0] / rate)  # fmt: skip


def ceilings(
    artifacts: Path,
    evalset: Corpus,
    items: Sequence[tuple[Utterance, Utterance]],
    listener: Listener,
    threads: int,
    store: ScoreStore | None = None,
) -> list[ConditionScore]:
    """Ground truth and copy-synthesis (true mel -> the model's FP32 vocoder graph)."""
    from f5rt.backends import make_backend
    from f5rt.manifest import load_manifest

    manifest = load_manifest(artifacts)

    def truth() -> list[UtteranceScore]:
        return [listener.score(t, evalset.wave(t), SAMPLE_RATE) for _, t in items]

    def copy() -> list[UtteranceScore]:
        backend = make_backend("onnxruntime", manifest, precision="fp32", threads=threads)
        try:
            out = []
            for _, t in items:
                mel = np.ascontiguousarray(evalset.mel_of(t).T[None])
                out.append(listener.score(t, np.clip(backend.vocode(mel)[0], -1, 1), SAMPLE_RATE))
            return out
        finally:
            backend.close()

    truth_scores = _stored(store, "ground truth", {}, truth)
    copy_scores = _stored(store, "copy-synthesis", graph_hashes(manifest, None), copy)
    return [
        ConditionScore.of("ground truth", "-", 0, "-", truth_scores),
        ConditionScore.of("copy-synthesis", "fp32", 0, "-", copy_scores),
    ]


def _stored(
    store: ScoreStore | None, name: str, graphs: dict[str, str], score: Callable[[], list[UtteranceScore]]
) -> list[UtteranceScore]:
    """`name`'s scores, through the store where there is one."""
    return score() if store is None else store.scored(name, graphs, score)


def synthesize_condition(
    synth: object, cond: Condition, evalset: Corpus, items: Sequence[tuple[Utterance, Utterance]]
) -> Iterable[tuple[Utterance, np.ndarray, int]]:
    from f5rt.synthesizer import SynthesisOptions, Synthesizer

    assert isinstance(synth, Synthesizer)
    for i, (ref, tgt) in enumerate(items):
        voice = synth.voice_from_audio(evalset.wave(ref), ref.text, sample_rate=SAMPLE_RATE, voice_id=ref.speaker)
        solver = "midpoint" if cond.schedule == "midpoint" else "euler"
        opts = SynthesisOptions(nfe=cond.nfe, cfg=cond.cfg, use_epss=cond.schedule == "epss", seed=i, solver=solver)
        result = synth.synthesize(tgt.text, voice, opts)
        yield tgt, np.clip(result.audio, -1, 1), result.sample_rate


def run_conditions(
    artifacts: Path,
    conditions: Sequence[Condition],
    evalset: Corpus,
    items: Sequence[tuple[Utterance, Utterance]],
    listener: Listener,
    threads: int,
    keep_audio: Path | None = None,
    store: ScoreStore | None = None,
) -> tuple[list[ConditionScore], dict[str, list[UtteranceScore]]]:
    """Score every runnable condition; one Synthesizer per precision, reused across NFE and schedules.

    With a `store`, a condition it holds for the same graphs (and everything else its key names) is
    taken from it, and each condition scored here is stored as soon as it is done: a killed sweep
    loses at most the condition it was in."""
    from f5rt.manifest import load_manifest
    from f5rt.synthesizer import Synthesizer

    manifest = load_manifest(artifacts)
    details: dict[str, list[UtteranceScore]] = {}
    by_precision: dict[str, list[Condition]] = {}
    for c in conditions:
        if c.runnable():
            by_precision.setdefault(c.precision, []).append(c)
    for precision, conds in by_precision.items():
        graphs = graph_hashes(manifest, precision)
        todo = []
        for cond in conds:
            found = store.get(cond.name, graphs) if store is not None else None
            if found is None:
                todo.append(cond)
            else:
                details[cond.name] = found
                print(f"quality {cond.name} (stored): {_line(_score(cond, found))}", flush=True)
        if not todo:
            continue
        with Synthesizer(artifacts, backend="onnxruntime", precision=precision, threads=threads) as synth:
            for cond in todo:
                scores = []
                for tgt, audio, rate in synthesize_condition(synth, cond, evalset, items):
                    scores.append(listener.score(tgt, audio, rate))
                    if keep_audio is not None:
                        import soundfile as sf

                        out = keep_audio / cond.name.replace("/", "_") / f"{tgt.id}.wav"
                        out.parent.mkdir(parents=True, exist_ok=True)
                        sf.write(out, audio, rate)
                details[cond.name] = scores
                if store is not None:
                    store.put(cond.name, graphs, scores)
                print(f"quality {cond.name}: {_line(_score(cond, scores))}", flush=True)
    ordered = [c for c in conditions if c.name in details]  # the order asked for, stored or not
    return [_score(c, details[c.name]) for c in ordered], {c.name: details[c.name] for c in ordered}


def _score(cond: Condition, scores: list[UtteranceScore]) -> ConditionScore:
    return ConditionScore.of(cond.name, cond.precision, cond.nfe, cond.schedule, scores, cond.cfg)


def _line(s: ConditionScore) -> str:
    return (
        f"WER {s.wer:.3f} (median {s.wer_median:.3f}, {s.lines_said} said)  sim {s.sim:.3f}  "
        f"verified {s.verified_label}  margin {s.sim_margin:+.3f}  OVRL {s.ovrl:.2f}  "
        f"SIG {s.sig:.2f}  BAK {s.bak:.2f}  ({s.utterances} utts)"
    )
