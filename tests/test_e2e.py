"""End to end: f5rt on FP32 ONNX Runtime against f5-tts' own inference path with the same weights,
the same noise and the same schedule (CFM.sample + Vocos.decode + RMS restore + cross-fade)."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from conftest import SR, speechlike
from f5rt.synthesizer import SynthesisOptions, Synthesizer
from f5rt.text import convert_char_to_pinyin, normalize_ref_text
from f5rt.voices import Voice

SNR_DB = 50.0


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(
        10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((ref - got).astype(np.float64) ** 2), 1e-30))
    )


def chunk_seed(seed: int, index: int) -> int:
    return seed * 1000 + index


def torch_noise(seed: int, index: int, frames: int, channels: int) -> np.ndarray:
    """What CFM.sample draws after torch.manual_seed: injected into f5rt so both start equal."""
    torch.manual_seed(chunk_seed(seed, index))
    return torch.randn(frames, channels).numpy()


def f5tts_reference(
    bundle, vocab_path, audio: np.ndarray, ref_text: str, gen_text: str, opts: SynthesisOptions, chunks: list[str]
):
    """f5-tts' infer_process path from the loaded reference on: chunk_text -> infer_batch_process.

    For the midpoint solver f5-tts' odeint runs torchdiffeq's fixed-grid midpoint method over nfe / 2
    steps (the same step-graph calls as f5rt's midpoint)."""
    from f5_tts.infer.utils_infer import chunk_text, infer_batch_process

    from f5build.load import f5_reference_sampler

    model = f5_reference_sampler(bundle, vocab_path)
    steps = opts.nfe
    if opts.solver == "midpoint":
        model.odeint_kwargs = {"method": "midpoint"}
        steps = opts.nfe // 2
    ref_text = normalize_ref_text(ref_text)  # what preprocess_ref_audio_text hands on
    wave = torch.from_numpy(audio)[None]
    max_chars = int(len(ref_text.encode("utf-8")) / (wave.shape[-1] / SR) * (22 - wave.shape[-1] / SR) * opts.speed)
    batches = chunk_text(gen_text, max_chars=max_chars)
    assert batches == chunks, "f5rt chunked the text differently from f5-tts"
    model_ref = ref_text + " " if len(ref_text[-1].encode("utf-8")) == 1 else ref_text
    index = {tuple(convert_char_to_pinyin([model_ref + c])[0]): i for i, c in enumerate(batches)}
    lock = threading.Lock()
    original = model.sample

    def seeded_sample(*args, **kwargs):  # infer_batch_process runs chunks on a thread pool
        with lock:
            torch.manual_seed(chunk_seed(opts.seed, index[tuple(kwargs["text"][0])]))
            return original(*args, **kwargs)

    model.sample = seeded_sample
    out, sr, _ = next(
        infer_batch_process(
            (wave, SR),
            ref_text,
            batches,
            model,
            bundle.vocos,
            target_rms=opts.target_rms,
            cross_fade_duration=opts.cross_fade,
            nfe_step=steps,
            cfg_strength=opts.cfg,
            sway_sampling_coef=opts.sway,
            speed=opts.speed,
            fix_duration=opts.fix_duration,
            device="cpu",
            progress=None,
        )
    )
    return np.asarray(out, dtype=np.float32)


CASES = [
    ("Hello there, this is a test.", "Welcome to the stream, everyone!", SynthesisOptions(nfe=16, seed=1)),
    ("你好，欢迎来到直播间。", "谢谢老板的火箭，今天我们一起开心一下。", SynthesisOptions(nfe=32, seed=2)),
    (
        "Hello there, this is a test.",
        "主播今天玩的是Minecraft，大家666！",
        SynthesisOptions(nfe=7, seed=3, cfg=1.5, sway=-0.5),
    ),
    ("Hi.", "OK!", SynthesisOptions(nfe=10, seed=4, speed=1.3)),  # < 10 bytes: f5-tts' short-text speed rule
    (
        "Hi.",
        "First sentence here. Second one follows, and a third. 然后是中文，还有最后一句。",
        SynthesisOptions(nfe=12, seed=5, cross_fade=0.1),
    ),
    (
        "Hello there, this is a test.",
        "Fixed length line.",
        SynthesisOptions(nfe=5, seed=6, fix_duration=4.0, target_rms=0.2),
    ),
    # midpoint: 4 steps, 8 step-graph calls (4 has no EPSS table: f5-tts and f5rt both step uniformly)
    (
        "Hello there, this is a test.",
        "Welcome to the stream, everyone!",
        SynthesisOptions(nfe=8, seed=7, solver="midpoint"),
    ),
]


@pytest.fixture(scope="module")
def synth(tiny_artifacts):
    with Synthesizer(tiny_artifacts, backend="onnxruntime", noise=torch_noise, threads=2) as s:
        yield s


@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_f5tts_sampler(synth, tiny_bundle, tiny_artifacts, case):
    ref_text, gen_text, opts = CASES[case]
    audio = speechlike(2.5 if ref_text != "Hi." else 3.0, SR, case, rms=0.05)  # quiet: exercises the RMS path
    voice = Voice(
        "ref", normalize_ref_text(ref_text), audio, float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))), ""
    )
    result = synth.synthesize(gen_text, voice, opts)
    want = f5tts_reference(tiny_bundle, tiny_artifacts / "vocab.txt", audio, ref_text, gen_text, opts, result.chunks)
    assert result.audio.shape == want.shape
    assert np.abs(want).max() > 1e-3
    snr = snr_db(want, result.audio)
    assert snr >= SNR_DB, f"{gen_text!r}: SNR {snr:.1f} dB"
    if case == 4:
        assert len(result.chunks) >= 3


