"""Train the embedded F5-TTS + Vocos on espeak-ng speech -> models/<name>/ in f5-tts' released layout.

Parts, in order (`--train-parts`, default all of them):

    corpus   espeak-ng speech by many synthetic speakers (cached in artifacts/train-corpus)
    vocos    the vocoder, from the vocos package's modules, on the corpus' f5-tts mels
    f5       the DiT, f5-tts' own CFM + DiT, resumable, with alignment signals on held-out speakers
    export   the EMA weights as model_<steps>.safetensors + vocab.txt + vocos/ + the arch YAML
    plot     loss curves and alignment signals -> reports/train/
    evaluate every kept checkpoint: alignment signals + WER, similarity, DNSMOS -> reports/train/

Training state lives outside the work tree (`--train-dir`, default ~/.cache/f5-aot/train), is saved
atomically every few hundred steps, and a rerun continues from it: kill it at any time. Every seed
is fixed; `--train-steps` and `--train-vocos-steps` say how far to go (a rerun with larger numbers
trains on). `--train-from models/<name>` continues a released checkpoint on a machine without the
state (a fresh clone): see `f5build.train.warmstart` for what that keeps and what it resets.
`--train-device cuda` trains the DiT on a GPU (same recipe, more steps per hour). `--train-threads`
sets torch's intra-op threads (default 1, so a second job fits beside it on a 2-core machine).
`--train-size` picks the DiT's size (`wide`, the recipe's default, or `small`), and
`--[no-]train-average-upsampling` whether the text is spread over the frames (f5-tts' own DiT option,
on by default). `--train-sentences` and `--train-voices-per-sentence` size the corpus (the recipe's is
5.1 hours; 35,000 sentences in 4 voices are 114 hours) with the same held-out lines.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from f5build.context import ROOT, csv_list
from f5build.train.speakers import FORMANT_SCALES

if TYPE_CHECKING:
    import torch

    from f5build.train.corpus import Corpus, CorpusOptions
    from f5build.train.evaluate import EvaluateOptions
    from f5build.train.f5 import F5TrainOptions

PARTS = ("corpus", "vocos", "f5", "export", "plot", "evaluate")
MIN_BATCH_FRAMES = 700  # f5build.train.batches.Curriculum.max_frames, named here so parsing imports no torch
SIZE_NAMES = ("small", "wide")  # f5build.train.f5.SIZES, named here so parsing the options imports no torch
DEFAULT_OUT = ROOT / "models" / "f5tts-small-en"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("train (embedded F5-TTS + Vocos on espeak-ng speech)")
    g.add_argument("--train-parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)} (default: all)")
    g.add_argument(
        "--train-dir",
        type=Path,
        default=Path.home() / ".cache" / "f5-aot" / "train",
        help="training state, logs and kept checkpoints (outside the work tree; resumed from)",
    )
    g.add_argument("--train-corpus", type=Path, default=ROOT / "artifacts" / "train-corpus", help="corpus cache")
    g.add_argument(
        "--train-formant-scales",
        default="",
        help="comma list of formant-frequency scales in percent that training speakers draw from, to widen the "
        "corpus' timbres; held-out speakers and every line stay the same (default: 86,93,100,107,114; 100 is "
        "the plain corpus; other scales make another corpus: give it another --train-corpus)",
    )
    g.add_argument(
        "--train-sentences",
        type=int,
        default=None,
        help="training sentences in the corpus (default: the recipe's 6,000; the templates make about 47,000). "
        "The held-out lines stay the recipe's whatever the count; another count makes another corpus: give it "
        "another --train-corpus",
    )
    g.add_argument(
        "--train-voices-per-sentence",
        type=int,
        default=1,
        help="how many training speakers say each training sentence (default 1, the recipe's corpus); with "
        "--train-sentences 35000 and 4 voices the corpus is 114 hours (27.5 GB)",
    )
    g.add_argument("--train-out", type=Path, default=DEFAULT_OUT, help="where the released layout goes")
    g.add_argument("--train-steps", type=int, default=None, help="DiT steps to reach (default: the recipe's)")
    g.add_argument("--train-vocos-steps", type=int, default=None, help="Vocos steps to reach (default: the recipe's)")
    g.add_argument(
        "--train-from",
        type=Path,
        default=None,
        help="a released folder (models/<name>) to continue when --train-dir holds no state yet",
    )
    g.add_argument(
        "--train-device",
        default="cpu",
        help="where the DiT trains: cpu (default) or cuda[:N]; the Vocos, signals and evaluation stay on the CPU",
    )
    g.add_argument("--train-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    g.add_argument(
        "--train-size",
        default=None,
        help="the DiT size: small (1.6 M parameters) or wide (6.3 M); default: the recipe's (f5build.train.f5.SIZES). "
        "A training state keeps its size: resuming it with another is refused",
    )
    g.add_argument(
        "--train-average-upsampling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="spread each character's embedding over an equal share of the frames (f5-tts' DiT option "
        "text_embedding_average_upsampling) instead of placing the text at the first frames; default: the recipe's",
    )
    g.add_argument(
        "--train-lr",
        type=float,
        default=None,
        help="the DiT's peak learning rate (after warm-up; default: the recipe's). A resumed run takes the rate "
        "given (or the recipe's) at once; the state and checkpoint.json record each rate and its first step",
    )
    g.add_argument(
        "--train-batch-frames",
        type=int,
        default=None,
        help="the frame budget of a DiT batch (count x longest utterance; default: the recipe's "
        "f5build.train.batches.Curriculum.batch_frames). Larger batches suit a GPU; a resumed run takes the budget "
        "given (or the recipe's) at once, and the state and checkpoint.json record each budget and its first step",
    )
    g.add_argument(
        "--train-ctc",
        type=float,
        default=None,
        help="weight of the training-time CTC alignment term (f5build.train.ctc; 0 = off; default: the recipe's)",
    )
    g.add_argument(
        "--train-ctc-block",
        type=int,
        default=None,
        help="DiT block (1-based) the CTC head reads (default: the recipe's)",
    )
    g.add_argument(
        "--train-ctc-max-time",
        type=float,
        default=None,
        help="only batch rows with flow time below this (0 = noise, 1 = data) add the CTC term (default: the recipe's)",
    )
    g.add_argument(
        "--train-eval-utts",
        type=int,
        default=8,
        help="held-out lines each checkpoint is scored on by the evaluate part (default 8; all 48 for figures to "
        "compare: one line moves an 8-line verification rate by 12.5 points)",
    )
    g.add_argument(
        "--train-eval-samples",
        type=int,
        default=1,
        help="draws of each held-out line the evaluate part says (default 1; above 1 the report adds the figures "
        "over all draws, the verification rate against the ground truth's line by line; each draw costs as "
        "much sampling again)",
    )
    g.add_argument(
        "--train-eval-steps",
        default="",
        help="comma list of the kept snapshots (by step) the evaluate part scores (default: every kept snapshot "
        "and the newest state)",
    )
    g.add_argument(
        "--train-eval-seen-voices",
        action="store_true",
        help="the evaluate part also says the held-out sentences in training speakers' voices, beside their own "
        "audio: whether the DiT clones the voices it trained on (twice the sampling time)",
    )
    g.add_argument("--train-reports", type=Path, default=ROOT / "reports" / "train", help="loss plots and tables")


WRITES_STATE = ("corpus", "vocos", "f5", "export")  # the parts that change the training state or its outputs


def working_folder(args: argparse.Namespace) -> Path:
    """The folder `f5build train` names in its banner (f5build.cli): the training state, not artifacts/."""
    return Path(args.train_dir)


def lock_folder(args: argparse.Namespace) -> Path | None:
    """What `f5build train` locks (f5build.cli): the training state, so two runs never train one state
    at once; nothing for `plot` and `evaluate` alone, which only read it and so run beside training."""
    return Path(args.train_dir) if set(csv_list(args.train_parts)) & set(WRITES_STATE) else None


@dataclass(frozen=True)
class Options:
    parts: tuple[str, ...]
    train_dir: Path
    corpus: Path
    out: Path
    reports: Path
    steps: int | None
    vocos_steps: int | None
    threads: int
    start_from: Path | None = None
    device: str = "cpu"
    ctc_weight: float | None = None
    ctc_block: int | None = None
    lr: float | None = None
    ctc_max_time: float | None = None
    size: str | None = None
    average_upsampling: bool | None = None
    batch_frames: int | None = None
    eval_utts: int = 8
    eval_steps: tuple[int, ...] = ()
    eval_seen_voices: bool = False
    eval_samples: int = 1
    formant_scales: tuple[int, ...] = FORMANT_SCALES
    sentences: int | None = None
    voices_per_sentence: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        parts = csv_list(args.train_parts)
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"--train-parts: unknown part(s) {unknown}; known: {', '.join(PARTS)}")
        for name in ("train_steps", "train_vocos_steps"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if args.train_ctc is not None and not args.train_ctc >= 0:
            raise ValueError(f"--train-ctc must be a weight >= 0 (0 = off), got {args.train_ctc}")
        if args.train_ctc_block is not None and args.train_ctc_block < 1:
            raise ValueError(f"--train-ctc-block must be at least 1 (blocks count from 1), got {args.train_ctc_block}")
        if args.train_ctc_max_time is not None and not 0 < args.train_ctc_max_time <= 1:
            raise ValueError(f"--train-ctc-max-time must be a flow time in (0, 1], got {args.train_ctc_max_time}")
        if args.train_lr is not None and not 0 < args.train_lr < 1:
            raise ValueError(f"--train-lr must be a learning rate in (0, 1), got {args.train_lr}")
        if args.train_batch_frames is not None and args.train_batch_frames < MIN_BATCH_FRAMES:
            raise ValueError(
                f"--train-batch-frames must hold the curriculum's longest utterance ({MIN_BATCH_FRAMES} frames), "
                f"got {args.train_batch_frames}"
            )
        if args.train_size is not None and args.train_size not in SIZE_NAMES:
            raise ValueError(f"--train-size: unknown size {args.train_size!r}; known: {', '.join(SIZE_NAMES)}")
        if args.train_threads < 1:
            raise ValueError(f"--train-threads must be at least 1, got {args.train_threads}")
        if args.train_eval_utts < 1:
            raise ValueError(f"--train-eval-utts must be at least 1, got {args.train_eval_utts}")
        if args.train_eval_samples < 1:
            raise ValueError(f"--train-eval-samples must be at least 1, got {args.train_eval_samples}")
        try:
            eval_steps = tuple(sorted({int(s) for s in csv_list(args.train_eval_steps)}))
        except ValueError:
            raise ValueError(
                f"--train-eval-steps must be a comma list of steps (integers), got {args.train_eval_steps!r}"
            ) from None
        from f5build.train.corpus import CorpusOptions

        try:
            formants = tuple(int(s) for s in csv_list(args.train_formant_scales)) or FORMANT_SCALES
            CorpusOptions(formant_scales=formants)
        except ValueError as e:
            raise ValueError(f"--train-formant-scales: {e} (a comma list of percents)") from None
        if args.train_sentences is not None and args.train_sentences < 1:
            raise ValueError(f"--train-sentences must be at least 1, got {args.train_sentences}")
        try:
            CorpusOptions(voices_per_sentence=args.train_voices_per_sentence)
        except ValueError as e:
            raise ValueError(f"--train-voices-per-sentence: {e}") from None
        return cls(
            parts=parts,
            train_dir=Path(args.train_dir),
            corpus=Path(args.train_corpus),
            out=Path(args.train_out),
            reports=Path(args.train_reports),
            steps=args.train_steps,
            vocos_steps=args.train_vocos_steps,
            threads=int(args.train_threads),
            start_from=None if args.train_from is None else Path(args.train_from),
            device=str(args.train_device),
            ctc_weight=args.train_ctc,
            ctc_block=args.train_ctc_block,
            lr=args.train_lr,
            ctc_max_time=args.train_ctc_max_time,
            size=args.train_size,
            average_upsampling=args.train_average_upsampling,
            batch_frames=args.train_batch_frames,
            eval_utts=int(args.train_eval_utts),
            eval_steps=eval_steps,
            eval_seen_voices=bool(args.train_eval_seen_voices),
            eval_samples=int(args.train_eval_samples),
            formant_scales=formants,
            sentences=args.train_sentences,
            voices_per_sentence=int(args.train_voices_per_sentence),
        )

    def corpus_options(self) -> CorpusOptions:
        """The recipe's corpus with what the command line overrides."""
        from f5build.train.corpus import CorpusOptions

        base = CorpusOptions()
        return replace(
            base,
            formant_scales=self.formant_scales,
            train_sentences=base.train_sentences if self.sentences is None else self.sentences,
            voices_per_sentence=self.voices_per_sentence,
        )

    def f5_options(self) -> F5TrainOptions:
        """The recipe's DiT options with what the command line overrides."""
        from f5build.train.ctc import CTCOptions
        from f5build.train.f5 import DEFAULT_AVERAGE_UPSAMPLING, DEFAULT_SIZE, F5TrainOptions, recipe_arch

        base = F5TrainOptions()
        ctc = CTCOptions(
            weight=base.ctc.weight if self.ctc_weight is None else self.ctc_weight,
            block=base.ctc.block if self.ctc_block is None else self.ctc_block,
            seed=base.ctc.seed,
            max_time=base.ctc.max_time if self.ctc_max_time is None else self.ctc_max_time,
        )
        return replace(
            base,
            threads=self.threads,
            device=self.device,
            steps=self.steps or base.steps,
            ctc=ctc,
            lr=base.lr if self.lr is None else self.lr,
            curriculum=base.curriculum
            if self.batch_frames is None
            else replace(base.curriculum, batch_frames=self.batch_frames),
            arch=recipe_arch(
                self.size or DEFAULT_SIZE,
                DEFAULT_AVERAGE_UPSAMPLING if self.average_upsampling is None else self.average_upsampling,
            ),
        )

    def evaluate_options(self) -> EvaluateOptions:
        from f5build.train.evaluate import EvaluateOptions

        return EvaluateOptions(
            utts=self.eval_utts,
            steps=self.eval_steps,
            threads=self.threads,
            seen_voices=self.eval_seen_voices,
            samples=self.eval_samples,
        )


