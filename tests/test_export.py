"""Export stage: each ONNX graph equals its PyTorch source at several buckets and batch sizes,
and padding a request into a larger bucket does not change its real frames."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from f5build.cli import main
from f5build.graphs import istft_basis
from f5rt.errors import ManifestError, NoBucketError
from f5rt.manifest import VocoderSpec, load_manifest

TOL = 1e-4
BUCKETS = [256, 384, 512]
MAX_FRAMES = 2816  # config/buckets.yaml's largest bucket: the end of the step graph's rotary table


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def request(bundle, batch: int, n: int, lens: list[int], seed: int):
    """Padded step/text inputs for rows of real lengths `lens` in a bucket of n frames."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((batch, n), -1, dtype=torch.int32)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    cond = torch.zeros(batch, n, 100)
    x = torch.zeros(batch, n, 100)
    for i, length in enumerate(lens):
        ntext = length // 3
        ids[i, :ntext] = torch.randint(0, len(bundle.vocab), (ntext,), generator=g, dtype=torch.int32)
        mask[i, :length] = True
        cond[i, : length // 4] = torch.randn(length // 4, 100, generator=g) - 4
        x[i, :length] = torch.randn(length, 100, generator=g)
    return ids, mask, cond, x


def f5_step(dit, ids_row, cond_row, x_row, t: float, dt: float, cfg: float):
    """f5-tts' own path for one unpadded request: DiT.forward(cfg_infer=True) as CFM.sample calls it
    for B=1 (no mask), its CFG combine, and torchdiffeq's Euler update."""
    text = ids_row[ids_row >= 0][None].long()
    with torch.no_grad():
        pred = dit(
            x=x_row[None], cond=cond_row[None], text=text, time=torch.tensor(t), mask=None, cfg_infer=True, cache=False
        )
    v_c, v_u = torch.chunk(pred, 2, dim=0)
    return (x_row[None] + dt * (v_c + (v_c - v_u) * cfg))[0]


@pytest.mark.parametrize("n", [*BUCKETS, MAX_FRAMES])
@pytest.mark.parametrize("batch", [1, 2])
def test_text_encoder_and_step_match_f5tts(tiny_artifacts, tiny_bundle, n, batch):
    lens = [n - 37 * i for i in range(batch)]
    ids, mask, cond, x = request(tiny_bundle, batch, n, lens, seed=n + batch)
    tc, tu = session(tiny_artifacts / "text_encoder.onnx").run(None, {"text_ids": ids.numpy(), "mask": mask.numpy()})
    t = np.full(batch, 0.25, np.float32)
    dt = np.full(batch, 1 / 32, np.float32)
    cfg = np.linspace(2.0, 1.0, batch).astype(np.float32)
    (x_next,) = session(tiny_artifacts / "step.onnx").run(
        None,
        {
            "x": x.numpy(),
            "cond": cond.numpy(),
            "text_cond": tc,
            "text_uncond": tu,
            "mask": mask.numpy(),
            "t": t,
            "dt": dt,
            "cfg": cfg,
        },
    )
    te = tiny_bundle.dit.text_embed
    for i, length in enumerate(lens):
        row_ids = ids[i, :length]
        text = row_ids[row_ids >= 0][None].long()
        with torch.no_grad():
            want_c = te(text, length, drop_text=False)[0]
            want_u = te(text, length, drop_text=True)[0]
        assert np.abs(tc[i, :length] - want_c.numpy()).max() <= TOL
        assert np.abs(tu[i, :length] - want_u.numpy()).max() <= TOL
        want = f5_step(tiny_bundle.dit, row_ids, cond[i, :length], x[i, :length], 0.25, 1 / 32, float(cfg[i]))
        err = np.abs(x_next[i, :length] - want.numpy()).max()
        assert err <= TOL, f"row {i} (length {length}) in bucket {n}: max abs error {err:.2e}"
        assert np.abs(want.numpy() - x[i, :length].numpy()).max() > 1e-3  # the step really moved x


@pytest.mark.parametrize("frames", [17, 200, 333])
@pytest.mark.parametrize("batch", [1, 2])
def test_vocoder_matches_vocos_decode(tiny_artifacts, tiny_bundle, frames, batch):
    mel = torch.randn(batch, 100, frames, generator=torch.Generator().manual_seed(frames)) * 1.5 - 4
    (audio,) = session(tiny_artifacts / "vocoder.onnx").run(None, {"mel": mel.numpy()})
    with torch.no_grad():
        want = tiny_bundle.vocos.decode(mel).numpy()
    spec = load_manifest(tiny_artifacts).vocoder
    assert spec.padding == "center"  # the seeded models use the released vocos-mel-24khz layout
    assert audio.shape == want.shape == (batch, spec.samples(frames)) == (batch, (frames - 1) * 256)
    assert np.abs(audio - want).max() <= TOL
    assert np.abs(want).max() > 1e-3


def test_manifest_vocoder_rule(tiny_artifacts, tmp_path):
    """The manifest's frames -> samples rule, and a manifest from before it is refused with the fix."""
    center, same = VocoderSpec("center", 256, 1024), VocoderSpec("same", 256, 1024)
    assert [center.samples(f) for f in (0, 1, 2, 100)] == [0, 0, 256, 99 * 256]
    assert [same.samples(f) for f in (0, 1, 100)] == [0, 256, 100 * 256]
    assert VocoderSpec.from_dict(center.to_dict()) == center and same.to_dict()["samples"] == "F*hop"
    for bad, says in (
        ({"padding": "reflect", "hop_length": 256, "n_fft": 1024}, "padding"),
        ({"padding": "same", "hop_length": 0, "n_fft": 1024}, "hop_length"),
        ({"padding": "same", "hop_length": 256}, "n_fft"),
        ({**same.to_dict(), "samples": "(F-1)*hop"}, "samples"),
    ):
        with pytest.raises(ValueError, match=says):
            VocoderSpec.from_dict(bad)
    root = tmp_path / "old"
    shutil.copytree(tiny_artifacts, root)
    data = json.loads((root / "manifest.json").read_text())
    assert data["vocoder"] == center.to_dict()
    del data["vocoder"]
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="re-run the export"):
        _ = load_manifest(root).vocoder


