"""Every kept checkpoint scored: alignment signals and the listening figures, in PyTorch.

The kept EMA snapshots (`f5_ema_<step>.pt`, every `keep_every` steps) and the newest state are each
run through f5-tts' own sampler (NFE 16, sway, seed = item index) and the trained Vocos, on the
held-out speakers and sentences, and scored by the quality instruments, beside the two ceilings the
goal is judged against (the ground-truth audio and copy-synthesis through the same Vocos) on the same
lines. This needs no export: it is how training progress is followed between releases. Writes
reports/train/checkpoints.{md,json}.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from f5build.common import package_hash
from f5build.load import make_vocos, tensors_sha256
from f5build.quality.scoring import ConditionScore, UtteranceScore
from f5build.quality.store import ScoreStore, slug
from f5build.quality.sweep import Listener
from f5build.train.corpus import SAMPLE_RATE, Corpus, Utterance
from f5build.train.repeats import SEED_STRIDE, RepeatedSamples
from f5build.train.seen import SeenVoices
from f5build.train.signals import EVAL_NFE, alignment_signals, say
from f5build.train.state import load_state
from f5build.train.textuse import TextUse, text_use
from f5rt.files import atomic_write_bytes, atomic_write_json

NEAR_WER = 0.8  # a line with at most this WER has its shape and some words right: progress before it is said


@dataclass(frozen=True)
class EvaluateOptions:
    """What `--train-parts evaluate` scores, built once from the command line (f5build.train.Options)."""

    utts: int = 8
    """Held-out lines per snapshot (speakers in turn). 8 follows training cheaply; a figure to compare
    between checkpoints wants all 48: one line moves an 8-line verification rate by 12.5 points."""
    steps: tuple[int, ...] = ()
    """The kept snapshots to score, by step; empty scores every kept snapshot and the newest state."""
    threads: int = 1
    """torch intra-op threads for sampling and the speaker encoder (training may hold the other cores)."""
    seen_voices: bool = False
    """Also score the same sentences in voices the DiT trained on (f5build.train.seen), beside those
    voices' own audio: twice the sampling time, and the figure that tells weak cloning from unheard timbres."""
    samples: int = 1
    """Draws of each line (f5build.train.repeats): above 1, each line is said that many times and the report
    adds the figures over all draws, the verification rate set against the ground truth's line by line. The
    first draw is the single-sample figures' own; each further one costs as much sampling again."""

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"draws per line must be at least 1, got {self.samples}")


@dataclass(frozen=True)
class CheckpointScore:
    step: int
    mel_l1: float
    mel_l1_unrelated: float
    loudness_corr: float
    loudness_corr_unrelated: float
    listening: ConditionScore
    lines_near: int = 0  # lines with WER <= NEAR_WER
    text_use: tuple[TextUse, ...] = ()  # f5build.train.textuse on the same lines, at each of its flow times
    seen: ConditionScore | None = None  # the same sentences in training speakers' voices (seen_voices)
    repeated: RepeatedSamples | None = None  # every draw of every line, when more than one was asked for


@dataclass(frozen=True)
class CheckpointReport:
    """What reports/train/checkpoints.json holds: the ceilings on the same lines, then each snapshot."""

    ceilings: list[ConditionScore]
    checkpoints: list[CheckpointScore]
    seen_ceiling: ConditionScore | None = None  # the training speakers' own audio of other lines (seen_voices)


def _snapshots(train_dir: Path, newest: dict, steps: tuple[int, ...] = ()) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """(step, EMA state dict) of the kept snapshots and the newest state (`newest`, already read), or of
    `steps` only: a step neither holds is refused, and only the snapshots asked for are read."""
    kept = {int(path.stem.rsplit("_", 1)[1]): path for path in train_dir.glob("f5_ema_*.pt")}
    newest_step = int(newest["step"])
    missing = sorted(set(steps) - set(kept) - {newest_step})
    if missing:
        raise ValueError(
            f"--train-eval-steps: no kept snapshot at step(s) {missing}; kept: {sorted(set(kept) | {newest_step})} "
            "(the newest state is always one)"
        )
    out = []
    for step, path in sorted(kept.items()):
        if steps and step not in steps:
            continue
        state = load_state(path, require="ema_model_state_dict")  # snapshots before 2026-12 hold no "step"
        if state is not None:
            out.append((step, state["ema_model_state_dict"]))
    if (not steps or newest_step in steps) and all(step != newest_step for step, _ in out):
        out.append((newest_step, newest["ema_model_state_dict"]))
    return out


