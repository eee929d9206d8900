"""f5rt.text against f5-tts itself: tokens, ids, chunks, reference-text rule and frame counts.

Durations are not re-derived from a formula here: the real f5-tts pipeline (preprocess_ref_audio_text
-> infer_process -> infer_batch_process -> CFM.sample) runs with a stand-in transformer (zero flow)
and vocoder, and the chunk texts, max_chars, token ids, requested durations and the frame counts
CFM.sample actually produced are recorded and compared with TextFrontend.plan.
"""

from __future__ import annotations

import math
import tempfile
import threading
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
f5_utils = pytest.importorskip("f5_tts.model.utils")
f5_infer = pytest.importorskip("f5_tts.infer.utils_infer")
from f5_tts.infer.utils_infer import chunk_text as f5_chunk_text  # noqa: E402
from f5_tts.model import CFM  # noqa: E402
from f5_tts.model.utils import convert_char_to_pinyin as f5_convert  # noqa: E402
from f5_tts.model.utils import get_tokenizer, list_str_to_idx  # noqa: E402

from f5rt import text as T  # noqa: E402
from f5rt.errors import AudioError, F5RTError, TextError  # noqa: E402

VOCAB_PATH = str(files("f5_tts").joinpath("infer/examples/vocab.txt"))
CORPUS = Path(__file__).parent / "data" / "frontend_corpus.txt"
MAX_CHARS = (0, 5, 12, 30, 60, 135, 400)


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return CORPUS.read_text(encoding="utf-8").split("\n")[:-1]


@pytest.fixture(scope="module")
def vocab() -> dict[str, int]:
    return T.load_vocab(VOCAB_PATH)


def _paragraphs(lines: list[str]) -> list[str]:
    """Long inputs that need several chunks: consecutive corpus lines joined."""
    return [" ".join(lines[i : i + 9]) for i in range(0, len(lines), 9)] + [
        "".join(lines[i : i + 6]) for i in range(3, len(lines), 17)
    ]


# --- corpus and vocabulary ---------------------------------------------------------------------


def test_corpus_covers_the_cases(lines: list[str]) -> None:
    text = "\n".join(lines)
    assert len(lines) >= 200
    for needle in ("行", "长", "还", "重", "得", "了", "乐", "一", "不", "😂", "こんにちは", "，", "！", "OK", "2024"):
        assert needle in text, needle
    assert max(len(s.encode("utf-8")) for s in lines) > 300


def test_vocab_equals_get_tokenizer(vocab: dict[str, int], tmp_path: Path) -> None:
    assert vocab == get_tokenizer(VOCAB_PATH, "custom")[0]
    # CRLF lines, a duplicate, a blank line and no final newline: same quirks as f5-tts.
    odd = tmp_path / "vocab.txt"
    odd.write_bytes(b" \r\na\nb\n\na\nzz")
    assert T.load_vocab(odd) == get_tokenizer(str(odd), "custom")[0] == {" ": 0, "a": 4, "b": 2, "": 3, "z": 5}


# --- tokens and ids ----------------------------------------------------------------------------


def test_ids_equal_f5tts_on_every_line(lines: list[str], vocab: dict[str, int]) -> None:
    unknown = 0
    for line in lines:
        ref_tokens = f5_convert([line])
        tokens = T.convert_char_to_pinyin([line])
        assert tokens == ref_tokens, line
        ids = T.tokens_to_ids(tokens[0], vocab)
        assert ids.dtype == np.int32 and ids.ndim == 1
        np.testing.assert_array_equal(ids, list_str_to_idx(ref_tokens, vocab)[0].numpy(), err_msg=line)
        unknown += sum(t not in vocab for t in tokens[0])
    assert unknown > 0  # the corpus reaches the "unknown -> 0" rule (emoji, neutral tones, kana)


def test_batch_and_polyphone_off_equal_f5tts(lines: list[str]) -> None:
    assert T.convert_char_to_pinyin(lines) == f5_convert(lines)
    assert T.convert_char_to_pinyin(lines, polyphone=False) == f5_convert(lines, polyphone=False)
    assert T.convert_char_to_pinyin([]) == f5_convert([]) == []