def test_midpoint_needs_even_nfe_and_the_onnxruntime_backend(synth, voices_dir):
    from f5rt.voices import VoiceStore

    voice = VoiceStore(voices_dir).get("alice")
    with pytest.raises(ValueError, match="nfe must be even"):
        synth.synthesize("Odd.", voice, SynthesisOptions(nfe=7, solver="midpoint"))
    with pytest.raises(ValueError, match="solver must be one of"):
        synth.synthesize("Odd.", voice, SynthesisOptions(nfe=8, solver="heun"))
    euler = synth.synthesize("Same text.", voice, SynthesisOptions(nfe=8, seed=3)).audio
    mid = synth.synthesize("Same text.", voice, SynthesisOptions(nfe=8, seed=3, solver="midpoint")).audio
    assert euler.shape == mid.shape and not np.allclose(euler, mid)


def test_vocoder_length_follows_the_manifest(synth, voices_dir, monkeypatch):
    """Chunks are vocoded to the manifest's samples rule ((F-1)*hop for the center-padded Vocos), and
    a backend that returns another length is an error, not a silently shifted waveform."""
    from f5rt.errors import ManifestError
    from f5rt.voices import VoiceStore

    assert synth.engine.vocoder.padding == "center"
    voice = VoiceStore(voices_dir).get("alice")
    opts = SynthesisOptions(nfe=2, seed=1)
    plan = synth.engine.plan("Length check.", voice, opts)
    assert len(plan) == 1
    assert synth.synthesize("Length check.", voice, opts).audio.shape == ((plan[0].gen_frames - 1) * 256,)
    vocode = synth.backend.vocode
    monkeypatch.setattr(synth.backend, "vocode", lambda mel: np.pad(vocode(mel), ((0, 0), (0, 256))))
    with pytest.raises(ManifestError, match="manifest's vocoder"):
        synth.synthesize("Length check.", voice, opts)


def test_noise_seed_changes_audio_and_is_reproducible(synth, voices_dir):
    from f5rt.voices import VoiceStore

    voice = VoiceStore(voices_dir).get("alice")
    a = synth.synthesize("Same text.", voice, SynthesisOptions(nfe=4, seed=11)).audio
    b = synth.synthesize("Same text.", voice, SynthesisOptions(nfe=4, seed=11)).audio
    c = synth.synthesize("Same text.", voice, SynthesisOptions(nfe=4, seed=12)).audio
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_batch_equals_single(synth, voices_dir):
    from f5rt.voices import VoiceStore

    store = VoiceStore(voices_dir)
    items = [
        ("Short one.", store.get("alice"), SynthesisOptions(nfe=6, seed=1)),
        ("一个比较长一点的句子，用来测试批处理。", store.get("bob"), SynthesisOptions(nfe=6, seed=2, cfg=1.0)),
        (
            "Third request in the batch, a bit longer than the first.",
            store.get("alice"),
            SynthesisOptions(nfe=6, seed=3),
        ),
    ]
    batched = synth.synthesize_batch(items)
    for (text, voice, opts), got in zip(items, batched, strict=True):
        alone = synth.synthesize(text, voice, opts).audio
        assert got.audio.shape == alone.shape
        assert np.abs(got.audio - alone).max() <= 1e-4


def test_stream_equals_whole(synth, voices_dir):
    from f5rt.voices import VoiceStore

    voice = VoiceStore(voices_dir).get("alice")
    text = "First part is short. Then a longer second sentence follows it, with a comma. And a third one."
    opts = SynthesisOptions(nfe=4, seed=5)
    pieces = list(synth.stream(text, voice, opts, first_chunk_chars=20))
    whole = synth.synthesize(text, voice, opts, first_chunk_chars=20)
    assert len(whole.chunks) >= 2 and len(pieces) >= 2
    assert len(whole.chunks[0].encode()) <= 20
    assert np.abs(np.concatenate(pieces) - whole.audio).max() <= 1e-5


def test_runtime_never_imports_torch(tiny_artifacts, voices_dir, tmp_path):
    code = f"""
import sys
from f5rt.cli import main
rc = main(["synth", "--artifacts", {str(tiny_artifacts)!r}, "--voice", {str(voices_dir / "alice")!r},
           "--text", "No torch here.", "--out", {str(tmp_path / "o.wav")!r}, "--nfe", "2", "--seed", "1"])
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "f5_tts", "torchaudio", "vocos"))
print("RC", rc, "BAD", bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "RC 0 BAD []" in out.stdout, out.stdout + out.stderr
    assert (tmp_path / "o.wav").stat().st_size > 1000


def test_bucket_padding_does_not_change_audio(synth, voices_dir, monkeypatch):
    """The engines' path (requests padded to their shape bucket) equals ONNX Runtime's exact shapes."""
    from f5rt.voices import VoiceStore

    voice = VoiceStore(voices_dir).get("bob")
    opts = SynthesisOptions(nfe=6, seed=9)
    exact = synth.synthesize("分桶不会改变输出。", voice, opts).audio
    monkeypatch.setattr(synth.backend, "fixed_shapes", True)
    padded = synth.synthesize("分桶不会改变输出。", voice, opts).audio
    assert padded.shape == exact.shape
    assert np.abs(padded - exact).max() <= 1e-4