def test_istft_basis_is_irfft():
    rng = np.random.default_rng(0)
    spec = rng.standard_normal(513) + 1j * rng.standard_normal(513)
    basis = istft_basis(1024, np.ones(1024))[:, 0, :]
    frame = np.concatenate([spec.real, spec.imag]) @ basis
    assert np.abs(frame - np.fft.irfft(spec, 1024)).max() < 1e-6


def _consumers(model, name):
    return [n for n in model.graph.node if name in n.input]


def test_step_rotary_is_a_sliced_constant_table(tiny_artifacts, tiny_bundle):
    """The step graph reads the rotary cos/sin from a constant table for the largest bucket, sliced to N
    (Shape -> Gather -> Slice), with no Range, Einsum or per-step Cos/Sin, and FP16 keeps it FP32."""
    import re

    import onnx
    import yaml

    from f5build.context import ROOT
    from f5build.graphs import rotary_table

    m = onnx.load(str(tiny_artifacts / "step.onnx"))
    ops = [n.op_type for n in m.graph.node]
    assert "Einsum" not in ops and "Range" not in ops
    trig = [n.name for n in m.graph.node if n.op_type in ("Cos", "Sin")]
    assert trig and all(name.startswith("/time_embed/") for name in trig), trig  # only the time embedding's

    manifest = load_manifest(tiny_artifacts)
    max_frames = manifest.buckets.max_frames
    assert max_frames == MAX_FRAMES and manifest.data["stages"]["export"]["rotary_table_frames"] == max_frames
    attn = tiny_bundle.dit.transformer_blocks[0].attn
    head_dim = attn.inner_dim // attn.heads
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    keep_fp32 = yaml.safe_load((ROOT / "config" / "precision.yaml").read_text())["graphs"]["step"]["fp16"]["keep_fp32"]
    want = rotary_table(tiny_bundle.dit.rotary_embed, max_frames, head_dim)
    for name, table in (("rope_cos", want.cos), ("rope_sin", want.sin)):
        got = inits[name]
        assert got.dtype == np.float32 and got.shape == (max_frames, head_dim)
        np.testing.assert_array_equal(got, table.numpy())
        (sl,) = _consumers(m, name)  # one Slice per table, at the graph root, shared by every layer
        assert sl.op_type == "Slice" and sl.input[0] == name
        assert any(re.match(p, sl.name) for p in keep_fp32), f"{sl.name} is not kept FP32 by the FP16 recipe"
        chain, t = [], sl.input[2]  # ends: x's frame count
        while t in producers:
            chain.append(producers[t].op_type)
            t = producers[t].input[0]
        assert chain == ["Unsqueeze", "Gather", "Shape"] and t == "x", chain
        users = _consumers(m, sl.output[0])
        assert len(users) == 2 * tiny_bundle.arch["depth"] and all("/attn/" in u.name for u in users)  # q and k

    # The table equals f5-tts' angles' cos/sin, in float64 (f5-tts rounds its float32 angles first).
    freqs, scale = tiny_bundle.dit.rotary_embed.forward_from_seq_len(max_frames)
    assert scale == 1.0
    pos = torch.arange(max_frames, dtype=torch.float64)[:, None]
    inv = tiny_bundle.dit.rotary_embed.inv_freq.double().repeat_interleave(2)[None]
    assert (want.cos.double() - (pos * inv).cos()).abs().max() < 1e-7
    assert (want.sin.double() - (pos * inv).sin()).abs().max() < 1e-7
    assert (want.cos - freqs[0].cos()).abs().max() < 2e-4  # half an ulp of f5-tts' angle 2815 in float32
    assert (want.cos[:256] - freqs[0, :256].cos()).abs().max() < 1e-5


