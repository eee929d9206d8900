"""End-to-end comparison: the real runtime's audio at each precision against its FP32 audio.

f5rt's Synthesizer (ONNX Runtime backend) synthesizes held-out corpus lines with held-out voices at
FP32 and at every precision with the same seed per utterance, so the only difference is the graphs'
arithmetic; each precision's audio is measured against the FP32 audio (f5build.metrics.audio_metrics:
mel SNR, mel cepstral distortion, STOI, PESQ at 16 kHz, duration). FP32 also synthesizes every line
at a second seed: the distance between those two samples (the seed floor) is what "different audio"
means for this model and line, and the scale the `*_seed_ratio` gates judge a precision's drift on.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from f5build.common import log
from f5build.metrics import audio_metrics
from f5build.validate.struct import SEED_FLOOR_LABEL, EndToEndComparison, Utterance

SEED_BASE = 100  # utterance i runs with seed SEED_BASE + i at every precision
FLOOR_SEED_OFFSET = 1000  # ... and at FP32 with seed SEED_BASE + FLOOR_SEED_OFFSET + i, the seed floor


MIN_COVERAGE = 0.9


def vocab_coverage(text: str, vocab: Mapping[str, int]) -> float:
    """Fraction of the line's tokens (f5-tts' front-end) that the model's vocab has.

    A token the vocab lacks becomes id 0 (f5-tts' unknown): a model trained on English only reads a
    Mandarin line as nothing, and comparing precisions on that measures noise, not the model.
    """
    from f5rt.text import convert_char_to_pinyin

    toks = [t for t in convert_char_to_pinyin([text])[0] if t != " "]
    return sum(t in vocab for t in toks) / len(toks) if toks else 0.0


def pick_utterances(lines: Sequence[Any], voice_langs: Mapping[str, str], count: int) -> list[tuple[str, str, str]]:
    """(lang, text, voice id): held-out lines round-robin over the corpus files, voice of the same language."""
    by_file: dict[str, list[Any]] = defaultdict(list)
    for ln in lines:
        if ln.held_out:
            by_file[ln.file].append(ln)
    files = sorted(by_file, key=lambda f: (f.endswith("long.txt"), f))  # paragraphs last: they are slow
    out: list[tuple[str, str, str]] = []
    depth = 0
    voices = sorted(voice_langs)
    while len(out) < count and any(depth < len(v) for v in by_file.values()):
        for f in files:
            if depth < len(by_file[f]) and len(out) < count:
                ln = by_file[f][depth]
                same = [v for v in voices if voice_langs[v] == ln.lang] or voices
                out.append((ln.lang, ln.text, same[len(out) % len(same)]))
        depth += 1
    return out


def end_to_end(
    root: Path,
    precisions: Sequence[str],
    utterances: Sequence[tuple[str, str, str]],
    voices: Mapping[str, Any],
    nfe: int,
    threads: int,
) -> EndToEndComparison:
    """Synthesize every utterance at FP32 and each precision; metrics of each against FP32."""
    from f5rt.synthesizer import SynthesisOptions, Synthesizer

    audio: dict[str, list[np.ndarray]] = {}
    rate = 24000
    floor = SEED_FLOOR_LABEL
    runs = [("fp32", "fp32", 0), (floor, "fp32", FLOOR_SEED_OFFSET), *((p, p, 0) for p in precisions)]
    for name, prec, offset in runs:
        t0 = time.perf_counter()
        with Synthesizer(root, backend="onnxruntime", precision=prec, threads=threads or None) as synth:
            rate = synth.sample_rate
            audio[name] = [
                synth.synthesize(text, voices[vid], SynthesisOptions(nfe=nfe, seed=SEED_BASE + offset + i)).audio
                for i, (_lang, text, vid) in enumerate(utterances)
            ]
        log(f"  e2e {name}: {len(utterances)} utterances in {round(time.perf_counter() - t0, 1):.1f} s")
    rows = []
    for i, (lang, text, vid) in enumerate(utterances):
        ref = audio["fp32"][i]
        rows.append(
            Utterance(
                text=text,
                lang=lang,
                voice=vid,
                seconds=len(ref) / rate,
                precisions={prec: audio_metrics(ref, audio[prec][i], rate) for prec in precisions},
                seed_floor=audio_metrics(ref, audio[floor][i], rate),
            )
        )
    return EndToEndComparison(nfe=nfe, utterances=tuple(rows))