def run_folder(train_dir: Path) -> str:
    """The store folder of one training run: its folder's name and a digest of its resolved path."""
    path = train_dir.resolve()
    return f"{slug(path.name)}-{hashlib.sha256(str(path).encode('utf-8')).hexdigest()[:12]}"


def evaluate_checkpoints(
    train_dir: Path, corpus: Corpus, out: Path, opts: EvaluateOptions = EvaluateOptions()
) -> CheckpointReport:
    """Score the chosen kept snapshots on the corpus' held-out (ref, eval) pairs, beside the ceilings."""
    from f5build.train.f5 import build_cfm

    newest = load_state(train_dir / "f5_state.pt")
    vstate = load_state(train_dir / "vocos_state.pt")
    if newest is None or vstate is None:
        raise FileNotFoundError(f"{train_dir}: no DiT and Vocos training states yet")
    snapshots = _snapshots(train_dir, newest, opts.steps)
    torch.set_num_threads(opts.threads)
    vocos = make_vocos(**vstate["arch"])
    vocos.load_state_dict(vstate["model"])
    vocos.eval()
    cfm = build_cfm(newest["vocab"], newest["arch"])
    cache = out.parent / ".quality-cache"
    listener = Listener(corpus, cache, threads=opts.threads)
    items = corpus.held_out_pairs(opts.utts)
    # draw k of line i has seed i + SEED_STRIDE * k: no two draws may share one
    if opts.samples > 1 and len(items) > SEED_STRIDE:
        raise ValueError(f"{len(items)} held-out lines: several draws per line need fewer than {SEED_STRIDE}")
    # a snapshot's listening scores are kept (f5build.quality.store): a rerun scores new snapshots only. The
    # store keeps one result per condition name, so each run has its own folder: two runs forked from one
    # state both have a "step 60000", and sharing a folder, each would evict the other's
    store = ScoreStore.for_run(cache / "scores" / "checkpoints" / run_folder(train_dir), corpus, items, "base")
    made_with = {
        "vocos": tensors_sha256(vstate["model"]),
        # what synthesizes the lines (f5build.train.signals.say): a change there scores every snapshot again,
        # a change to this report does not
        "sampler": package_hash(Path(__file__).parent, ("signals.py",)),
    }

    def vocode(mel: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            wave = vocos.decode(torch.from_numpy(np.ascontiguousarray(mel.T)[None]).float())[0].numpy()
        return np.clip(wave, -1, 1)

    def recorded(listener: Listener, utts: list[Utterance]) -> list[UtteranceScore]:
        """The utterances' own audio, scored: a ceiling."""
        return [listener.score(u, corpus.wave(u), SAMPLE_RATE) for u in utts]

    def copy_synthesis() -> list[UtteranceScore]:
        return [listener.score(tgt, vocode(corpus.mel_of(tgt)), SAMPLE_RATE) for _, tgt in items]

    truth = store.scored("ground truth", {}, functools.partial(recorded, listener, [t for _, t in items]))
    ceilings = [
        ConditionScore.of("ground truth", "audio", 0, "-", truth),
        ConditionScore.of("copy-synthesis", "torch-fp32", 0, "-",
                          store.scored("copy-synthesis", {"vocos": made_with["vocos"]}, copy_synthesis)),
    ]  # fmt: skip

    def said(
        model: torch.nn.Module, listener: Listener, pairs: list[tuple[Utterance, Utterance]], draw: int = 0
    ) -> list[UtteranceScore]:
        """Each (reference, line) pair synthesized by `model` in the reference's voice, and scored; draw k
        of line i has seed i + SEED_STRIDE * k."""
        return [listener.score(line, vocode(say(model, corpus, ref, line, seed=i + SEED_STRIDE * draw)), SAMPLE_RATE)
                for i, (ref, line) in enumerate(pairs)]  # fmt: skip

    # the seen-voice set, its listener (the stand-ins' references) and its store, when asked for
    seen: tuple[SeenVoices, Listener, ScoreStore] | None = None
    seen_ceiling = None
    if opts.seen_voices:
        voices = SeenVoices.of(corpus, items)
        seen_listener = listener.for_voices(corpus, voices.refs.values())
        seen_store = ScoreStore.for_run(cache / "scores" / "checkpoints" / run_folder(train_dir) / "seen-voices",
                                        corpus, voices.pairs, "base")  # fmt: skip
        seen = (voices, seen_listener, seen_store)
        seen_truth = functools.partial(recorded, seen_listener, voices.truth)
        seen_ceiling = ConditionScore.of("seen voices, ground truth", "audio", 0, "-",
                                         seen_store.scored("seen voices, ground truth", {}, seen_truth))  # fmt: skip
    rows: list[CheckpointScore] = []
    for step, ema in snapshots:
        model = copy.deepcopy(cfm)
        model.load_state_dict({k[len("ema_model.") :]: v for k, v in ema.items() if k.startswith("ema_model.")})
        model.eval()
        signals = alignment_signals(model, corpus)
        name, made_from = f"step {step}", made_with | {"ema": tensors_sha256(ema)}
        scores = store.scored(name, made_from, functools.partial(said, model, listener, items))
        listening = ConditionScore.of(f"step {step}", "torch-fp32", EVAL_NFE, "sway", scores)
        in_seen_voices = None
        if seen is not None:
            voices, seen_listener, seen_store = seen
            heard = seen_store.scored(f"seen voices, {name}", made_from,
                                      functools.partial(said, model, seen_listener, voices.pairs))  # fmt: skip
            in_seen_voices = ConditionScore.of(f"step {step}, seen voices", "torch-fp32", EVAL_NFE, "sway", heard)
        repeated = None
        if opts.samples > 1:
            # the further draws are stored under their own names: the single-sample figures stay as they were
            draws = [scores] + [store.scored(f"{name}, draw {k + 1}", made_from,
                                             functools.partial(said, model, listener, items, k))
                                for k in range(1, opts.samples)]  # fmt: skip
            repeated = RepeatedSamples.of(draws, truth)
        # each line borrows another's text: one line alone has no figure
        uses = tuple(text_use(model, corpus, count=len(items))) if len(items) > 1 else ()
        rows.append(CheckpointScore(step, signals.mel_l1, signals.mel_l1_unrelated, signals.loudness_corr,
                                    signals.loudness_corr_unrelated, listening,
                                    sum(s.wer <= NEAR_WER for s in scores), uses, in_seen_voices,
                                    repeated))  # fmt: skip
        gains = " ".join(f"t={u.time:g} {u.gain:.3f}" for u in uses)
        print(f"checkpoint {step}: {signals.to_dict()} text gain {gains} "
              f"WER {listening.wer:.3f} (median {listening.wer_median:.2f}, "
              f"{listening.lines_said} said) sim {listening.sim:.3f} margin {listening.sim_margin:+.3f} "
              f"verified {listening.verified_label} "
              f"OVRL {listening.ovrl:.2f}", flush=True)  # fmt: skip
        if repeated is not None:
            print(
                f"checkpoint {step}, {repeated.samples} draws per line: verified {repeated.verify_rate:.0%} "
                f"(gap to ground truth {repeated.gap_label} points) "
                f"sim {repeated.sim:.3f} margin {repeated.sim_margin:+.3f} said {repeated.samples_said}",
                flush=True,
            )
        if in_seen_voices is not None:
            print(
                f"checkpoint {step}, seen voices: WER {in_seen_voices.wer:.3f} sim {in_seen_voices.sim:.3f} "
                f"margin {in_seen_voices.sim_margin:+.3f} verified {in_seen_voices.verified_label}",
                flush=True,
            )
    report = CheckpointReport(ceilings, rows, seen_ceiling)
    _write(report, out, len(items))
    return report


def _write(report: CheckpointReport, out: Path, utts: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Kept checkpoints",
        "",
        f"{utts} held-out lines by held-out speakers, f5-tts' sampler at NFE {EVAL_NFE} (sway, CFG 2, seed = line index), "
        "the true length, the trained Vocos. A line is said at WER <= 0.5, near at WER <= "
        f"{NEAR_WER}. The ceilings are the same lines' ground-truth audio and their true mels through the Vocos. "
        "Text gain: how much worse the DiT predicts the velocity on the lines' frames with another line's text "
        "than with its own, at flow time t (f5build.train.textuse; 0 = the text is ignored). Margin: the mean of "
        "each line's similarity to its own reference less its highest to another held-out speaker's; verified: the "
        "share of lines where that is above 0, with its 95 % interval (Wilson).",
        "",
        "| step | mel L1 (unrelated) | loudness corr (unrelated) | text gain t=0.1 / 0.2 | WER | WER median "
        "| lines said | lines near | similarity | margin | verified (95 %) | OVRL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.ceilings:
        lines.append(
            f"| {c.name} | - | - | - | {c.wer:.3f} | {c.wer_median:.3f} | {c.lines_said} | - | {c.sim:.3f} "
            f"| {c.sim_margin:+.3f} | {c.verified_label} | {c.ovrl:.2f} |"
        )
    for r in report.checkpoints:
        s = r.listening
        gains = " / ".join(f"{u.gain:.3f}" for u in r.text_use) or "-"
        lines.append(
            f"| {r.step} | {r.mel_l1:.3f} ({r.mel_l1_unrelated:.3f}) | {r.loudness_corr:.3f} "
            f"({r.loudness_corr_unrelated:.3f}) | {gains} | {s.wer:.3f} | {s.wer_median:.3f} | {s.lines_said} "
            f"| {r.lines_near} | {s.sim:.3f} | {s.sim_margin:+.3f} | {s.verified_label} | {s.ovrl:.2f} |"
        )
    repeated = [(r.step, r.repeated) for r in report.checkpoints if r.repeated is not None]
    if repeated:
        lines += [
            "",
            "## Several draws of each line",
            "",
            "Each line said from several noise draws (f5build.train.repeats; the first is the draw above). "
            "Verified: the mean over lines of the share of a line's draws nearer its own reference than any other "
            "speaker's, ± its standard error over lines. Gap: the mean over lines of that share less 1 where the "
            "line's ground-truth audio is verified (0 where not), in points, with its 95 % interval: the "
            "comparison with ground truth taken line by line. Said: draws with WER <= 0.5.",
            "",
            "| step | draws x lines | verified | gap to ground truth | similarity | margin | WER median | said "
            "| OVRL |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for step, r in repeated:
            lines.append(
                f"| {step} | {r.samples} x {r.lines} | {r.verify_rate:.0%} ± {r.verify_se * 100:.0f} | {r.gap_label} "
                f"| {r.sim:.3f} | {r.sim_margin:+.3f} | {r.wer_median:.3f} | {r.samples_said} | {r.ovrl:.2f} |"
            )
    seen = [(f"step {r.step}", r.seen) for r in report.checkpoints if r.seen is not None]
    if report.seen_ceiling is not None and seen:
        lines += [
            "",
            "## The same sentences in voices the DiT trained on",
            "",
            "Each held-out speaker's lines said by a training speaker instead (f5build.train.seen), verified against "
            "those training speakers' references; the ceiling is their own audio of other training lines. Where "
            "these figures reach their ceiling and the held-out ones above do not, the DiT clones the timbres it "
            "has heard and not new ones: more distinct voices in the corpus, not more steps.",
            "",
            "| condition | WER | WER median | lines said | similarity | margin | verified (95 %) | OVRL |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, s in [("ground truth, other lines", report.seen_ceiling), *seen]:
            lines.append(
                f"| {name} | {s.wer:.3f} | {s.wer_median:.3f} | {s.lines_said} | {s.sim:.3f} | {s.sim_margin:+.3f} "
                f"| {s.verified_label} | {s.ovrl:.2f} |"
            )
    atomic_write_bytes(out / "checkpoints.md", ("\n".join(lines) + "\n").encode("utf-8"))
    atomic_write_json(out / "checkpoints.json", asdict(report))
