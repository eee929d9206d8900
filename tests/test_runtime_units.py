"""Runtime pieces on their own: schedules vs f5-tts, bucket choice, voices folder, CLI errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, speechlike
from f5rt.buckets import Bucket, BucketTable
from f5rt.cli import main as f5rt_main
from f5rt.errors import F5RTError, NoBucketError
from f5rt.schedules import EPSS_TABLE, steps, timesteps
from f5rt.voices import VoiceNotFound, VoiceStore


@pytest.mark.parametrize("nfe", [1, 4, 5, 6, 7, 10, 12, 16, 24, 32])
@pytest.mark.parametrize("sway", [None, -1.0, 0.5])
def test_schedules_match_f5tts(nfe, sway):
    torch = pytest.importorskip("torch")  # the reference side: absent in `nox -s runtime`
    from f5_tts.model.utils import get_epss_timesteps

    t = get_epss_timesteps(nfe, device="cpu", dtype=torch.float32)  # CFM.sample with use_epss=True
    if sway is not None:
        t = t + sway * (torch.cos(torch.pi / 2 * t) - 1 + t)
    ours = timesteps(nfe, sway)
    assert ours.dtype == np.float32 and ours.shape == (nfe + 1,)
    assert np.abs(ours - t.numpy()).max() <= 1e-6
    t_k, dt_k = steps(nfe, sway)
    assert np.allclose(t_k + dt_k, ours[1:], atol=1e-7)
    if nfe in EPSS_TABLE:
        assert not np.allclose(timesteps(nfe, None), timesteps(nfe, None, use_epss=False))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_schedules_reject_bad_nfe(bad):
    with pytest.raises(ValueError, match="nfe"):
        timesteps(bad)


def test_bucket_choice():
    table = BucketTable.from_dict({"frames": [256, 512, 1024], "batch": [1, 2, 4]})
    assert table.choose(1) == Bucket(256, 1)
    assert table.choose(256) == Bucket(256, 1)
    assert table.choose(257, 3) == Bucket(512, 4)
    assert table.choose(1024, 4) == Bucket(1024, 4)
    assert list(table.split_batch(9)) == [4, 4, 1]
    assert len(table) == 9 and Bucket(512, 2).name == "n512_b2"
    with pytest.raises(NoBucketError, match="exceed the largest bucket"):
        table.choose(1025)
    with pytest.raises(NoBucketError, match="batch 5"):
        table.choose(10, 5)
    for bad in (
        {"frames": [], "batch": [1]},
        {"frames": [2, 1], "batch": [1]},
        {"frames": [1], "batch": [0]},
        {"frames": [1]},
        {"frames": [1], "batch": [1], "extra": 1},
        {"frames": [1.5], "batch": [1]},
    ):
        with pytest.raises(ValueError):
            BucketTable.from_dict(bad)


def _wav_bytes(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_voice_store_round_trip(tmp_path):
    store = VoiceStore(tmp_path / "voices")
    assert store.list() == []
    data = _wav_bytes(speechlike(2.0, 16000, 3), 16000)
    voice = store.add("carol_1", data, "A short reference line")
    assert store.list() == ["carol_1"]
    assert voice.ref_text == "A short reference line. "
    got = store.get("carol_1")
    assert got.sha256 == voice.sha256 and np.array_equal(got.audio, voice.audio)
    assert (tmp_path / "voices" / "carol_1" / "ref.wav").read_bytes() == data  # stored byte for byte
    assert list((tmp_path / "voices" / ".cache").glob("*.npz"))  # prepared once, cached by content
    mel = got.mel(0.1)
    assert mel.shape == (100, got.samples // 256 + 1)
    store.remove("carol_1")
    assert store.list() == []
    with pytest.raises(VoiceNotFound):
        store.get("carol_1")


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "", ".", "..", "x" * 65, "na me", "é"])
def test_voice_ids_cannot_escape(tmp_path, bad_id):
    store = VoiceStore(tmp_path / "voices")
    with pytest.raises(F5RTError, match="invalid voice id"):
        store.add(bad_id, _wav_bytes(speechlike(1.0, SR, 0), SR), "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voices"]


def test_bad_upload_writes_nothing(tmp_path):
    store = VoiceStore(tmp_path / "voices")
    data = _wav_bytes(speechlike(1.0, SR, 0), SR)
    with pytest.raises(F5RTError):
        store.add("dave", data[: len(data) // 3], "truncated upload")
    with pytest.raises(F5RTError):
        store.add("dave", data, "   ")
    assert store.list() == [] and not (tmp_path / "voices" / "dave" / "ref.wav").exists()


def _synth_error(capsys, artifacts, ref_audio, out, *extra: str) -> str:
    """Run `f5rt synth` expecting failure; return its stderr, which must be one line with exit code 2."""
    rc = f5rt_main(["synth", "--artifacts", str(artifacts), "--ref-audio", str(ref_audio), "--ref-text", "t",
                    "--text", "hi", "--out", str(out), *extra])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err


def test_cli_errors_are_one_line(tiny_artifacts, tmp_path, capsys):
    out = tmp_path / "o.wav"
    assert "no manifest" in _synth_error(capsys, tmp_path, "x.wav", out)
    assert "not found" in _synth_error(capsys, tiny_artifacts, tmp_path / "missing.wav", out)
    (tmp_path / "ref.wav").write_bytes(_wav_bytes(speechlike(2.0, SR, 1), SR))
    assert "nfe" in _synth_error(capsys, tiny_artifacts, tmp_path / "ref.wav", out, "--nfe", "0")
    assert not out.exists()


def test_cli_synth_and_info(tiny_artifacts, voices_dir, tmp_path, capsys):
    out = tmp_path / "out.wav"
    rc = f5rt_main(
        [
            "synth",
            "--artifacts",
            str(tiny_artifacts),
            "--voice",
            str(voices_dir / "bob"),
            "--text",
            "大家好，欢迎！",
            "--out",
            str(out),
            "--nfe",
            "4",
            "--seed",
            "3",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    audio, sr = sf.read(out)
    assert sr == SR and len(audio) > SR // 4
    assert "seed 3" in capsys.readouterr().out
    assert f5rt_main(["info", "--artifacts", str(tiny_artifacts)]) == 0
    text = capsys.readouterr().out
    assert "frames [256" in text and "onnxruntime yes" in text


def test_a_backend_passed_in_is_used_as_given_and_left_to_its_owner(tiny_artifacts) -> None:
    from f5rt.backends.onnxruntime import OnnxRuntimeBackend
    from f5rt.manifest import load_manifest
    from f5rt.synthesizer import Synthesizer

    backend = OnnxRuntimeBackend(load_manifest(tiny_artifacts), "fp32", threads=1, pad_to_buckets=True)
    with Synthesizer(tiny_artifacts, backend=backend) as synth:
        assert synth.backend is backend and synth.backend_name == "onnxruntime" and backend.fixed_shapes
    assert backend._step is not None  # not closed by the synthesizer
    backend.close()
    with Synthesizer(tiny_artifacts, backend="onnxruntime", threads=1) as synth:
        opened = synth.backend
    assert opened._step is None and not opened.fixed_shapes  # the one it opened is closed with it