def test_step_frames_are_bounded_by_the_rotary_table(tiny_artifacts, tiny_bundle):
    """N beyond the table cannot reach the step graph: the runtime's buckets (the manifest's, the
    table's source) refuse or chunk longer requests; the torch graph refuses it by name, and the
    ONNX graph fails rather than computing garbage."""
    from f5build.export import example_inputs
    from f5build.graphs import StepGraph, export_attention

    buckets = load_manifest(tiny_artifacts).buckets
    assert buckets.choose(MAX_FRAMES).frames == MAX_FRAMES
    with pytest.raises(NoBucketError, match="exceed the largest bucket"):
        buckets.choose(MAX_FRAMES + 1)

    step = StepGraph(tiny_bundle.dit, 64).eval()
    ok = example_inputs(tiny_bundle, batch=1, frames=64)["step"]
    long = example_inputs(tiny_bundle, batch=1, frames=65)["step"]
    with pytest.raises(RuntimeError, match="inside export_attention"):
        step(*ok.values())
    with export_attention(tiny_bundle.dit), torch.no_grad():
        assert step(*ok.values()).shape == (1, 64, 100)
        with pytest.raises(ValueError, match="65 frames; its rotary table holds 64"):
            step(*long.values())

    over = example_inputs(tiny_bundle, batch=1, frames=MAX_FRAMES + 1)
    tc, tu = session(tiny_artifacts / "text_encoder.onnx").run(
        None, {k: v.numpy() for k, v in over["text_encoder"].items()}
    )
    feed = {k: v.numpy() for k, v in over["step"].items()} | {"text_cond": tc, "text_uncond": tu}
    with pytest.raises(Exception, match="(?i)broadcast|dimension|shape"):
        session(tiny_artifacts / "step.onnx").run(None, feed)


def test_bucket_invariance(tiny_artifacts, tiny_bundle):
    """A request of length L gives the same step output on its L frames in a bucket of exactly L
    frames and in larger buckets, with and without a longer neighbour in the batch."""
    length = 201
    ids, mask, cond, x = request(tiny_bundle, 1, length, [length], seed=7)
    text_s = session(tiny_artifacts / "text_encoder.onnx")
    step_s = session(tiny_artifacts / "step.onnx")

    def run(n: int, batch: int) -> np.ndarray:
        pad = n - length
        P = lambda a, v=0: torch.nn.functional.pad(a, (0, 0, 0, pad) if a.dim() == 3 else (0, pad), value=v)  # noqa: E731
        ids_n, mask_n, cond_n, x_n = P(ids, -1), P(mask, False), P(cond), P(x)
        if batch == 2:  # a longer neighbour fills the bucket
            _, m2, c2, x2 = request(tiny_bundle, 1, n, [n], seed=8)
            i2 = torch.randint(0, 2000, (1, n), dtype=torch.int32)
            ids_n, mask_n, cond_n, x_n = (torch.cat(p) for p in ((ids_n, i2), (mask_n, m2), (cond_n, c2), (x_n, x2)))
        tc, tu = text_s.run(None, {"text_ids": ids_n.numpy(), "mask": mask_n.numpy()})
        f = lambda v: np.full(batch, v, np.float32)  # noqa: E731
        (out,) = step_s.run(
            None,
            {
                "x": x_n.numpy(),
                "cond": cond_n.numpy(),
                "text_cond": tc,
                "text_uncond": tu,
                "mask": mask_n.numpy(),
                "t": f(0.6),
                "dt": f(0.05),
                "cfg": f(2.0),
            },
        )
        return out[0, :length]

    exact = run(length, 1)
    for n, batch in [(256, 1), (512, 1), (768, 2)]:
        assert np.abs(run(n, batch) - exact).max() <= TOL, f"bucket n={n} b={batch}"