def test_unindexable_segment_fails_like_f5tts(monkeypatch: pytest.MonkeyPatch) -> None:
    """pypinyin merges non-Chinese runs; f5-tts then indexes past the end. We say so clearly."""
    import rjieba

    monkeypatch.setattr(rjieba, "cut", lambda s: [s])
    with pytest.raises(IndexError):
        f5_convert(["中。。"])
    with pytest.raises(TextError, match="cannot handle"):
        T.convert_char_to_pinyin(["中。。"])
    assert T.convert_char_to_pinyin(["中文。", "好的"]) == f5_convert(["中文。", "好的"])


# --- chunking and reference text ---------------------------------------------------------------


def test_chunk_text_equals_f5tts(lines: list[str]) -> None:
    texts = lines + _paragraphs(lines) + ["", "   ", "a. ", "你好。   ", "x,y; z: w! v? u.", "，，。。！"]
    multi = 0
    for text in texts:
        for max_chars in MAX_CHARS:
            ours = T.chunk_text(text, max_chars)
            assert ours == f5_chunk_text(text, max_chars), (text, max_chars)
            multi += len(ours) > 1
        assert T.chunk_text(text) == f5_chunk_text(text)
    assert multi > 100


@pytest.mark.parametrize("ref", ["你好", "你好。", "Hello", "Hello.", "Hello. ", "Hi!", "好的，", "  x  ", "😀"])
def test_normalize_ref_text_equals_preprocess(ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    wav = tmp_path / "r.wav"
    sf.write(wav, _tone(0.4, 24000), 24000, subtype="PCM_16")
    _, expected = f5_infer.preprocess_ref_audio_text(str(wav), ref, show_info=lambda *_: None)
    assert T.normalize_ref_text(ref) == expected
    assert T.normalize_ref_text(expected) == expected


# --- durations through the real f5-tts pipeline ------------------------------------------------


class _ZeroFlow(torch.nn.Module):
    """Stands in for the DiT: CFM.sample's sizing logic runs unchanged around it."""

    dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, cond, text, time, mask=None, cfg_infer=False, **_):  # type: ignore[no-untyped-def]
        return torch.zeros((2 * x.shape[0] if cfg_infer else x.shape[0], *x.shape[1:]), dtype=x.dtype)

    def clear_cache(self) -> None:
        pass


class _RecordingCFM(CFM):
    """Records each call's ids, requested duration, sampled frames, reference samples, vocoded frames."""

    def __init__(self, vocab: dict[str, int]) -> None:
        super().__init__(transformer=_ZeroFlow(), vocab_char_map=vocab)
        self.calls: list[list[object]] = []
        self.by_thread: dict[int, list[object]] = {}  # chunks run in a thread pool

    def sample(self, cond, text, duration, **kw):  # type: ignore[no-untyped-def,override]
        out, traj = super().sample(cond, text, duration, **kw)
        ids = tuple(list_str_to_idx(text, self.vocab_char_map)[0].tolist())
        call: list[object] = [ids, int(duration), int(out.shape[1]), int(cond.shape[-1])]
        self.calls.append(call)
        self.by_thread[threading.get_ident()] = call
        return out, traj


class _ZeroVocoder:
    def __init__(self, model: _RecordingCFM) -> None:
        self.model = model

    def decode(self, mel):  # type: ignore[no-untyped-def]
        self.model.by_thread[threading.get_ident()].append(int(mel.shape[-1]))
        return torch.zeros(1, mel.shape[-1])  # only its length matters (cross-fade)


def _tone(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * math.pi * 220 * t) * (1 + 0.2 * np.sin(2 * math.pi * 3 * t))).astype(np.float32)


