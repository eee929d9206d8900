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
from f5rt.errors import ManifestError
from f5rt.manifest import load_manifest

TOL = 1e-4
BUCKETS = [256, 384, 512]


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


def f5_step(bundle, ids_row, cond_row, x_row, t: float, dt: float, cfg: float):
    """f5-tts' own path for one unpadded request: DiT.forward(cfg_infer=True) as CFM.sample calls it
    for B=1 (no mask), its CFG combine, and torchdiffeq's Euler update."""
    text = ids_row[ids_row >= 0][None].long()
    with torch.no_grad():
        pred = bundle.dit(
            x=x_row[None], cond=cond_row[None], text=text, time=torch.tensor(t), mask=None, cfg_infer=True, cache=False
        )
    v_c, v_u = torch.chunk(pred, 2, dim=0)
    return (x_row[None] + dt * (v_c + (v_c - v_u) * cfg))[0]


@pytest.mark.parametrize("n", BUCKETS)
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
        want = f5_step(tiny_bundle, row_ids, cond[i, :length], x[i, :length], 0.25, 1 / 32, float(cfg[i]))
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
    assert audio.shape == (batch, frames * 256)
    assert np.abs(audio - want).max() <= TOL
    assert np.abs(want).max() > 1e-3


def test_istft_basis_is_irfft():
    rng = np.random.default_rng(0)
    spec = rng.standard_normal(513) + 1j * rng.standard_normal(513)
    basis = istft_basis(1024, np.ones(1024))[:, 0, :]
    frame = np.concatenate([spec.real, spec.imag]) @ basis
    assert np.abs(frame - np.fft.irfft(spec, 1024)).max() < 1e-6


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


def _write_checkpoint(tmp_path, bundle, drop: str | None = None):
    import yaml

    from f5build.load import TINY_ARCH, TINY_VOCOS

    state = {f"ema_model.transformer.{k}": v for k, v in bundle.dit.state_dict().items() if k != drop}
    state["initted"] = torch.tensor(True)
    torch.save({"ema_model_state_dict": state}, tmp_path / "model_100.pt")
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump({"model": {"arch": dict(TINY_ARCH)}}))
    voc = tmp_path / "vocos"
    voc.mkdir(exist_ok=True)
    init = {"input_channels": 100, **TINY_VOCOS}
    (voc / "config.yaml").write_text(yaml.safe_dump({"backbone": {"init_args": init}}))
    torch.save(bundle.vocos.state_dict(), voc / "pytorch_model.bin")
    return tmp_path / "model_100.pt", voc, tmp_path / "arch.yaml"


def test_real_checkpoint_loads_like_f5tts(tmp_path, tiny_bundle):
    from f5build.load import load_model

    ckpt, voc, arch = _write_checkpoint(tmp_path, tiny_bundle)
    got = load_model(str(ckpt), vocoder=voc, model_config=str(arch))
    assert got.source["kind"] == "checkpoint"
    assert got.source["dit_sha256"] == tiny_bundle.source["dit_sha256"]
    assert got.source["vocos_sha256"] == tiny_bundle.source["vocos_sha256"]


def test_checkpoint_with_missing_keys_names_them(tmp_path, tiny_bundle):
    from f5build.load import load_model

    ckpt, voc, arch = _write_checkpoint(tmp_path, tiny_bundle, drop="proj_out.weight")
    with pytest.raises(ValueError, match=r"missing keys: \['proj_out.weight'\]"):
        load_model(str(ckpt), vocoder=voc, model_config=str(arch))
    with pytest.raises(ValueError, match="--vocoder"):
        load_model(str(ckpt), model_config=str(arch))