def run(options: Options) -> int:
    from f5build.train.corpus import corpus_is_current, load_corpus, make_corpus

    copts = options.corpus_options()
    if "corpus" in options.parts and not corpus_is_current(options.corpus, copts):
        print(f"making the training corpus in {options.corpus}", flush=True)
        make_corpus(options.corpus, copts, workers=max(1, options.threads))
    corpus = load_corpus(options.corpus)
    if options.start_from is not None:
        _warm_start(options, corpus)
    if "vocos" in options.parts:
        from f5build.train.vocoder import VocosTrainer, VocosTrainOptions

        vopts = replace(VocosTrainOptions(), threads=options.threads)
        vopts = replace(vopts, steps=options.vocos_steps or vopts.steps)
        VocosTrainer(corpus, options.train_dir, vopts).run_until(vopts.steps)
    if "f5" in options.parts:
        from f5build.train.f5 import F5Trainer, make_vocab
        from f5build.train.signals import alignment_signals
        from f5build.train.textuse import text_use, text_use_signals

        def signals(ema: torch.nn.Module, step: int) -> dict[str, float]:
            return alignment_signals(ema, corpus).to_dict() | text_use_signals(text_use(ema, corpus))

        fopts = options.f5_options()
        trainer = F5Trainer(corpus, make_vocab(corpus), options.train_dir, fopts)
        trainer.run_until(fopts.steps, signals=signals)
    if "export" in options.parts:
        from f5build.train.release import export_release

        path = export_release(options.train_dir, options.out, corpus)
        print(f"released layout written: {path}", flush=True)
    if "plot" in options.parts:
        from f5build.train.report import write_training_report

        write_training_report(options.train_dir, options.reports)
    if "evaluate" in options.parts:
        from f5build.train.evaluate import evaluate_checkpoints

        evaluate_checkpoints(options.train_dir, corpus, options.reports, options.evaluate_options())
    return 0


def _warm_start(options: Options, corpus: Corpus) -> None:
    from f5build.train.f5 import F5Trainer, make_vocab
    from f5build.train.vocoder import VocosTrainer, VocosTrainOptions
    from f5build.train.warmstart import Release, seed_train_dir

    assert options.start_from is not None
    release = Release.read(options.start_from)
    fopts, vopts = options.f5_options(), VocosTrainOptions()
    vocab = make_vocab(corpus)
    release.check_matches(vocab, fopts.arch, vopts.arch)
    f5 = F5Trainer(corpus, vocab, options.train_dir, fopts)
    vocos = VocosTrainer(corpus, options.train_dir, vopts)
    if seed_train_dir(options.train_dir, release, f5, vocos):
        print(f"continuing {options.start_from} (step {release.steps}) in {options.train_dir}", flush=True)
    else:
        print(f"{options.train_dir} already holds a training state: --train-from ignored, resuming it", flush=True)