# (reference text, seconds, sample rate): CJK/ASCII endings, a resampled one, and a short clip
# with a long text so that CFM.sample's "text length + 1" bound decides.
VOICES = [
    ("你好，欢迎来到今天的直播间", 2.37, 24000),
    ("Some call me nature, others call me mother nature.", 5.31, 24000),
    ("对，这就是我，万人敬仰的太乙真人。", 3.9, 16000),
    ("一二三四五六七八九十，" * 6, 1.01, 24000),
]


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """Reference wavs after f5-tts' own preprocessing (silence trim + 50 ms tail)."""
    tmp = tmp_path_factory.mktemp("voices")
    out = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(tmp))
        for i, (ref_text, seconds, sr) in enumerate(VOICES):
            path = tmp / f"v{i}.wav"
            sf.write(path, _tone(seconds, sr), sr, subtype="PCM_16")
            audio, text = f5_infer.preprocess_ref_audio_text(str(path), ref_text, show_info=lambda *_: None)
            out.append((audio, text))
    return out


def _run_f5tts(monkeypatch, vocab, ref_audio, ref_text, gen_text, speed, fix_duration):  # type: ignore[no-untyped-def]
    chunk_calls: list[tuple[str, int, list[str]]] = []

    def spy_chunk_text(text: str, max_chars: int = 135) -> list[str]:
        result = f5_chunk_text(text, max_chars)
        chunk_calls.append((text, max_chars, result))
        return result

    def load(path: str):  # type: ignore[no-untyped-def]  # torchaudio.load without its native libs
        data, sr = sf.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    monkeypatch.setattr(f5_infer, "chunk_text", spy_chunk_text)
    monkeypatch.setattr(f5_infer.torchaudio, "load", load)
    model = _RecordingCFM(vocab)
    vocoder = _ZeroVocoder(model)
    f5_infer.infer_process(
        ref_audio, ref_text, gen_text, model, vocoder, show_info=lambda *_: None, progress=None,
        nfe_step=2, speed=speed, fix_duration=fix_duration, device="cpu",
    )  # fmt: skip
    ((_, max_chars, chunks),) = chunk_calls
    return max_chars, chunks, model.calls