def test_manifest_records_everything(tiny_artifacts):
    m = load_manifest(tiny_artifacts)
    assert m.buckets.frames[0] == 256 and m.buckets.batch == (1, 2, 4)
    for g in ("text_encoder", "step", "vocoder"):
        assert m.precisions(g) == ["fp32"]
        m.find(g, "fp32")
    export = m.data["stages"]["export"]
    assert max(export["parity_max_abs"].values()) <= TOL
    assert {"torch", "onnx", "f5-tts", "vocos"} <= set(export["tools"])
    assert len(m.data["source"]["dit_sha256"]) == 64
    assert m.model["dim"] == 128 and m.model["vocab_size"] == len(
        (tiny_artifacts / "vocab.txt").read_text(encoding="utf-8").splitlines()
    )


def test_rerun_is_noop_and_tampering_is_caught(tiny_artifacts, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(tiny_artifacts, root / "tiny")
    before = {p.name: p.stat().st_mtime_ns for p in (root / "tiny").iterdir()}
    assert main(["export", "--model", "tiny", "--artifacts-root", str(root)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert before == {p.name: p.stat().st_mtime_ns for p in (root / "tiny").iterdir()}
    with open(root / "tiny" / "step.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="does not match the manifest"):
        load_manifest(root / "tiny").find("step")
    assert main(["export", "--model", "tiny", "--artifacts-root", str(root)]) == 0  # not up to date: re-exported
    load_manifest(root / "tiny").find("step")
    assert not list((root / "tiny").glob(".*.tmp"))


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    bad = tmp_path / "buckets.yaml"
    bad.write_text("frames: [512, 256]\nbatch: [1]\n")
    assert main(["export", "--buckets", str(bad), "--artifacts-root", str(tmp_path)]) == 2
    assert "strictly increasing" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "missing.pt"), "--artifacts-root", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "m.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ManifestError, match="format"):
        load_manifest(tmp_path / "m.json")


# --- real checkpoints in the released on-disk layout ---------------------------------------------

# charactr/vocos-mel-24khz's config.yaml as released, with the tiny Vocos' sizes (released: dim 512,
# intermediate_dim 1536, num_layers 8) and the head padding as a parameter (released: center).
RELEASED_VOCOS_CONFIG = """\
feature_extractor:
  class_path: vocos.feature_extractors.MelSpectrogramFeatures
  init_args:
    sample_rate: 24000
    n_fft: 1024
    hop_length: 256
    n_mels: 100
    padding: center
backbone:
  class_path: vocos.models.VocosBackbone
  init_args:
    input_channels: 100
    dim: 64
    intermediate_dim: 192
    num_layers: 3
head:
  class_path: vocos.heads.ISTFTHead
  init_args:
    dim: 64
    n_fft: 1024
    hop_length: 256
    padding: {padding}
"""
STRICT = 1e-5  # the issue's bound against f5-tts' own load_model / load_vocoder


def ema_keys(dit_state: dict, step: int = 1250000) -> dict:
    """A DiT state dict as F5TTS_v1_Base's EMA weights are stored: ema_model.transformer.* + initted, step."""
    state = {f"ema_model.transformer.{k}": v.detach().clone().contiguous() for k, v in dit_state.items()}
    state["initted"] = torch.tensor(True)
    state["step"] = torch.tensor(step)
    return state


def write_checkpoint(path, dit_state: dict, **extra):
    """The released safetensors (flat EMA keys) or a trainer .pt (ema_model_state_dict), plus `extra` keys."""
    state = {**ema_keys(dit_state), **extra}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"ema_model_state_dict": state}, path)
    return path


def write_vocos(folder, vocos, padding: str = "center", config: str | None = None):
    """A Vocos folder as on the hub: the released config.yaml and pytorch_model.bin (state_dict, with
    the feature_extractor.mel_spec.* buffers)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(config or RELEASED_VOCOS_CONFIG.format(padding=padding))
    torch.save(vocos.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def arch_yaml(tmp_path_factory):
    import yaml

    from f5build.load import TINY_ARCH

    path = tmp_path_factory.mktemp("arch") / "tiny_arch.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": dict(TINY_ARCH)}}))
    return path


def export_args(ckpt, vocoder, arch, root, *extra: str) -> list[str]:
    from f5build.load import default_vocab_path

    return [
        "export",
        "--model",
        str(ckpt),
        "--vocab",
        str(default_vocab_path()),
        "--vocoder",
        str(vocoder),
        "--model-config",
        str(arch),
        "--artifacts-root",
        str(root),
        *extra,
    ]


@pytest.fixture(scope="module")
def released(tmp_path_factory, tiny_bundle, arch_yaml):
    """The tiny weights in the released layout, exported through the CLI: safetensors + a center-padded
    Vocos (the released pair), and a trainer .pt + a same-padded Vocos."""
    root = tmp_path_factory.mktemp("released")
    out = {}
    for padding, suffix in (("center", ".safetensors"), ("same", ".pt")):
        ckpt = write_checkpoint(root / f"model_1250000{suffix}", tiny_bundle.dit.state_dict())
        voc = write_vocos(root / f"vocos-{padding}", tiny_bundle.vocos, padding)
        name = f"released-{padding}"
        assert main([*export_args(ckpt, voc, arch_yaml, root / "artifacts"), "--name", name]) == 0
        out[padding] = {"ckpt": ckpt, "vocoder": voc, "artifacts": root / "artifacts" / name}
    return out


@pytest.mark.parametrize("padding", ["center", "same"])
def test_released_layout_matches_f5tts_load_model(released, tiny_bundle, padding):
    """Text encoder and step graphs of the exported checkpoint equal f5-tts' own load_model DiT."""
    from f5_tts.infer.utils_infer import load_model as f5_load_model

    from f5build.load import TINY_ARCH, default_vocab_path, f5_modules

    got = released[padding]
    cfm = f5_load_model(
        f5_modules().DiT, dict(TINY_ARCH), str(got["ckpt"]), "vocos", str(default_vocab_path()), device="cpu"
    )
    dit = cfm.transformer.eval()
    m = load_manifest(got["artifacts"])
    assert m.data["source"]["weights"] == "ema"
    assert m.data["source"]["dit_sha256"] == tiny_bundle.source["dit_sha256"]
    n, lens = 256, [256, 219]
    ids, mask, cond, x = request(tiny_bundle, 2, n, lens, seed=3)
    tc, tu = session(got["artifacts"] / "text_encoder.onnx").run(None, {"text_ids": ids.numpy(), "mask": mask.numpy()})
    feed = {"x": x.numpy(), "cond": cond.numpy(), "text_cond": tc, "text_uncond": tu, "mask": mask.numpy()}
    feed |= {"t": np.full(2, 0.4, np.float32), "dt": np.full(2, 1 / 16, np.float32), "cfg": np.full(2, 2.0, np.float32)}
    (x_next,) = session(got["artifacts"] / "step.onnx").run(None, feed)
    errs = {"text": 0.0, "step": 0.0}
    for i, length in enumerate(lens):
        row = ids[i, :length]
        text = row[row >= 0][None].long()
        with torch.no_grad():
            want_c = dit.text_embed(text, length, drop_text=False)[0].numpy()
            want_u = dit.text_embed(text, length, drop_text=True)[0].numpy()
        errs["text"] = max(errs["text"], np.abs(tc[i, :length] - want_c).max(), np.abs(tu[i, :length] - want_u).max())
        want = f5_step(dit, row, cond[i, :length], x[i, :length], 0.4, 1 / 16, 2.0).numpy()
        errs["step"] = max(errs["step"], np.abs(x_next[i, :length] - want).max())
    print(f"{padding}: max |export - f5-tts load_model| text encoder {errs['text']:.2e}, step {errs['step']:.2e}")
    assert errs["text"] <= STRICT and errs["step"] <= STRICT


@pytest.mark.parametrize("padding", ["center", "same"])
def test_released_vocoder_matches_f5tts_load_vocoder(released, padding):
    """The vocoder graph equals f5-tts' load_vocoder(...).decode sample for sample, same length, and the
    manifest's samples rule says that length."""
    from f5_tts.infer.utils_infer import load_vocoder

    got = released[padding]
    vocos = load_vocoder(vocoder_name="vocos", is_local=True, local_path=str(got["vocoder"]), device="cpu")
    assert vocos.head.istft.padding == padding
    spec = load_manifest(got["artifacts"]).vocoder
    assert spec.padding == padding and spec.to_dict()["samples"] == {"center": "(F-1)*hop", "same": "F*hop"}[padding]
    voc = session(got["artifacts"] / "vocoder.onnx")
    worst = 0.0
    for frames, batch in ((2, 1), (57, 2), (300, 1)):
        mel = torch.randn(batch, 100, frames, generator=torch.Generator().manual_seed(frames)) * 1.5 - 4
        (audio,) = voc.run(None, {"mel": mel.numpy()})
        with torch.no_grad():
            want = vocos.decode(mel).numpy()
        assert audio.shape == want.shape == (batch, spec.samples(frames))
        assert np.abs(want).max() > 1e-3
        worst = max(worst, float(np.abs(audio - want).max()))
    print(f"{padding}: max |vocoder.onnx - f5-tts load_vocoder decode| {worst:.2e}")
    assert worst <= STRICT


def test_center_and_same_differ_by_the_trim(released):
    """Same weights, two paddings: the center output is the same-padded one shifted by
    n_fft/2 - (n_fft - hop)/2 = 128 samples and one hop shorter (the misalignment the issue found)."""
    mel = torch.randn(1, 100, 90, generator=torch.Generator().manual_seed(5)).numpy() * 1.5 - 4
    (center,) = session(released["center"]["artifacts"] / "vocoder.onnx").run(None, {"mel": mel})
    (same,) = session(released["same"]["artifacts"] / "vocoder.onnx").run(None, {"mel": mel})
    assert center.shape == (1, 89 * 256) and same.shape == (1, 90 * 256)
    assert np.abs(center - same[:, 128 : 128 + 89 * 256]).max() <= STRICT
    assert np.abs(center - same[:, : 89 * 256]).max() > 1e-2


def _refusal(capsys, argv) -> str:
    """A CLI run that must fail cleanly: rc 2, one `error:` line, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "f5build export: error:" in err and "Traceback" not in err, err
    return err


def test_unexpected_key_is_refused_by_name(tmp_path, tiny_bundle, arch_yaml, capsys):
    voc = write_vocos(tmp_path / "vocos", tiny_bundle.vocos)
    extra = {"ema_model.duration_predictor.weight": torch.zeros(3)}
    ckpt = write_checkpoint(tmp_path / "model.safetensors", tiny_bundle.dit.state_dict(), **extra)
    err = _refusal(capsys, export_args(ckpt, voc, arch_yaml, tmp_path / "art"))
    assert "unexpected keys ['ema_model.duration_predictor.weight']" in err
    assert not (tmp_path / "art").exists()


def test_missing_and_misshapen_keys_are_named(tmp_path, tiny_bundle, arch_yaml, capsys):
    from f5build.load import default_vocab_path, load_model

    voc = write_vocos(tmp_path / "vocos", tiny_bundle.vocos)
    state = dict(tiny_bundle.dit.state_dict())
    missing = write_checkpoint(tmp_path / "missing.pt", {k: v for k, v in state.items() if k != "proj_out.weight"})
    with pytest.raises(ValueError, match=r"missing keys: \['ema_model.transformer.proj_out.weight'\]"):
        load_model(str(missing), vocoder=voc, model_config=str(arch_yaml))
    with pytest.raises(ValueError, match="--vocoder"):
        load_model(str(missing), model_config=str(arch_yaml))

    wrong = write_checkpoint(tmp_path / "wrong.safetensors", {**state, "proj_out.weight": torch.zeros(100, 1000)})
    err = _refusal(capsys, export_args(wrong, voc, arch_yaml, tmp_path / "art"))
    assert "ema_model.transformer.proj_out.weight: checkpoint (100, 1000), model (100, 128)" in err

    # A fine-tuned checkpoint with 43 extra tokens: refused against the stock vocab, with the fix ...
    emb = state["text_embed.text_embed.weight"]
    n_vocab = len(default_vocab_path().read_text(encoding="utf-8").splitlines())
    bigger = torch.cat([emb, torch.randn(43, emb.shape[1], generator=torch.Generator().manual_seed(0))])
    ext = write_checkpoint(tmp_path / "extended.pt", {**state, "text_embed.text_embed.weight": bigger})
    with pytest.raises(ValueError) as e:
        load_model(str(ext), vocoder=voc, model_config=str(arch_yaml))
    msg = str(e.value)
    assert f"checkpoint ({n_vocab + 44}, 64), model ({n_vocab + 1}, 64)" in msg
    assert f"has {n_vocab} tokens, so the model gets {n_vocab + 1} text embedding rows" in msg
    assert "pass the checkpoint's own vocab.txt with --vocab" in msg
    # ... and exported once its own vocab is given.
    vocab = tmp_path / "vocab_ext.txt"
    vocab.write_text(default_vocab_path().read_text(encoding="utf-8") + "".join(f"新{i}\n" for i in range(43)))
    got = load_model(str(ext), vocab=vocab, vocoder=voc, model_config=str(arch_yaml))
    assert got.model_config()["vocab_size"] == n_vocab + 43
    assert torch.equal(got.dit.text_embed.text_embed.weight, bigger)


def test_ema_or_online_weights(tmp_path, tiny_bundle, arch_yaml, capsys):
    """EMA by default; a .pt with only online weights needs --weights online (f5-tts refuses it)."""
    from f5build.load import load_model, state_sha256

    voc = write_vocos(tmp_path / "vocos", tiny_bundle.vocos)
    state = tiny_bundle.dit.state_dict()
    online_only = tmp_path / "online_only.pt"
    torch.save({"model_state_dict": {f"transformer.{k}": v for k, v in state.items()}, "step": 10}, online_only)
    err = _refusal(capsys, export_args(online_only, voc, arch_yaml, tmp_path / "art"))
    assert "no EMA weights (no ema_model_state_dict)" in err and "use_ema=True" in err and "--weights online" in err
    got = load_model(str(online_only), vocoder=voc, model_config=str(arch_yaml), weights="online")
    assert got.source["weights"] == "online" and got.source["dit_sha256"] == tiny_bundle.source["dit_sha256"]

    # Both sets (a trainer checkpoint): EMA unless told otherwise. Legacy mel buffers are dropped, as f5-tts does.
    moved = {k: v + 0.01 for k, v in state.items()}
    legacy = {"ema_model.mel_spec.mel_stft.mel_scale.fb": torch.zeros(513, 100)}
    both = tmp_path / "model_last.pt"
    torch.save(
        {
            "ema_model_state_dict": {**ema_keys(state), **legacy},
            "model_state_dict": {f"transformer.{k}": v for k, v in moved.items()},
        },
        both,
    )
    ema = load_model(str(both), vocoder=voc, model_config=str(arch_yaml))
    assert ema.source["weights"] == "ema" and ema.source["dit_sha256"] == tiny_bundle.source["dit_sha256"]
    online = load_model(str(both), vocoder=voc, model_config=str(arch_yaml), weights="online")
    assert online.source["weights"] == "online" and online.source["dit_sha256"] != ema.source["dit_sha256"]
    assert torch.equal(online.dit.proj_out.weight, moved["proj_out.weight"])
    assert state_sha256(online.vocos) == tiny_bundle.source["vocos_sha256"]

    safe = write_checkpoint(tmp_path / "model.safetensors", state)
    with pytest.raises(ValueError, match="no online"):
        load_model(str(safe), vocoder=voc, model_config=str(arch_yaml), weights="online")
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"  # online weights only: transformer.* at the top level
    save_file({f"transformer.{k}": v.contiguous() for k, v in state.items()}, str(bare))
    with pytest.raises(ValueError, match=r"no EMA weights \(ema_model\.\* keys\).*--weights online"):
        load_model(str(bare), vocoder=voc, model_config=str(arch_yaml))
    got = load_model(str(bare), vocoder=voc, model_config=str(arch_yaml), weights="online")
    assert got.source["dit_sha256"] == tiny_bundle.source["dit_sha256"]


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (
            ("vocos.feature_extractors.MelSpectrogramFeatures", "vocos.feature_extractors.EncodecFeatures"),
            "feature_extractor.class_path 'vocos.feature_extractors.EncodecFeatures' is not supported",
        ),
        (("num_layers: 3", "num_layers: 3\n    adanorm_num_embeddings: 4"), "adanorm_num_embeddings = 4"),
        (("n_mels: 100", "n_mels: 80"), "feature_extractor.init_args.n_mels = 80 differs from f5-tts' mel"),
        (("sample_rate: 24000", "sample_rate: 22050"), "sample_rate = 22050"),
        (("hop_length: 256\n    padding: center\n", "hop_length: 256\n    padding: reflect\n"), "padding = 'reflect'"),
        (("vocos.heads.ISTFTHead", "vocos.heads.IMDCTCosHead"), "head.class_path 'vocos.heads.IMDCTCosHead'"),
        (("num_layers: 3", "num_layers: 3\n    dropout: 0.1"), "backbone.init_args ['dropout'] are not arguments"),
    ],
)
def test_unsupported_vocos_config_is_refused_by_name(tmp_path, tiny_bundle, arch_yaml, capsys, edit, says):
    released = RELEASED_VOCOS_CONFIG.format(padding="center")
    config = released.replace(*edit, 1)
    assert config != released
    voc = write_vocos(tmp_path / "vocos", tiny_bundle.vocos, config=config)
    ckpt = write_checkpoint(tmp_path / "model.safetensors", tiny_bundle.dit.state_dict())
    err = _refusal(capsys, export_args(ckpt, voc, arch_yaml, tmp_path / "art"))
    assert says in err and "config.yaml" in err


def test_vocos_weights_load_strictly(tmp_path, tiny_bundle, arch_yaml):
    """pytorch_model.bin is loaded as load_vocoder does: its feature_extractor buffers are read, not
    replaced, and a missing or foreign key is named."""
    from f5build.load import load_model

    ckpt = write_checkpoint(tmp_path / "model.safetensors", tiny_bundle.dit.state_dict())
    voc = write_vocos(tmp_path / "vocos", tiny_bundle.vocos)
    vstate = torch.load(voc / "pytorch_model.bin", weights_only=True)
    assert {"feature_extractor.mel_spec.spectrogram.window", "feature_extractor.mel_spec.mel_scale.fb"} <= set(vstate)
    got = load_model(str(ckpt), vocoder=voc, model_config=str(arch_yaml))
    assert got.source["vocos_sha256"] == tiny_bundle.source["vocos_sha256"]
    assert got.vocos_arch["padding"] == "center"

    fb = vstate.pop("feature_extractor.mel_spec.mel_scale.fb")
    torch.save({**vstate, "head.extra.bias": torch.zeros(2)}, voc / "pytorch_model.bin")
    with pytest.raises(ValueError) as e:
        load_model(str(ckpt), vocoder=voc, model_config=str(arch_yaml))
    assert "missing keys: ['feature_extractor.mel_spec.mel_scale.fb']" in str(e.value)
    assert "unexpected keys: ['head.extra.bias']" in str(e.value)
    torch.save({**vstate, "feature_extractor.mel_spec.mel_scale.fb": fb * 2}, voc / "pytorch_model.bin")
    got = load_model(str(ckpt), vocoder=voc, model_config=str(arch_yaml))
    assert torch.equal(got.vocos.feature_extractor.mel_spec.mel_scale.fb, fb * 2)  # read, not replaced


def test_text_encoder_spreads_the_text_as_f5tts_average_upsampling_does(tmp_path):
    """A DiT with f5-tts' text_embedding_average_upsampling (ZipVoice-style: each character's embedding
    held over an equal share of the frames): the text graph equals f5-tts' TextEmbedding row by row,
    in torch and as ONNX at another bucket and batch than it was traced at, uneven shares included."""
    from f5build.export import export_graph
    from f5build.graphs import TEXT_INPUTS, TEXT_OUTPUTS, TextEncoderGraph
    from f5build.load import TINY_ARCH, f5_modules

    torch.manual_seed(0)
    dit = f5_modules().DiT(**TINY_ARCH, text_embedding_average_upsampling=True, text_num_embeds=40, mel_dim=100)
    graph = TextEncoderGraph(dit.eval()).eval()
    plain_dit = f5_modules().DiT(**TINY_ARCH, text_num_embeds=40, mel_dim=100)
    plain_dit.load_state_dict(dit.state_dict())
    plain = TextEncoderGraph(plain_dit.eval()).eval()  # the same weights, text at frames 0..chars-1

    def rows(n: int, shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames, characters) per row, in a bucket of n frames."""
        g = torch.Generator().manual_seed(n)
        ids = torch.full((len(shapes), n), -1, dtype=torch.int32)
        mask = torch.zeros(len(shapes), n, dtype=torch.bool)
        for i, (frames, chars) in enumerate(shapes):
            ids[i, :chars] = torch.randint(0, 40, (chars,), generator=g, dtype=torch.int32)
            mask[i, :frames] = True
        return ids, mask

    def check(got_c: np.ndarray, got_u: np.ndarray, ids: torch.Tensor, shapes: list[tuple[int, int]]) -> None:
        for i, (frames, chars) in enumerate(shapes):
            text = ids[i, :chars][None].long()
            with torch.no_grad():
                want_c = dit.text_embed(text, frames, drop_text=False)[0].numpy()
                want_u = dit.text_embed(text, frames, drop_text=True)[0].numpy()
            assert np.abs(got_c[i, :frames] - want_c).max() <= TOL, (frames, chars)
            assert np.abs(got_u[i, :frames] - want_u).max() <= TOL, (frames, chars)
            assert not got_c[i, frames:].any()  # nothing past the row's frames
            with torch.no_grad():  # the last frame holds the last character: spread, not left at the start
                last = plain(ids[i : i + 1], torch.arange(ids.shape[1]).unsqueeze(0) < frames)[0][0, chars - 1]
            assert np.abs(got_c[i, frames - 1] - last.numpy()).max() <= TOL

    # even shares, 7 / 3 (uneven), one character, as many characters as frames, 2 frames per character + 1
    shapes = [(96, 12), (7, 3), (50, 1), (40, 40), (61, 30)]
    ids, mask = rows(96, shapes)
    with torch.no_grad():
        cond, uncond = graph(ids, mask)
    check(cond.numpy(), uncond.numpy(), ids, shapes)

    path = tmp_path / "text_encoder.onnx"
    axes = {k: {0: "batch", 1: "frames"} for k in (*TEXT_INPUTS, *TEXT_OUTPUTS)}
    export_graph(graph, {"text_ids": ids, "mask": mask}, TEXT_INPUTS, TEXT_OUTPUTS, axes, path, 17)
    other = [(130, 17), (129, 64)]
    ids, mask = rows(130, other)
    got_c, got_u = session(path).run(None, {"text_ids": ids.numpy(), "mask": mask.numpy()})
    check(got_c, got_u, ids, other)