def _check_plan(monkeypatch, vocab, voice, gen_text, speed=1.0, fix_duration=None) -> list[T.ChunkPlan]:  # type: ignore[no-untyped-def]
    ref_audio, ref_text = voice
    max_chars, chunks, calls = _run_f5tts(monkeypatch, vocab, ref_audio, ref_text, gen_text, speed, fix_duration)
    info = sf.info(ref_audio)
    ref_samples = calls[0][3]  # after f5-tts' own resampling to 24 kHz
    plans = T.TextFrontend(vocab).plan(
        ref_text,
        ref_samples,
        gen_text,
        speed=speed,
        fix_duration=fix_duration,
        ref_seconds=info.frames / info.samplerate,
    )
    assert T.max_chars_for(ref_text, info.frames / info.samplerate, speed) == max_chars
    assert [p.text for p in plans] == chunks
    # Chunks run in a thread pool: compare as multisets of (ids, frames, vocoded frames).
    ours = sorted((tuple(p.ids.tolist()), p.frames, p.gen_frames) for p in plans)
    theirs = sorted((ids, frames, vocoded) for ids, _, frames, _, vocoded in calls)
    assert ours == theirs, gen_text
    assert all(p.ref_frames == ref_samples // 256 for p in plans)
    return plans


def test_plan_equals_f5tts_pipeline(monkeypatch, vocab, voices, lines) -> None:  # type: ignore[no-untyped-def]
    lower_bound_hits = short_hits = multi = 0
    for i, line in enumerate(lines[::8] + _paragraphs(lines)[::2]):
        voice = voices[i % len(voices)]
        plans = _check_plan(monkeypatch, vocab, voice, line, speed=(1.0, 0.8, 1.3)[i % 3])
        ref_frames = plans[0].ref_frames
        lower_bound_hits += any(p.frames == len(p.ids) + 1 for p in plans)
        short_hits += any(len(p.text.encode()) < 10 for p in plans)
        multi += len(plans) > 1
        assert all(p.frames > max(len(p.ids), ref_frames + 1) for p in plans)
    assert lower_bound_hits and short_hits and multi  # every branch was compared


def test_short_text_equals_f5tts(monkeypatch, vocab, voices) -> None:  # type: ignore[no-untyped-def]
    """Chunks under 10 UTF-8 bytes are spoken at speed 0.3 whatever the requested speed."""
    for i, text in enumerate(["OK", "Hi!", "a", "666666666", "晚安🌙", "你好", "👍👍", "Hello. Hi"]):
        for voice in voices[:3]:
            plans = _check_plan(monkeypatch, vocab, voice, text, speed=(1.0, 1.7)[i % 2])
            assert all(p.frames > max(len(p.ids), p.ref_frames + 1) + 1 for p in plans)  # formula decides


@pytest.mark.parametrize("fix_duration", [1.0, 9.5, 31.0, 800.0])
def test_fix_duration_equals_f5tts(monkeypatch, vocab, voices, lines, fix_duration) -> None:  # type: ignore[no-untyped-def]
    long_text = " ".join(line for line in lines if len(line.encode("utf-8")) > 150)
    for voice in voices[:2] if fix_duration < 100 else ():  # 800 s: only the 65536-frame clamp
        plans = _check_plan(monkeypatch, vocab, voice, long_text, fix_duration=fix_duration)
        assert len(plans) > 1
    plans = _check_plan(monkeypatch, vocab, voices[0], lines[0], fix_duration=fix_duration)
    assert len(plans) == 1 and plans[0].frames == min(
        max(int(fix_duration * 24000 / 256), len(plans[0].ids) + 1, plans[0].ref_frames + 2), 65536
    )


# --- bad input ---------------------------------------------------------------------------------


def test_bad_text_raises_text_error(vocab: dict[str, int]) -> None:
    fe = T.TextFrontend(vocab)
    lone = "你好\ud800"
    with pytest.raises(UnicodeEncodeError):
        f5_chunk_text(lone)  # f5-tts fails deep inside; we fail up front with one line
    for bad in (None, b"bytes", 12, ["list"], lone):
        with pytest.raises(TextError):
            fe.plan("参考。", 24000, bad)  # type: ignore[arg-type]
        with pytest.raises(TextError):
            T.convert_char_to_pinyin([bad])  # type: ignore[list-item]
        with pytest.raises(TextError):
            T.chunk_text(bad)  # type: ignore[arg-type]
        with pytest.raises(TextError):
            T.normalize_ref_text(bad)  # type: ignore[arg-type]
    with pytest.raises(TextError, match="a single str"):
        T.convert_char_to_pinyin("你好")  # type: ignore[arg-type]
    for empty in ("", "   ", "\n\t "):
        with pytest.raises(TextError, match="empty"):
            fe.plan("参考。", 24000, empty)
        with pytest.raises(TextError, match="reference text is empty"):
            fe.plan(empty, 24000, "你好")


def test_bad_numbers_raise(vocab: dict[str, int]) -> None:
    fe = T.TextFrontend(vocab)
    for samples in (0, -5, 1.5, True, None, np.int64(0)):
        for plan in (lambda n: fe.plan("参考。", n, "你好"), lambda n: fe.plan_chunks("参考。", n, ["你好"])):
            with pytest.raises(AudioError, match="reference audio must have > 0 samples"):
                plan(samples)
    (numpy_plan,), (int_plan,) = (fe.plan_chunks("参考。", n, ["你好"]) for n in (np.int64(24000), 24000))
    assert (numpy_plan.frames, numpy_plan.ref_frames, type(numpy_plan.ref_frames)) == (int_plan.frames, 93, int)
    for speed in (0, -1.0, math.nan, math.inf, "1"):
        with pytest.raises(F5RTError, match="speed"):
            fe.plan("参考。", 24000, "你好", speed=speed)  # type: ignore[arg-type]
    for fix in (0.0, -2.0, math.nan):
        with pytest.raises(F5RTError, match="fix_duration"):
            fe.plan("参考。", 24000, "你好", fix_duration=fix)
    with pytest.raises(AudioError):
        T.max_chars_for("参考。", 0.0, 1.0)
    with pytest.raises(F5RTError, match="vocab"):
        T.load_vocab("/nonexistent/vocab.txt")


def test_plan_ids_are_read_only(vocab: dict[str, int]) -> None:
    (plan,) = T.TextFrontend(vocab).plan("参考。", 24000, "你好世界")
    with pytest.raises(ValueError):
        plan.ids[0] = 1
